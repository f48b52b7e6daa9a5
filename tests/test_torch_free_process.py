"""The dashboard's own process never imports PyTorch: importing it (with torchvision's compiler imports and timm)
costs seconds of CPU on a machine whose two cores the first Overview keeps busy. Ops import torchvision where they
run, CNN preprocessing is Pillow and NumPy (byte-identical: tests/test_inference.py), and a model's ONNX export
runs in a pool worker, whose fork server holds PyTorch already. These run in fresh interpreters, since this one has
imported PyTorch long ago."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_MODULES = ("torch", "torchvision", "timm")


def imported_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    """Which of ``TORCH_MODULES`` a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint('held:' + ','.join(m for m in {TORCH_MODULES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-2000:]
    held = [line for line in result.stdout.splitlines() if line.startswith("held:")]
    assert len(held) == 1, result.stdout[-2000:]
    return [name for name in held[0].removeprefix("held:").split(",") if name]


def test_the_dashboards_imports_hold_no_pytorch():
    code = ("import streamlit, pandas\nfrom malle.dashboard import frame, robustness, widgets\n"
            "from malle.lab.experiment import ExperimentConfig\nimport malle.descriptors.registry, malle.ops")
    assert imported_after(code) == []


def test_a_fresh_export_and_encode_happen_without_pytorch_in_this_process(tmp_path):
    """EfficientNet-Lite2 from an empty cache: exported (in a worker), compiled and run on two demo photos; the
    process that asked holds no PyTorch, and the export is in its cache."""
    code = ("from malle.descriptors.registry import create_descriptor\n"
            "from malle.data.sampling import demo_root\nfrom malle.io.images import load_rgb\n"
            "photos = sorted(demo_root().rglob('*.jpg'))[:2]\n"
            "desc = create_descriptor('efficientnet_lite2', precision='fp32')\n"
            f"desc.use_cache({str(tmp_path)!r})\ndesc.load()\n"
            "assert desc.encode([load_rgb(p) for p in photos]).shape == (2, 1280)")
    assert imported_after(code, {"MALLE_WORKERS": "2"}) == []
    assert len(list((tmp_path / "models").glob("*/model.onnx"))) == 1


def test_with_one_worker_the_export_runs_here_and_imports_pytorch(tmp_path):
    """The other side of the same switch: without a pool, this process exports, so it must import PyTorch; the
    test above would pass vacuously if nothing were exported at all."""
    code = ("from malle.descriptors.registry import create_descriptor\n"
            "desc = create_descriptor('efficientnet_lite2', precision='fp32')\n"
            f"desc.use_cache({str(tmp_path)!r})\ndesc.load()")
    assert "torch" in imported_after(code, {"MALLE_WORKERS": "1"})


def test_the_install_step_prepares_the_default_methods_into_the_cache(tmp_path):
    """``malle methods --prepare`` (the README's install line runs it): every default method that can run here is
    loaded against ``$MALLE_CACHE``, so EfficientNet-Lite2's export is there before any run or dashboard asks."""
    from malle.descriptors.registry import DEFAULT_METHODS, available_methods

    result = subprocess.run([sys.executable, "-m", "malle", "methods", "--prepare"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "MALLE_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    prepared = result.stdout.split("Preparing the default methods in")[1].splitlines()[1:]
    ready = [m for m in DEFAULT_METHODS if m in available_methods()]
    assert [line.split(":")[0].strip() for line in prepared if line.startswith("  ") and ":" in line
            and not line.startswith("    ")] == ready
    assert len(list((tmp_path / "models").glob("*/model.onnx"))) == 1  # EfficientNet-Lite2's; SSCD ships its own
