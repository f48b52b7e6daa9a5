"""The engine layer on its own: real models, real ONNX Runtime sessions, real demo photos.

Each engine is driven through its contract (``Engine(model, calibration, threads)``, ``load(folder)``,
``run(batch)``) on the ``Model`` a descriptor hands it, and compared with the exact reference:
eager PyTorch for the compiled engines of a PyTorch model, ONNX Runtime on the shipped graph for SSCD.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import timm
from PIL import Image
from timm.data import create_transform, resolve_model_data_config

from malle.descriptors.base import l2_normalise
from malle.descriptors.cnn import EfficientNetLite2, ResNet50
from malle.descriptors.network import DEMO_CALIBRATION
from malle.descriptors.sscd import SSCDDistilled
from malle.inference.cpu import KINDS, OTHER, CpuFeatures, typical
from malle.inference.engines import EagerTorch, Engine, OnnxRuntimeFp32, OnnxRuntimeInt8
from malle.inference.model import CalibrationFailed, CalibrationSet, Model
from malle.inference.onnx import OnnxRunner
from malle.inference.openvino_engines import OpenVinoBf16, OpenVinoFp32, OpenVinoInt8
from malle.inference.precision import (
    ASKED,
    EXACT,
    FALLBACK,
    FasterPath,
    auto_paths,
    choose_engine,
    fallback_engine,
    measured_paths,
)
from malle.inference.quantize import CALIBRATION_IMAGES, calibration_photos
from malle.io.images import load_rgb

ZEN4 = CpuFeatures(avx2=True, avx512=True, vnni=True, bf16=True)  # AVX-512 VNNI and BF16, no AMX
WITH_VNNI_ONLY = CpuFeatures(avx2=True, avx512=True, vnni=True, bf16=False)  # e.g. Ice Lake
WITHOUT_VNNI = CpuFeatures(avx2=True, avx512=True, vnni=False, bf16=False)
# What each engine promises against its exact reference on real photos (cosine, worst photo).
FIDELITY = {OnnxRuntimeFp32: 0.9999, OnnxRuntimeInt8: 0.97}  # int8 measured 0.985 at worst on 36 held-out photos


@pytest.fixture(scope="module")
def held_out(demo_photos):
    """Demo photos the int8 engine was not calibrated on."""
    calibration = set(calibration_photos(DEMO_CALIBRATION))
    return [p for p in demo_photos if p not in calibration][:12]


@pytest.fixture(scope="module")
def effnet_model() -> Model:
    return EfficientNetLite2(precision="fp32").network()


@pytest.fixture(scope="module")
def models_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def embed(engine: Engine, model: Model, photos) -> np.ndarray:
    batch = np.stack([model.prepare(p) for p in photos])
    return l2_normalise(np.concatenate([engine.run(batch[i : i + engine.batch])
                                        for i in range(0, len(batch), engine.batch)]))


@pytest.fixture(scope="module")
def eager_codes(effnet_model, held_out, models_folder):
    engine = EagerTorch(effnet_model)
    engine.load(models_folder)
    return embed(engine, effnet_model, held_out)


@pytest.mark.parametrize("kind", [OnnxRuntimeFp32, OnnxRuntimeInt8])
def test_each_compiled_engine_matches_eager_pytorch_on_real_photos(kind, effnet_model, held_out, eager_codes,
                                                                   models_folder):
    engine = kind(effnet_model, DEMO_CALIBRATION)
    engine.load(models_folder)
    codes = embed(engine, effnet_model, held_out)
    cosines = (codes * eager_codes).sum(axis=1)
    assert codes.shape == (len(held_out), 1280)
    assert cosines.min() >= FIDELITY[kind], cosines
    assert engine.precision in engine.describe() and engine.name in engine.describe()


def test_the_same_batch_gives_the_same_codes_on_a_second_load(effnet_model, held_out, models_folder):
    """The export and the int8 model are kept in the model folder: a second engine reuses them, bit for bit."""
    first = OnnxRuntimeInt8(effnet_model, DEMO_CALIBRATION)
    first.load(models_folder)
    before = sorted(p.name for p in models_folder.iterdir())
    second = OnnxRuntimeInt8(effnet_model, DEMO_CALIBRATION)
    second.load(models_folder)
    assert sorted(p.name for p in models_folder.iterdir()) == before
    np.testing.assert_array_equal(embed(first, effnet_model, held_out[:4]), embed(second, effnet_model, held_out[:4]))


def test_sscd_runs_on_the_engine_layer_exactly_as_its_shipped_graph(held_out, tmp_path):
    desc = SSCDDistilled()
    model = desc.network()
    assert model.shipped is not None and not model.exportable and not EagerTorch.runs(model)
    engine = choose_engine(desc.name, "fp32")(model)
    engine.load(tmp_path)
    assert isinstance(engine, OnnxRuntimeFp32) and engine.precision == "fp32"  # fp16 weights, fp32 maths
    assert not any(tmp_path.iterdir())  # a shipped graph is run where it is, nothing is exported
    batch = np.stack([model.prepare(p) for p in held_out[:4]])
    assert batch.dtype == np.uint8 and batch.shape == (4, 288, 288, 3)  # NHWC uint8, as the graph takes it
    np.testing.assert_array_equal(engine.run(batch), OnnxRunner(model.shipped).run(batch))
    exact = SSCDDistilled(engine=OnnxRuntimeFp32)
    np.testing.assert_array_equal(l2_normalise(engine.run(batch)), exact.encode_files(held_out[:4]))


def test_int8_without_calibration_photos_fails_as_a_calibration_failure(effnet_model, tmp_path):
    def no_photos():
        raise CalibrationFailed("no calibration photos (none here)")

    with pytest.raises(CalibrationFailed, match="no calibration photos"):
        OnnxRuntimeInt8(effnet_model, CalibrationSet("nothing", no_photos)).load(tmp_path)
    with pytest.raises(CalibrationFailed, match=f"need {CALIBRATION_IMAGES}"):
        OnnxRuntimeInt8(effnet_model, CalibrationSet("too few", lambda: DEMO_CALIBRATION.photos()[:3])).load(tmp_path)
    with pytest.raises(CalibrationFailed, match="no calibration photos were given"):
        OnnxRuntimeInt8(effnet_model).load(tmp_path)


# -------------------------------------------------------------------------- the policy


def test_auto_takes_only_what_was_measured_on_the_cpus_kind():
    assert typical("avx512_bf16").kind == "avx512_bf16" == ZEN4.kind  # AMD Zen 4: AVX-512 BF16, no AMX
    assert choose_engine("efficientnet_lite2", "auto", cpu=ZEN4) is OpenVinoBf16  # 2.05x against int8's 1.82x
    assert choose_engine("sscd_distilled", "auto", cpu=ZEN4) is OpenVinoBf16
    assert choose_engine("efficientnet_lite2", "auto", cpu=WITHOUT_VNNI) is OnnxRuntimeFp32  # nothing measured on AVX2
    assert choose_engine("efficientnet_lite2", "auto", cpu=WITH_VNNI_ONLY) is EXACT  # VNNI without BF16: unmeasured
    assert choose_engine("resnet50", "auto", cpu=ZEN4) is OnnxRuntimeFp32  # nothing measured for it
    listed = measured_paths("efficientnet_lite2")
    expected = listed[0].kind if listed else EXACT
    assert choose_engine("efficientnet_lite2", "auto") is expected  # this machine's own CPU


TABLE_KINDS = sorted({path.cpu for path in auto_paths()} | set(KINDS) | {OTHER})


@pytest.mark.parametrize("kind", TABLE_KINDS)
def test_auto_never_takes_a_path_the_table_marks_slower_than_exact_fp32(kind):
    """For every CPU kind and every model the table names: auto's pick is exact fp32, or the fastest qualifying
    row of that kind and model, which the table measured faster than exact fp32; no row, no guess."""
    cpu = typical(kind)
    assert cpu.kind == kind
    for model in sorted({path.model for path in auto_paths()} | {"resnet50"}):
        rows = [p for p in auto_paths() if p.model == model and p.cpu == kind]
        chosen = choose_engine(model, "auto", cpu=cpu)
        if chosen is EXACT:
            assert not [p for p in rows if p.qualifies], f"{model} on {kind}: a faster path qualifies"
            continue
        taken = next(p for p in rows if p.kind is chosen)
        assert taken.speed > 1.0 and taken.qualifies, f"{model} on {kind}: {taken}"
        assert taken.speed == max(p.speed for p in rows if p.qualifies)


def test_a_row_slower_than_exact_fp32_never_qualifies():
    row = FasterPath("m", "avx2", "openvino", "bf16", speed=0.9, min_cosine=0.999, r1_delta=0.0, measured="x")
    assert not row.qualifies
    assert replace(row, speed=1.2).qualifies
    assert not replace(row, speed=1.2, min_cosine=0.9).qualifies
    assert not replace(row, speed=1.2, r1_delta=-0.01).qualifies


def test_a_table_row_on_an_unknown_cpu_kind_is_refused(tmp_path):
    table = tmp_path / "choices.toml"
    table.write_text('[[path]]\nmodel = "m"\ncpu = "avx512_vnni_bf16"\nengine = "openvino"\nprecision = "bf16"\n'
                     'speed = 2.0\nmin_cosine = 0.999\nr1_delta = 0.0\nmeasured = "x"\n')
    with pytest.raises(ValueError, match="unknown CPU kind avx512_vnni_bf16"):
        auto_paths(table)


def test_an_explicit_precision_runs_its_engine_whatever_the_cpu():
    for (runtime, precision), kind in ASKED.items():
        assert choose_engine("resnet50", precision, runtime, WITHOUT_VNNI) is kind
        assert kind(EfficientNetLite2(precision="fp32").network()).precision == precision


def test_every_listed_path_says_where_it_was_measured_and_is_a_real_engine():
    for path in auto_paths():
        assert issubclass(path.kind, Engine) and path.kind is not EXACT
        assert path.measured and path.cpu in KINDS


def test_the_fallback_runs_only_models_built_in_pytorch(effnet_model):
    assert fallback_engine(OnnxRuntimeInt8, effnet_model) is EXACT  # a faster path gives way to exact fp32
    assert fallback_engine(OpenVinoBf16, SSCDDistilled().network()) is EXACT
    assert fallback_engine(EXACT, effnet_model) is FALLBACK is EagerTorch
    assert fallback_engine(EXACT, SSCDDistilled().network()) is None  # nothing else can run a shipped graph


def test_describing_an_engine_builds_and_hashes_nothing(effnet_model):
    def must_not_run():
        raise AssertionError("describe() built the model or hashed its weights")

    untouchable = Model("untouchable", must_not_run, (1, 3, 8, 8), np.asarray, build=must_not_run)
    for kind in (EagerTorch, OnnxRuntimeFp32, OnnxRuntimeInt8, OpenVinoFp32, OpenVinoBf16, OpenVinoInt8):
        engine = kind(untouchable, DEMO_CALIBRATION)
        assert engine.describe() and engine.summary and engine.name
    assert OnnxRuntimeInt8(effnet_model, DEMO_CALIBRATION).describe() != OnnxRuntimeFp32(effnet_model).describe()


def test_a_model_is_built_or_shipped_not_both(effnet_model, tmp_path):
    with pytest.raises(ValueError, match="not both or neither"):
        Model("both", str, (1, 3, 8, 8), np.asarray, build=lambda: None, shipped=tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="not both or neither"):
        Model("neither", str, (1, 3, 8, 8), np.asarray)


# -------------------------------------------------------------------------- preprocessing configs


def test_efficientnet_preprocessing_is_timms_own_config_and_transform(demo_photos):
    """The config is timm's pretrained_cfg for tf_efficientnet_lite2, and the transform gives timm's tensors."""
    timm_cfg = resolve_model_data_config(timm.create_model("tf_efficientnet_lite2", pretrained=False))
    ours = EfficientNetLite2.config
    assert (ours.input_size, ours.interpolation, ours.crop_pct, ours.mean, ours.std) == (
        timm_cfg["input_size"], timm_cfg["interpolation"], timm_cfg["crop_pct"], timm_cfg["mean"], timm_cfg["std"])
    assert (ours.resize, ours.size) == (292, 260)
    image = load_rgb(demo_photos[0])
    timm_tensor = create_transform(**timm_cfg)(image)
    np.testing.assert_array_equal(ours.float_transform()(image), timm_tensor.numpy())


@pytest.mark.parametrize("descriptor", [EfficientNetLite2, ResNet50], ids=["efficientnet_lite2", "resnet50"])
def test_the_float_transform_gives_torchvisions_bytes_for_every_pixel_value_and_shape(descriptor, demo_photos):
    """Malle's transform (Pillow and NumPy, no torchvision import) against torchvision's own Compose: every one of
    the 256 values in each channel, portrait and landscape photos, and a short side already at the resize."""
    from torchvision import transforms

    config = descriptor.config
    mode = {"bilinear": transforms.InterpolationMode.BILINEAR, "bicubic": transforms.InterpolationMode.BICUBIC}
    theirs = transforms.Compose([transforms.Resize(config.resize, interpolation=mode[config.interpolation]),
                                 transforms.CenterCrop(config.size), transforms.ToTensor(),
                                 transforms.Normalize(config.mean, config.std)])
    ours = config.float_transform()
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    every_value = Image.fromarray(np.stack([ramp, ramp.T, ramp[::-1]], axis=-1))
    photo = load_rgb(demo_photos[0])
    shapes = [every_value.resize((config.resize, config.resize), Image.Resampling.NEAREST), photo,
              photo.rotate(90, expand=True), photo.resize((config.resize, config.resize + 7)),
              photo.resize((config.size + 1, 3 * config.size))]
    for image in shapes:
        expected = theirs(image).numpy()
        got = ours(image)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
