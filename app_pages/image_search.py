"""Search: any image against the index of originals, with every method."""

import streamlit as st

from malle.dashboard import frame, legend, widgets
from malle.dashboard import image_search as logic
from malle.dashboard.shared import preview_jpeg, ranking_thumbs
from malle.errors import BadImage
from malle.io.naming import safe_file_name
from malle.report.palette import short_names

UPLOAD, COPY = "Upload an image", "A copy from the experiment"

ctx = widgets.context()
exp = ctx.experiment
names = short_names(ctx.methods)

st.title("Search")
origin = st.radio("Image to search", (UPLOAD, COPY), horizontal=True, key="search_origin")
if origin == UPLOAD:
    upload = st.file_uploader("Image file", type=list(frame.UPLOAD_TYPES), key="search_upload",
                              help=f"Up to {frame.MAX_UPLOAD_MB} MB.")
    if upload is None:
        st.info("Upload an image to search the originals for it.")
        st.stop()
    data, source, title = upload.getvalue(), None, safe_file_name(upload.name, set())
    try:
        frame.check_upload(upload.name, data)
    except BadImage as err:
        st.error(f"Cannot use {title}: {err}")
        st.stop()
else:
    title = st.selectbox("Modified copy", exp.manifest["file"].tolist(), key="search_copy")
    data = (exp.copies_dir / title).read_bytes()
    source = logic.copy_source(ctx.results, title)

k = st.slider("Top K", min_value=1, max_value=20, value=5, key="search_k")
st.image(preview_jpeg(data), caption=f"Query: {title}")
if source:
    st.caption(f"Its true original is {source}.")

for ranking in ctx.cached(logic.search_rankings, data, source, k):
    found = f"; true original ranks #{ranking.rank}" if source and ranking.rank else ""
    st.markdown(f"**{names[ranking.method]}**: {logic.search_verdict(ctx.results, ranking)}")
    st.caption(f"Top {k} by {ctx.metric(ranking.method).score_name}{found}")
    widgets.thumbnail_grid(ranking_thumbs(exp, ranking), columns=5)
with st.expander("Methods: full labels (family, weights, engine, precision)"):
    st.markdown(ctx.cached(legend.markdown))
