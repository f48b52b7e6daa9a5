"""Encoding throughput per method and inference path, as ratios against today's path measured in the same run.

    python bench/encode_speed.py [--images 96] [--data ../shared/datasets/imagenet-200x5/val] [--n 50]

For each CNN, the paths are: eager PyTorch fp32 (the reference: what Malle ran
before compiled inference), ONNX Runtime fp32 (the exact path) and ONNX Runtime
int8 (calibrated). Each is measured forward only (preprocessed batches in memory,
the engine's own batch size) and end to end (``encode_files``: decode, preprocess
and forward, pipelined). Fidelity is the lowest cosine to eager over the photos,
and instance R@1 on a small real experiment (``--n`` originals of ``--data`` and
their copies, searched exactly) next to eager's. ``decode share`` is the time one
thread spends decoding and preprocessing an image over the end-to-end time per image.
Hashes compare one decoding thread (the old path) with the thread pool they use now,
and check the codes are identical. ResNet-50 runs with seeded random weights (one
state-dict file for every engine) when its ImageNet weights are absent: speed is unchanged; its R@1 then
means little, and random weights are harder on int8 than trained ones.
Writes bench/results/encode_speed.md.
"""

from __future__ import annotations

import argparse
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

from malle.descriptors import create_descriptor, descriptor_class  # noqa: E402
from malle.experiment import Experiment, ExperimentConfig  # noqa: E402
from malle.imageio import load_rgb  # noqa: E402
from malle.inference.cpu import cpu_features  # noqa: E402
from malle.inference.engines import EagerTorch, OnnxRuntimeFp32, OnnxRuntimeInt8  # noqa: E402
from malle.sampling import demo_root  # noqa: E402
from malle.search import search  # noqa: E402
from malle.tables import row_ids  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "imagenet-200x5" / "val"
ENGINES = {"eager fp32 (today)": EagerTorch, "ONNX Runtime fp32 (exact)": OnnxRuntimeFp32,
           "ONNX Runtime int8": OnnxRuntimeInt8}


def rate(fn, n_images: int, repeats: int = 3) -> float:
    """Images per second, the median of ``repeats`` after one warm-up call."""
    fn()
    return n_images / float(np.median([_timed(fn) for _ in range(repeats)]))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def small_experiment(data: Path, n: int, cache_root: Path) -> Experiment:
    experiment = Experiment(ExperimentConfig(data=str(data), n=n, seed=0, methods=("phash",), distractors=0),
                            cache_root)
    experiment.stage("copies")
    return experiment


def recall_at_1(desc, experiment: Experiment) -> float:
    db = desc.encode_files([experiment.originals_dir / f for f in experiment.originals["file"]])
    queries = desc.encode_files([experiment.copies_dir / f for f in experiment.manifest["file"]], queries=True)
    hits = search(desc.metric.build_index(db), queries, 1, desc.metric)
    truth = row_ids(experiment.originals["file"], experiment.manifest["source"])
    return float((hits.ids[:, 0] == truth).mean())


def seeded_random_weights(cache_root: Path) -> Path:
    """A ResNet-50 state dict of seeded random weights: the same weights for every engine, unlike "random"."""
    path = cache_root / "resnet50-seeded-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def cnn_rows(name: str, paths: list[Path], experiment: Experiment, cache_root: Path) -> list[dict]:
    weights = {} if descriptor_class(name).weights_status().available else {
        "weights": seeded_random_weights(cache_root)}
    rows, reference = [], {}
    for path_name, engine in ENGINES.items():
        desc = descriptor_class(name)(**weights, engine=engine)
        desc.use_cache(cache_root)
        desc.load()
        inputs = [desc.prepare_file(p) for p in paths]
        step = desc.engine.batch
        batches = [np.stack(inputs[i : i + step]) for i in range(0, len(inputs), step)]
        forward = rate(lambda: [desc.engine.run(b) for b in batches], len(paths))
        end_to_end = rate(lambda: desc.encode_files(paths), len(paths))
        decode_s = _timed(lambda: [desc.preprocess(load_rgb(p)) for p in paths]) / len(paths)
        codes = desc.encode_files(paths)
        r1 = recall_at_1(desc, experiment)
        if not reference:
            reference = {"forward": forward, "e2e": end_to_end, "codes": codes, "r1": r1}
        rows.append({"method": name + (" (random weights)" if weights else ""), "path": path_name,
                     "precision": desc.precision, "forward_img_s": forward,
                     "forward_ratio": forward / reference["forward"],
                     "e2e_img_s": end_to_end, "e2e_ratio": end_to_end / reference["e2e"],
                     "min_cosine": float((codes * reference["codes"]).sum(axis=1).min()),
                     "r1": r1, "r1_change": r1 - reference["r1"], "decode_share": decode_s * end_to_end})
    return rows


def other_rows(paths: list[Path], reference_img_s: float) -> list[dict]:
    rows = []
    for name in ("sscd", "sscd_distilled"):
        desc = create_descriptor(name)
        img_s = rate(lambda: desc.encode_files(paths), len(paths))
        rows.append({"method": name, "path": desc.runtime(), "precision": desc.precision, "e2e_img_s": img_s,
                     "e2e_ratio": img_s / reference_img_s})
    for name in ("phash", "pdq"):
        desc = create_descriptor(name)
        workers = desc.file_workers
        desc.file_workers = 1
        one_thread, single_codes = rate(lambda: desc.encode_files(paths), len(paths)), desc.encode_files(paths)
        desc.file_workers = workers
        pooled, pooled_codes = rate(lambda: desc.encode_files(paths), len(paths)), desc.encode_files(paths)
        rows.append({"method": name, "path": f"{workers} decoding threads vs 1", "precision": desc.precision,
                     "e2e_img_s": pooled, "e2e_ratio": pooled / one_thread, "reference_img_s": one_thread,
                     "identical": bool(np.array_equal(single_codes, pooled_codes))})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=50, help="originals of the fidelity experiment")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "encode_speed.md")
    args = parser.parse_args()
    data = args.data if args.data.is_dir() else demo_root()
    cache_root = Path(tempfile.mkdtemp(prefix="malle-encode-"))
    experiment = small_experiment(data, args.n, cache_root)
    paths = sorted(experiment.copies_dir.iterdir())[: args.images]  # real photos after real edits, as encoded
    rows = cnn_rows("efficientnet_lite2", paths, experiment, cache_root)
    rows += cnn_rows("resnet50", paths, experiment, cache_root)
    others = other_rows(paths, rows[0]["e2e_img_s"])
    lines = [f"# Encode throughput ({len(paths)} copies of {data.name} photos; fidelity on {len(experiment.manifest)} "
             f"copies of {len(experiment.originals)} originals)", "", f"Machine: {machine()}",
             f"CPU path: {cpu_features().describe()} (int8 is chosen automatically where VNNI is present)", "",
             "| method | path | precision | forward img/s | forward × today | end-to-end img/s | "
             "end-to-end × today | "
             "min cosine to eager | R@1 | R@1 change | decode share |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['path']} | {r['precision']} | {r['forward_img_s']:.1f} | "
              f"{r['forward_ratio']:.2f}× | "
              f"{r['e2e_img_s']:.1f} | {r['e2e_ratio']:.2f}× | {r['min_cosine']:.5f} | {r['r1']:.4f} | "
              f"{r['r1_change']:+.4f} | {r['decode_share']:.0%} |" for r in rows]
    lines += ["", "| method | path | precision | end-to-end img/s | ratio | codes identical |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['path']} | {r['precision']} | {r['e2e_img_s']:.1f} | "
              f"{r['e2e_ratio']:.2f}× {'one thread' if 'identical' in r else 'EfficientNet-Lite2 eager'} | "
              f"{r.get('identical', '—')} |" for r in others]
    publish(lines, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
