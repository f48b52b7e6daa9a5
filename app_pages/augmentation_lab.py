"""Augmentation lab: modify an original by hand and see where each method ranks it."""

import streamlit as st

from malle import dashboard as dash
from malle.augment import OPS, chain_from_json, describe_chain

BROWSE_PER_PAGE = 12
DEFAULT_OPS = ["watermark", "rotate", "jpeg"]  # the watermark makes the first view visibly modified

ctx = dash.context()
exp, labels = ctx.experiment, ctx.labels
names = dash.original_labels(exp.originals)
files = list(names)

st.title("Augmentation lab")
st.caption("Pick an original, pick ops in the order they should apply, tune their parameters, and see where "
           "each method ranks the true original among all originals.")

with st.expander("Browse originals"):
    pages = dash.n_pages(len(files), BROWSE_PER_PAGE)
    page = st.pagination(pages, key="lab_browse_page") if pages > 1 else 1
    shown = files[(page - 1) * BROWSE_PER_PAGE: page * BROWSE_PER_PAGE]
    for col, file in zip(st.columns(6) * 2, shown):
        col.image(dash.thumbnail(exp.originals_dir / file), caption=names[file], width=dash.THUMB_PX)
        col.button("Use", key=f"lab_pick_{file}", on_click=dash.set_state, args=("lab_original", file))

if st.session_state.get("lab_original") not in names:
    st.session_state["lab_original"] = files[0]
original = st.selectbox("Original", files, format_func=names.get, key="lab_original")
ops = st.multiselect("Ops, in order of application", list(OPS), default=DEFAULT_OPS, format_func=dash.op_title,
                     key="lab_ops", help="The order in which you select ops is the order they are applied.")

for i, op in enumerate(ops, start=1):
    st.markdown(f"**{i}. {dash.op_title(op)}**")
    for col, spec in zip(st.columns(max(len(OPS[op].params), 1)), OPS[op].params):
        dash.param_widget(col, op, spec)
row = exp.originals.set_index("file").loc[original]
st.button("Roll random parameters", key="lab_roll", on_click=dash.roll_into_state,
          args=(ops, (int(row["width"]), int(row["height"]))), disabled=not ops)

chain_json = dash.chain_json(ops, dash.params_from_state(ops))
modified, rankings = ctx.cached(dash.lab_rankings, original, chain_json)

left, right = st.columns(2)
left.image(str(exp.originals_dir / original), caption=f"Original: {names[original]}")
right.image(modified, caption="Modified")
chain = chain_from_json(chain_json)
st.markdown("**Applied chain**")
st.code(describe_chain(chain), language=None)
st.download_button("Download the modified image (JPEG)", modified, key="lab_download", mime="image/jpeg",
                   file_name=f"{original.rsplit('.', 1)[0]}_{'_'.join(ops) or 'unchanged'}.jpg")

st.subheader("Where each method ranks the true original")
for ranking in rankings:
    score_name, _ = ctx.score_info(ranking.method)
    rank = f"#{ranking.rank}" if ranking.rank else "not found"
    st.markdown(f"**{labels[ranking.method]}**: true original ranks **{rank}** of {len(files)}")
    dash.thumbnail_grid(dash.ranking_thumbs(exp, ranking, score_name), columns=5)
