"""Search: any image against the index of originals, with every method."""

import streamlit as st

from malle import dashboard as dash
from malle.imageio import BadImage

UPLOAD, COPY = "Upload an image", "A copy from the experiment"

ctx = dash.context()
exp, labels = ctx.experiment, ctx.labels

st.title("Search")
origin = st.radio("Image to search", (UPLOAD, COPY), horizontal=True, key="search_origin")
if origin == UPLOAD:
    upload = st.file_uploader("Image file", type=list(dash.UPLOAD_TYPES), key="search_upload",
                              help=f"Up to {dash.MAX_UPLOAD_MB} MB.")
    if upload is None:
        st.info("Upload an image to search the originals for it.")
        st.stop()
    data, source, title = upload.getvalue(), None, upload.name
    try:
        dash.check_upload(upload.name, data)
    except BadImage as err:
        st.error(f"Cannot use {upload.name}: {err}")
        st.stop()
else:
    copies = exp.manifest["file"].tolist()
    title = st.selectbox("Modified copy", copies, key="search_copy")
    data = (exp.copies_dir / title).read_bytes()
    source = exp.manifest.set_index("file").loc[title, "source"]

k = st.slider("Top K", min_value=1, max_value=20, value=5, key="search_k")
st.image(dash.preview_jpeg(data), caption=f"Query: {title}")
if source:
    st.caption(f"Its true original is {source}.")

for ranking in ctx.cached(dash.search_rankings, data, source, k):
    score_name, _ = ctx.score_info(ranking.method)
    found = f"; true original ranks #{ranking.rank}" if source and ranking.rank else ""
    st.markdown(f"**{labels[ranking.method]}**: top {k} by {score_name}{found}")
    dash.thumbnail_grid(dash.ranking_thumbs(exp, ranking, score_name), columns=5)
