"""``malle serve --ray ADDRESS --replicas N`` (issue 26, item 4) on a real ``ray start --head`` cluster with token
authentication, its driver run without ``RAY_AUTH_MODE`` as users run it, and the /v1 contract driven over real HTTP
through Serve's proxy: two matcher replicas and the one writer they forward every write to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_server import AUTH, Server, free_port, upload
from test_ray_cluster import clean_env, running_token_cluster
from test_serve_workers import NOT_AN_IMAGE, copy_of, index_file, maps, wait_for

from malle.bank import Bank

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (the ray extra: pip install 'malle[ray]')")

PHOTOS = 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A token cluster with a CPU for each replica (two matchers, one writer)."""
    with running_token_cluster(tmp_path_factory, 3, "rs") as running:
        yield running


@pytest.fixture(scope="module")
def served(cluster, tmp_path_factory, demo_photos):
    """A bank of six photos (PDQ) served by two matcher replicas and one writer, with an API key on loopback."""
    address, home = cluster
    root = tmp_path_factory.mktemp("ray-served")
    bank = Bank.open(root / "bank", model_cache=root / "cache")
    bank.create_collection("photos", "pdq")
    assert len(bank.add_files("photos", demo_photos[:PHOTOS]).added) == PHOTOS
    bank.close()
    env = clean_env(home, root / "cache")
    server = Server(root / "bank", root / "cache", "--ray", address, "--replicas", "2", env=env)
    try:
        wait_for(lambda: "Malle: serving bank" in server.output(), 300, "every replica up")  # health answers before
        yield server, root / "bank"
    finally:
        server.stop()
        assert "Traceback" not in server.output(), server.output()[-3000:]


def replicas(deployment: str) -> list[int]:
    """The processes of one deployment's replicas (Ray titles each ``ray::ServeReplica:APP:DEPLOYMENT``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and f"ServeReplica:malle:{deployment}" in title:
            found.append(int(entry.name))
    return sorted(found)


# Runs before ``served`` (tests run in file order): no other application is on the cluster's Serve yet.
A_REPLICA_THAT_CANNOT_OPEN_THE_BANK = """
import sys
from malle.errors import ConfigError
from malle.scale.ray_cluster import connect
from malle.service.ray_serve import application, deploy, import_serve, start_proxy, take_down
from malle.service.workers import ServeOptions

serve = import_serve()
connect(sys.argv[1], print)
start_proxy(serve, "127.0.0.1", int(sys.argv[3]))
try:  # the driver's own check skipped: the replicas meet a folder missing on their node
    deploy(serve, application(serve, ServeOptions(sys.argv[2], None, 2**20, None, 8, (), 1, 5.0), None, 1))
except ConfigError as err:
    print("REFUSED", err)
finally:
    take_down(serve)
"""


def test_a_replica_that_cannot_open_the_bank_is_one_line(cluster, tmp_path):
    address, home = cluster
    done = subprocess.run([sys.executable, "-c", A_REPLICA_THAT_CANNOT_OPEN_THE_BANK, address, str(tmp_path / "gone"),
                           str(free_port())], env=clean_env(home, tmp_path / "cache"), capture_output=True, text=True,
                          timeout=600)
    said = [line for line in done.stdout.splitlines() if line.startswith("REFUSED")]
    assert done.returncode == 0 and said == [f"REFUSED Ray Serve could not start the bank's replicas: --bank "
                                             f"{tmp_path / 'gone'}: not a folder on this node ({os.uname().nodename})"
                                             ], done.stdout[-2000:] + done.stderr[-3000:]


def test_replicas_find_a_planted_copy_and_keep_the_key_rule(served, demo_photos):
    server, _ = served
    assert len(replicas("MalleMatcher")) == 2 and len(replicas("MalleWriter")) == 1
    for photo in demo_photos[:3]:
        found = upload(server.client, "/v1/collections/photos/match?k=3", copy_of(photo))
        assert found.status_code == 200, found.text
        assert found.json()["matches"][0]["filename"] == photo.name and found.json()["matches"][0]["is_match"]
    assert server.client.get("/v1/collections/photos").json()["count"] == PHOTOS
    for headers in ({}, {"Authorization": "Bearer wrong"}):  # the key rule holds in every replica
        refused = httpx.post(f"{server.url}/v1/collections/photos/match", headers=headers, timeout=120,
                             files={"file": ("copy.jpg", copy_of(demo_photos[0]), "image/jpeg")})
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"


def test_an_add_goes_through_the_writer_and_is_matched_at_once(served, demo_photos):
    server, _ = served
    photo = demo_photos[PHOTOS]
    added = upload(server.client, "/v1/collections/photos/items", photo.read_bytes(), photo.name,
                   metadata=json.dumps({"case": 7}))
    assert added.status_code == 201 and added.json()["created"], added.text
    again = upload(server.client, "/v1/collections/photos/items", photo.read_bytes(), photo.name)
    assert again.status_code == 200 and again.json()["id"] == added.json()["id"] and not again.json()["created"]
    for _ in range(4):  # whichever matcher answers sees the writer's commit
        found = upload(server.client, "/v1/collections/photos/match?k=1", copy_of(photo, 2)).json()
        assert found["matches"][0]["id"] == added.json()["id"] and found["matches"][0]["metadata"] == {"case": 7}
    made = server.client.post("/v1/collections", json={"name": "scratch", "method": "phash"})
    assert made.status_code == 201 and made.headers["Location"] == "/v1/collections/scratch"
    clash = server.client.post("/v1/collections", json={"name": "scratch", "method": "phash"})
    assert clash.status_code == 409 and clash.json()["code"] == "conflict"  # the writer's error, as itself
    assert server.client.delete("/v1/collections/scratch").status_code == 200
    assert server.client.get("/v1/collections/scratch").status_code == 404
    removed = server.client.delete(f"/v1/collections/photos/items/{added.json()['id']}")
    assert removed.status_code == 200
    assert server.client.get("/v1/collections/photos").json()["count"] == PHOTOS


def test_bad_input_is_a_4xx_json_error_and_the_replicas_go_on(served, demo_photos):
    server, _ = served
    for path in ("/v1/collections/photos/match", "/v1/collections/photos/items"):  # read side, then the writer
        bad = upload(server.client, path, NOT_AN_IMAGE, "note.jpg")
        assert bad.status_code == 422 and bad.json()["code"] == "bad_image", bad.text
    missing = upload(server.client, "/v1/collections/nowhere/match", copy_of(demo_photos[0]))
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert server.client.get("/v1/collections/photos/items?limit=0").status_code == 422
    assert server.alive()
    found = upload(server.client, "/v1/collections/photos/match?k=1", copy_of(demo_photos[1])).json()
    assert found["matches"][0]["filename"] == demo_photos[1].name
    assert server.internal_errors() == []


def test_every_matcher_takes_up_a_snapshot_another_process_published(served):
    server, folder = served
    before = index_file(folder, "photos")
    pids = replicas("MalleMatcher")
    wait_for(lambda: all(maps(p, before) for p in pids), 60, "both matchers on the collection's snapshot")
    codes = np.random.default_rng(3).integers(0, 256, (50, 32), dtype=np.uint8)
    bank = Bank.open(folder)
    try:
        from malle.bank.store import NewItem

        bank.add_codes("photos", [NewItem(f"{i:064x}", f"code-{i}", c, {}, "code") for i, c in enumerate(codes)])
        bank.snapshots.rebuild("photos")
    finally:
        bank.close()
    after = index_file(folder, "photos")
    assert after != before
    wait_for(lambda: all(maps(p, after) and not maps(p, before) for p in pids), 120,
             "both matchers on the new snapshot, the old one let go")
    lookup = server.client.post("/v1/collections/photos/lookup?k=1", json={"codes": [codes[9].tobytes().hex()]})
    assert lookup.status_code == 200 and lookup.json()["results"][0]["matches"][0]["score"] == 0


@pytest.mark.parametrize("extra, message", [
    (["--ray", "127.0.0.1:1", "--host", "0.0.0.0"], "API key"),
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--ray", "127.0.0.1:1", "--replicas", "0"], "--replicas must be from 1 to 64"),
    (["--ray", "127.0.0.1:1", "--workers", "2"], "--workers and --ray are exclusive"),
    (["--ray", "127.0.0.1:1", "--relative"], "must be an absolute path that every node of the cluster can read"),
])
def test_options_are_refused_in_one_line_before_any_cluster(tmp_path, extra, message):
    bank = "relative/bank" if "--relative" in extra else str(tmp_path / "bank")
    env = {k: v for k, v in os.environ.items() if k != "MALLE_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "malle", "serve", "--bank", bank, "--port", str(free_port()),
                           *[a for a in extra if a != "--relative"]], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    assert lines[0].startswith("malle: error:")


def test_a_writer_killed_by_kill_9_is_replaced_and_loses_nothing_acknowledged(served, demo_photos):
    server, _ = served
    [writer] = replicas("MalleWriter")
    acknowledged: dict[bytes, int] = {}
    refused: list[int] = []
    lock = threading.Lock()

    def add(variants: range) -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as client:
            for n in variants:
                data = copy_of(demo_photos[20 + n % 10], n)
                for _ in range(30):  # a write the dying writer did not acknowledge is sent again
                    answer = upload(client, "/v1/collections/photos/items", data, f"add-{n}.jpg")
                    if answer.status_code != 503:
                        break
                    refused.append(n)
                    time.sleep(float(answer.headers["Retry-After"]))
                assert answer.status_code in (200, 201), answer.text  # 200: committed before the writer died
                with lock:
                    acknowledged[data] = answer.json()["id"]
                    if len(acknowledged) == 6:
                        os.kill(writer, signal.SIGKILL)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(add, [range(0, 24, 3), range(1, 24, 3), range(2, 24, 3)]))
    assert len(acknowledged) == 24 and len(refused) <= 3  # at most the writes in flight when it died
    [successor] = replicas("MalleWriter")
    assert successor != writer
    for data, item_id in acknowledged.items():
        found = upload(server.client, "/v1/collections/photos/match?k=1", data).json()
        assert found["matches"][0]["id"] == item_id
    assert server.internal_errors() == []


def test_a_second_driver_neither_reuses_another_address_nor_replaces_the_bank_served(served, cluster, tmp_path):
    server, folder = served
    address, home = cluster
    port = server.url.rsplit(":", 1)[1]
    for other, said in ((str(free_port()), f"Ray Serve already runs on this cluster with its HTTP proxy at "
                                           f"127.0.0.1:{port}, not 127.0.0.1:"),
                        (port, "a bank is served on this cluster's Ray Serve already (application 'malle')")):
        done = subprocess.run([sys.executable, "-m", "malle", "serve", "--bank", str(folder), "--ray", address,
                               "--port", other], env=clean_env(home, tmp_path / "cache"), capture_output=True,
                              text=True, timeout=300)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and last.startswith("malle: error: ") and said in last, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
    assert server.alive() and len(replicas("MalleMatcher")) == 2
