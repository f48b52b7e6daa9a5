"""Augmentation lab: modify an original by hand and see where each method ranks it."""

import streamlit as st

from malle.dashboard import augmentation_lab as lab
from malle.dashboard import widgets
from malle.dashboard.shared import THUMB_PX, n_pages, op_title, original_labels, ranking_thumbs
from malle.ops import OPS, chain_from_json, describe_chain
from malle.report.palette import short_names

BROWSE_PER_PAGE = 12

ctx = widgets.context()
exp = ctx.experiment
labels = short_names(ctx.methods)
names = original_labels(exp.originals)
files = list(names)

st.title("Augmentation lab")
st.caption("Pick an original, pick ops in the order they should apply, tune their parameters, and see where "
           "each method ranks the true original among all originals.")

with st.expander("Browse originals"):
    pages = n_pages(len(files), BROWSE_PER_PAGE)
    page = st.pagination(pages, key="lab_browse_page") if pages > 1 else 1
    shown = files[(page - 1) * BROWSE_PER_PAGE: page * BROWSE_PER_PAGE]
    for col, file in zip(st.columns(6) * 2, shown):
        col.image(widgets.thumbnail(exp.originals_dir / file), caption=names[file], width=THUMB_PX)
        col.button("Use", key=f"lab_pick_{file}", on_click=widgets.set_state, args=("lab_original", file))

if st.session_state.get("lab_original") not in names:
    st.session_state["lab_original"] = files[0]
original = st.selectbox("Original", files, format_func=names.get, key="lab_original")
ops = st.multiselect("Ops, in order of application", list(OPS), default=list(lab.DEFAULT_OPS), format_func=op_title,
                     key="lab_ops", help="The order in which you select ops is the order they are applied.")

for i, op in enumerate(ops, start=1):
    st.markdown(f"**{i}. {op_title(op)}**")
    for col, spec in zip(st.columns(max(len(OPS[op].params), 1)), OPS[op].params):
        widgets.param_widget(col, op, spec)
row = exp.originals.set_index("file").loc[original]
st.button("Roll random parameters", key="lab_roll", on_click=widgets.roll_into_state,
          args=(ops, (int(row["width"]), int(row["height"]))), disabled=not ops)

chain_json = lab.chain_json(ops, widgets.params_from_state(ops))
modified, rankings = ctx.cached(lab.lab_rankings, original, chain_json)

left, right = st.columns(2)
left.image(str(exp.originals_dir / original), caption=f"Original: {names[original]}")
right.image(modified, caption="Modified")
st.markdown("**Applied chain**")
st.code(describe_chain(chain_from_json(chain_json)), language=None)
st.download_button("Download the modified image (JPEG)", modified, key="lab_download", mime="image/jpeg",
                   file_name=f"{original.rsplit('.', 1)[0]}_{'_'.join(ops) or 'unchanged'}.jpg")

st.subheader("Where each method ranks the true original")
for ranking in rankings:
    rank = f"#{ranking.rank}" if ranking.rank else "not found"
    st.markdown(f"**{labels[ranking.method]}**: true original ranks **{rank}** of {len(files)}")
    widgets.thumbnail_grid(ranking_thumbs(exp, ranking), columns=5)
