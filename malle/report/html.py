"""HTML pieces of the report: escaping, tables with checkable numbers, sections and the page around them.

Everything is inline (styles, charts as SVG, images as data URIs) so the file opens anywhere with no
network; the print styles give the PDF its page breaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

import pandas as pd

CSS = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #1d2733; margin: 0 auto;
       max-width: 1100px; padding: 24px 32px; line-height: 1.45; font-size: 14px; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { font-size: 20px; border-bottom: 2px solid #d0d7de; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
p.lead { font-size: 16px; }
p.note, p.absent { color: #57606a; }
p.absent { font-style: italic; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 12.5px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.neg { color: #a40e26; }
.chart svg { max-width: 100%; height: auto; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; width: 500px; font-size: 12px; }
.card .imgs { display: flex; gap: 6px; }
.card figure { margin: 0; width: 160px; text-align: center; }
.card img { max-width: 160px; max-height: 160px; }
.card figcaption { font-size: 11px; color: #57606a; word-break: break-all; }
code, pre { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
pre { background: #f6f8fa; padding: 8px; white-space: pre-wrap; word-break: break-all; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  section.newpage { break-before: page; }
  h2, h3 { break-after: avoid; }
  table, figure, .card, .chart { break-inside: avoid; }
  .gallery { gap: 6px; }
  .card { width: calc(50% - 22px); }  /* two cards a row on A4 */
  .card figure { width: 32%; }
  .card img { max-width: 100%; }
}
"""


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, whether it is a number (right-aligned), and data attributes for checks."""

    text: str
    numeric: bool = False
    attrs: Mapping[str, str] = field(default_factory=dict)
    negative: bool = False

    def html(self) -> str:
        classes = " ".join(c for c, on in (("num", self.numeric), ("neg", self.negative)) if on)
        attrs = "".join(f' data-{k}="{escape(str(v))}"' for k, v in self.attrs.items())
        return f"<td{f' class={chr(34)}{classes}{chr(34)}' if classes else ''}{attrs}>{escape(self.text)}</td>"


def number(value: float | None, digits: int = 4, attrs: Mapping[str, str] | None = None) -> Cell:
    if value is None or pd.isna(value):
        return Cell("–", numeric=True)
    return Cell(f"{value:.{digits}f}", numeric=True, attrs=attrs or {}, negative=value < 0)


def text(value) -> Cell:
    return Cell("–" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[Cell | str]], caption: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join((c if isinstance(c, Cell) else text(c)).html() for c in row) + "</tr>"
                   for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def frame_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A plain table of a DataFrame: floats with ``digits`` decimals, everything else as text."""
    rows = [[number(v, digits) if isinstance(v, float) else text(v) for v in row]
            for row in frame.itertuples(index=False)]
    return table([str(c) for c in frame.columns], rows)


def paragraph(words: str, kind: str = "") -> str:
    return f"<p{f' class={chr(34)}{kind}{chr(34)}' if kind else ''}>{escape(words)}</p>"


def absent(words: str) -> str:
    """The one line a section leaves when the run has nothing for it."""
    return paragraph(words, "absent")


def chart(svg: str, alt: str) -> str:
    return f'<figure class="chart" role="img" aria-label="{escape(alt)}">{svg}</figure>'


@dataclass(frozen=True)
class Section:
    key: str  # the element id, also what tests look for
    title: str
    body: str
    new_page: bool = False  # in the PDF, start on a fresh page

    def html(self) -> str:
        cls = ' class="newpage"' if self.new_page else ""
        return f'<section id="{self.key}"{cls}><h2>{escape(self.title)}</h2>{self.body}</section>'


@dataclass(frozen=True)
class Omitted:
    """A section the run has nothing for: one line in its place, no heading."""

    key: str
    why: str

    def html(self) -> str:
        return f'<p class="absent" id="{self.key}-omitted">{escape(self.why)}</p>'


def page(title: str, subtitle: str, sections: Sequence[Section | Omitted]) -> str:
    # A Content-Security-Policy that forbids every fetch: a stray external reference fails closed.
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{escape(title)}</h1>{paragraph(subtitle, 'note')}</header>"
            + "".join(s.html() for s in sections) + "</body></html>\n")
