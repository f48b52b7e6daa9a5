"""Method comparison: where two methods agree, how well their scores separate, their curves."""

import streamlit as st

from malle.dashboard import legend, widgets
from malle.dashboard import method_comparison as comparison
from malle.dashboard.overview import recall_curve_chart
from malle.dashboard.shared import LEVELS, recall_table
from malle.report.palette import short_names

EXAMPLES = 8

ctx = widgets.context()
exp, methods = ctx.experiment, ctx.methods
labels = short_names(methods)  # short names in boxes, headers and legends; the legend below has the full labels

st.title("Method comparison")
if len(methods) < 2:
    st.warning("Pick at least two methods in the sidebar to compare them.")
    st.stop()

default_a, default_b = comparison.default_pair(methods)
col_a, col_b, col_level, col_k = st.columns([2, 2, 1, 2])
a = col_a.selectbox("Method A", methods, index=methods.index(default_a), format_func=labels.get, key="cmp_a")
b = col_b.selectbox("Method B", methods, index=methods.index(default_b), format_func=labels.get, key="cmp_b")
level = col_level.radio("Level", LEVELS, key="cmp_level")
k = col_k.slider("K", min_value=1, max_value=20, value=1, key="cmp_k")
if a == b:
    st.warning("Pick two different methods.")
    st.stop()

st.subheader(f"Agreement at {level} Recall@{k}")
table = ctx.cached(comparison.agreement_table, a, b, k, level)
st.dataframe(comparison.agreement_matrix(table, labels[a], labels[b]), key="cmp_matrix")
counts = comparison.agreement_counts(table)
cell = st.segmented_control(
    "Show example queries from", comparison.AGREEMENT_CELLS, default="only_a", key="cmp_cell",
    format_func=lambda c: f"{comparison.cell_title(c, labels[a], labels[b])} ({counts[c]})")
if cell:
    examples = table[table["cell"] == cell].head(EXAMPLES)
    st.caption(f"Up to {EXAMPLES} queries, each followed by its true original.")
    widgets.thumbnail_grid(comparison.query_and_original_thumbs(exp, examples), columns=4)

st.subheader("True original's score against the best wrong original's")
st.caption("Units differ: CNNs score by cosine similarity (higher = more similar), hashes by Hamming distance "
           "in bits (lower = more similar). A method separates well when the two histograms do not overlap.")
for col, method in zip(st.columns(2), (a, b)):
    metric = ctx.metric(method)
    col.altair_chart(comparison.score_chart(ctx.results.per_query, method, labels[method], metric), width="stretch")
    rate = comparison.separation_rate(ctx.results.per_query, method, metric)
    col.caption(f"True original strictly better than every wrong one for {rate:.1%} of queries.")

st.subheader("Recall@K curves")
recall = ctx.cached(recall_table, tuple(range(1, 21)))
st.altair_chart(recall_curve_chart(comparison.pair_recall(recall, (a, b))), width="stretch")
with st.expander("Methods: full labels (family, weights, engine, precision)"):
    st.markdown(ctx.cached(legend.markdown))
