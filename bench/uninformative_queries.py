"""Default bank thresholds against queries that carry no content (issue 25, item 5).

    python bench/uninformative_queries.py [--data ../shared/datasets/imagenet-200x5/val] [--per-kind 24]
                                          [--methods sscd_distilled,sscd,...] [--bank DIR]

What runs, plainly: one bank collection per method with a default threshold (``malle.bank.thresholds.DEFAULTS``)
that runs here, made as the service makes them (fp32), holding the real photos of ``--data`` (the 1,000 ImageNet
photos when ``../shared`` is here, else the demo photos that ``malle.data`` finds in ai-benchmark) except every
tenth, which is kept out for the query kinds made from photos. Each query goes in as file bytes through
``Bank.match_bytes``, top match only:

* solid colours: ``SOLID`` (black, white, greys, saturated colours), 512 x 512, as PNG and as JPEG;
* ``--per-kind`` of every kind of ``malle.data.hard_negatives`` (near-uniform, gradient, text, screenshot,
  pattern and texture from their own seeded generators; tiny, blurred and montage from the kept-out photos), as
  the lab stores them (JPEG).

For each method and kind: the highest top-1 score; how many top-1 matches pass the default threshold and the
no-false-match threshold by the score alone (``allow_low_quality``); how many the quality gate
(``malle.bank.quality``) calls low; and how many are still matches with the gate, as the service answers. Then,
per method, the first threshold that none of the kinds the defaults must refuse (``MUST_REFUSE``) passes.
The bank folder is kept (``--bank``, default under Malle's cache), so a second run encodes only the queries.
Writes bench/results/uninformative_queries.md with the CPU and the load average.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)
from reproduce import DEFAULT_DATA, markdown  # noqa: E402

from malle.bank import Bank, is_close_enough  # noqa: E402
from malle.bank.bank import check_runs  # noqa: E402
from malle.bank.thresholds import DEFAULTS  # noqa: E402
from malle.data.hard_negatives import KINDS, Photos  # noqa: E402
from malle.data.sampling import Candidate, demo_root, discover  # noqa: E402
from malle.errors import WeightsUnavailable  # noqa: E402
from malle.io import cache  # noqa: E402
from malle.io.images import encode_jpeg  # noqa: E402
from malle.ops import COPY_JPEG_QUALITY  # noqa: E402
from malle.retrieval.metrics import METRICS  # noqa: E402

SEED = 25  # the number: these queries have their own seed, apart from any lab run's
SIDE = 512
SOLID = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "dark grey": (40, 40, 40),
         "light grey": (215, 215, 215), "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
         "yellow": (255, 255, 0), "cyan": (0, 255, 255), "magenta": (255, 0, 255), "orange": (255, 128, 0)}
# The kinds no default threshold may take for a copy (issue 25's done-when): solid colours, near-uniform images and
# text-only images (rendered text and text-heavy screenshots).
MUST_REFUSE = ("solid colour (PNG)", "solid colour (JPEG)", "uniform", "text", "screenshot")


@dataclass(frozen=True)
class Query:
    kind: str
    name: str
    data: bytes  # the file's bytes, as an upload would bring them


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def solid_queries() -> list[Query]:
    out = []
    for name, colour in SOLID.items():
        img = Image.new("RGB", (SIDE, SIDE), colour)
        out += [Query("solid colour (PNG)", name, png(img)),
                Query("solid colour (JPEG)", name, encode_jpeg(img, COPY_JPEG_QUALITY))]
    return out


def negative_queries(per_kind: int, kept_out: list[Candidate]) -> list[Query]:
    """``per_kind`` of each hard-negative kind, each from its own generator; photo kinds from ``kept_out``."""
    out = []
    for number, kind in enumerate(KINDS):
        for i in range(per_kind):
            photos = Photos(kept_out, np.random.default_rng([SEED, number, i]))
            img = kind.make(photos.rng, photos)
            out.append(Query(kind.name, f"{kind.name}-{i}", encode_jpeg(img, COPY_JPEG_QUALITY)))
    return out


def photos_of(data: Path) -> tuple[list[Candidate], str]:
    """The real photos (sorted) and what they are."""
    root, what = (data, f"{data.name} (../shared)") if data.is_dir() else (demo_root(), "the demo photos")
    found, _ = discover(root)
    return sorted(found, key=lambda c: str(c.path)), what


def filled(bank: Bank, method: str, photos: list[Candidate]):
    """The method's collection, with every photo in it (a second run finds them there and encodes none)."""
    if method not in {c.name for c in bank.collections()}:
        bank.create_collection(method, method)
    bank.add_files(method, [c.path for c in photos])
    return bank.collection(method)


def measure(bank: Bank, method: str, queries: list[Query]) -> list[dict]:
    """Per query: its top-1 score, whether it passes each threshold by score alone, the gate's verdict."""
    coll = bank.collection(method, count=False)
    metric, default = METRICS[coll.metric], DEFAULTS[method]
    rows = []
    for query in queries:
        result = bank.match_bytes(method, query.data, k=1, allow_low_quality=True)
        score = result.matches[0].score
        passes = [bool(is_close_enough(metric, np.asarray([score]), t)[0])
                  for t in (default.threshold, default.no_false_match)]
        rows.append({"method": method, "kind": query.kind, "name": query.name, "score": score,
                     "default": passes[0], "no false match": passes[1], "low": result.quality == "low"})
    return rows


def first_refusing(binary: bool, scores: list[float]) -> float:
    """The first threshold, in the method's unit, that none of ``scores`` passes."""
    if binary:
        return min(scores) - 1
    return round(np.floor(max(scores) * 1e6) / 1e6 + 1e-6, 6)


def summary(rows: list[dict], methods: dict) -> tuple[list[str], list[str]]:
    """(per kind table, per method table) as markdown lines."""
    table = pd.DataFrame(rows)
    per_kind = []
    for (method, kind), group in table.groupby(["method", "kind"], sort=False):
        binary = methods[method]
        best = group["score"].min() if binary else group["score"].max()
        per_kind.append({"method": method, "default": DEFAULTS[method].threshold, "kind": kind, "n": len(group),
                         "closest top-1": f"{best:g}" if binary else f"{best:.4f}",
                         "pass the default": int(group["default"].sum()),
                         "pass no-false-match": int(group["no false match"].sum()),
                         "gate calls low": int(group["low"].sum()),
                         "matches with the gate": int((group["default"] & ~group["low"]).sum())})
    per_method = []
    for method, group in table.groupby("method", sort=False):
        refused = group[group["kind"].isin(MUST_REFUSE)]
        first = first_refusing(methods[method], list(refused["score"]))
        default = DEFAULTS[method].threshold
        holds = first <= default if not methods[method] else first >= default
        per_method.append({"method": method, "default": default, "first threshold refusing them all": first,
                           "the default refuses them all": "yes" if holds else "no",
                           "they pass the default": int(refused["default"].sum()), "of": len(refused)})
    return markdown(pd.DataFrame(per_kind)).splitlines(), markdown(pd.DataFrame(per_method)).splitlines()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-kind", type=int, default=24)
    parser.add_argument("--methods", default=",".join(DEFAULTS))
    parser.add_argument("--bank", type=Path, default=None, help="bank folder to keep (default: in Malle's cache)")
    args = parser.parse_args(argv)
    photos, what = photos_of(args.data)
    kept_out, banked = photos[::10], [p for i, p in enumerate(photos) if i % 10]
    folder = args.bank or cache.default_root() / "bench" / f"uninformative-{cache.fingerprint(what)[:12]}"
    queries = solid_queries() + negative_queries(args.per_kind, kept_out)
    bank = Bank.open(folder, log=print)
    rows, methods, skipped = [], {}, []
    try:
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            try:
                check_runs(method)
            except WeightsUnavailable as err:
                skipped.append(f"{method}: {err}")
                continue
            coll = filled(bank, method, banked)
            methods[method] = METRICS[coll.metric].binary
            rows += measure(bank, method, queries)
            print(f"{method}: {len(queries)} queries against {coll.count} photos", flush=True)
    finally:
        bank.close()
    per_kind, per_method = summary(rows, methods)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = ["# Default thresholds against queries that carry no content (bench/uninformative_queries.py)", "",
             f"Machine: {machine()}; load average {load} when the report was written", "",
             f"Bank: one collection per method (fp32, the default threshold), holding {len(banked):,} real photos of "
             f"{what} (every tenth of {len(photos):,} kept out for the tiny, blurred and montage queries). Queries: "
             f"{len(SOLID)} solid colours 512 x 512 as PNG and as JPEG, and {args.per_kind} of each hard-negative "
             f"kind (seed {SEED}). Scores are each method's unit (cosine; Hamming bits, closest is fewest). \"Pass\": "
             "the top match is at least as close as the threshold, by the score alone; \"matches with the gate\": "
             "what the service answers, a low-quality query's matches losing is_match.", "",
             *per_kind, "", f"**The kinds no default may take for a copy** ({', '.join(MUST_REFUSE)}): the first "
             "threshold none of them passes, against each default", "", *per_method]
    if skipped:
        lines += ["", "Methods that cannot run here: " + "; ".join(skipped)]
    publish(lines, ROOT / "bench" / "results" / "uninformative_queries.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
