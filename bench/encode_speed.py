"""Every engine x precision on this CPU, as ratios to ONNX Runtime fp32 (exact) measured in the same run.

    python bench/encode_speed.py [--images 96] [--data ../shared/datasets/imagenet-200x5/val] [--n 50]
                                 [--models efficientnet_lite2,sscd_distilled,sscd] [--choices]

For each network (EfficientNet-Lite2, the SSCD student, SSCD; ResNet-50 when asked) and each path
``malle.inference.precision.ASKED`` offers for it (ONNX Runtime fp32 and int8, OpenVINO fp32, bf16 and int8):

- forward img/s: preprocessed batches in memory, the engine's own batch size, median of 5 after a warm-up,
  every path of a model taking turns within each round (``interleaved_rates``: fair under a shared load);
- end-to-end img/s: ``encode_files`` (decode, preprocess and forward, pipelined) over the fidelity
  experiment's originals and copies;
- decode share: one thread's decode-and-preprocess time per image over the end-to-end time per image;
- fidelity against exact fp32: the lowest cosine over the ``--images`` photos, and instance R@1 on a real
  experiment (``--n`` originals of ``--data`` and their copies, searched exactly).

``--choices`` also prints this CPU kind's rows for ``malle/inference/choices.toml`` (every path but exact fp32;
``auto`` takes only those whose R@1 and cosine qualify). Writes bench/results/encode_speed-<cpu kind>.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)

from malle.data.sampling import demo_root  # noqa: E402
from malle.descriptors import descriptor_class  # noqa: E402
from malle.inference.cpu import cpu_features  # noqa: E402
from malle.inference.precision import ASKED, EXACT, MAX_R1_DROP, MIN_COSINE  # noqa: E402
from malle.io.tables import row_ids  # noqa: E402
from malle.lab.experiment import Experiment, ExperimentConfig  # noqa: E402
from malle.retrieval.topk import search  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "imagenet-200x5" / "val"
DEFAULT_MODELS = "efficientnet_lite2,sscd_distilled,sscd"


def interleaved_rates(runs: list, n_images: int, rounds: int = 5) -> list[float]:
    """Images per second of each of ``runs``, the median of ``rounds`` after one warm-up each. The runs take
    turns within each round, so a load that comes and goes on a shared machine weighs on every path alike
    and their ratios hold, where timing one path after another would credit the quiet moments to some."""
    for fn in runs:
        fn()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for spent, fn in zip(times, runs):
            spent.append(timed(fn))
    return [n_images / float(np.median(spent)) for spent in times]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def small_experiment(data: Path, n: int, cache_root: Path) -> Experiment:
    experiment = Experiment(ExperimentConfig(data=str(data), n=n, seed=0, methods=("phash",), distractors=0),
                            cache_root)
    experiment.stage("copies")
    return experiment


def recall_at_1(desc, experiment: Experiment) -> tuple[float, float]:
    """(instance R@1, end-to-end images/s over the experiment's originals and copies)."""
    originals = [experiment.originals_dir / f for f in experiment.originals["file"]]
    copies = [experiment.copies_dir / f for f in experiment.manifest["file"]]
    start = time.perf_counter()
    db, queries = desc.encode_files(originals), desc.encode_files(copies, queries=True)
    img_s = (len(originals) + len(copies)) / (time.perf_counter() - start)
    hits = search(desc.metric.build_index(db), queries, 1, desc.metric)
    truth = row_ids(experiment.originals["file"], experiment.manifest["source"])
    return float((hits.ids[:, 0] == truth).mean()), img_s


def seeded_random_weights(cache_root: Path) -> Path:
    """A ResNet-50 state dict of seeded random weights: the same weights for every engine, unlike "random"."""
    path = cache_root / "resnet50-seeded-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def model_rows(name: str, paths: list[Path], experiment: Experiment, cache_root: Path) -> list[dict]:
    cls = descriptor_class(name)
    weights = {} if cls.weights_status().available else {"weights": seeded_random_weights(cache_root)}
    exact = [((runtime, precision), kind) for (runtime, precision), kind in ASKED.items() if kind is EXACT]
    others = [(key, kind) for key, kind in ASKED.items() if kind is not EXACT]
    loaded = []
    for (runtime, precision), kind in exact + others:
        desc = cls(**weights, engine=kind)
        if type(desc.engine) is not kind:
            continue  # this path cannot run this model (a graph shipped in int8 keeps it)
        desc.use_cache(cache_root)
        load_s = timed(desc.load)
        if desc.notices:
            print(f"{name} {runtime} {precision}: {desc.notices[-1]}", file=sys.stderr)
            continue
        loaded.append((runtime, precision, desc, load_s))
    inputs = [loaded[0][2].prepare_file(p) for p in paths]  # the model's preprocessing: the same for every engine
    forward = interleaved_rates([forward_pass(desc, inputs) for _, _, desc, _ in loaded], len(paths))
    rows, reference = [], {}
    for (runtime, precision, desc, load_s), rate in zip(loaded, forward):
        rows.append(measure(desc, name + (" (random weights)" if weights else ""), paths, experiment, reference,
                            rate))
        rows[-1].update(engine=runtime, precision=precision, load_s=load_s)
    return rows


def forward_pass(desc, inputs: list[np.ndarray]):
    """The engine's forward pass over ``inputs`` in its own batch size, as a call to time."""
    step = desc.engine.batch
    batches = [np.stack(inputs[i : i + step]) for i in range(0, len(inputs), step)]
    return lambda: [desc.engine.run(b) for b in batches]


def measure(desc, name: str, paths: list[Path], experiment: Experiment, reference: dict, forward: float) -> dict:
    decode_s = timed(lambda: [desc.prepare_file(p) for p in paths]) / len(paths)
    codes = desc.encode_files(paths)
    r1, end_to_end = recall_at_1(desc, experiment)
    if not reference:
        reference.update(forward=forward, e2e=end_to_end, codes=codes, r1=r1)
    return {"method": name, "path": desc.engine.path(), "label": desc.label, "forward_img_s": forward,
            "forward_ratio": forward / reference["forward"], "e2e_img_s": end_to_end,
            "e2e_ratio": end_to_end / reference["e2e"],
            "min_cosine": float((codes * reference["codes"]).sum(axis=1).min()),
            "r1": r1, "r1_delta": r1 - reference["r1"], "decode_share": decode_s * end_to_end}


def choice_rows(rows: list[dict], where: str) -> list[str]:
    """TOML entries for malle/inference/choices.toml: every measured path but the exact one."""
    kind = cpu_features().kind
    out = []
    for r in rows:
        if ASKED[r["engine"], r["precision"]] is EXACT:
            continue
        out += ["[[path]]", f'model = "{r["method"]}"', f'cpu = "{kind}"', f'engine = "{r["engine"]}"',
                f'precision = "{r["precision"]}"', f"speed = {r['forward_ratio']:.2f}",
                f"min_cosine = {r['min_cosine']:.4f}", f"r1_delta = {r['r1_delta']:.4f}",
                f'measured = "{where}"', ""]
    return out


def report(rows: list[dict], paths: list[Path], data: Path, experiment: Experiment, load_before: float) -> list[str]:
    cpu = cpu_features()
    lines = [f"# Encode throughput per engine on {cpu.kind} ({len(paths)} copies of {data.name} photos; R@1 on "
             f"{len(experiment.manifest)} copies of {len(experiment.originals)} originals)", "",
             f"Machine: {machine()}", f"CPU: {cpu.describe()} (kind {cpu.kind})",
             # The machine may be shared: a ratio means little without the load it was taken under.
             f"Load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; every "
             "ratio is against exact fp32 measured in the same run.",
             f"auto qualifies a path at R@1 change >= -{MAX_R1_DROP} and min cosine >= {MIN_COSINE}.", "",
             "| method | path | forward img/s | forward × exact | end-to-end img/s | end-to-end × exact | "
             "min cosine to exact | R@1 | R@1 change | decode share | first load s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['path']} | {r['forward_img_s']:.1f} | {r['forward_ratio']:.2f}× | "
              f"{r['e2e_img_s']:.1f} | {r['e2e_ratio']:.2f}× | {r['min_cosine']:.5f} | {r['r1']:.4f} | "
              f"{r['r1_delta']:+.4f} | {r['decode_share']:.0%} | {r['load_s']:.1f} |" for r in rows]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=50, help="originals of the fidelity experiment")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated network methods")
    parser.add_argument("--choices", action="store_true", help="print this CPU kind's rows for choices.toml")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args()
    data = args.data if args.data.is_dir() else demo_root()
    load_before = os.getloadavg()[0]
    cache_root = Path(tempfile.mkdtemp(prefix="malle-encode-"))
    experiment = small_experiment(data, args.n, cache_root)
    paths = sorted(experiment.copies_dir.iterdir())[: args.images]  # real photos after real edits, as encoded
    rows = [row for name in args.models.split(",") for row in model_rows(name, paths, experiment, cache_root)]
    lines = report(rows, paths, data, experiment, load_before)
    if args.choices:
        where = (f"{machine().split(',')[0]} ({cpu_features().describe()}), {datetime.date.today():%Y-%m}; "
                 f"bench/encode_speed.py --n {args.n} on {data.name}")
        lines += ["", "Rows for malle/inference/choices.toml:", "", "```toml", *choice_rows(rows, where), "```"]
    publish(lines, args.report or ROOT / "bench" / "results" / f"encode_speed-{cpu_features().kind}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
