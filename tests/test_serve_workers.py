"""Batched matching and ``malle serve --workers N`` (issue 26, items 2 and 3), on real banks, real uvicorn processes
over HTTP, real kill -9."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from service_server import AUTH, Server, jpeg, upload

from malle.bank import Bank
from malle.errors import BadImage
from malle.service.batching import MatchBatcher

NOT_AN_IMAGE = b"this is not an image, only text " * 8


def copy_of(photo: Path, variant: int = 0) -> bytes:
    """An edited copy: shrunk (by a few pixels more with ``variant``), a thin dark bar, recompressed."""
    image = Image.open(photo).convert("RGB")
    image = image.resize((300 - variant % 7, 300 * image.height // image.width))
    ImageDraw.Draw(image).rectangle((0, image.height - 8, image.width, image.height), fill=(15, 15, 15))
    return jpeg(image, 70 + variant % 25)


def same_matches(a: dict, b: dict) -> bool:
    """The same items in the same order with the same verdicts; scores equal to float noise (a batch may run
    other kernels than one image)."""
    pairs = list(zip(a["matches"], b["matches"], strict=True))
    return (a["quality"] == b["quality"] and all(x["id"] == y["id"] and x["is_match"] == y["is_match"]
                                                 and abs(x["score"] - y["score"]) < 1e-4 for x, y in pairs))


# -- batching, in this process over a real bank ---------------------------------------------------------------
@pytest.fixture(scope="module")
def pdq_bank(tmp_path_factory, demo_photos):
    root = tmp_path_factory.mktemp("batching")
    bank = Bank.open(root / "bank", model_cache=root / "cache")
    bank.create_collection("photos", "pdq")
    assert len(bank.add_files("photos", demo_photos[:12]).added) == 12
    yield bank
    bank.close()


def test_a_bad_image_fails_alone_and_its_batch_mates_get_their_matches(pdq_bank, demo_photos):
    batcher = MatchBatcher(pdq_bank, max_batch=8, wait_ms=1000)  # a long wait: every request joins one pass
    uploads = [copy_of(p) for p in demo_photos[:6]] + [NOT_AN_IMAGE]
    start = threading.Barrier(len(uploads))

    def send(data: bytes):
        start.wait()
        try:
            return batcher.match("photos", data, 3, None, False)
        except BadImage as err:
            return err

    try:
        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(send, uploads))
    finally:
        batcher.close()
    assert isinstance(answers[-1], BadImage)
    alone = [pdq_bank.match_bytes("photos", data, 3) for data in uploads[:-1]]
    assert [a.public() for a in answers[:-1]] == [a.public() for a in alone]
    assert [a.matches[0].item.filename for a in answers[:-1]] == [p.name for p in demo_photos[:6]]
    assert batcher.batched >= 2 and batcher.passes < len(uploads)  # some requests shared a pass


def test_a_lone_match_does_not_wait_for_company(pdq_bank, demo_photos):
    batcher = MatchBatcher(pdq_bank, max_batch=8, wait_ms=1000)
    try:
        for photo in demo_photos[:3]:  # one after another: none is ever decoding while another is queued
            assert batcher.match("photos", copy_of(photo), 1, None, False).matches[0].item.filename == photo.name
    finally:
        batcher.close()
    assert batcher.waits == 0 and batcher.batched == 0 and batcher.passes == 3


def test_batch_options_are_checked_in_one_line(pdq_bank):
    from malle.errors import ConfigError

    for size, wait in ((0, 5), (257, 5), (8, -1), (8, float("nan"))):
        with pytest.raises(ConfigError, match="--batch"):
            MatchBatcher(pdq_bank, size, wait)


# -- batching over HTTP ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sscd_bank(tmp_path_factory, demo_photos):
    root = tmp_path_factory.mktemp("sscd-batching")
    bank = Bank.open(root / "bank", model_cache=root / "cache")
    bank.create_collection("photos", "sscd_distilled")
    assert len(bank.add_files("photos", demo_photos[:10]).added) == 10
    bank.close()
    return root


def test_concurrent_matches_answer_as_sequential_ones(sscd_bank, demo_photos):
    """Ten requests at once, a bad one and a blank one among them, against the same ten one at a time."""
    blank = jpeg(Image.new("RGB", (200, 200), (128, 128, 128)))
    uploads = [copy_of(p, 3) for p in demo_photos[:8]] + [NOT_AN_IMAGE, blank]
    server = Server(sscd_bank / "bank", sscd_bank / "cache", "--batch-size", "8", "--batch-wait-ms", "100")
    try:
        sequential = [upload(server.client, "/v1/collections/photos/match?k=5", data) for data in uploads]
        rounds = 0
        while "encoded together" not in server.output() and rounds < 4:  # a pass shared, at least once
            rounds += 1
            concurrent = _all_at_once(server.url, uploads)
            assert [r.status_code for r in concurrent] == [r.status_code for r in sequential]
            for seq, con in zip(sequential, concurrent, strict=True):
                assert (seq.status_code != 200 and con.json()["code"] == seq.json()["code"] == "bad_image") or \
                    same_matches(seq.json(), con.json()), (seq.text, con.text)
        assert "encoded together" in server.output()
        assert [r.status_code for r in sequential] == [200] * 8 + [422, 200]
        assert sequential[-1].json()["quality"] == "low"
        assert all(r.json()["matches"][0]["filename"] == p.name for r, p in zip(sequential, demo_photos[:8]))
        assert server.alive()
    finally:
        server.stop()
    assert server.internal_errors() == []


def _all_at_once(url: str, uploads: list[bytes]) -> list[httpx.Response]:
    start = threading.Barrier(len(uploads))

    def send(data: bytes) -> httpx.Response:
        with httpx.Client(base_url=url, headers=AUTH, timeout=300) as client:
            start.wait()
            return upload(client, "/v1/collections/photos/match?k=5", data)

    with ThreadPoolExecutor(len(uploads)) as pool:
        return list(pool.map(send, uploads))


# -- workers --------------------------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """The worker processes of a ``malle serve --workers`` (its forked children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return sorted(found)


def index_file(bank: Path, name: str) -> Path:
    """The collection's current snapshot file, as its record names it."""
    return (bank / "indexes" / json.loads((bank / "indexes" / f"{name}.json").read_text())["files"]["index"]).resolve()


def maps(pid: int, path: Path) -> bool:
    """Whether process ``pid`` maps ``path`` (``/proc/PID/maps``)."""
    try:
        return any(line.endswith(f" {path}") for line in Path(f"/proc/{pid}/maps").read_text().splitlines())
    except OSError:
        return False


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {seconds:.0f} s: {what}")


@pytest.fixture()
def workers(tmp_path, demo_photos):
    bank = Bank.open(tmp_path / "bank", model_cache=tmp_path / "cache")
    bank.create_collection("photos", "pdq")
    bank.add_files("photos", demo_photos[:4])
    bank.close()
    server = Server(tmp_path / "bank", tmp_path / "cache", "--workers", "2")
    try:
        first = index_file(tmp_path / "bank", "photos")
        pids = wait_for(lambda: (found := children(server.proc.pid)) and len(found) == 2
                        and all(maps(p, first) for p in found) and found, 300,
                        "two workers, each mapping the collection's index file")
        yield server, pids
    finally:
        server.stop()


def test_workers_map_one_index_and_a_kill_9_loses_nothing_acknowledged(workers, demo_photos):
    server, pids = workers
    acknowledged: dict[bytes, int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def add(variants: range) -> None:
        client = httpx.Client(base_url=server.url, headers=AUTH, timeout=120)
        for n in variants:
            data = copy_of(demo_photos[10 + n % 40], n)
            for _ in range(5):  # a request that got no answer was not acknowledged: send it again
                try:
                    answer = upload(client, "/v1/collections/photos/items", data, f"add-{n}.jpg")
                except httpx.TransportError as err:
                    failures.append(f"{n}: {type(err).__name__}")
                    client.close()
                    client = httpx.Client(base_url=server.url, headers=AUTH, timeout=120)
                    continue
                assert answer.status_code in (200, 201), answer.text
                with lock:
                    acknowledged[data] = answer.json()["id"]
                    if len(acknowledged) == 12 and not killed.is_set():
                        killed.set()
                        os.kill(pids[0], signal.SIGKILL)
                break
            else:
                raise AssertionError(f"add {n} never answered: {failures}")
        client.close()

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(add, [range(0, 40, 3), range(1, 40, 3), range(2, 40, 3)]))
    assert killed.is_set() and len(acknowledged) == 40
    assert len(failures) <= 3, failures  # at most the requests in flight on the killed worker
    client = server.client
    assert client.get("/v1/collections/photos").json()["count"] == 4 + 40
    for data, item_id in list(acknowledged.items())[::5]:  # every acknowledged add is there and is found
        assert client.get(f"/v1/collections/photos/items/{item_id}").status_code == 200
        found = upload(client, "/v1/collections/photos/match?k=1", data).json()
        assert found["matches"][0]["id"] == item_id
    survivors = wait_for(lambda: (found := children(server.proc.pid)) and len(found) == 2 and found, 300,
                         "the killed worker replaced")
    assert pids[0] not in survivors and pids[1] in survivors
    assert server.internal_errors() == []


def test_every_worker_takes_up_a_published_snapshot(workers, tmp_path):
    server, pids = workers
    before = index_file(tmp_path / "bank", "photos")
    rng = np.random.default_rng(0)
    bank = Bank.open(tmp_path / "bank", model_cache=tmp_path / "cache")  # another process writes and rebuilds
    try:
        from malle.bank.store import NewItem

        codes = rng.integers(0, 256, (300, 32), dtype=np.uint8)
        bank.add_codes("photos", [NewItem(f"{i:064x}", f"code-{i}", code, {}, "code") for i, code in enumerate(codes)])
        bank.snapshots.rebuild("photos")
    finally:
        bank.close()
    after = index_file(tmp_path / "bank", "photos")
    assert after != before
    wait_for(lambda: all(maps(p, after) and not maps(p, before) for p in pids), 120,
             "both workers on the new snapshot, the old one let go")
    lookup = server.client.post("/v1/collections/photos/lookup?k=1", json={"codes": [codes[7].tobytes().hex()]})
    assert lookup.status_code == 200 and lookup.json()["results"][0]["matches"][0]["score"] == 0
    assert server.internal_errors() == []


def test_workers_option_is_checked_in_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "malle", "serve", "--bank", str(tmp_path / "b"), "--workers", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--workers must be from 1" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
