"""Local-feature geometric verification of the top candidates, fused with the global score.

For a query and each of its top candidates: SIFT keypoints on both (longest side scaled to 512 px),
Lowe's ratio test (0.75), one match per candidate keypoint (its closest), then a RANSAC homography
(OpenCV, 5 px reprojection error). The number of RANSAC inliers says whether the two images share a
planar region, which an inset, an overlay or a collage tile still does when the global descriptor has
lost it.

Why one match per candidate keypoint: without it, many query keypoints that look alike (a post
template's icons and text, a meme's letters) can all match the same few keypoints of an unrelated
candidate, and RANSAC then fits a degenerate homography that squeezes a whole region onto those few
points, every one of its matches an "inlier". On the hard preset that gave unrelated pairs the full
bonus (59 inliers landing on 3 points of a toaster photo). Counted one to one, such a fit has at most as
many inliers as distinct candidate points.

Fusion: ``fused = score + BONUS * clip((inliers - MIN_INLIERS) / SPAN, 0, 1)``. Fewer than
``MIN_INLIERS`` inliers is what RANSAC finds between unrelated photos, so it adds nothing; the bonus
grows linearly to its full value at ``MIN_INLIERS + SPAN`` inliers. A full bonus of 1.0 on a cosine
similarity lifts a verified candidate above every unverified one of the same query. These constants
are common practice for SIFT + RANSAC, fixed in advance and not tuned on Malle's data.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

LONGEST_SIDE = 512
RATIO = 0.75
REPROJECTION_PX = 5.0
MIN_INLIERS = 8
SPAN = 24
BONUS = 1.0
MAX_FEATURES = 1000
MATCHING = "ratio test, one to one"  # in cache keys: how matches are kept before RANSAC


@dataclass(frozen=True)
class Features:
    points: np.ndarray  # (n, 2) float32 keypoint positions, in the scaled image's pixels
    descriptors: np.ndarray  # (n, 128) float32 SIFT descriptors

    def __len__(self) -> int:
        return len(self.points)


def features(image: Image.Image) -> Features:
    """SIFT keypoints and descriptors of ``image`` (grey, longest side scaled to ``LONGEST_SIDE``)."""
    grey = image.convert("L")
    scale = LONGEST_SIDE / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BILINEAR)
    sift = cv2.SIFT_create(nfeatures=MAX_FEATURES)  # type: ignore[attr-defined]  # in cv2, missing from its stub
    keypoints, descriptors = sift.detectAndCompute(np.asarray(grey), None)
    if descriptors is None:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    return Features(np.asarray([k.pt for k in keypoints], dtype=np.float32), descriptors.astype(np.float32))


def inliers(query: Features, candidate: Features) -> int:
    """RANSAC homography inliers among the ratio-test matches from ``query`` to ``candidate``."""
    if len(query) < 2 or len(candidate) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = one_to_one([m for m, n in (p for p in pairs if len(p) == 2) if m.distance < RATIO * n.distance])
    if len(good) < 4:  # a homography needs four correspondences
        return 0
    src = query.points[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    dst = candidate.points[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, REPROJECTION_PX)
    return 0 if mask is None else int(mask.sum())


def one_to_one(matches: list) -> list:
    """The closest of the matches landing on each candidate keypoint (each query keypoint has one already)."""
    best: dict[int, cv2.DMatch] = {}
    for match in matches:
        kept = best.get(match.trainIdx)
        if kept is None or match.distance < kept.distance:
            best[match.trainIdx] = match
    return sorted(best.values(), key=lambda m: m.queryIdx)


def bonus(inlier_count: np.ndarray | int) -> np.ndarray:
    """What verification adds to a global similarity for ``inlier_count`` inliers."""
    return BONUS * np.clip((np.asarray(inlier_count, dtype=np.float64) - MIN_INLIERS) / SPAN, 0.0, 1.0)


def fuse(scores: np.ndarray, inlier_counts: np.ndarray) -> np.ndarray:
    """Global similarities plus the verification bonus of each candidate."""
    return np.asarray(scores, dtype=np.float64) + bonus(inlier_counts)


def rerank(ids: np.ndarray, scores: np.ndarray, inlier_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One query's candidates re-ordered by fused score, best first (a stable sort keeps ties in order)."""
    fused = fuse(scores, inlier_counts)
    order = np.argsort(-fused, kind="stable")
    return ids[order], fused[order]
