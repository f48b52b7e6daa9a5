"""A contact sheet of dedup groups: one self-contained HTML file, thumbnails inlined as data URIs."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd
from PIL import Image

from malle.errors import BadImage
from malle.io.images import encode_jpeg, load_rgb

THUMB_PX = 160
MAX_GROUPS = 500  # a sheet of more would be too heavy to open; groups.csv has them all

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
section { border-top: 1px solid #ccc; padding: .8rem 0; }
.row { display: flex; flex-wrap: wrap; gap: .8rem; }
figure { margin: 0; width: 170px; font-size: .78rem; word-break: break-all; }
figure img { max-width: 160px; max-height: 160px; display: block; border: 1px solid #ddd; }
figure.centre img { border: 3px solid #2a6; }
"""


def thumbnail_uri(path: Path) -> str:
    try:
        img = load_rgb(path)
    except BadImage:
        return ""
    img.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(img, 80)).decode()


def figure(root: Path, row, centre: bool, score_name: str) -> str:
    uri = thumbnail_uri(root / row.path)
    image = f'<img src="{uri}" alt="">' if uri else "<p>(unreadable)</p>"
    caption = "centre" if centre else f"{score_name}: {row.score:g}"
    return (f'<figure class="{"centre" if centre else "member"}">{image}'
            f"<figcaption>{html.escape(str(row.path))}<br>{html.escape(caption)}</figcaption></figure>")


def write(path: Path, root: Path, groups: pd.DataFrame, title: str, score_name: str) -> None:
    """The sheet for ``groups`` (group, path, score; centre first), images read from ``root``."""
    from malle.io.cache import write_bytes

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    numbers = list(dict.fromkeys(groups["group"]))
    if len(numbers) > MAX_GROUPS:
        parts.append(f"<p>The first {MAX_GROUPS} of {len(numbers)} groups; groups.csv lists them all.</p>")
    for number in numbers[:MAX_GROUPS]:
        members = groups[groups["group"] == number]
        figures = "".join(figure(root, row, i == 0, score_name) for i, row in enumerate(members.itertuples()))
        parts.append(f"<section><h2>Group {number} ({len(members)} images)</h2><div class='row'>{figures}</div>"
                     "</section>")
    if not numbers:
        parts.append("<p>No copies found at this threshold.</p>")
    parts.append("</body></html>")
    write_bytes(path, "".join(parts).encode())
