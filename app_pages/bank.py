"""Bank: match an uploaded image against a collection of a bank, and browse its items."""

import sys

import streamlit as st

from malle.dashboard import bank as logic
from malle.dashboard import frame
from malle.errors import BadImage, MalleError

st.title("Bank")
roots = frame.allowed_roots(frame.parse_app_args(sys.argv[1:]))
folder_text = st.text_input("Bank folder", value=logic.default_bank(), key="bank_folder",
                            help=f"A folder made by `malle bank create`, inside: {', '.join(map(str, roots))} "
                                 f"(${frame.ENV_ALLOWED_ROOTS} or `-- --allowed-root PATH` allow more)")
try:
    bank = logic.open_bank(logic.bank_folder(folder_text, roots))
    table = logic.collections_table(bank)
except MalleError as err:
    st.info(str(err), icon=":material/info:")
    st.stop()
if table.empty:
    st.info("This bank has no collection yet: `malle bank create BANK NAME --method M`.")
    st.stop()
st.dataframe(table, hide_index=True, key="bank_collections")
name = st.selectbox("Collection", table["collection"].tolist(), key="bank_collection")
st.caption(logic.collection_details(bank, name))

match_tab, browse_tab = st.tabs(["Match an image", "Browse items"])
with match_tab:
    upload = st.file_uploader("Query image", type=list(frame.UPLOAD_TYPES), key="bank_upload")
    k = st.slider("Matches", min_value=1, max_value=20, value=5, key="bank_k")
    if upload is not None:
        try:
            frame.check_upload(upload.name, upload.getvalue())
            with st.spinner("Matching…"):
                result, cards = logic.match_cards(bank, name, upload.getvalue(), k)
        except BadImage as err:
            st.error(f"Cannot use {upload.name}: {err}")
            st.stop()
        query_col, matches_col = st.columns([1, 3])
        query_col.image(upload.getvalue(), caption=f"Query: {upload.name}", width=192)
        found = sum(card.is_match for card in cards)
        rule = table.loc[table["collection"] == name, "copy when"].iloc[0]
        if found:
            matches_col.markdown(f":material/content_copy: **copy**: {found} item(s) at the collection's "
                                 f"threshold ({rule})")
        else:
            matches_col.markdown(f":material/block: **no copy** at the collection's threshold ({rule})")
        if result.quality == "low":
            matches_col.warning(f"Low-quality query: {result.quality_reason}", icon=":material/warning:")
        for col, card in zip(matches_col.columns(min(len(cards), 5) or 1), cards[:5]):
            if card.thumbnail:
                col.image(card.thumbnail, width=160)
            elif not card.has_thumbnail:
                col.caption(logic.NO_THUMBNAIL)
            col.caption(f"#{card.item_id} {card.filename}\n\n{card.caption}")
        if len(cards) > 5:
            matches_col.dataframe([{"id": c.item_id, "file": c.filename, "verdict": c.caption} for c in cards[5:]],
                                  hide_index=True)
with browse_tab:
    count = int(table.loc[table["collection"] == name, "items"].iloc[0])
    page = st.number_input("Page", min_value=1, max_value=logic.n_pages(count), value=1, key="bank_page")
    cards = logic.item_cards(bank, name, int(page))
    if any(not card.has_thumbnail for card in cards):
        st.caption("Items imported from a hash list (or an embeddings folder) are codes without their image, so "
                   "they have no thumbnail.")
    for start in range(0, len(cards), 6):
        for col, card in zip(st.columns(6), cards[start:start + 6]):
            if card.thumbnail:
                col.image(card.thumbnail, width=140)
            elif not card.has_thumbnail:
                col.markdown(":material/tag: *hash only*")
            col.caption(card.caption)
