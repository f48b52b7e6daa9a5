"""Bank: match an uploaded image against a collection of a bank, and browse its items."""

import sys

import streamlit as st

from malle.dashboard import bank as logic
from malle.dashboard import frame
from malle.errors import BadImage, MalleError

st.title("Bank")
roots = frame.allowed_roots(frame.parse_app_args(sys.argv[1:]))
folder_text = st.text_input("Bank folder", value=logic.default_bank(), key="bank_folder",
                            help=f"A folder made by `malle bank create`, inside: {', '.join(map(str, roots))}")
try:
    bank = logic.open_bank(logic.bank_folder(folder_text, roots))
    table = logic.collections_table(bank)
except MalleError as err:
    st.info(str(err))
    st.stop()
if table.empty:
    st.info("This bank has no collection yet: `malle bank create BANK NAME --method M`.")
    st.stop()
st.dataframe(table, hide_index=True)
name = st.selectbox("Collection", table["collection"].tolist(), key="bank_collection")

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
        matches_col.markdown(f"**{found} match(es)** at threshold {result.threshold:g}")
        for col, card in zip(matches_col.columns(min(len(cards), 5) or 1), cards[:5]):
            if card.thumbnail:
                col.image(card.thumbnail, width=160)
            col.caption(f"#{card.item_id} {card.filename}\n\n{card.caption}")
        if len(cards) > 5:
            matches_col.dataframe([{"id": c.item_id, "file": c.filename, "verdict": c.caption} for c in cards[5:]],
                                  hide_index=True)
with browse_tab:
    count = int(table.loc[table["collection"] == name, "items"].iloc[0])
    page = st.number_input("Page", min_value=1, max_value=logic.n_pages(count), value=1, key="bank_page")
    cards = logic.item_cards(bank, name, int(page))
    for start in range(0, len(cards), 6):
        for col, card in zip(st.columns(6), cards[start:start + 6]):
            if card.thumbnail:
                col.image(card.thumbnail, width=140)
            col.caption(card.caption)
