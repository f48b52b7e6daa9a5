"""The bank on a real SQLite file and real FAISS indexes: adds, matches, removes, durability, the index cache,
concurrency, thresholds from a lab run, and the ``malle bank`` command."""

from __future__ import annotations

import io
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from malle.bank import Bank, Conflict, NotFound, snapshots, thresholds
from malle.cli import main
from malle.errors import BadImage, ConfigError
from malle.ops import get_op


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def edited(photo) -> bytes:
    """A modified copy: resized, brighter, saved again as JPEG."""
    img = Image.open(photo).convert("RGB")
    img = get_op("resize").apply(img, {"size": 300})
    img = get_op("color").apply(img, {"brightness": 1.15, "contrast": 1.0})
    return jpeg_bytes(img, 70)


@pytest.fixture()
def bank(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    notices = []
    opened = Bank.open(tmp_path / "bank", log=notices.append)
    opened.notices = notices
    yield opened
    opened.close()


def test_round_trip_with_edited_copies(bank, demo_photos):
    bank.create_collection("photos", "pdq")
    report = bank.add_files("photos", demo_photos[:12])
    assert len(report.added) == 12 and report.skipped.empty
    for photo in demo_photos[:4]:
        result = bank.match_bytes("photos", edited(photo), k=3)
        assert result.matches[0].item.filename == photo.name
        assert result.matches[0].is_match
        assert not result.matches[1].is_match  # another photo is no copy
        assert result.threshold == thresholds.DEFAULTS["pdq"].threshold
    unrelated = bank.match_bytes("photos", demo_photos[50].read_bytes(), k=1)
    assert not unrelated.matches[0].is_match


def test_adds_are_idempotent_and_removes_stick(bank, demo_photos):
    bank.create_collection("p", "phash", threshold=8)
    data = demo_photos[0].read_bytes()
    first, created = bank.add_bytes("p", data, "a.jpg", {"source": "test"})
    again, created_again = bank.add_bytes("p", data, "renamed.jpg")
    assert created and not created_again and again.id == first.id and again.filename == "a.jpg"
    assert again.metadata == {"source": "test"}
    report = bank.add_files("p", [demo_photos[0], demo_photos[1]])
    assert [i.id for i in report.existing] == [first.id] and len(report.added) == 1
    assert bank.collection("p").count == 2
    bank.remove("p", first.id)
    assert bank.collection("p").count == 1
    assert first.id not in [m.item.id for m in bank.match_bytes("p", data, k=5).matches]
    back, created = bank.add_bytes("p", data, "a.jpg")  # removed bytes come back as a new item
    assert created and back.id != first.id
    assert bank.match_bytes("p", data, k=1).matches[0].item.id == back.id


def test_bad_input_is_refused_with_one_line(bank, bad_folder):
    folder, expected = bad_folder
    bank.create_collection("p", "phash", threshold=8)
    with pytest.raises(BadImage):
        bank.add_bytes("p", b"not an image", "x.jpg")
    with pytest.raises(ConfigError, match="JSON object"):
        bank.add_bytes("p", (folder / "good_0.jpg").read_bytes(), "x.jpg", "[1, 2]")
    with pytest.raises(NotFound):
        bank.match_bytes("nope", b"x")
    with pytest.raises(Conflict):
        bank.create_collection("p", "phash", threshold=8)
    with pytest.raises(ConfigError, match="collection name"):
        bank.create_collection("../evil", "phash", threshold=8)
    with pytest.raises(ConfigError, match="outside"):
        bank.create_collection("q", "phash", threshold=65)
    with pytest.raises(ConfigError, match="no calibrated default"):
        bank.create_collection("q", "dhash")
    report = bank.add_files("p", [folder])
    reasons = dict(zip(report.skipped["path"].map(lambda p: p.rsplit("/", 1)[-1]), report.skipped["reason"]))
    for name, fragment in expected.items():
        assert fragment in reasons[name]
    assert len(report.added) == bank.collection("p").count > 0


def test_database_is_the_truth_for_the_index(bank, demo_photos):
    bank.create_collection("p", "pdq")
    bank.add_files("p", demo_photos[:6])
    bank.refresh()
    index_path, ids_path, meta_path = bank.snapshots.paths("p")
    assert bank.snapshots.state(bank.collection("p")) == "current"
    index_path.write_bytes(index_path.read_bytes()[:40])  # damaged
    reopened = Bank.open(bank.folder, log=bank.notices.append)
    hit = reopened.match_bytes("p", demo_photos[2].read_bytes(), k=1).matches[0]
    assert hit.item.filename == demo_photos[2].name and hit.score == 0
    assert sum("damaged" in n and "rebuilding" in n for n in bank.notices) == 1
    # A stale index (items added by another process since) is used with the database's changes.
    other = Bank.open(bank.folder)
    other.add_files("p", demo_photos[6:8])
    assert reopened.match_bytes("p", demo_photos[7].read_bytes(), k=1).matches[0].item.filename == demo_photos[7].name
    other.remove("p", hit.item.id)
    assert hit.item.id not in [m.item.id for m in reopened.match_bytes("p", demo_photos[2].read_bytes()).matches]
    for path in (index_path, ids_path, meta_path):
        path.unlink()
    fresh = Bank.open(bank.folder, log=bank.notices.append)
    assert fresh.match_bytes("p", demo_photos[7].read_bytes(), k=1).matches[0].score == 0
    assert any("missing" in n for n in bank.notices)
    assert fresh.verify() == []


def test_damaged_code_is_found_by_verify(bank, demo_photos):
    bank.create_collection("p", "phash", threshold=8)
    bank.add_files("p", demo_photos[:3])
    with sqlite3.connect(bank.store.path) as db:  # the row of item 2 names record 0, which belongs to item 1
        db.execute("UPDATE items SET record = 0 WHERE id = 2")
    problems = Bank.open(bank.folder).verify()
    assert len(problems) == 2 and "record 0" in problems[0] and "named by no item (record 1)" in problems[1]


def test_matches_never_fail_while_adds_rebuild_the_index(bank, demo_photos, monkeypatch):
    monkeypatch.setattr(snapshots, "REBUILD_AFTER", 4)
    bank.create_collection("p", "phash", threshold=4)
    bank.add_files("p", demo_photos[:5])
    queries = [demo_photos[i].read_bytes() for i in range(5)]
    errors, done = [], threading.Event()

    def matcher():
        try:
            while not done.is_set():
                for i, data in enumerate(queries):
                    assert bank.match_bytes("p", data, k=1).matches[0].item.filename == demo_photos[i].name
        except Exception as err:  # noqa: BLE001 (the test reports any failure in a thread)
            errors.append(err)

    threads = [threading.Thread(target=matcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for photo in demo_photos[5:45]:
        item, _ = bank.add_bytes("p", photo.read_bytes(), photo.name)
        assert bank.match_bytes("p", photo.read_bytes(), k=1).matches[0].item.id == item.id
    done.set()
    for thread in threads:
        thread.join()
    bank.snapshots.wait()
    assert errors == []
    assert bank.snapshots.current(bank.collection("p")).version > 1  # rebuilt along the way
    assert bank.collection("p").count == 45


def test_threshold_from_a_lab_run(bank, tmp_path):
    out = tmp_path / "lab"
    out.mkdir()
    pd.DataFrame({"method": ["phash", "sscd_distilled"], "uap": [0.5, 0.9], "recall_at_p90": [0.4, 0.8],
                  "threshold_at_p90": [-12.0, 0.61]}).to_csv(out / "openset.csv", index=False)
    coll = bank.create_collection("p", "phash", threshold_from=out)
    assert coll.threshold == 12 and str(out.resolve()) in coll.threshold_source
    with pytest.raises(ConfigError, match="did not evaluate pdq"):
        bank.create_collection("q", "pdq", threshold_from=out)


def test_codes_from_embeddings_are_checked(bank, demo_photos, tmp_path):
    from malle.descriptors import create_descriptor
    from malle.io import shards as embeddings

    desc = create_descriptor("phash")
    codes = desc.encode_files(demo_photos[:3])
    embeddings.write(tmp_path / "emb", desc, [p.name for p in demo_photos[:3]], codes)
    bank.create_collection("p", "phash", threshold=6)
    report = bank.add_embeddings("p", tmp_path / "emb", images=demo_photos[0].parent)
    assert len(report.added) == 3 and report.added[0].sha256 == bank.add_bytes("p", demo_photos[0].read_bytes(),
                                                                              "x")[0].sha256
    bank.create_collection("q", "pdq")
    with pytest.raises(ConfigError, match="made by 'phash'"):
        bank.add_embeddings("q", tmp_path / "emb")


def test_bank_command(tmp_path, demo_photos, capsys, monkeypatch):
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "refs"
    folder.mkdir()
    for photo in demo_photos[:5]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "notes.jpg").write_text("not a picture")
    bank = str(tmp_path / "bank")
    assert main(["bank", "create", bank, "photos", "--method", "phash", "--threshold", "6"]) == 0
    assert main(["bank", "add", bank, str(folder)]) == 0
    assert "5 added, 0 already there" in capsys.readouterr().out
    assert main(["bank", "add", bank, str(folder)]) == 0
    assert "0 added, 5 already there" in capsys.readouterr().out
    query = tmp_path / "query.jpg"
    query.write_bytes(edited(demo_photos[3]))
    assert main(["bank", "match", bank, str(query), "-k", "2", "--out", str(tmp_path / "m.csv")]) == 0
    table = pd.read_csv(tmp_path / "m.csv")
    assert table["filename"].iloc[0] == demo_photos[3].name and bool(table["is_match"].iloc[0])
    assert list(table.columns) == ["query", "rank", "id", "filename", "score", "is_match", "threshold", "metadata"]
    assert main(["bank", "remove", bank, str(int(table["id"].iloc[0]))]) == 0
    assert main(["bank", "verify", bank]) == 0
    assert "4 items; index current" in capsys.readouterr().out
    assert main(["bank", "match", str(tmp_path / "none"), str(query)]) == 2
    assert "is not a bank" in capsys.readouterr().err
    assert np.isfinite(thresholds.DEFAULTS["phash"].threshold)


# -- the dashboard's Bank page --------------------------------------------------------------------------
def test_bank_page_logic(bank, demo_photos, tmp_path):
    from malle.dashboard import bank as page

    bank.create_collection("photos", "pdq")
    bank.add_files("photos", demo_photos[:8])
    folder = page.bank_folder(str(bank.folder), [tmp_path.resolve()])
    with pytest.raises(ConfigError, match="outside"):
        page.bank_folder(str(bank.folder), [(tmp_path / "elsewhere").resolve()])
    with pytest.raises(ConfigError, match="not a bank"):
        page.bank_folder(str(tmp_path), [tmp_path.resolve()])
    opened = page.open_bank(folder)
    assert page.collections_table(opened)["items"].tolist() == [8]
    result, cards = page.match_cards(opened, "photos", edited(demo_photos[2]), 3)
    assert cards[0].filename == demo_photos[2].name and cards[0].is_match and "≤" in cards[0].caption
    assert not cards[1].is_match and ">" in cards[1].caption
    assert Image.open(io.BytesIO(cards[0].thumbnail)).size[0] <= 192
    assert [c.item_id for c in page.item_cards(opened, "photos", 2, per_page=5)] == [6, 7, 8]
    assert page.n_pages(8, 5) == 2


def test_bank_page_renders_without_an_experiment(bank, demo_photos, tmp_path, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    bank.create_collection("photos", "phash", threshold=6)
    bank.add_files("photos", demo_photos[:3])
    monkeypatch.setenv("MALLE_BANK", str(bank.folder))
    monkeypatch.setenv("MALLE_ALLOWED_ROOTS", str(tmp_path))
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=120)
    app.switch_page("app_pages/bank.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.dataframe[0].value["collection"].tolist() == ["photos"]
    assert len(app.image) >= 3  # the browse tab shows every item's thumbnail
