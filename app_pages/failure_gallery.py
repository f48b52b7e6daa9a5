"""Failure gallery: queries whose true original is not the top-1 hit."""

import streamlit as st

from malle.dashboard import failure_gallery as failures
from malle.dashboard import widgets
from malle.dashboard.overview import readiness_words
from malle.dashboard.shared import THUMB_PX, Thumb, n_pages, op_title, page_rows
from malle.ops import OPS
from malle.report.palette import short_names

PER_PAGE = 10

ctx = widgets.context()
exp, methods = ctx.experiment, ctx.methods
names = short_names(methods)
preset = exp.config.augment.preset or "reference"

st.title("Failure gallery")
st.caption("Queries whose true original is not the nearest neighbour (instance level), worst rank first.")

left, right = st.columns(2)
method = left.selectbox("Method", methods, index=methods.index(ctx.cached(failures.default_method)),
                        format_func=names.get, key="fail_method")
ops = right.multiselect("Only chains containing all of", list(OPS), format_func=op_title, key="fail_ops")

failed = ctx.cached(failures.failures, method, tuple(ops))
total = int((ctx.results.per_query["method"] == method).sum())
st.markdown(f"**{len(failed)}** failures among {total} queries for {names[method]} ({preset} preset).")
if failed.empty:
    st.success(f"{names[method]} ranks every true original first here" + (" in chains with these ops." if ops else "."),
               icon=":material/check_circle:")
    if ops:
        st.button("Clear the op filter", key="fail_clear_ops", on_click=widgets.set_state, args=("fail_ops", []),
                  icon=":material/filter_alt_off:")
    alternatives = widgets.failing_alternatives(method)
    if alternatives:
        st.markdown("These do fail:")
    for i, alt in enumerate(alternatives[:4]):
        st.button(failures.alternative_text(alt.preset, alt.method, alt.failures, alt.queries, preset),
                  key=f"fail_alt_{i}", on_click=widgets.switch_to, args=(alt, "fail_method"),
                  icon=":material/arrow_forward:")
    if not any(alt.preset != preset for alt in alternatives):
        other = next(p for p in ("hard", "reference") if p != preset)
        st.caption(f"The {other} preset: {readiness_words(widgets.preset_progress(other))}.")
        st.button(f"Switch to the {other} preset", key="fail_to_other", on_click=widgets.set_state,
                  args=("preset", other), icon=":material/swap_horiz:")
    st.stop()

other_presets = [alt for alt in widgets.failing_alternatives(method) if alt.preset != preset]
elsewhere = next((alt for alt in other_presets if alt.method == method), other_presets[0] if other_presets else None)
if elsewhere is not None:  # the other preset's failures, one click away
    st.button(f"Also: {failures.alternative_text(elsewhere.preset, elsewhere.method, elsewhere.failures,
                                                 elsewhere.queries, preset)}",
              key="fail_elsewhere", on_click=widgets.switch_to, args=(elsewhere, "fail_method"),
              icon=":material/swap_horiz:")

pages = n_pages(len(failed), PER_PAGE)
if st.session_state.get("fail_page", 1) > pages:  # the filter shrank the gallery
    st.session_state["fail_page"] = 1
page = st.pagination(pages, key="fail_page") if pages > 1 else 1
st.caption(f"Page {page} of {pages}")

widgets.await_analysis("attribution", [method])
ids, scores = ctx.neighbours(method)
charged = ctx.cached(failures.charged_by_query, method)
for card in failures.failure_cards(exp, method, page_rows(failed, page, PER_PAGE), ids, scores, charged=charged):
    st.markdown(f"**{card.query}**: true original ranked **#{card.rank or 'beyond search depth'}**")
    st.caption(f"Chain: {card.chain}")
    if card.charged:
        st.caption(f"Charged with the miss: **{card.charged}** (leaving it out of the chain restores the hit)"
                   if card.charged != "the combination" else
                   "Charged with the miss: **the combination** (no single op's removal restores the hit)")
    query = Thumb(card.query_path, "query")
    source = Thumb(card.source_path, f"true original {card.source_path.name}", True)
    widgets.thumbnail_grid([query, source, *card.neighbours], columns=5)
    if card.box is not None:
        st.image(failures.boxed(card.query_path, card.box), width=THUMB_PX * 2,
                 caption="The query with the composite's pasted region outlined in red")
    st.divider()
