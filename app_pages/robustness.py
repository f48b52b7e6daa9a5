"""Robustness: Recall@1 against the strength of each op applied alone, and where each method breaks."""

import streamlit as st

from malle.dashboard import legend, widgets
from malle.dashboard import robustness as logic
from malle.dashboard.shared import op_title, original_labels
from malle.ops.severity import MIN_RECALL

ctx = widgets.context()
exp = ctx.experiment

st.title("Robustness")
st.caption("Each op alone, at a grid of strengths in its own unit, applied to every original; the first level is the "
           "untouched original. Positions are drawn once per original, so along a curve only the strength changes.")

ops = st.multiselect("Ops", logic.op_options(), default=list(logic.DEFAULT_OPS), format_func=op_title, key="rob_ops",
                     help="Each op sweeps every original at every level with every method, once; then it is cached.")
if not ops:
    st.info("Pick at least one op to sweep.")
    st.stop()
widgets.await_stages("Sweeping (first time only: every level is cached on disk)…", exp.severity_nodes(ops),
                     lambda progress: exp.severity(ops, progress))
table = ctx.cached(lambda results, chosen: results.experiment.severity(list(chosen)), tuple(ops), name="severity")

st.altair_chart(logic.curves_chart(table, ctx.methods))
with st.expander("Methods: full labels (family, weights, engine, precision)"):
    st.markdown(ctx.cached(legend.markdown))
st.subheader(f"Breaking points: the first strength where Recall@1 falls below {MIN_RECALL}")
st.dataframe(logic.breaking_table(table, ctx.methods), key="rob_breaking")

st.subheader("One original at every level")
names = original_labels(exp.originals)
left, right = st.columns(2)
op = left.selectbox("Op", ops, format_func=op_title, key="rob_strip_op")
original = right.selectbox("Original", list(names), format_func=names.get, key="rob_strip_original")
frames = ctx.cached(lambda results, o, f: logic.strip(results.experiment, o, f), op, original, name="strip")
for column, (param, thumb) in zip(st.columns(len(frames)), frames):
    column.image(thumb, caption=param)
