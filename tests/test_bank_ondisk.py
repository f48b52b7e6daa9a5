"""Collections on disk: codes in a memory-mapped, append-only codes file checked both ways by ``verify``, durable
across a kill -9 of a real process, a torn tail ignored and reported; IVF indexes with their lists mapped from disk,
their recall against exact search recorded, the delta searched; an index from ``malle index-build`` taken when it
is the collection's method, fingerprint and factory and refused otherwise; schema-1 banks moved over on open.

Real SQLite files, real FAISS, real processes; the float codes are synthetic (seeded clusters of unit vectors,
as SSCD's are), the hashes pHash's width.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import faiss
import httpx
import numpy as np
import pytest

from malle.bank import Bank, NewItem, sha256_of, store
from malle.bank.codefile import HEADER_BYTES
from malle.cli import main
from malle.descriptors import create_descriptor
from malle.errors import ConfigError
from malle.io import shards
from malle.scale import ondisk

ROOT = Path(__file__).resolve().parents[1]
FLOAT = "sscd_distilled"
DIM = 512
LISTS = "IVF16,Flat"  # trains on a few thousand codes in a second


def unit_codes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((32, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 32, n)] + 0.8 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def hash_code(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, 8, dtype=np.uint8)


def new_items(codes: np.ndarray, start: int = 0) -> list[NewItem]:
    return [NewItem(sha256_of(code.tobytes()), f"{start + i}.jpg", code, digest_of="code")
            for i, code in enumerate(codes)]


def hashes(bank: Bank, n: int = 30) -> list:
    bank.create_collection("h", "phash", threshold=4)
    return bank.add_codes("h", [NewItem(f"{i:064x}", f"{i}.jpg", hash_code(i)) for i in range(n)])


# -- the codes file -------------------------------------------------------------------------------------------
def test_codes_live_in_the_codes_file_and_verify_checks_rows_and_records_both_ways(bank):
    added = hashes(bank)
    coll = bank.collection("h")
    path = bank.store.codes_file(coll).path
    assert coll.records == 30 and path.stat().st_size == HEADER_BYTES + 30 * (8 + 16)
    with sqlite3.connect(bank.store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM items WHERE length(code) > 0").fetchone()[0] == 0
    assert bank.lookup("h", [hash_code(7).tobytes().hex()], k=1)[0].matches[0].item.id == added[7][0].id
    states = {}
    assert bank.verify(states) == [] and states == {"h": "ok"}
    data = bytearray(path.read_bytes())
    data[HEADER_BYTES + 3 * 24] ^= 0xFF  # one bit pattern of record 3's code
    path.write_bytes(bytes(data))
    problems = Bank.open(bank.folder).verify()
    assert len(problems) == 1 and "1 record(s) fail their checksum" in problems[0]
    data[HEADER_BYTES + 3 * 24] ^= 0xFF
    path.write_bytes(bytes(data))
    with sqlite3.connect(bank.store.path) as db:  # a row lost: its record is named by no item
        db.execute("DELETE FROM items WHERE id = ?", (added[5][0].id,))
    problems = Bank.open(bank.folder).verify()
    assert len(problems) == 1 and "named by no item" in problems[0]


def test_a_torn_tail_is_never_read_is_reported_and_the_next_add_overwrites_it(bank, capsys):
    hashes(bank, 10)
    path = bank.store.codes_file(bank.collection("h")).path
    with path.open("ab") as fh:  # an add that fsynced its records, or half of one, and died before its commit
        fh.write(b"\x01" * (24 * 2 + 7))
    again = Bank.open(bank.folder)
    states = {}
    assert again.verify(states) == []
    assert "2 record(s) and 7 byte(s) past the committed end" in states["h"]
    assert main(["bank", "verify", str(bank.folder)]) == 0
    assert "past the committed end" in capsys.readouterr().out
    again.add_codes("h", [NewItem("f" * 64, "new.jpg", hash_code(99))])
    assert path.stat().st_size == HEADER_BYTES + 11 * 24
    assert again.verify(states) == [] and states["h"] == "ok"
    assert again.lookup("h", [hash_code(99).tobytes().hex()], k=1)[0].matches[0].item.filename == "new.jpg"


CHILD = """
import sys
import numpy as np
from malle.bank import Bank, NewItem
bank = Bank.open(sys.argv[1])
for i in range(100_000):
    code = np.random.default_rng(i).integers(0, 256, 8, dtype=np.uint8)
    [(item, _)] = bank.add_codes("h", [NewItem(f"{i:064x}", f"{i}.jpg", code)])
    print(item.id, i, flush=True)
"""


def test_kill_9_during_adds_loses_nothing_acknowledged(bank):
    bank.create_collection("h", "phash", threshold=4)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(bank.folder)], stdout=subprocess.PIPE, text=True,
                             env=env)
    acknowledged = []
    for line in child.stdout:
        acknowledged.append(tuple(map(int, line.split())))
        if len(acknowledged) == 300:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(30)
    assert child.returncode == -signal.SIGKILL
    again = Bank.open(bank.folder)
    assert again.verify() == []
    for start in range(0, len(acknowledged), 100):
        part = acknowledged[start:start + 100]
        for (item_id, _), result in zip(part, again.lookup("h", [hash_code(i).tobytes().hex() for _, i in part], k=1)):
            assert result.matches[0].item.id == item_id and result.matches[0].score == 0
    assert again.collection("h").count >= len(acknowledged)
    again.add_codes("h", [NewItem("e" * 64, "after.jpg", hash_code(10**6))])  # the tail, if any, is overwritten
    assert again.verify() == []


# -- approximate indexes on disk --------------------------------------------------------------------------------
def test_an_ivf_collection_maps_its_lists_records_recall_and_searches_the_delta(bank, capsys):
    bank.create_collection("v", FLOAT, threshold=0.5, index=LISTS)
    codes = unit_codes(3000, 1)
    bank.add_codes("v", new_items(codes))
    bank.refresh("v")
    snap = bank.snapshots.current(bank.collection("v"))
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(snap.index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and snap.mapped is not None
    assert lists.prefetch_nthread == 0  # no 32 read-ahead threads per search
    coll = bank.collection("v")
    assert 0.5 < coll.recall_at_10 <= 1 and coll.recall_sample == 200
    record = json.loads((bank.folder / "indexes" / "v.json").read_text())
    assert record["recall_at_10"] == coll.recall_at_10 and record["proven"] == LISTS  # the next build skips the probe
    assert coll.public()["recall_at_10"] == coll.recall_at_10
    assert main(["bank", "info", str(bank.folder)]) == 0
    assert coll.search_params == record["search_params"] and coll.search_params.startswith("nprobe=")
    assert f"recall@10 {coll.recall_at_10:.3f} at {coll.search_params} against exact search on 200 queries" \
        in capsys.readouterr().out
    fresh = unit_codes(5, 2)
    added = bank.add_codes("v", new_items(fresh, 3000))
    assert bank.snapshots.current(bank.collection("v")).version == snap.version  # not rebuilt: a delta of 5
    found = bank.match_codes(bank.collection("v"), fresh, k=1)
    assert [r.matches[0].item.id for r in found] == [item.id for item, _ in added]
    assert all(r.matches[0].score > 0.999 for r in found)
    reopened = Bank.open(bank.folder)  # another process maps the same file
    again = reopened.snapshots.current(reopened.collection("v"))
    assert again.mapped == snap.mapped and again.recall_at_10 == snap.recall_at_10
    from service_server import InProcess

    from malle.service.app import create_app

    served = InProcess(create_app(reopened))  # a real uvicorn: the recall is part of the contract
    try:
        body = httpx.get(f"{served.url}/v1/collections/v").json()
        assert body["recall_at_10"] == coll.recall_at_10 and body["recall_sample"] == 200
        assert body["search_params"] == coll.search_params
        assert httpx.get(f"{served.url}/v1/collections").json()["collections"][0]["recall_at_10"] == coll.recall_at_10
    finally:
        served.stop()


def test_a_hash_collection_with_inverted_lists_maps_them_too(bank):
    bank.create_collection("h", "phash", threshold=4, index="IVF16,Flat")  # BIVF16 for 64-bit hashes
    bank.add_codes("h", [NewItem(f"{i:064x}", f"{i}.jpg", hash_code(i)) for i in range(2000)])
    bank.refresh("h")
    snap = bank.snapshots.current(bank.collection("h"))
    assert snap.mapped is not None and snap.index.ntotal == 2000 and snap.recall_at_10 is not None
    found = bank.lookup("h", [hash_code(i).tobytes().hex() for i in (3, 1999)], k=1)
    assert [r.matches[0].item.filename for r in found] == ["3.jpg", "1999.jpg"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An embeddings folder of 3,000 synthetic codes written as `malle embed` writes them, and `index-build`'s
    output over it."""
    desc = create_descriptor(FLOAT, precision="fp32")
    folder = tmp_path_factory.mktemp("embeddings")
    codes = unit_codes(3000, 3)
    shards.write(folder, desc, [f"synthetic/{i:05d}.jpg" for i in range(len(codes))], codes)
    out = tmp_path_factory.mktemp("index")
    ondisk.build(ondisk.BuildPlan(folder, LISTS, out, 2000), log=lambda m: None)
    return folder, out, codes


def test_an_index_build_output_is_taken_and_its_delta_searched(bank, built):
    folder, out, codes = built
    bank.create_collection("v", FLOAT, threshold=0.5, index=LISTS)
    bank.add_embeddings("v", folder)
    bank.use_index("v", out)
    snap = bank.snapshots.current(bank.collection("v"))
    assert snap.lists is not None and snap.index.ntotal == 3000 and bank.collection("v").recall_at_10 > 0.5
    hits = bank.match_codes(bank.collection("v"), codes[[10, 2000]], k=1)
    assert [r.matches[0].item.filename for r in hits] == ["00010.jpg", "02000.jpg"]
    fresh = unit_codes(3, 4)
    added = bank.add_codes("v", new_items(fresh, 5000))
    assert [r.matches[0].item.id for r in bank.match_codes(bank.collection("v"), fresh, k=1)] == \
        [item.id for item, _ in added]
    reopened = Bank.open(bank.folder)  # another process maps the same lists file
    assert reopened.snapshots.current(reopened.collection("v")).lists == snap.lists
    hits = reopened.match_codes(reopened.collection("v"), codes[[10, 2000]], k=1)
    assert [r.matches[0].item.filename for r in hits] == ["00010.jpg", "02000.jpg"]


def test_an_index_of_another_factory_fingerprint_or_items_is_refused(bank, built, tmp_path):
    folder, out, _ = built
    bank.create_collection("other", FLOAT, threshold=0.5, index="IVF32,Flat")
    bank.add_embeddings("other", folder)
    with pytest.raises(ConfigError, match="factory 'IVF16,Flat'.*'IVF32,Flat'"):
        bank.use_index("other", out)
    bank.create_collection("few", FLOAT, threshold=0.5, index=LISTS)
    bank.add_codes("few", new_items(np.ascontiguousarray(built[2][:100])))
    with pytest.raises(ConfigError, match="2,900 of the 3,000 vectors"):
        bank.use_index("few", out)
    forged = tmp_path / "forged"
    forged.mkdir()
    for name in (ondisk.INDEX, ondisk.IVFDATA, ondisk.MANIFEST):
        (forged / name).write_bytes((out / name).read_bytes())
    manifest = json.loads((forged / ondisk.MANIFEST).read_text())
    (forged / ondisk.MANIFEST).write_text(json.dumps({**manifest, "fingerprint": "0" * 64}))
    bank.create_collection("v", FLOAT, threshold=0.5, index=LISTS)
    bank.add_embeddings("v", folder)
    with pytest.raises(ConfigError, match="another fingerprint"):
        bank.use_index("v", forged)
    assert main(["bank", "add", str(bank.folder), "-c", "other", "--from-embeddings", str(folder), "--index-from",
                 str(out)]) == 2


# -- schema 1 ---------------------------------------------------------------------------------------------------
def test_a_schema_1_bank_is_moved_to_the_codes_file_on_open(bank, tmp_path):
    hashes(bank, 12)
    coll = bank.collection("h")
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / store.DB_NAME) as db:
        db.executescript(store.SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
        v1 = [c for c in coll.__dataclass_fields__ if c not in ("count", "records", "recall_at_10", "recall_sample",
                                                               "search_params", "calibration")]
        row = {c: (json.dumps(coll.fingerprint) if c == "fingerprint" else getattr(coll, c)) for c in v1}
        db.execute(f"INSERT INTO collections ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                   list(row.values()))
        for i in range(12):
            db.execute("INSERT INTO items (collection, sha256, filename, added, added_version, code) VALUES "
                       "('h', ?, ?, 'x', 1, ?)", (f"{i:064x}", f"{i}.jpg", hash_code(i).tobytes()))
    moved = Bank.open(old)
    assert moved.verify() == [] and moved.collection("h").records == 12
    found = moved.lookup("h", [hash_code(i).tobytes().hex() for i in range(12)], k=1)
    assert [r.matches[0].item.filename for r in found] == [f"{i}.jpg" for i in range(12)]
    with sqlite3.connect(old / store.DB_NAME) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "2"
        assert db.execute("SELECT COUNT(*) FROM items WHERE length(code) > 0").fetchone()[0] == 0
