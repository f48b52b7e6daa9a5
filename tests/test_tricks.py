"""The matching tricks' primitives: score normalisation by hand, region windows, verification on real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from malle.data.sampling import demo_root
from malle.errors import ConfigError
from malle.ops import OPS
from malle.tricks import normalise, regions, verify


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_normalisation_matches_a_hand_computation():
    background = _unit([[1, 0], [0, 1], [0.6, 0.8], [-1, 0]])
    queries = _unit([[1, 0], [0, 1]])
    index = normalise.background_index(background)
    norm = normalise.ScoreNormalisation(beta=2.0, first=1, last=2)
    # query 0 sees the background at similarities 1, 0, 0.6, -1: ranks 1-2 are 1 and 0.6 -> mean 0.8
    # query 1 sees 0, 1, 0.8, 0: ranks 1-2 are 1 and 0.8 -> mean 0.9
    sims = normalise.background_similarity(queries, index, norm)
    np.testing.assert_allclose(sims, [0.8, 0.9], atol=1e-6)
    scores = np.array([[0.9, 0.5], [0.7, 0.1]])
    np.testing.assert_allclose(normalise.normalise(scores, sims, norm),
                               [[0.9 - 1.6, 0.5 - 1.6], [0.7 - 1.8, 0.1 - 1.8]], atol=1e-6)


def test_normalisation_equals_sscds_augmented_vectors():
    # SSCD's disc_eval.py applies the normalisation inside the search: each query gets one more coordinate,
    # -beta x its mean background similarity at ranks first..last, each reference a 1, and an inner-product
    # search of the augmented vectors gives the normalised scores. Both ways must agree on real-sized codes.
    rng = np.random.default_rng(3)
    queries, references, background = (_unit(rng.normal(size=(n, 64))) for n in (20, 50, 40))
    norm = normalise.ScoreNormalisation()
    sims, _ = normalise.background_index(background).search(queries, norm.last)
    adjustment = -norm.beta * sims[:, norm.first - 1:norm.last].mean(axis=1, keepdims=True)
    sscd = np.hstack([queries, adjustment]) @ np.hstack([references, np.ones((len(references), 1))]).T
    ours = normalise.normalise(queries @ references.T,
                               normalise.background_similarity(queries, normalise.background_index(background),
                                                               norm), norm)
    np.testing.assert_allclose(ours, sscd, atol=1e-5)


def test_normalisation_keeps_each_querys_ranking():
    rng = np.random.default_rng(0)
    scores = rng.random((5, 7))
    out = normalise.normalise(scores, rng.random(5), normalise.ScoreNormalisation())
    assert (np.argsort(-out, axis=1) == np.argsort(-scores, axis=1)).all()


def test_sscd_defaults_and_bad_settings():
    norm = normalise.ScoreNormalisation()
    assert (norm.beta, norm.first, norm.last) == (1.0, 1, 3)  # SSCD's --score_norm 1.0[0,2]
    with pytest.raises(ConfigError):
        normalise.ScoreNormalisation(first=3, last=2)
    with pytest.raises(ConfigError):
        normalise.ScoreNormalisation(beta=-1)
    with pytest.raises(ConfigError, match="needs at least 3"):
        normalise.background_similarity(_unit([[1, 0]]), normalise.background_index(_unit([[1, 0]])), norm)


def test_region_windows_cover_the_query():
    boxes = regions.windows(400, 300)
    assert boxes[0] == (0, 0, 400, 300) and len(boxes) == 11
    assert all(0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300 for x0, y0, x1, y1 in boxes)
    assert {(x0, y0) for x0, y0, *_ in boxes[1:10]} == {(x, y) for x in (0, 100, 200) for y in (0, 75, 150)}
    assert [c.size for c in regions.crops(Image.new("RGB", (400, 300)))][:2] == [(400, 300), (200, 150)]


def test_region_hits_keep_each_references_best_score():
    ids = [np.array([3, 1, -1]), np.array([1, 2, 3])]
    scores = [np.array([0.5, 0.2, -np.inf]), np.array([0.9, 0.4, 0.1])]
    out_ids, out_scores = regions.best_per_reference(ids, scores, k=4)
    assert out_ids.tolist() == [1, 3, 2, -1]
    np.testing.assert_allclose(out_scores[:3], [0.9, 0.5, 0.4])


def _photo(name: str) -> Image.Image:
    return Image.open(demo_root() / name).convert("RGB")


def test_verification_reranks_a_planted_copy_above_a_decoy():
    original, decoy = _photo("0.jpg"), _photo("1.jpg")
    # The copy: the original's central part, rotated a little and shrunk, as an edited copy would be.
    copy = original.crop((60, 40, 460, 440)).rotate(8, expand=True).resize((300, 300))
    query = verify.features(copy)
    counts = np.array([verify.inliers(query, verify.features(decoy)), verify.inliers(query, verify.features(original))])
    assert counts[1] >= verify.MIN_INLIERS + verify.SPAN and counts[0] < verify.MIN_INLIERS
    # The global score put the decoy first; verification puts the original first.
    ids, fused = verify.rerank(np.array([7, 4]), np.array([0.80, 0.60]), counts)
    assert ids.tolist() == [4, 7] and fused[0] == pytest.approx(1.60)


def test_verification_counts_one_to_one_so_template_look_alikes_do_not_verify():
    # A social-post screenshot of one demo photo against an unrelated one: the template's icons and text
    # matched the same few keypoints of 19.jpg many times over, and RANSAC fitted a degenerate homography
    # with 40 "inliers" (the full bonus) before matches were kept one to one.
    original = _photo("1.jpg")
    post = OPS["post"]
    query = verify.features(post.apply(original, post.make_params(np.random.default_rng(1), original.size)))
    assert verify.inliers(query, verify.features(_photo("19.jpg"))) < verify.MIN_INLIERS
    assert verify.inliers(query, verify.features(original)) >= verify.MIN_INLIERS + verify.SPAN


def test_verification_of_a_flat_image_finds_nothing():
    flat = verify.features(Image.new("RGB", (64, 64), "grey"))
    assert len(flat) == 0 and verify.inliers(flat, verify.features(_photo("0.jpg"))) == 0
    assert verify.bonus(0) == 0 and verify.bonus(1000) == verify.BONUS
