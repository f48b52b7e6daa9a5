"""Detection: open-set copy detection with distractor queries, µAP, and a threshold picker."""

import math

import streamlit as st

from malle.dashboard import detection as logic
from malle.dashboard import legend, widgets
from malle.report.details import threshold_text
from malle.report.palette import short_names

ctx = widgets.context()
exp, results = ctx.experiment, ctx.results

st.title("Detection")
if not results.has_openset:
    st.info("This experiment has no distractor queries: every usable image of the data is an original. Use a dataset "
            "with images to spare (or fewer originals) to see open-set detection.")
    st.stop()
widgets.await_analysis("openset")
st.caption(f"Deployed copy detection is open-set: {len(exp.distractor_manifest)} distractor queries (images that are "
           f"not originals, modified like the copies) join the {len(exp.manifest)} copies, and each method must say "
           "'copy' only above a threshold. µAP pools every query's top-10 predictions, ties counted against the "
           "method, as ISC2021 defines it.")

scores, meanings = ctx.cached(logic.scores_table)
st.dataframe(scores, column_config=logic.column_config(scores, meanings), key="det_scores", hide_index=True)
with st.expander("Methods: full labels (family, weights, engine, precision)"):
    st.markdown(ctx.cached(legend.markdown))
pr_column, reliability_column = st.columns(2)
pr_column.altair_chart(ctx.cached(logic.pr_chart), width="stretch")
reliability_column.altair_chart(ctx.cached(logic.reliability_chart), width="stretch")

st.subheader("Confidence")
st.caption("A match's confidence is the probability that it is a true copy, the same for every method: the share of "
           "true copies among this run's predictions at that score (isotonic regression). Each fold of queries is "
           "scored by the map fitted on the others, so the curve above and the ece below are measured on queries "
           "the map never saw. `bank create --threshold-from` gives a collection its method's map.")
calibration, meanings = ctx.cached(logic.calibration_table)
st.dataframe(calibration, column_config=logic.column_config(calibration, meanings), key="det_ece", hide_index=True)
st.caption("False matches per kind of distractor query at each method's threshold at precision 0.9: copies of photos "
           "outside the database, and the hard negatives (blank, text, patterns...) of the hard preset.")
widgets.show_table(ctx.cached(logic.false_matches_by_kind), key="det_kinds", fmt="%.0f", hide_index=True)

if results.has_tricks:
    st.subheader("Matching tricks")
    st.caption("Each method with tricks next to the same method without them: regions searches the query's windows, "
               "verify re-ranks the top 10 by SIFT + RANSAC inliers, norm subtracts the query's similarity to a "
               "background set. Gains are on this experiment's queries; the cost is per copy on this machine.")
    tricks, meanings = ctx.cached(logic.trick_table)
    st.dataframe(tricks, column_config=logic.column_config(tricks, meanings), key="det_tricks", hide_index=True)

st.subheader("Threshold picker")
left, mid, right = st.columns([2, 1, 2])
names = short_names(ctx.methods)
method = left.selectbox("Method", ctx.methods, index=ctx.methods.index(ctx.cached(logic.default_method)),
                        format_func=names.get, key="det_method")
mode = mid.radio("Choose by", ("target precision", "threshold"), key="det_mode")
metric = ctx.metric(method)
if mode == "target precision":
    target = right.slider("Target precision", 0.5, 1.0, 0.9, 0.01, key="det_target")
    similarity = ctx.cached(logic.similarity_for_precision, method, target)
    if math.isnan(similarity):
        st.warning(f"{names[method]} reaches a precision of {target:.2f} at no threshold.")
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
st.markdown(f"At **{threshold_text(metric, similarity, exp.descriptor(method).dim)}**:")
cols = st.columns(4)
cols[0].metric("precision", f"{point.precision:.3f}")
cols[1].metric("recall", f"{point.recall:.3f}")
cols[2].metric("false positives", point.false_positives)
cols[3].metric("predictions accepted", point.accepted)
with st.expander("Recall per op at this threshold"):
    widgets.show_table(point.per_op, key="det_per_op", hide_index=True)

st.subheader("Distractors accepted as copies")
accepted = ctx.cached(logic.accepted_distractors, method, similarity)
widgets.thumbnail_grid_or(accepted, "No distractor is accepted at this threshold.", columns=4)
st.subheader("Copies missed")
missed = ctx.cached(logic.missed_copies, method, similarity)
widgets.thumbnail_grid_or(missed, "Every copy is found at this threshold.", columns=4)
if not accepted and not missed:  # nothing to see here: say where there is
    others = [m for m in ctx.cached(logic.methods_with_errors) if m != method]
    st.info("Nothing to analyse for this method at this threshold." + (" These miss copies at precision 0.9:" if others
            else " Every method here detects every copy: the hard preset is where they fail."),
            icon=":material/lightbulb:")
    for other in others:
        st.button(f"Show {names[other]}", key=f"det_to_{other}", on_click=widgets.set_state,
                  args=("det_method", other), icon=":material/arrow_forward:")
    if not others:
        st.button("Switch to the hard preset", key="det_to_hard", on_click=widgets.set_state, args=("preset", "hard"),
                  icon=":material/swap_horiz:")
