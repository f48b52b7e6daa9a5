"""Shared fixtures: small real-photo datasets and a folder of bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from malle.bank import Bank
from malle.data.sampling import DEMO_DISTRACTORS, DEMO_N, demo_root
from malle.lab.experiment import Experiment, ExperimentConfig

DEMO_CONFIG = ExperimentConfig(n=DEMO_N, distractors=DEMO_DISTRACTORS)  # what the dashboard opens on


@pytest.fixture(scope="session")
def demo_photos() -> list[Path]:
    """The 100 real photos shipped in the ai-benchmark package, in numeric order."""
    return sorted(demo_root().glob("*.jpg"), key=lambda p: int(p.stem))


@pytest.fixture(scope="session")
def tree_dataset(tmp_path_factory, demo_photos) -> Path:
    """ImageNet-Mini-style tree: 8 classes x 3 real photos."""
    root = tmp_path_factory.mktemp("tree") / "val"
    for i, photo in enumerate(demo_photos[:24]):
        folder = root / f"c{i // 3:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, folder / f"c{i // 3:02d}_{i}.JPEG")
    return root


def write_bad_folder(folder: Path, photos: list[Path]) -> dict[str, str]:
    """Fill ``folder`` with good and bad files; returns {bad file name: expected reason fragment}."""
    folder.mkdir(parents=True, exist_ok=True)
    real = Image.open(photos[0]).convert("RGB")
    for i, photo in enumerate(photos[1:5]):
        shutil.copyfile(photo, folder / f"good_{i}.jpg")
    raw = photos[5].read_bytes()
    (folder / "truncated_1.jpg").write_bytes(raw[: len(raw) // 3])
    (folder / "corrupt_1.jpg").write_bytes(raw[:20] + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    (folder / "empty_1.jpg").write_bytes(b"")
    (folder / "text_1.jpg").write_text("this is not a picture\n")
    (folder / "notes.txt").write_text("not an image either\n")
    Image.new("RGB", (4, 4), "red").save(folder / "tiny_4px.png")
    # A 1-bit PNG compresses to almost nothing but is far beyond Pillow's pixel limit.
    Image.new("1", (16000, 16000)).save(folder / "bomb_1.png")
    # Odd but valid images: these must be processed, not skipped.
    real.convert("CMYK").save(folder / "cmyk_1.jpg")
    real.convert("L").save(folder / "gray_1.png")
    real.convert("P").save(folder / "palette_1.gif")
    rgba = real.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba_1.png")
    deep = (np.asarray(real.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(deep).save(folder / "deep16_1.png")  # uint16 array -> mode I;16
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when displayed
    real.resize((320, 200)).save(folder / "exifrot_1.jpg", exif=exif)
    real.resize((20, 20)).save(folder / "small_20px.jpg")
    real.resize((300, 300)).save(folder / "no-underscore name.JPG")
    real.resize((300, 300)).save(folder / "café_été.jpeg")
    return {
        "truncated_1.jpg": "truncated",
        "corrupt_1.jpg": "",
        "empty_1.jpg": "empty",
        "text_1.jpg": "not an image",
        "notes.txt": "not an image file name",
        "tiny_4px.png": "too small",
        "bomb_1.png": "decompression-bomb",
    }


GOOD_IN_BAD_FOLDER = 4 + 9  # good_0..3 plus the odd-but-valid images


@pytest.fixture(scope="session")
def bad_folder(tmp_path_factory, demo_photos) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("bad") / "mixed"
    return folder, write_bad_folder(folder, demo_photos)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """A cache folder holding the dashboard's default experiment: the demo photos, default methods.

    Built once per test session (about a minute on 2 CPU cores) so app tests open fully cached.
    """
    root = tmp_path_factory.mktemp("demo-cache")
    Experiment(DEMO_CONFIG, root).run()
    return root


MISSING_WEIGHTS = "/nonexistent/resnet50.pth"  # makes "ResNet-50 unavailable" independent of the machine


@pytest.fixture(scope="session")
def demo_env(demo_cache):
    """For the whole session: the app's cache is the pre-built demo cache, and ResNet-50 has no weights."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MALLE_CACHE", str(demo_cache))
        patch.setenv("MALLE_RESNET50_WEIGHTS", MISSING_WEIGHTS)
        yield demo_cache


@pytest.fixture(scope="session")
def demo_results(demo_env):
    """The dashboard's default experiment, loaded from the cache (no recomputation)."""
    results = Experiment(DEMO_CONFIG, demo_env).run()
    assert results.timings()["cached"].all(), "demo_cache should hold every stage"
    return results


@pytest.fixture()
def bank(tmp_path, monkeypatch):
    """An empty bank in a fresh folder, its model cache there too (test files may define their own)."""
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    opened = Bank.open(tmp_path / "bank")
    yield opened
    opened.close()
