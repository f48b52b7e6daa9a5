"""The quality gate (malle.bank.quality) measured: what it stops, and what it costs on real photos.

    python bench/serve_quality.py [--data /work/shared/datasets/imagenet-200x5/val] [--methods sscd_distilled,pdq,phash]

What runs, plainly: the real photos of ``--data`` (sorted by path) split in two halves. The first half fills one
default collection per method (the calibrated threshold, as ``POST /v1/collections`` gives it). Queried against
it, each through ``Bank.match_images`` with the top match only:

* the second half: real photos with no copy in the collection, so any match is a false match; and the share
  the gate calls low (its cost: those queries would lose a true match if they had one);
* 100 uninformative images (seeded): 25 solid colours, 25 near-uniform (a colour plus Gaussian noise of
  sigma 2, JPEG), 25 smooth two-colour gradients, 25 tiny (a photo of the second half shrunk to 16 x 16).

Reported per method and query kind: the false-match rate without the gate (``allow_low_quality``) and with it
(the default), and the share called low. Writes bench/results/serve_quality.md.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)

from malle.bank import Bank  # noqa: E402
from malle.bank.quality import MIN_EDGE, MIN_SIDE, MIN_STD  # noqa: E402
from malle.data.sampling import discover  # noqa: E402
from malle.io.images import load_rgb  # noqa: E402

KINDS = ("solid colour", "near-uniform", "gradient", "tiny (16 px)")
PER_KIND = 25


def jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return load_rgb(buf.getvalue())


def uninformative(rng: np.random.Generator, photos: list[Path]) -> dict[str, list[Image.Image]]:
    out = {kind: [] for kind in KINDS}
    for i in range(PER_KIND):
        colour, other = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        out["solid colour"].append(jpeg(Image.new("RGB", (512, 512), tuple(int(c) for c in colour))))
        noisy = np.clip(colour + rng.normal(0, 2, (512, 512, 3)), 0, 255).astype(np.uint8)
        out["near-uniform"].append(jpeg(Image.fromarray(noisy)))
        t = np.linspace(0, 1, 512)[:, None, None] if i % 2 else np.linspace(0, 1, 512)[None, :, None]
        ramp = (colour * (1 - t) + other * t) * np.ones((512, 512, 1))
        out["gradient"].append(jpeg(Image.fromarray(ramp.astype(np.uint8))))
        out["tiny (16 px)"].append(jpeg(load_rgb(photos[i]).resize((16, 16), Image.Resampling.LANCZOS)))
    return out


def rates(bank: Bank, name: str, images: list[Image.Image]) -> tuple[float, float, float]:
    """(false-match rate without the gate, with it, share called low) of top-1 matches."""
    results = []
    for start in range(0, len(images), 32):
        results += bank.match_images(name, images[start:start + 32], k=1, allow_low_quality=True)
    raw = np.array([bool(r.matches) and r.matches[0].is_match for r in results])
    low = np.array([r.quality == "low" for r in results])
    return raw.mean(), (raw & ~low).mean(), low.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/imagenet-200x5/val"))
    parser.add_argument("--methods", default="sscd_distilled,pdq,phash")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_quality.md")
    args = parser.parse_args()
    found, _ = discover(args.data)
    paths = sorted(c.path for c in found)
    half = len(paths) // 2
    reference, queries = paths[:half], paths[half:]
    rng = np.random.default_rng(0)
    blanks = uninformative(rng, queries)
    real = [load_rgb(p) for p in queries]
    work = Path(tempfile.mkdtemp(prefix="malle-quality-"))
    rows = []
    try:
        bank = Bank.open(work / "bank")
        for method in args.methods.split(","):
            coll = bank.create_collection(method, method)
            bank.add_files(method, reference)
            rows.append((method, coll.threshold, "real photos, no copy in the bank", len(real),
                         *rates(bank, method, real)))
            for kind, images in blanks.items():
                rows.append((method, coll.threshold, kind, len(images), *rates(bank, method, images)))
                print(rows[-1], flush=True)
        bank.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish(report(rows, args, len(reference)), args.out)


def report(rows, args, n_reference: int) -> list[str]:
    lines = ["# The quality gate on queries that carry no content (bench/serve_quality.py)", "",
             f"Machine: {machine()}", "",
             f"Collections: one per method, default threshold, holding {n_reference:,} real photos (the first half "
             f"of {args.data.name}'s images, sorted by path); queries: the other half (no copy in the bank) and "
             f"{PER_KIND} seeded images of each uninformative kind. A false match: the top match passes the "
             "threshold although the query copies nothing in the collection.", "",
             f"The gate: PDQ's quality score below 50 for PDQ; for the others luminance deviation below {MIN_STD:g} "
             f"or edge energy below {MIN_EDGE:g} at 64 x 64; for every method a side under {MIN_SIDE} px.", "",
             "| method | threshold | queries | n | false matches without the gate | with the gate (default) | "
             "called low |", "|---|---:|---|---:|---:|---:|---:|"]
    for method, threshold, kind, n, raw, gated, low in rows:
        lines.append(f"| {method} | {threshold:g} | {kind} | {n} | {raw:.1%} | {gated:.1%} | {low:.1%} |")
    return lines


if __name__ == "__main__":
    main()
