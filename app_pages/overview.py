"""Overview: the headline comparison, the published reference, the data and the costs."""

import streamlit as st

from malle.dashboard import detection, frame, legend, widgets
from malle.dashboard import overview as logic
from malle.dashboard.shared import LEVELS, recall_table
from malle.report.live import report_files
from malle.report.summary import K11_NOTE

ctx = widgets.context()
exp = ctx.experiment
recall = ctx.cached(recall_table, tuple(exp.config.ks))

st.title("Overview")
st.caption("Each modified copy is a query; its original is among the database of originals. "
           "Recall@K is the share of queries whose original (instance level) or any original of its class "
           "(class level) is among the K nearest neighbours.")

current = exp.config.augment.preset or "reference"
ready = widgets.ready_presets(ctx)
for preset in frame.PRESET_NAMES:
    here = ctx.results if preset == current else ready.get(preset)
    left, right = st.columns([5, 1], vertical_alignment="center")
    left.markdown(logic.preset_sentence(preset, here, waiting=logic.readiness_words(widgets.preset_progress(preset))))
    if preset != current:
        right.button(f"Switch to {preset}", key=f"overview_to_{preset}", on_click=widgets.set_state,
                     args=("preset", preset), icon=":material/swap_horiz:")

groups = ctx.cached(logic.headline_cards)
cards = [(group, i, card) for group in groups for i, card in enumerate(group.cards)]
for column, (group, i, card) in zip(st.columns(max(len(cards), 3)), cards):
    column.markdown(f"**{group.title}**" if i == 0 else "&nbsp;")  # the family heads its first card
    column.metric(card.name, f"R@1 {card.r1:.4f}", border=True, help=card.label, delta_color="off",
                  delta=f"R@10 {card.r10:.4f} · {card.images_per_s:,.0f} img/s", delta_arrow="off")
st.info(logic.reference_caption(ctx.methods))

st.subheader("Recall@K measured in this experiment")
tables = logic.headline_tables(recall)
for level in LEVELS:
    st.markdown(f"**{level.capitalize()} level**")
    widgets.show_table(tables[level], key=f"overview_recall_{level}")
if 11 in exp.config.ks:
    st.caption(K11_NOTE)
with st.expander("Methods: full labels (family, weights, engine, precision)"):
    st.markdown(ctx.cached(legend.markdown))

st.altair_chart(logic.recall_curve_chart(ctx.cached(recall_table, tuple(range(1, 21)))), width="stretch")

st.subheader("Published reference numbers (not measured here)")
st.caption("As published by the reference experiment: ResNet-50 and pHash on 200 ImageNet originals. "
           + logic.reference_caption(ctx.methods))
published = logic.published_tables()
for level in LEVELS:
    st.markdown(f"**{level.capitalize()} level (published)**")
    widgets.show_table(published[level], key=f"overview_published_{level}")
with st.expander("Measured here next to published"):
    widgets.show_table(logic.versus_published(recall, ctx.methods), key="overview_versus", hide_index=True)

st.subheader("Dataset and configuration")
skipped = logic.all_skipped(exp, ctx.upload_skipped)
# A static table: its long paths wrap instead of scrolling inside a grid.
st.table(logic.dataset_summary(exp, ctx.source, len(ctx.upload_skipped)).set_index("item"))
with st.expander(f"Skipped files ({len(skipped)})"):
    if skipped.empty:
        st.write("No file was skipped.")
    else:
        st.caption("Paths are relative to the dataset folder.")
        st.dataframe(skipped, hide_index=True, key="overview_skipped")

st.subheader("What each method is")
st.markdown(ctx.cached(legend.markdown, True))

st.subheader("Cost per method")
quality = ctx.cached(logic.quality_caption)
st.caption("Encoding throughput on this machine's CPU, exact search time per query, and how often the "
           "top-1 score is shared by another original (ties are broken by database id)"
           + (f"; {quality}." if quality else "."))
st.table(ctx.cached(logic.costs_table))  # static: long engine names wrap instead of being cut
if ctx.results.has_tricks:
    st.subheader("Matching tricks")
    st.caption("Each method with tricks against the same method without them (the Detection page has more).")
    tricks, meanings = ctx.cached(detection.trick_table)
    st.dataframe(tricks, column_config=detection.column_config(tricks, meanings), key="overview_tricks",
                 hide_index=True)

st.subheader("Report for stakeholders")
st.caption("This experiment as one self-contained HTML file (charts and images inside, no network needed) and a "
           "PDF of it; `python -m malle report OUT` makes the same from a run's folder.")
if st.button("Download report", key="overview_report", icon=":material/description:"):
    with st.status("Building the report…", expanded=True) as box:
        bar = st.progress(0.0, text="starting…")
        st.session_state["overview_report_files"] = (ctx.key, report_files(
            ctx.results, lambda what, share: bar.progress(share, text=what)))
        box.update(label="Report ready", state="complete", expanded=False)
built = st.session_state.get("overview_report_files")
if built and built[0] == ctx.key:  # a report of another experiment is not offered for this one
    left, right = st.columns(2)
    left.download_button("HTML report", built[1].html, file_name="malle-report.html", mime="text/html",
                         key="overview_report_html", icon=":material/download:")
    right.download_button("PDF report", built[1].pdf, file_name="malle-report.pdf", mime="application/pdf",
                          key="overview_report_pdf", icon=":material/picture_as_pdf:")
