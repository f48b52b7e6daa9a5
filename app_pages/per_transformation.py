"""Per-transformation breakdown: which ops (and how many of them) hurt which method."""

import streamlit as st

from malle.dashboard import frame, widgets
from malle.dashboard import per_transformation as logic
from malle.dashboard.shared import LEVELS, op_title
from malle.ops import OPS

ctx = widgets.context()
labels = ctx.labels
if frame.analysis_pending(ctx.experiment, "attribution"):  # computed the first time a page needs it
    widgets.with_progress(frame.ANALYSES["attribution"], lambda p: frame.analyse(ctx.experiment, "attribution", p))

st.title("Per-transformation breakdown")
st.caption("A query counts for an op when that op is anywhere in its chain, so a query with three ops "
           "counts for all three.")

left, mid, right = st.columns([1, 2, 2])
level = left.radio("Level", LEVELS, key="pt_level")
k = mid.slider("K", min_value=1, max_value=20, value=1, key="pt_k")
include = right.multiselect("Only queries whose chain contains all of", list(OPS), format_func=op_title,
                            key="pt_include")
exclude = right.multiselect("…and none of", list(OPS), format_func=op_title, key="pt_exclude")

found = ctx.cached(logic.breakdown, tuple(include), tuple(exclude), k)
if found is None:
    st.warning("No query matches this op filter.")
    st.stop()

st.markdown(f"**{found.n_queries}** queries per method match the filter.")
widgets.show_table(logic.recall_at_k_wide(found.recall, k, labels), key="pt_recall")
for sentence in logic.hardest_op_sentences(found.per_op, k, level, labels):
    st.markdown(sentence)

st.subheader(f"{level.capitalize()} Recall@{k} per op")
st.altair_chart(logic.op_heatmap(found.per_op, k, level, labels), width="stretch")
widgets.show_table(logic.per_op_wide(found.per_op, k, level, labels), key="pt_per_op")

st.subheader("Which op caused each miss")
st.caption("Every instance-level miss whose chain has two or more ops is replayed with each op left out in turn; the "
           "op whose removal restores the hit is charged (shared when several do). Shares of each method's misses.")
widgets.show_table(ctx.cached(logic.attribution_wide, labels), key="pt_attribution", fmt="%.3f")

st.subheader(f"{level.capitalize()} Recall@{k} by chain length")
st.altair_chart(logic.chain_length_chart(found.by_length, k, level, labels), width="stretch")
widgets.show_table(logic.chain_length_wide(found.by_length, k, level, labels), key="pt_by_length")
