"""Engines against exact fp32 on real photos, and the policy that picks them (issue 15).

Real ONNX Runtime sessions and real OpenVINO compiled models on the ai-benchmark demo photos; a missing
engine is one whose runtime import fails (``OpenVinoEngine.runtime``), a failing one is given a broken graph.
No wall-clock assertions: speed is in bench/encode_speed.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from malle.descriptors import create_descriptor, descriptor_class
from malle.descriptors.network import demo_photos
from malle.errors import ConfigError
from malle.inference.cpu import CpuFeatures, cpu_features
from malle.inference.engines import OnnxRuntimeFp32
from malle.inference.openvino_engines import OpenVinoBf16, OpenVinoFp32, OpenVinoInt8
from malle.inference.precision import (
    ASKED,
    EXACT,
    MIN_COSINE,
    auto_paths,
    check_engine,
    choose_engine,
    measured_paths,
)
from malle.lab.experiment import ExperimentConfig

pytest.importorskip("openvino")
MODELS = ("efficientnet_lite2", "sscd_distilled")
PHOTOS = 16


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return demo_photos()[:PHOTOS]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def codes(name: str, engine, models_dir: Path, photos: list[Path]) -> tuple[np.ndarray, object]:
    desc = descriptor_class(name)(engine=engine)
    desc.use_cache(models_dir.parent)
    desc.model_dir = models_dir
    return desc.encode_files(photos), desc


@pytest.fixture(scope="module")
def exact(models_dir, photos) -> dict[str, np.ndarray]:
    return {name: codes(name, OnnxRuntimeFp32, models_dir, photos)[0] for name in MODELS}


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


@pytest.mark.parametrize("name", MODELS)
def test_openvino_fp32_is_exact_fp32_within_float_error(name, exact, models_dir, photos):
    found, desc = codes(name, OpenVinoFp32, models_dir, photos)
    assert type(desc.engine) is OpenVinoFp32 and not desc.notices
    assert min_cosine(found, exact[name]) >= 0.9999  # the f32 hint: OpenVINO's bf16 default would fail this


def listed_here() -> list[tuple[str, type]]:
    """Every (model, engine) the choice table lists for this CPU's kind and auto may take."""
    return sorted({(p.model, p.kind) for p in auto_paths() if p.cpu == cpu_features().kind and p.qualifies
                   and p.model in MODELS}, key=lambda pair: (pair[0], pair[1].__name__))


@pytest.mark.parametrize(("name", "kind"), listed_here() or [pytest.param(None, None, marks=pytest.mark.skip(
    reason="the choice table lists no faster path for this CPU kind"))])
def test_every_path_auto_may_take_here_keeps_the_tables_cosine_on_real_photos(name, kind, exact, models_dir, photos):
    found, desc = codes(name, kind, models_dir, photos)
    assert type(desc.engine) is kind and not desc.notices
    assert min_cosine(found, exact[name]) >= MIN_COSINE


def test_bf16_is_close_but_not_identical_to_fp32(exact, models_dir, photos):
    """bf16 really runs in bf16 (not silently f32), and stays close on real photos."""
    found, desc = codes("sscd_distilled", OpenVinoBf16, models_dir, photos)
    assert desc.precision == "bf16" and "OpenVINO bf16" in desc.label
    cosine = min_cosine(found, exact["sscd_distilled"])
    assert 0.99 <= cosine < 0.99999


def test_openvino_int8_is_calibrated_once_and_kept_with_the_model(exact, models_dir, photos):
    found, desc = codes("efficientnet_lite2", OpenVinoInt8, models_dir, photos)
    assert desc.precision == "int8" and not desc.notices
    assert min_cosine(found, exact["efficientnet_lite2"]) >= 0.95
    kept = list(models_dir.rglob("model.xml"))
    assert len(kept) == 1 and kept[0].with_suffix(".bin").is_file()
    again, _ = codes("efficientnet_lite2", OpenVinoInt8, models_dir, photos)  # loads the kept model
    assert list(models_dir.rglob("model.xml")) == kept
    np.testing.assert_array_equal(again, found)


def test_an_int8_graph_as_shipped_keeps_its_precision_on_openvino():
    desc = create_descriptor("sscd", precision="fp32", engine="openvino")
    assert type(desc.engine) is OpenVinoFp32 and desc.precision == "int8 as shipped"
    assert type(create_descriptor("sscd", precision="bf16").engine) is EXACT  # no bf16 of an int8 graph


# -- the policy ---------------------------------------------------------------------------------------------
def test_the_choice_table_names_real_engines_and_where_each_entry_was_measured():
    paths = auto_paths()
    assert paths and all((p.engine, p.precision) in ASKED and p.measured and p.speed > 0 for p in paths)
    assert {"amx", "avx512_bf16"} <= {p.cpu for p in paths}  # the kinds measured so far (Intel AMX, AMD Zen 4)


@pytest.mark.parametrize("name", MODELS)
def test_auto_picks_the_fastest_listed_path_for_this_cpu(name):
    listed = measured_paths(name)
    chosen = choose_engine(name, "auto")
    assert chosen is (listed[0].kind if listed else EXACT)
    assert chosen is EXACT or any(p.kind is chosen and p.cpu == cpu_features().kind for p in auto_paths())
    assert type(create_descriptor(name).engine) is chosen


def test_auto_keeps_exact_fp32_where_nothing_was_measured_or_nothing_qualifies():
    bare = CpuFeatures(avx2=False, avx512=False, vnni=False, bf16=False)
    assert bare.kind == "other" and choose_engine("efficientnet_lite2", "auto", cpu=bare) is EXACT
    # The SSCD student's int8 was measured (cosine about 0.82) but does not qualify: never chosen.
    assert all(p.kind is not OpenVinoInt8 for p in measured_paths("sscd_distilled"))
    assert choose_engine("efficientnet_lite2", "auto", "openvino", cpu=bare) is OpenVinoFp32


def test_engine_and_precision_are_checked_together():
    assert choose_engine("efficientnet_lite2", "bf16") is OpenVinoBf16  # only OpenVINO offers bf16
    assert choose_engine("efficientnet_lite2", "int8", "openvino") is OpenVinoInt8
    with pytest.raises(ConfigError, match="--engine onnxruntime offers"):
        check_engine("onnxruntime", "bf16")
    with pytest.raises(ConfigError, match="--engine must be one of"):
        ExperimentConfig(engine="tensorrt")
    assert ExperimentConfig(engine="openvino", precision="bf16").as_dict()["engine"] == "openvino"


# -- falling back ---------------------------------------------------------------------------------------------
def without_openvino():
    raise ImportError("No module named 'openvino'")


class MissingOpenVino(OpenVinoBf16):
    """OpenVINO's bf16 engine on a machine without OpenVINO: its runtime import fails."""

    runtime = staticmethod(without_openvino)


class BrokenGraph(OpenVinoFp32):
    """OpenVINO given a graph it cannot read."""

    def graph(self, folder: Path) -> Path:
        path = Path(folder) / "broken.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not an onnx graph")
        return path


@pytest.mark.parametrize("kind", [MissingOpenVino, BrokenGraph])
@pytest.mark.parametrize("name", MODELS)
def test_a_missing_or_failing_engine_falls_back_to_exact_fp32_with_one_notice(name, kind, exact, models_dir,
                                                                              photos):
    found, desc = codes(name, kind, models_dir, photos)
    assert type(desc.engine) is EXACT
    assert len(desc.notices) == 1 and "running ONNX Runtime fp32 instead." in desc.notices[0]
    assert "ONNX Runtime fp32" in desc.label
    np.testing.assert_array_equal(found, exact[name])


def test_two_threads_sharing_one_openvino_engine_each_get_their_own_codes(models_dir, photos):
    """The dashboard's sessions and its background thread share one descriptor: each call keeps its own batch."""
    alone, desc = codes("sscd_distilled", OpenVinoBf16, models_dir, photos)
    halves = (photos[: PHOTOS // 2], photos[PHOTOS // 2 :])
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = [pool.submit(lambda part=part: [desc.encode_files(part) for _ in range(3)]) for part in halves]
        together = [f.result() for f in found]
    for runs, expected in zip(together, (alone[: PHOTOS // 2], alone[PHOTOS // 2 :])):
        for run in runs:
            np.testing.assert_array_equal(run, expected)
