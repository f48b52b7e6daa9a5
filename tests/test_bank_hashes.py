"""The bank's side of issue 24 on real parts: index strings checked in a child process, metadata checked before
any write and read back whatever a row holds, hash lists in and out, the quality gate, and ``bank`` taking its
options between paths."""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from malle.bank import Bank, metadata, quality
from malle.bank.codes import from_text, to_text
from malle.cli import main
from malle.errors import BadImage, ConfigError
from malle.io.images import load_rgb
from malle.retrieval import indexes
from malle.retrieval.metrics import METRICS


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


# -- index strings ------------------------------------------------------------------------------------------
def test_the_child_process_turns_a_faiss_abort_into_one_line():
    for spec, signal_name in (("HNSW0", "SIGABRT"), ("RR0,Flat", "SIGSEGV")):
        problem = indexes.probe(spec, METRICS["ip"], 64)
        assert signal_name in problem and spec in problem and "\n" not in problem
    assert indexes.probe("HNSW32", METRICS["ip"], 64) is None
    assert indexes.probe("IVF16,Flat", METRICS["hamming"], 256) is None


@pytest.mark.parametrize("spec", ["HNSW0", "HNSW1", "IVF16_HNSW0,Flat", "RR0,Flat", "IVF0,Flat", "IVF99999999,Flat",
                                  "IVF16,PQ8x40", "x" * 300, "nonsense"])
def test_bad_index_strings_fail_the_check_in_one_line(spec):
    with pytest.raises(ConfigError) as err:
        indexes.check(spec, METRICS["ip"], 512)
    assert "\n" not in str(err.value)


def test_bank_create_and_run_refuse_a_crashing_index(tmp_path, capsys, tree_dataset, monkeypatch):
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    assert main(["bank", "create", str(tmp_path / "b"), "h", "--method", "phash", "--threshold", "6",
                 "--index", "HNSW0"]) == 2
    assert "HNSW0" in capsys.readouterr().err
    assert Bank.open(tmp_path / "b").collections() == []
    assert main(["run", "--data", str(tree_dataset), "--methods", "phash", "--index", "IVF16_HNSW0,Flat",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("malle: error:") and "HNSW0" in err[-1]


def test_a_bank_holding_a_crashing_string_searches_exactly(bank, demo_photos):
    bank.create_collection("p", "phash", threshold=6)
    bank.add_files("p", demo_photos[:3])
    with sqlite3.connect(bank.store.path) as db:  # written by a version that did not check strings
        db.execute("UPDATE collections SET index_factory = 'HNSW0'")
    notices = []
    again = Bank.open(bank.folder, log=notices.append)
    again.snapshots.rebuild("p")
    assert again.match_bytes("p", demo_photos[1].read_bytes(), k=1).matches[0].item.filename == demo_photos[1].name
    assert any("HNSW0" in n and "exactly" in n for n in notices)


# -- metadata -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"a": "\\ud800"}', '{"a": NaN}', '{"a": Infinity}', '{"a": 1e999}',
                                  '{"a": ' * 5000 + "1" + "}" * 5000, '{"a": "' + "x" * 70_000 + '"}', "[1]", "{"])
def test_metadata_that_cannot_round_trip_is_refused_before_any_write(bank, demo_photos, text):
    bank.create_collection("p", "phash", threshold=6)
    with pytest.raises(ConfigError, match="metadata"):
        bank.add_bytes("p", demo_photos[0].read_bytes(), "a.jpg", text)
    with pytest.raises(ConfigError, match="metadata"):
        bank.add_files("p", demo_photos[:1], text)
    assert bank.collection("p").count == 0


def test_metadata_from_python_is_checked_too(bank, demo_photos):
    bank.create_collection("p", "phash", threshold=6)
    deep = {}
    for _ in range(100):
        deep = {"a": deep}
    for value in ({"a": float("nan")}, {"a": "\udfff"}, deep, {1: "x"}, {"a": object()}):
        with pytest.raises(ConfigError):
            bank.add_bytes("p", demo_photos[0].read_bytes(), "a.jpg", value)
    item, _ = bank.add_bytes("p", demo_photos[0].read_bytes(), "a.jpg", {"é": [1, 2.5, None, True, "ünï"]})
    assert bank.store.item("p", item.id).metadata == {"é": [1, 2.5, None, True, "ünï"]}


def test_reads_never_raise_whatever_a_row_holds():
    assert metadata.read('{"a": "\\ud800x"}') == {"a": "\ufffdx"}
    assert metadata.read('{"ok": "\\ud83d\\ude00"}') == {"ok": "\U0001F600"}
    assert metadata.UNREADABLE_KEY in metadata.read("{broken")
    assert metadata.UNREADABLE_KEY in metadata.read("[1, 2]")
    assert metadata.UNREADABLE_KEY in metadata.read("[" * 100_000)


# -- hash lists -------------------------------------------------------------------------------------------------
def test_a_pdq_bank_round_trips_through_export_and_import(tmp_path, demo_photos, capsys, monkeypatch):
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    assert main(["bank", "create", first, "photos", "--method", "pdq"]) == 0
    # Options between the paths, in either order.
    assert main(["bank", "add", first, "-c", "photos", str(demo_photos[0]), str(demo_photos[1])]) == 0
    assert main(["bank", "add", first, str(demo_photos[2]), str(demo_photos[3]), "-c", "photos", "--metadata",
                 '{"from": "partner"}']) == 0
    capsys.readouterr()
    assert main(["bank", "export", first, "-c", "photos", "--out", str(tmp_path / "list.csv")]) == 0
    exported = pd.read_csv(tmp_path / "list.csv", dtype=str)
    assert list(exported.columns) == ["hash", "id", "metadata"] and len(exported) == 4
    assert exported["hash"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert json.loads(exported["metadata"].iloc[3]) == {"from": "partner"}
    with open(tmp_path / "list.csv", "a") as handle:
        handle.write("abc,bad,{}\n" + exported["hash"].iloc[0] + ",again,{}\n" + "00" * 32 + ",x,[1]\n")
    assert main(["bank", "create", second, "copy", "--method", "pdq"]) == 0
    assert main(["bank", "import", second, str(tmp_path / "list.csv"), "-c", "copy"]) == 0
    out = capsys.readouterr()
    assert "4 added, 1 already there, 2 skipped" in out.out and "list.csv:6" in out.err
    assert main(["bank", "export", second]) == 0
    again = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype=str)
    assert again["hash"].tolist() == exported["hash"].tolist()
    assert again["metadata"].tolist() == exported["metadata"].tolist()
    imported = Bank.open(second)
    item = imported.store.items("copy")[0]
    assert not item.has_thumbnail and item.digest_of == "code" and item.filename == exported["id"].iloc[0]
    assert imported.store.thumbnail("copy", item.id) is None
    hit = imported.match_bytes("copy", demo_photos[2].read_bytes(), k=1).matches[0]
    assert hit.score == 0 and hit.item.filename == exported["id"].iloc[2] and hit.is_match


def test_pdq_codes_are_threatexchange_hex():
    """Meta's Hash256 prints w[15] first; bit k is bit k % 16 of word k // 16 (pdqhash's hash_to_vector)."""
    import pdqhash

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    bits, _ = pdqhash.compute(image)
    words = [0] * 16
    for k in range(256):  # bits[j] holds Hash256 bit 255 - j
        words[k // 16] |= int(bits[255 - k]) << (k % 16)
    expected = "".join(f"{w:04x}" for w in reversed(words))
    assert to_text(np.packbits(np.asarray(bits, np.uint8))) == expected


def test_codes_as_text_are_checked(bank):
    coll = bank.create_collection("s", "sscd_distilled")
    vector = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    vector /= np.linalg.norm(vector)
    assert np.array_equal(from_text(to_text(vector), coll), vector)
    for bad in ("", "not base64!", to_text(vector[:10]), to_text(vector * 2), to_text(np.full(512, np.inf, "f4"))):
        with pytest.raises(ConfigError):
            from_text(bad, coll)


# -- quality ----------------------------------------------------------------------------------------------------
def test_the_quality_gate_on_blank_and_real_images(bank, demo_photos):
    from malle.descriptors import create_descriptor

    pixel, pdq = quality.gate_for(create_descriptor("phash")), quality.gate_for(create_descriptor("pdq_dihedral"))
    assert isinstance(pdq, quality.PDQQualityGate) and not isinstance(pixel, quality.PDQQualityGate)
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(np.clip(120 + rng.normal(0, 2, (400, 400, 3)), 0, 255).astype(np.uint8))
    for blank in (Image.new("RGB", (300, 300)), noisy, Image.new("RGB", (12, 12), (200, 10, 10))):
        assert pixel.verdict(blank).low and pdq.verdict(blank).low
    for photo in demo_photos[:20]:
        assert not pixel.verdict(load_rgb(photo)).low and not pdq.verdict(load_rgb(photo)).low
    bank.create_collection("p", "phash")
    bank.add_files("p", demo_photos[:5])
    result = bank.match_bytes("p", jpeg(Image.new("RGB", (300, 300))), k=5)
    assert result.quality == "low" and not any(m.is_match for m in result.matches)


def test_decoding_limits(demo_photos):
    heavy = Image.new("I;16", (4000, 4000))
    buf = io.BytesIO()
    heavy.save(buf, "PNG")
    with pytest.raises(BadImage, match="over the limit"):
        load_rgb(buf.getvalue(), max_bytes=16 * 2**20)
    assert load_rgb(buf.getvalue(), max_pixels=1_000_000).size == (1000, 1000)
