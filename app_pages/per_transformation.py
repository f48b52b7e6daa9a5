"""Per-transformation breakdown: which ops (and how many of them) hurt which method."""

import streamlit as st

from malle.dashboard import legend, widgets
from malle.dashboard import per_transformation as logic
from malle.dashboard.shared import LEVELS, op_title
from malle.ops import OPS
from malle.report.palette import short_names

ctx = widgets.context()
names = short_names(ctx.methods)
exp = ctx.experiment
widgets.await_analysis("attribution")

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
widgets.show_table(logic.recall_at_k_wide(found.recall, k, names), key="pt_recall")
for sentence in logic.hardest_op_sentences(found.per_op, k, level, names):
    st.markdown(sentence)
if logic.perfect_methods(found.per_op, k, level) and (exp.config.augment.preset or "reference") == "reference":
    st.info("The reference preset's edits are too mild for the best methods to miss. The hard preset (the field's "
            "edits: composites, chains of 4 to 8) is where they fail.", icon=":material/lightbulb:")
    st.button("Switch to the hard preset", key="pt_to_hard", on_click=widgets.set_state, args=("preset", "hard"),
              icon=":material/swap_horiz:")
with st.expander("Methods: full labels (family, weights, engine, precision)"):
    st.markdown(ctx.cached(legend.markdown))

st.subheader(f"{level.capitalize()} Recall@{k} per op")
st.altair_chart(logic.op_heatmap(found.per_op, k, level, names))
widgets.show_table(logic.per_op_wide(found.per_op, k, level, names), key="pt_per_op")

st.subheader("Which op caused each miss")
st.caption("Every instance-level miss whose chain has two or more ops is replayed with each op left out in turn; the "
           "op whose removal restores the hit is charged (shared when several do). Shares of each method's misses.")
widgets.show_table(ctx.cached(logic.attribution_wide), key="pt_attribution", fmt="%.3f")

st.subheader(f"{level.capitalize()} Recall@{k} by chain length")
st.altair_chart(logic.chain_length_chart(found.by_length, k, level, names), width="stretch")
widgets.show_table(logic.chain_length_wide(found.by_length, k, level, names), key="pt_by_length")
