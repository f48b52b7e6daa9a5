"""Composite edits (malle.ops.composites): deterministic, replayable from the manifest's JSON, bounded, with
real donor photos and AugLy's emoji and screenshot templates; donors drawn apart from every other image set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageOps

from malle.dashboard.failure_gallery import boxed, composite_box
from malle.data.sampling import demo_root
from malle.errors import ConfigError
from malle.io.images import load_rgb
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.ops import (
    COMPOSITE_OPS,
    NO_CONTEXT,
    OPS,
    OpContext,
    apply_chain,
    chain_from_json,
    chain_to_json,
    get_preset,
    replay,
    sample_params,
)
from malle.ops.composites import EMOJIS, TEMPLATES, pattern
from malle.ops.severity import GRIDS, placement_rng

NAMES = [op.name for op in COMPOSITE_OPS]


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.fixture(scope="module")
def photo(demo_photos) -> Image.Image:
    return load_rgb(demo_photos[0])


@pytest.fixture(scope="module")
def context(demo_photos) -> OpContext:
    return OpContext(demo_root(), tuple(p.name for p in demo_photos[50:60]))


def box_of(params: dict) -> tuple[int, int, int, int]:
    return params["left"], params["top"], params["right"], params["bottom"]


def test_the_six_composites_register_last():
    assert NAMES == ["inset", "overlay", "meme", "emoji", "collage", "post"]
    assert list(OPS)[-6:] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_replayable_from_json_with_donors(name, photo, context):
    chain = sample_params(np.random.default_rng(4), [name], photo.size, context)
    assert chain == sample_params(np.random.default_rng(4), [name], photo.size, context)
    made = apply_chain(photo, chain, context)
    again = replay(photo, chain_to_json(chain), context)
    assert np.array_equal(pixels(made), pixels(again))
    assert made.mode == "RGB" and made.size == OPS[name].output_size(photo.size, chain[0].params)
    left, top, right, bottom = box_of(chain[0].params)
    assert 0 <= left < right <= made.width and 0 <= top < bottom <= made.height


@pytest.mark.parametrize("name", ["inset", "overlay", "collage"])
def test_donors_are_recorded_and_needed_to_replay(name, photo, context):
    chain = sample_params(np.random.default_rng(8), [name], photo.size, context)
    donors = chain[0].params["donor"].split("|")
    assert donors and all(d in context.donors for d in donors)
    with pytest.raises(ConfigError, match="dataset folder"):
        apply_chain(photo, chain_from_json(chain_to_json(chain)))  # no context: the donor cannot be read


@pytest.mark.parametrize("name", NAMES)
def test_without_donors_a_pattern_stands_in(name, photo):
    chain = sample_params(np.random.default_rng(2), [name], photo.size)
    assert chain[0].params["donor"] == ""
    out = apply_chain(photo, chain)
    assert np.array_equal(pixels(out), pixels(apply_chain(photo, chain, NO_CONTEXT)))
    assert out.size != photo.size or not np.array_equal(pixels(out), pixels(photo))


def test_inset_pastes_the_original_at_20_to_60_percent_into_the_donor(photo, context):
    for seed in range(30):
        params = OPS["inset"].make_params(np.random.default_rng(seed), photo.size, context)
        left, top, right, bottom = box_of(params)
        assert 0.2 - 0.01 <= (right - left) / photo.width <= 0.6 + 0.01
        assert 0.2 - 0.01 <= (bottom - top) / photo.height <= 0.6 + 0.01
    out = OPS["inset"].apply(photo, params, context)
    inside = pixels(out.crop(box_of(params)))
    shrunk = pixels(photo.resize((right - left, bottom - top), Image.Resampling.BILINEAR))
    assert np.array_equal(inside, shrunk)  # the original, shrunk, exactly where the box says
    donor = ImageOps.fit(load_rgb(demo_root() / params["donor"]), photo.size, Image.Resampling.BILINEAR)
    mask = np.zeros((photo.height, photo.width), bool)
    mask[top:bottom, left:right] = True
    assert np.array_equal(pixels(out)[~mask], pixels(donor)[~mask])  # the donor photo all around


def test_overlay_covers_10_to_50_percent_and_leaves_the_rest(photo, context):
    for seed in range(30):
        params = OPS["overlay"].make_params(np.random.default_rng(seed), photo.size, context)
        left, top, right, bottom = box_of(params)
        share = (right - left) * (bottom - top) / (photo.width * photo.height)
        assert 0.1 - 0.02 <= share <= 0.5 + 0.02
        assert math.isclose(share, params["area"], abs_tol=0.02)
    out = pixels(OPS["overlay"].apply(photo, params, context))
    mask = np.zeros(out.shape[:2], bool)
    mask[top:bottom, left:right] = True
    assert np.array_equal(out[~mask], pixels(photo)[~mask])
    assert not np.array_equal(out[mask], pixels(photo)[mask])


def test_emoji_uses_augly_twemoji_inside_its_box(photo):
    assert len(EMOJIS) > 100  # AugLy ships its Twemoji set
    params = OPS["emoji"].make_params(np.random.default_rng(5), photo.size)
    params["opacity"] = 1.0
    out = pixels(OPS["emoji"].apply(photo, params))
    left, top, right, bottom = box_of(params)
    mask = np.zeros(out.shape[:2], bool)
    mask[top:bottom, left:right] = True
    changed = np.any(out != pixels(photo), axis=2)
    assert changed[mask].mean() > 0.2 and not changed[~mask].any()


@pytest.mark.parametrize("template", [0, 1])
def test_post_uses_augly_screenshot_templates_with_the_photo_in_the_frame(template, photo):
    params = {**OPS["post"].make_params(np.random.default_rng(1), photo.size), "template": template}
    params = OPS["post"].with_box(params, photo.size)
    out = OPS["post"].apply(photo, params)
    with Image.open(f"{_templates_dir()}/{TEMPLATES[template]}") as frame:
        assert out.size == frame.size
    inside = pixels(out.crop(box_of(params)))
    assert inside.std() > 10  # the photo, not the template's blank frame


def _templates_dir() -> str:
    import augly.utils
    return augly.utils.SCREENSHOT_TEMPLATES_DIR


def test_meme_adds_caption_bars_around_the_untouched_photo(photo):
    params = OPS["meme"].with_box({"bar": 0.2, "below": 1, "seed": 3, "donor": ""}, photo.size)
    out = OPS["meme"].apply(photo, params)
    assert out.height == photo.height + 2 * round(0.2 * photo.height)
    assert np.array_equal(pixels(out.crop(box_of(params))), pixels(photo))
    bar = pixels(out.crop((0, 0, photo.width, params["top"])))
    assert (bar < 100).any() and (bar > 250).mean() > 0.5  # dark text on white


def test_collage_puts_the_original_in_its_tile(photo, context):
    params = OPS["collage"].make_params(np.random.default_rng(6), photo.size, context)
    grid = params["grid"]
    assert grid in (2, 3) and len(params["donor"].split("|")) == grid * grid - 1
    out = OPS["collage"].apply(photo, params, context)
    left, top, right, bottom = box_of(params)
    tile = pixels(photo.resize((right - left, bottom - top), Image.Resampling.BILINEAR))
    assert np.array_equal(pixels(out.crop(box_of(params))), tile)


@pytest.mark.parametrize("name,key,value", [("inset", "scale", 1.5), ("overlay", "area", -0.1),
                                            ("overlay", "opacity", 2.0), ("meme", "bar", 0.9),
                                            ("emoji", "emoji", len(EMOJIS)), ("post", "template", 2),
                                            ("collage", "grid", 0), ("meme", "below", 5)])
def test_out_of_range_parameters_are_a_one_line_error(name, key, value, photo):
    params = {**OPS[name].default_params(), key: value}
    with pytest.raises(ConfigError, match=f"{name}: {key}="):
        OPS[name].apply(photo, params)


@pytest.mark.parametrize("name", NAMES)
def test_every_sweep_level_applies(name, photo):
    grid = GRIDS[name]
    sizes = set()
    for value in grid.values[1:]:
        out = grid.make(photo, value, placement_rng(0, "x.jpg", name))
        sizes.add(out.size)
        assert out.mode == "RGB"
    assert grid.make(photo, grid.values[0], placement_rng(0, "x.jpg", name)).size == photo.size


def test_pattern_is_deterministic_and_not_flat():
    a, b = pattern((64, 48), 7), pattern((64, 48), 7)
    assert np.array_equal(pixels(a), pixels(b)) and pixels(a).std() > 0


def test_donors_are_drawn_only_with_composites_and_apart_from_every_other_set(tmp_path):
    plain = Experiment(ExperimentConfig(n=6, distractors=20), cache_root=tmp_path)
    assert plain.donor_images == [] and plain.op_context.donors == ()
    hard = Experiment(ExperimentConfig(n=6, distractors=20, db_distractors=10, augment=get_preset("hard").augment()),
                      cache_root=tmp_path)
    donors = {c.rel for c in hard.donor_images}
    assert donors and set(hard.op_context.donors) == donors
    originals = set(hard.originals["source_path"])
    database = {c.rel for c in hard.db_distractor_images}
    pool = {c.rel for c in hard.distractor_pool}
    assert not donors & originals and not donors & database and not donors & pool
    assert len(pool) >= len(donors)  # distractor queries keep at least half of the spare images
    # The reference run's distractor pool is what it was: only database distractors are held out.
    assert {c.rel for c in plain.distractor_pool} == {c.rel for c in plain.discovered[0]} - set(
        plain.originals["source_path"])


def test_the_failure_gallery_outlines_the_pasted_region_while_later_edits_leave_it_in_place(photo, tmp_path):
    inset = sample_params(np.random.default_rng(3), ["inset"], photo.size)[0]
    blur = sample_params(np.random.default_rng(3), ["blur"], photo.size)[0]
    rotate = sample_params(np.random.default_rng(3), ["rotate"], photo.size)[0]
    assert composite_box([blur, inset]) == box_of(inset.params)
    assert composite_box([inset, blur]) == box_of(inset.params)  # blurring moves no pixel
    assert composite_box([inset, rotate]) is None  # the region moved: no box rather than a wrong one
    assert composite_box([blur, rotate]) is None
    path = tmp_path / "query.png"
    apply_chain(photo, [inset]).save(path)
    outlined = boxed(path, box_of(inset.params))
    left, top, right, bottom = box_of(inset.params)
    assert outlined.getpixel((left, (top + bottom) // 2)) == (255, 0, 0)
    assert outlined.getpixel(((left + right) // 2, bottom - 1)) == (255, 0, 0)
