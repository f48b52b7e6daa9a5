"""Descriptor throughput on 2 CPU cores, as ratios against references measured in the same run.

    python bench/encode_speed.py [--images 64] [--batch 32]

For each CNN: forward pass in channels_last vs contiguous memory (same model,
same batch), the pipelined ``encode_files`` (decode overlapped with the forward
pass) vs decoding first and then running the model, and ``encode_files`` on the
ONNX Runtime engine (the default) vs eager PyTorch. The copy-detection
descriptors and the hashes are set against EfficientNet-Lite2's ``encode_files``.
ResNet-50 runs with random weights here, which does not change its speed.
Writes bench/results/encode_speed.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)

from malle.descriptors import create_descriptor  # noqa: E402
from malle.descriptors.cnn import EAGER_FP32  # noqa: E402
from malle.imageio import load_rgb  # noqa: E402
from malle.sampling import demo_root  # noqa: E402


def rate(fn, n_images: int, repeats: int = 2) -> float:
    """Images per second, best of ``repeats`` after one warm-up call."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return n_images / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward(model, batches, channels_last: bool):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    with torch.inference_mode():
        for batch in batches:
            model(batch.contiguous(memory_format=fmt))


def cnn_rows(name: str, paths: list[Path], batch_size: int) -> list[dict]:
    desc = create_descriptor(name, **({"weights": "random"} if name == "resnet50" else {}))
    model = desc.model
    tensors = [desc.preprocess(load_rgb(p)) for p in paths]
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    contiguous = rate(lambda: forward(model, batches, False), len(paths))
    channels_last = rate(lambda: forward(model, batches, True), len(paths))
    desc.model.to(memory_format=torch.channels_last)  # restore channels_last, as the descriptor keeps it

    def decode_then_embed():
        images = [load_rgb(p) for p in paths]
        desc.encode(images, batch_size=batch_size)

    sequential = rate(decode_then_embed, len(paths))
    pipelined = rate(lambda: desc.encode_files(paths, batch_size=batch_size), len(paths))
    eager = type(desc)(**({"weights": "random"} if name == "resnet50" else {}), engine=EAGER_FP32)
    eager_rate = rate(lambda: eager.encode_files(paths, batch_size=batch_size), len(paths))
    return [
        {"method": name, "measure": "forward, channels_last vs contiguous", "reference_img_s": contiguous,
         "measured_img_s": channels_last, "ratio": channels_last / contiguous},
        {"method": name, "measure": "encode_files pipelined vs decode-then-embed", "reference_img_s": sequential,
         "measured_img_s": pipelined, "ratio": pipelined / sequential},
        {"method": name, "measure": "encode_files, ONNX Runtime fp32 vs eager PyTorch", "reference_img_s": eager_rate,
         "measured_img_s": pipelined, "ratio": pipelined / eager_rate},
    ]


def versus_cnn_row(name: str, paths: list[Path], cnn_img_s: float) -> dict:
    desc = create_descriptor(name)
    measured = rate(lambda: desc.encode_files(paths), len(paths))
    return {"method": name, "measure": "encode_files vs EfficientNet-Lite2 encode_files",
            "reference_img_s": cnn_img_s, "measured_img_s": measured, "ratio": measured / cnn_img_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "encode_speed.md")
    args = parser.parse_args()
    paths = sorted(demo_root().glob("*.jpg"), key=lambda p: int(p.stem))[: args.images]
    rows = cnn_rows("efficientnet_lite2", paths, args.batch) + cnn_rows("resnet50", paths, args.batch)
    rows += [versus_cnn_row(name, paths, rows[1]["measured_img_s"]) for name in ("sscd", "sscd_distilled", "phash", "pdq")]
    lines = [f"# Encode throughput ({len(paths)} demo photos, batch {args.batch}, "
             f"{torch.get_num_threads()} torch threads)", "", f"Machine: {machine()}", "",
             "| method | measure | reference img/s | measured img/s | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['measure']} | {r['reference_img_s']:.1f} | {r['measured_img_s']:.1f} | "
              f"{r['ratio']:.2f}× |" for r in rows]
    publish(lines, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
