"""Tests for stage 2: op registry, chains, filenames and make_copies."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from malle.io.images import encode_jpeg, load_rgb
from malle.ops import (
    COPY_JPEG_QUALITY,
    MANIFEST_COLUMNS,
    OPS,
    REFERENCE_OPS,
    AugmentConfig,
    Choices,
    FloatRange,
    IntRange,
    IntUniform,
    ParamSpec,
    SelectBox,
    Slider,
    Step,
    apply_chain,
    chain_from_json,
    chain_to_json,
    copy_filename,
    describe_chain,
    get_op,
    make_copies,
    parse_copy_filename,
    replay,
    sample_chain,
)
from malle.ops.params import Sweep
from malle.ops.reference import blur_kernel_for
from malle.ops.registry import Op, ops_defined_in, register

GEOMETRY_OPS = {"centercrop", "randomcrop", "resize", "rotatequarter", "pad", "screenshot", "meme", "post"}


def synthetic(width: int = 512, height: int = 384, seed: int = 0) -> Image.Image:
    """Gradient plus a few coloured shapes: textured enough for every op to show."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(0, 255, width)[None, :]
    ys = np.linspace(0, 255, height)[:, None]
    arr = np.stack(np.broadcast_arrays(xs, ys, (xs + ys) / 2), axis=-1).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x, y, x + int(rng.integers(20, 120)), y + int(rng.integers(20, 120))), fill=colour)
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return synthetic()


# ---------------------------------------------------------------- registry


def test_registry_order_names_and_specs():
    expected = ["centercrop", "randomcrop", "resize", "rotate", "blur", "color", "hue", "watermark", "jpeg", "occlude"]
    assert list(OPS)[:10] == expected and list(REFERENCE_OPS) == expected  # the reference ten first
    for name, op in OPS.items():
        assert op.name == name and re.fullmatch(r"[a-z]+", name)
        assert op.label and all(isinstance(spec, ParamSpec) for spec in op.params)
        assert set(op.default_params()) == {spec.name for spec in op.params}
        for spec in op.params:
            assert isinstance(spec.kind, FloatRange | IntRange | Choices) and spec.default in spec.kind


def test_kinds_span_contain_and_draw_their_values():
    floats, ints, choices = FloatRange(0.0, 1.0), IntRange(8, 160), Choices((2, 3, 4))
    assert (floats.span, ints.span, choices.span) == ((0.0, 1.0), (8, 160), (2, 4))
    assert 0.5 in floats and 1.5 not in floats and 8 in ints and 7 not in ints and 3 in choices and 1 not in choices
    assert (str(floats), str(ints), str(choices)) == ("[0, 1]", "[8, 160]", "{2, 3, 4}")
    assert floats.control(0.5) == Slider(0.5, 0.0, 1.0, 0.01)
    assert FloatRange(-15.0, 15.0).control(0.0).step == 0.1  # a wide range steps coarser
    assert ints.control(40) == Slider(40, 8, 160, 1) and choices.control(2) == SelectBox(2, (2, 3, 4))


def test_controls_snap_values_onto_their_grid():
    slider, int_slider = FloatRange(0.0, 1.0).control(0.5), IntRange(8, 160).control(40)
    assert slider.fit(0.123456) == 0.12 and slider.fit(1.2) == 1.0 and slider.fit(-0.3) == 0.0
    assert int_slider.fit(41) == 41 and type(int_slider.fit(41.0)) is int and int_slider.fit(500) == 160
    assert Choices((0, 1)).control(0).fit(1) == 1


@pytest.mark.parametrize("make, error", [
    (lambda: ParamSpec("a", FloatRange(0.0, 1.0), 2.0), r"default 2.0 outside \[0, 1\]"),
    (lambda: ParamSpec("b", Choices((2, 3)), 4), r"default 4 outside \{2, 3\}"),
    (lambda: ParamSpec("c", IntRange(0, 9), 1, sample=IntUniform(0, 10)), r"sampling .* leaves the range \[0, 9\]"),
])
def test_param_specs_refuse_defaults_and_sampling_outside_their_kind(make, error):
    with pytest.raises(ValueError, match=error):
        make()


# The registry's order decides which copies a seed makes (chains permute ops in this order): never reorder it.
REGISTRY_ORDER = ["centercrop", "randomcrop", "resize", "rotate", "blur", "color", "hue", "watermark", "jpeg",
                  "occlude", "hflip", "rotatequarter", "pad", "text", "sticker", "grayscale", "noise", "pixelate",
                  "perspective", "screenshot", "inset", "overlay", "meme", "emoji", "collage", "post"]


def test_the_registry_order_is_pinned_and_new_families_come_after_it():
    assert list(OPS)[: len(REGISTRY_ORDER)] == REGISTRY_ORDER
    assert [op.name for op in ops_defined_in("malle.ops.reference")] == list(REFERENCE_OPS)
    assert [op.name for op in ops_defined_in("malle.ops.edits")] == REGISTRY_ORDER[10:20]
    assert [op.name for op in ops_defined_in("malle.ops.composites")] == REGISTRY_ORDER[20:]


@pytest.mark.parametrize("first", ["malle.ops.edits", "malle.ops.severity", "malle.ops.chains", "malle.ops.registry"])
def test_the_registry_order_does_not_depend_on_which_module_is_imported_first(first):
    code = f"import {first}; from malle.ops.registry import OPS; print(','.join(OPS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().split(",") == list(OPS)


def _op_class(name: str, sweep: Sweep | None = Sweep("strength", (0, 1), lambda v, size, rng: {})) -> type[Op]:
    attrs = {"name": name, "label": name, "params": (), "apply": lambda self, img, params: img.copy()}
    if sweep is not None:
        attrs["sweep"] = sweep
    return type("Made", (Op,), attrs)


@pytest.mark.parametrize("name, sweep, error", [
    ("blur", Sweep("strength", (0, 1), lambda v, size, rng: {}), "registered twice"),
    ("Two_words", Sweep("strength", (0, 1), lambda v, size, rng: {}), "lowercase ascii letters"),
    ("unswept", None, "declares no severity sweep"),
])
def test_register_refuses_a_clash_a_bad_name_and_an_op_without_a_sweep(name, sweep, error):
    before = dict(OPS)
    with pytest.raises((ValueError, TypeError), match=error):
        register(_op_class(name, sweep))
    assert OPS == before


def test_get_op_unknown_lists_valid_names():
    assert get_op("blur") is OPS["blur"]
    with pytest.raises(KeyError) as err:
        get_op("sharpen")
    assert all(name in str(err.value) for name in OPS)


# ---------------------------------------------------------------- every op


@pytest.mark.parametrize("name", list(OPS))
def test_op_rgb_out_input_untouched_and_size(name, image):
    op = OPS[name]
    before = pixels(image)
    params = op.make_params(np.random.default_rng(1), image.size)
    out = op.apply(image, params)
    assert out.mode == "RGB"
    assert np.array_equal(pixels(image), before)
    assert out.size == op.output_size(image.size, params)
    if name not in GEOMETRY_OPS:
        assert out.size == image.size


@pytest.mark.parametrize("name", list(OPS))
def test_op_deterministic(name, image):
    op = OPS[name]
    params = op.make_params(np.random.default_rng(7), image.size)
    assert params == op.make_params(np.random.default_rng(7), image.size)
    assert np.array_equal(pixels(op.apply(image, params)), pixels(op.apply(image, dict(params))))


@pytest.mark.parametrize("name", list(OPS))
def test_make_params_within_spec_and_json_exact(name):
    op = OPS[name]
    specs = {spec.name: spec for spec in op.params}
    for seed in range(200):
        size = (int(100 + seed * 3), int(700 - seed * 2))
        params = op.make_params(np.random.default_rng(seed), size)
        assert set(params) == set(specs)
        assert json.loads(json.dumps(params)) == params
        for key, value in params.items():
            spec = specs[key]
            assert type(value) in (int, float, str) and value in spec.kind
            if not isinstance(spec.kind, Choices):
                assert value == round(value, 4)
                assert isinstance(value, int) == isinstance(spec.kind, IntRange)


@pytest.mark.parametrize("name", list(OPS))
def test_default_params_apply(name, image):
    op = OPS[name]
    assert op.apply(image, op.default_params()).mode == "RGB"


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("name", ["centercrop", "randomcrop"])
@pytest.mark.parametrize("side", [256, 384])
def test_crops_exact_size(name, side, image):
    op = OPS[name]
    params = {**op.default_params(), "size": side, "x": 0.3, "y": 0.8}
    assert op.apply(image, {k: params[k] for k in op.default_params()}).size == (side, side)


@pytest.mark.parametrize("name", ["centercrop", "randomcrop"])
def test_crops_pad_small_image_with_black(name):
    small = Image.new("RGB", (100, 60), (200, 150, 100))
    op = OPS[name]
    params = {**op.default_params(), "size": 256}
    out = pixels(op.apply(small, {k: params[k] for k in op.default_params()}))
    assert out.shape == (256, 256, 3)
    black = (out == 0).all(axis=-1)
    content = (out == (200, 150, 100)).all(axis=-1)
    assert black.sum() == 256 * 256 - 100 * 60  # every pixel is either padding or image
    assert content.sum() == 100 * 60


def test_centercrop_pads_centred():
    small = Image.new("RGB", (100, 60), (255, 255, 255))
    out = pixels(OPS["centercrop"].apply(small, {"size": 256}))
    rows, cols = np.nonzero(out.sum(axis=-1))
    assert abs((rows.min() + rows.max()) / 2 - 127.5) <= 1
    assert abs((cols.min() + cols.max()) / 2 - 127.5) <= 1


def test_randomcrop_position_follows_fractions(image):
    op = OPS["randomcrop"]
    arr = pixels(image)
    top_left = pixels(op.apply(image, {"size": 256, "x": 0.0, "y": 0.0}))
    bottom_right = pixels(op.apply(image, {"size": 256, "x": 1.0, "y": 1.0}))
    assert np.array_equal(top_left, arr[:256, :256])
    assert np.array_equal(bottom_right, arr[-256:, -256:])


def test_randomcrop_moves_small_image_across_padding():
    # RandomCrop(pad_if_needed=True) semantics: the whole image stays in the crop,
    # and the fractions slide it from one edge of the crop to the other.
    small = Image.new("RGB", (100, 60), (255, 255, 255))
    for fraction, (first_row, first_col) in [(0.0, (256 - 60, 256 - 100)), (1.0, (0, 0))]:
        out = pixels(OPS["randomcrop"].apply(small, {"size": 256, "x": fraction, "y": fraction}))
        rows, cols = np.nonzero(out.sum(axis=-1))
        assert (rows.min(), cols.min()) == (first_row, first_col)
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (60, 100)


@pytest.mark.parametrize("size", [(512, 384), (384, 512), (300, 300), (1000, 257)])
@pytest.mark.parametrize("short", [256, 311, 384])
def test_resize_shorter_side_and_aspect(size, short):
    out = OPS["resize"].apply(synthetic(*size), {"size": short})
    assert min(out.size) == short
    long_expected = short * max(size) / min(size)
    assert abs(max(out.size) - long_expected) <= 1
    assert (out.width >= out.height) == (size[0] >= size[1])


def test_rotate_keeps_size_and_fills_corners_black(image):
    out = pixels(OPS["rotate"].apply(image, {"angle": 15.0}))
    assert out.shape[:2] == (image.height, image.width)
    assert (out[0, 0] == 0).all() and (out[-1, -1] == 0).all()
    assert not np.array_equal(out, pixels(image))


@pytest.mark.parametrize(("side", "kernel"), [(200, 3), (300, 5), (600, 7)])
def test_blur_kernel_rule(side, kernel):
    assert blur_kernel_for((side + 50, side)) == kernel
    params = OPS["blur"].make_params(np.random.default_rng(0), (side, side + 50))
    assert params["kernel"] == kernel


def test_blur_honours_kernel_param(image):
    op = OPS["blur"]
    narrow = pixels(op.apply(image, {"kernel": 3, "sigma": 2.0}))
    wide = pixels(op.apply(image, {"kernel": 7, "sigma": 2.0}))
    assert not np.array_equal(narrow, wide)
    # A wider kernel at the same sigma smooths more: smaller neighbour differences.
    assert np.abs(np.diff(wide, axis=1)).mean() < np.abs(np.diff(narrow, axis=1)).mean()


def test_color_and_hue_identity_and_change(image):
    assert np.abs(pixels(OPS["color"].apply(image, {"brightness": 1.0, "contrast": 1.0})) - pixels(image)).max() <= 1
    brighter = pixels(OPS["color"].apply(image, {"brightness": 1.2, "contrast": 1.0}))
    assert brighter.mean() > pixels(image).mean()
    shifted = pixels(OPS["hue"].apply(image, {"hue": 0.5, "saturation": 1.0}))
    assert np.abs(shifted - pixels(image)).mean() > 20


def test_watermark_changes_pixels_only_near_its_position():
    plain = Image.new("RGB", (800, 600), (0, 0, 0))
    out = pixels(OPS["watermark"].apply(plain, {"x": 0.0, "y": 0.0, "font_size": 80, "opacity": 120}))
    rows, cols = np.nonzero(out.sum(axis=-1))
    # Text starts at the top-left corner (glyph side bearings leave a few px).
    assert rows.min() <= 10 and cols.min() <= 10
    assert rows.max() < 150 and cols.max() < 600  # one line of 80px text, nothing far away
    assert out.max() <= 120 + 1  # white at alpha 120 over black
    far = pixels(OPS["watermark"].apply(plain, {"x": 1.0, "y": 1.0, "font_size": 80, "opacity": 120}))
    rows, cols = np.nonzero(far.sum(axis=-1))
    assert rows.max() >= 590 and cols.max() >= 790 and rows.min() > 400


def test_watermark_larger_than_image_clamps_at_origin():
    tiny = Image.new("RGB", (100, 50), (0, 0, 0))
    out = pixels(OPS["watermark"].apply(tiny, {"x": 1.0, "y": 1.0, "font_size": 80, "opacity": 255}))
    rows, cols = np.nonzero(out.sum(axis=-1))
    assert len(rows) and cols.min() <= 10


def test_occlusion_block_is_black_80x80_where_expected():
    white = Image.new("RGB", (512, 384), (255, 255, 255))
    out = pixels(OPS["occlude"].apply(white, {"size": 80, "x": 0.5, "y": 0.25}))
    black = (out == 0).all(axis=-1)
    rows, cols = np.nonzero(black)
    assert black.sum() == 80 * 80
    assert (rows.min(), cols.min()) == (round(0.25 * (384 - 80)), round(0.5 * (512 - 80)))
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (80, 80)


def test_occlusion_clipped_on_small_image():
    small = Image.new("RGB", (50, 30), (255, 255, 255))
    out = pixels(OPS["occlude"].apply(small, {"size": 80, "x": 0.7, "y": 0.7}))
    assert out.shape == (30, 50, 3) and (out == 0).all()


def test_jpeg_lower_quality_fewer_bytes(image):
    def size_at(quality):
        return len(encode_jpeg(OPS["jpeg"].apply(image, {"quality": quality}), 100))

    assert size_at(30) < size_at(80)


# ---------------------------------------------------------------- chains


def test_sample_chain_distinct_ops_lengths_and_coverage():
    lengths_seen = set()
    for seed in range(300):
        chain = sample_chain(np.random.default_rng(seed), (512, 384))
        names = [step.op for step in chain]
        assert 1 <= len(chain) <= 5
        assert len(set(names)) == len(names)
        assert all(name in OPS for name in names)
        lengths_seen.add(len(chain))
    assert lengths_seen == {1, 2, 3, 4, 5}


def test_sample_chain_respects_subset_and_caps_length():
    subset = ("blur", "jpeg")
    for seed in range(50):
        chain = sample_chain(np.random.default_rng(seed), (512, 384), ops=subset, lengths=(1, 5))
        assert {step.op for step in chain} <= set(subset) and 1 <= len(chain) <= 2
    with pytest.raises(KeyError):
        sample_chain(np.random.default_rng(0), (512, 384), ops=("nope",))
    with pytest.raises(ValueError):
        sample_chain(np.random.default_rng(0), (512, 384), ops=subset, lengths=(3, 5))


def test_sample_chain_samples_on_the_size_each_op_sees():
    # After a 256 crop, blur must pick the kernel for 256 (5), not for the original 600 (7).
    big = (800, 600)
    for seed in range(400):
        chain = sample_chain(np.random.default_rng(seed), big, ops=("centercrop", "blur"), lengths=(2, 2))
        if [s.op for s in chain] == ["centercrop", "blur"]:
            crop, blur = chain
            assert blur.params["kernel"] == blur_kernel_for((crop.params["size"],) * 2)
            return
    pytest.fail("centercrop → blur never sampled")


def test_chain_json_round_trip_and_describe(image):
    chain = sample_chain(np.random.default_rng(3), image.size, lengths=(5, 5))
    text = chain_to_json(chain)
    assert chain_from_json(text) == chain
    assert chain_to_json(chain_from_json(text)) == text
    described = describe_chain([Step("rotate", {"angle": -7.2}), Step("jpeg", {"quality": 41})])
    assert described == "rotate(angle=-7.2) → jpeg(quality=41)"
    with pytest.raises(ValueError):
        chain_from_json('{"op": "blur"}')


def test_apply_chain_matches_stepwise_and_replay(image):
    chain = sample_chain(np.random.default_rng(11), image.size, lengths=(4, 4))
    stepwise = image
    for step in chain:
        stepwise = OPS[step.op].apply(stepwise, step.params)
    assert np.array_equal(pixels(apply_chain(image, chain)), pixels(stepwise))
    assert np.array_equal(pixels(replay(image, chain_to_json(chain))), pixels(stepwise))


# ---------------------------------------------------------------- filenames


def test_copy_filename_collisions_and_parse():
    taken: set[str] = set()
    chain = [Step("rotate", {"angle": 1.0}), Step("jpeg", {"quality": 40})]
    first = copy_filename("n01440764", "10043", chain, taken)
    second = copy_filename("n01440764", "10043", chain, taken)
    third = copy_filename("n01440764", "10043", chain, taken)
    assert first == "n01440764_10043_rotate_jpeg.JPEG"
    assert (second, third) == ("n01440764_10043_rotate_jpeg-2.JPEG", "n01440764_10043_rotate_jpeg-3.JPEG")
    assert taken == {first, second, third}
    for name in (first, second, third):
        assert parse_copy_filename(name) == ("n01440764", "10043", ["rotate", "jpeg"])


@pytest.mark.parametrize(
    "bad", ["n01440764_10043.JPEG", "n01440764_10043_sharpen.JPEG", "n01440764_10043_blur.png", "blur.JPEG"]
)
def test_parse_copy_filename_rejects(bad):
    with pytest.raises(ValueError):
        parse_copy_filename(bad)


def test_copy_filename_rejects_bad_tokens():
    with pytest.raises(ValueError):
        copy_filename("n0_1", "5", [Step("blur", {"kernel": 3, "sigma": 1.0})], set())
    with pytest.raises(ValueError):
        copy_filename("n0", "5", [], set())


# ---------------------------------------------------------------- make_copies


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    rows = []
    for i, (cls, token) in enumerate([("tench", "n01440764"), ("tench", "n01440764"), ("goldfish", "n01443537")]):
        file = f"{token}_{1000 + i}.JPEG"
        (folder / file).write_bytes(encode_jpeg(synthetic(512, 384, seed=i), 95))
        rows.append({"file": file, "class": cls, "class_token": token, "instance": str(1000 + i)})
    return pd.DataFrame(rows), folder


CONFIG = AugmentConfig(copies=(2, 3), chain_lengths=(1, 5))


class Counter:
    """tqdm-shaped progress sink."""

    def __init__(self, total, desc):
        self.total, self.done, self.closed = total, 0, False

    def update(self, n):
        self.done += n

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def two_runs(originals, tmp_path_factory):
    frame, folder = originals
    out_a, out_b = tmp_path_factory.mktemp("copies_a"), tmp_path_factory.mktemp("copies_b")
    bars = []

    def progress(**kwargs):
        bars.append(Counter(**kwargs))
        return bars[-1]

    manifest_a = make_copies(frame, folder, out_a, CONFIG, seed=5, progress=progress)
    manifest_b = make_copies(frame, folder, out_b, CONFIG, seed=5)
    return manifest_a, manifest_b, out_a, out_b, bars


def test_make_copies_reproducible(two_runs):
    manifest_a, manifest_b, out_a, out_b, _ = two_runs
    pd.testing.assert_frame_equal(manifest_a, manifest_b)
    files_a = sorted(p.name for p in out_a.iterdir())
    assert files_a == sorted(p.name for p in out_b.iterdir()) == sorted(manifest_a["file"])
    for name in files_a:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes()


def test_make_copies_different_seed_differs(originals, two_runs, tmp_path):
    frame, folder = originals
    other = make_copies(frame, folder, tmp_path, CONFIG, seed=6)
    assert other["chain"].tolist() != two_runs[0]["chain"].tolist()


def test_make_copies_manifest_contents(originals, two_runs):
    frame, _ = originals
    manifest, *_, bars = two_runs
    assert list(manifest.columns) == MANIFEST_COLUMNS
    counts = manifest.groupby("source", sort=False).size()
    assert list(counts.index) == list(frame["file"])  # rows follow original order
    assert set(counts) <= set(CONFIG.copies)
    for source, group in manifest.groupby("source", sort=False):
        assert group["copy_index"].tolist() == list(range(len(group)))
    assert (manifest["chain_lengths"] == "uniform 1..5").all()
    by_file = frame.set_index("file")
    for row in manifest.to_dict("records"):
        original = by_file.loc[row["source"]]
        class_token, instance, ops = parse_copy_filename(row["file"])
        assert (class_token, instance) == (original["class_token"], original["instance"])
        assert row["class"] == original["class"]
        assert ops == row["ops"].split("|") == [s.op for s in chain_from_json(row["chain"])]
        assert row["chain_length"] == len(ops)
    assert len(bars) == 1 and bars[0].total == len(frame) and bars[0].done == len(frame) and bars[0].closed


def test_replay_reproduces_saved_copy(originals, two_runs):
    _, folder = originals
    manifest, _, out_a, *_ = two_runs
    for row in manifest.head(6).itertuples():
        replayed = replay(load_rgb(folder / row.source), row.chain)
        saved = (out_a / row.file).read_bytes()
        assert encode_jpeg(replayed, COPY_JPEG_QUALITY) == saved
        assert np.array_equal(pixels(load_rgb(encode_jpeg(replayed, COPY_JPEG_QUALITY))), pixels(load_rgb(saved)))


def test_make_copies_rejects_duplicate_identities(originals, tmp_path):
    frame, folder = originals
    doubled = pd.concat([frame, frame.head(1)], ignore_index=True)
    with pytest.raises(ValueError, match="class_token"):
        make_copies(doubled, folder, tmp_path, CONFIG, seed=0)


def test_config_describe_dict_and_validation():
    config = AugmentConfig()
    assert config.describe() == "uniform 1..5"
    assert AugmentConfig(**config.as_dict()) == config
    assert json.loads(json.dumps(config.as_dict())) == config.as_dict()
    with pytest.raises(ValueError):
        AugmentConfig(copies=())
    with pytest.raises(KeyError):
        AugmentConfig(ops=("blur", "nope"))
