"""Detection: open-set copy detection with distractor queries, µAP, and a threshold picker."""

import math

import streamlit as st

from malle.dashboard import detection as logic
from malle.dashboard import frame, widgets

ctx = widgets.context()
exp, labels, results = ctx.experiment, ctx.labels, ctx.results

st.title("Detection")
if not results.has_openset:
    st.info("This experiment has no distractor queries: every usable image of the data is an original. Use a dataset "
            "with images to spare (or fewer originals) to see open-set detection.")
    st.stop()
if frame.analysis_pending(exp, "openset"):  # computed the first time a page needs it
    widgets.with_progress(frame.ANALYSES["openset"], lambda p: frame.analyse(exp, "openset", p))
st.caption(f"Deployed copy detection is open-set: {len(exp.distractor_manifest)} distractor queries (images that are "
           f"not originals, modified like the copies) join the {len(exp.manifest)} copies, and each method must say "
           "'copy' only above a threshold. µAP pools every query's top-10 predictions, ties counted against the "
           "method, as ISC2021 defines it.")

scores, meanings = ctx.cached(logic.scores_table)
st.dataframe(scores, column_config=logic.column_config(scores, meanings), key="det_scores", hide_index=True)
with st.expander("Methods"):
    st.markdown("\n".join(f"- `{method}`: {label}" for method, label in labels.items()))
st.altair_chart(ctx.cached(logic.pr_chart, labels), width="stretch")

if results.has_tricks:
    st.subheader("Matching tricks")
    st.caption("Each method with tricks next to the same method without them: regions searches the query's windows, "
               "verify re-ranks the top 10 by SIFT + RANSAC inliers, norm subtracts the query's similarity to a "
               "background set. Gains are on this experiment's queries; the cost is per copy on this machine.")
    tricks, meanings = ctx.cached(logic.trick_table)
    st.dataframe(tricks, column_config=logic.column_config(tricks, meanings), key="det_tricks", hide_index=True)

st.subheader("Threshold picker")
left, mid, right = st.columns([2, 1, 2])
method = left.selectbox("Method", ctx.methods, format_func=labels.get, key="det_method")
mode = mid.radio("Choose by", ("target precision", "threshold"), key="det_mode")
metric = ctx.metric(method)
if mode == "target precision":
    target = right.slider("Target precision", 0.5, 1.0, 0.9, 0.01, key="det_target")
    similarity = ctx.cached(logic.similarity_for_precision, method, target)
    if math.isnan(similarity):
        st.warning(f"{labels[method]} reaches a precision of {target:.2f} at no threshold.")
        st.stop()
else:
    low, high = (logic.native(metric, s) for s in ctx.cached(logic.threshold_range, method))
    low, high = min(low, high), max(low, high)
    if metric.higher_is_better:
        value = right.slider(f"Accept a {metric.score_name} of at least", low, high, (low + high) / 2, key="det_value")
    else:
        value = right.slider(f"Accept a {metric.score_name} of at most", int(low), int(high), int((low + high) / 2),
                             key="det_value")
    similarity = logic.as_similarity(metric, value)

point = ctx.cached(logic.operating_point, method, similarity)
shown = logic.native(metric, similarity)
st.markdown(f"At {metric.score_name} {'≥' if metric.higher_is_better else '≤'} **{shown:.4g}**:")
cols = st.columns(4)
cols[0].metric("precision", f"{point.precision:.3f}")
cols[1].metric("recall", f"{point.recall:.3f}")
cols[2].metric("false positives", point.false_positives)
cols[3].metric("predictions accepted", point.accepted)
with st.expander("Recall per op at this threshold"):
    widgets.show_table(point.per_op, key="det_per_op", hide_index=True)

st.subheader("Distractors accepted as copies")
widgets.thumbnail_grid_or(ctx.cached(logic.accepted_distractors, method, similarity),
                          "No distractor is accepted at this threshold.", columns=4)
st.subheader("Copies missed")
widgets.thumbnail_grid_or(ctx.cached(logic.missed_copies, method, similarity),
                          "Every copy is found at this threshold.", columns=4)
