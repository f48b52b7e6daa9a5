"""``malle dedup``: planted copies in a folder of real photos come back as groups; stars do not chain."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from malle.cli import main
from malle.dedup import folder as dedup
from malle.ops import get_op
from malle.retrieval.metrics import HAMMING


def save_copy(img: Image.Image, path, ops: list[tuple[str, dict]]) -> None:
    for op, params in ops:
        img = get_op(op).apply(img, params)
    img.save(path, quality=80)


def test_planted_copies_are_grouped(tmp_path, demo_photos, capsys, monkeypatch):
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for photo in demo_photos[:12]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    planted = {}
    for photo in demo_photos[:3]:
        img = Image.open(photo).convert("RGB")
        copies = [f"sub/{photo.stem}_small.jpg", f"{photo.stem}_bright.jpg"]
        save_copy(img, folder / copies[0], [("resize", {"size": 240}), ("jpeg", {"quality": 60})])
        save_copy(img, folder / copies[1], [("color", {"brightness": 1.2, "contrast": 1.1})])
        planted[photo.name] = {photo.name, *copies}
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "out"
    assert main(["dedup", str(folder), "--method", "pdq", "--out", str(out)]) == 0
    assert "3 group(s) holding 9 images" in capsys.readouterr().out
    groups = pd.read_csv(out / "groups.csv")
    assert list(groups.columns) == ["group", "path", "score"]
    found = [set(members["path"]) for _, members in groups.groupby("group")]
    assert sorted(map(sorted, found)) == sorted(map(sorted, planted.values()))
    centres = groups.groupby("group").head(1)
    assert (centres["score"] == 0).all()  # the centre's own row scores itself
    assert (groups["score"] <= dedup.default_threshold("pdq")).all()
    sheet = (out / "groups.html").read_text()
    assert sheet.count("data:image/jpeg;base64,") == 9 and "<script" not in sheet
    assert "broken.jpg" in pd.read_csv(out / "skipped.csv")["path"].iloc[0]


def chain_codes(n: int, step_bits: int) -> np.ndarray:
    """Codes along a line: each differs from the next in ``step_bits`` new bits."""
    bits = np.zeros((n, 64), dtype=np.uint8)
    for i in range(1, n):
        bits[i] = bits[i - 1]
        bits[i, (i - 1) * step_bits:i * step_bits] = 1
    return np.packbits(bits, axis=1)


def test_stars_do_not_chain_unrelated_images():
    codes = chain_codes(8, 4)  # neighbours 4 bits apart, the ends 28 bits apart
    near = dedup.neighbours(HAMMING, codes, 5)
    table = dedup.group_table(HAMMING, codes, near, [f"{i}.jpg" for i in range(8)])
    assert table["group"].nunique() >= 2  # one connected component, several stars
    for _, members in table.groupby("group"):
        centre = int(members["path"].iloc[0].split(".")[0])
        for path in members["path"]:
            other = int(path.split(".")[0])
            assert HAMMING.pair_scores(codes[[centre]], codes[[other]])[0] <= 5
    assert not table["path"].duplicated().any()


def test_dedup_rejects_a_missing_folder(tmp_path, capsys):
    assert main(["dedup", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_default_method_is_the_best_that_runs():
    assert dedup.default_method() == "sscd_distilled"
