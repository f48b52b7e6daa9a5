"""Default bank thresholds hold on queries that carry nothing to match (issue 25): a solid black 512 x 512 JPEG, a
near-uniform image and a page of rendered text, queried through the bank against the demo photos with every
method that has a default threshold, are not matches at that threshold: neither by the score alone
(``allow_low_quality``, the quality gate out of the way) nor as the bank answers by default. Real models, a real
SQLite bank and real FAISS indexes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from malle.bank import Bank
from malle.bank.bank import check_runs
from malle.bank.thresholds import DEFAULTS
from malle.data.hard_negatives import text_page
from malle.errors import WeightsUnavailable
from malle.io.images import encode_jpeg


def near_uniform() -> Image.Image:
    """Mid grey with faint noise (sigma 3): the quality gate's kind of image, just above a solid colour."""
    noise = np.random.default_rng(0).normal(0, 3, (512, 512, 3))
    return Image.fromarray(np.clip(128 + noise, 0, 255).astype(np.uint8), "RGB")


QUERIES = {
    "solid black JPEG": lambda: Image.new("RGB", (512, 512), (0, 0, 0)),
    "near-uniform": near_uniform,
    "text only": lambda: text_page(np.random.default_rng(0), (512, 512)),
}


@pytest.fixture(scope="module")
def bank(tmp_path_factory, demo_photos):
    opened = Bank.open(tmp_path_factory.mktemp("uninformative") / "bank")
    yield opened
    opened.close()


def collection(bank: Bank, method: str, photos) -> str:
    """The method's collection at its default threshold, filled with the demo photos once."""
    try:
        check_runs(method)
    except WeightsUnavailable as err:
        pytest.skip(str(err))
    if method not in {c.name for c in bank.collections()}:
        bank.create_collection(method, method)
        assert len(bank.add_files(method, photos).added) == len(photos)
    return method


@pytest.mark.parametrize("kind", list(QUERIES))
@pytest.mark.parametrize("method", list(DEFAULTS))
def test_uninformative_query_is_no_match_at_the_default(bank, demo_photos, method, kind):
    name = collection(bank, method, demo_photos)
    data = encode_jpeg(QUERIES[kind](), 90)
    alone = bank.match_bytes(name, data, k=1, allow_low_quality=True)
    assert alone.threshold == DEFAULTS[method].threshold
    top = alone.matches[0]
    assert not top.is_match, f"{kind} matched {top.item.filename} with {method} at {top.score} (default " \
                             f"{alone.threshold})"
    assert not any(m.is_match for m in bank.match_bytes(name, data, k=5).matches)
