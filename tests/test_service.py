"""``malle serve`` as a real uvicorn process on a free loopback port, driven over HTTP with httpx."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from service_server import KEY, START_TIMEOUT_S, Server, free_port, jpeg, png, upload

from malle.bank import Bank
from malle.ops import get_op


def edited(photo: Path) -> bytes:
    img = get_op("resize").apply(Image.open(photo).convert("RGB"), {"size": 320})
    return jpeg(get_op("watermark").apply(img, get_op("watermark").default_params()), 75)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    started = Server(root / "bank", root / "cache", "--max-upload-mb", "1")
    yield started
    started.stop()
    assert started.internal_errors() == []  # no request of this module was answered 500


def test_round_trip_with_edited_copies(server, demo_photos):
    client = server.client
    made = client.post("/v1/collections", json={"name": "photos", "method": "pdq"})
    assert made.status_code == 201 and made.json()["method"] == "pdq"
    ids = {}
    for photo in demo_photos[:8]:
        answer = upload(client, "/v1/collections/photos/items", photo.read_bytes(), photo.name,
                        metadata=f'{{"source": "{photo.stem}"}}')
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert {"id", "sha256", "filename"} <= body.keys() and body["created"]
        ids[photo.name] = body["id"]
    coll = client.get("/v1/collections/photos").json()
    assert coll["count"] == 8 and {"name", "method", "count", "threshold"} <= coll.keys()
    for photo in demo_photos[:3]:
        found = upload(client, "/v1/collections/photos/match?k=3", edited(photo)).json()
        best = found["matches"][0]
        assert best["id"] == ids[photo.name] and best["is_match"] and best["metadata"] == {"source": photo.stem}
        assert set(best) >= {"id", "filename", "score", "is_match", "metadata"}
        assert [m["score"] for m in found["matches"]] == sorted(m["score"] for m in found["matches"])  # Hamming
    thumb = client.get(f"/v1/collections/photos/items/{ids[demo_photos[1].name]}/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) <= 192
    strict = upload(client, "/v1/collections/photos/match?k=1&threshold=0", edited(demo_photos[0])).json()
    assert strict["threshold"] == 0 and not strict["matches"][0]["is_match"]
    removed = client.delete(f"/v1/collections/photos/items/{ids[demo_photos[0].name]}")
    assert removed.status_code == 200 and removed.json()["removed"]
    after = upload(client, "/v1/collections/photos/match?k=8", demo_photos[0].read_bytes()).json()
    assert ids[demo_photos[0].name] not in [m["id"] for m in after["matches"]]
    compared = client.post("/v1/compare?methods=phash,pdq", files={
        "file_a": ("a.jpg", demo_photos[1].read_bytes()), "file_b": ("b.jpg", edited(demo_photos[1]))}).json()
    assert [s["method"] for s in compared["scores"]] == ["phash", "pdq"]
    assert all(s["is_match"] for s in compared["scores"])
    assert client.get("/docs").status_code == 200 and "/v1/compare" in client.get("/openapi.json").json()["paths"]


def test_adds_are_idempotent(server, demo_photos):
    client = server.client
    client.post("/v1/collections", json={"name": "same", "method": "phash", "threshold": 6})
    first = upload(client, "/v1/collections/same/items", demo_photos[10].read_bytes(), "a.jpg")
    again = upload(client, "/v1/collections/same/items", demo_photos[10].read_bytes(), "b.jpg")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and not again.json()["created"]
    assert client.get("/v1/collections/same").json()["count"] == 1


def bad_requests(photo: Path) -> list[tuple[str, int, dict]]:
    real = Image.open(photo).convert("RGB")
    bomb = io.BytesIO()
    Image.new("1", (16000, 16000)).save(bomb, format="PNG")
    strip = png(real.resize((840, 40)))  # 1:21
    return [
        ("POST", 422, {"url": "/v1/collections/photos/match", "files": {"file": ("x.jpg", b"plain text")}}),
        ("POST", 422, {"url": "/v1/collections/photos/items", "files": {"file": ("bomb.png", bomb.getvalue())}}),
        ("POST", 422, {"url": "/v1/collections/photos/match", "files": {"file": ("strip.png", strip)}}),
        ("POST", 422, {"url": "/v1/collections/photos/match", "files": {"file": ("e.jpg", b"")}}),
        ("POST", 413, {"url": "/v1/collections/photos/items", "files": {"file": ("big.jpg", os.urandom(1_200_000))}}),
        ("POST", 413, {"url": "/v1/collections/photos/items", "files": {"file": ("big.jpg", os.urandom(3_000_000))}}),
        ("POST", 404, {"url": "/v1/collections/nope/match", "files": {"file": ("a.jpg", photo.read_bytes())}}),
        ("GET", 404, {"url": "/v1/collections/nope"}),
        ("DELETE", 404, {"url": "/v1/collections/photos/items/999999"}),
        ("DELETE", 422, {"url": "/v1/collections/photos/items/abc"}),
        ("POST", 422, {"url": "/v1/collections/photos/items", "files": {"file": ("a.jpg", photo.read_bytes())},
                       "data": {"metadata": "{not json"}}),
        ("POST", 422, {"url": "/v1/collections/photos/items", "files": {"file": ("a.jpg", photo.read_bytes())},
                       "data": {"metadata": "[1, 2]"}}),
        ("POST", 422, {"url": "/v1/collections/photos/match?k=0", "files": {"file": ("a.jpg", photo.read_bytes())}}),
        ("POST", 422, {"url": "/v1/collections/photos/match?k=many", "files": {"file": ("a.jpg", photo.read_bytes())}}),
        ("POST", 422, {"url": "/v1/collections/photos/match?threshold=999",
                       "files": {"file": ("a.jpg", photo.read_bytes())}}),
        ("POST", 422, {"url": "/v1/collections/photos/match?threshold=nan",
                       "files": {"file": ("a.jpg", photo.read_bytes())}}),
        ("POST", 422, {"url": "/v1/collections/photos/match"}),
        ("POST", 422, {"url": "/v1/collections", "json": {"name": "x", "method": "phash", "threshold": "abc"}}),
        ("POST", 422, {"url": "/v1/collections", "json": {"name": "../x", "method": "phash", "threshold": 4}}),
        ("POST", 422, {"url": "/v1/collections", "json": {"name": "x", "method": "nonsense"}}),
        ("POST", 422, {"url": "/v1/collections", "json": {"name": "x", "method": "phash", "extra": 1}}),
        ("POST", 422, {"url": "/v1/collections", "content": b"{broken",
                       "headers": {"content-type": "application/json"}}),
        ("POST", 409, {"url": "/v1/collections", "json": {"name": "photos", "method": "pdq"}}),
        ("POST", 422, {"url": "/v1/compare?methods=nonsense", "files": {"file_a": ("a.jpg", photo.read_bytes()),
                                                                         "file_b": ("b.jpg", photo.read_bytes())}}),
    ]


CODES = {"not_found", "conflict", "too_large", "bad_image", "bad_field", "bad_request"}


def test_every_bad_input_is_a_4xx_json_error(server, demo_photos):
    client = server.client
    client.post("/v1/collections", json={"name": "photos", "method": "pdq"})
    for method, status, request in bad_requests(demo_photos[20]):
        answer = client.request(method, **request)
        assert answer.status_code == status, (request["url"], answer.status_code, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert isinstance(answer.json()["error"], str) and "Traceback" not in answer.text
        assert answer.json()["code"] in CODES and answer.json()["request_id"] == answer.headers["x-request-id"]
    assert client.get("/v1/health").status_code == 200


def test_concurrent_matches_and_adds(server, demo_photos):
    client = server.client
    client.post("/v1/collections", json={"name": "busy", "method": "phash", "threshold": 4})
    for photo in demo_photos[30:34]:
        upload(client, "/v1/collections/busy/items", photo.read_bytes(), photo.name)

    def match(i: int) -> int:
        answer = upload(client, "/v1/collections/busy/match?k=1", demo_photos[30 + i % 4].read_bytes())
        assert answer.json()["matches"][0]["filename"] == demo_photos[30 + i % 4].name
        return answer.status_code

    def add(photo: Path) -> int:
        return upload(client, "/v1/collections/busy/items", photo.read_bytes(), photo.name).status_code

    with ThreadPoolExecutor(8) as pool:
        matches = pool.map(match, range(40))
        adds = pool.map(add, demo_photos[40:60])
        assert set(matches) == {200} and set(adds) == {201}
    assert client.get("/v1/collections/busy").json()["count"] == 24


def test_api_key_is_checked_on_every_request(server):
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"X-API-Key": "nope"}):
        answer = httpx.get(f"{server.url}/v1/health", headers=headers)
        assert answer.status_code == 401 and "API key" in answer.json()["error"]
    assert httpx.get(f"{server.url}/v1/collections").status_code == 401
    assert httpx.options(f"{server.url}/v1/collections").status_code == 401
    assert httpx.get(f"{server.url}/v1/collections", headers={"X-API-Key": KEY}).status_code == 200
    # The contract itself holds no bank data: /docs opens in a browser, whose Authorize button sends the key.
    assert httpx.get(f"{server.url}/docs").status_code == 200
    schemes = httpx.get(f"{server.url}/openapi.json").json()["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}


def test_exposure_needs_a_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MALLE_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "malle", "serve", "--bank", str(tmp_path / "b"), "--host",
                           "0.0.0.0", "--port", str(free_port())], env=env, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "API key" in lines[0] and lines[0].startswith("malle: error:")


def test_kill_9_during_adds_loses_nothing_acknowledged(tmp_path, demo_photos):
    server = Server(tmp_path / "bank", tmp_path / "cache")
    server.client.post("/v1/collections", json={"name": "photos", "method": "phash", "threshold": 4})
    acknowledged, stop = [], threading.Event()

    def adder():
        for photo in demo_photos:
            if stop.is_set():
                return
            try:
                answer = upload(server.client, "/v1/collections/photos/items", photo.read_bytes(), photo.name)
            except httpx.TransportError:
                return
            if answer.status_code in (200, 201):
                acknowledged.append((answer.json()["id"], answer.json()["sha256"]))

    thread = threading.Thread(target=adder)
    thread.start()
    while len(acknowledged) < 15:
        time.sleep(0.05)
    os.kill(server.proc.pid, signal.SIGKILL)
    stop.set()
    thread.join()
    server.proc.wait(30)
    assert Bank.open(tmp_path / "bank", create=False).verify() == []
    again = Server(tmp_path / "bank", tmp_path / "cache")
    try:
        for item_id, sha in acknowledged:
            assert again.client.get(f"/v1/collections/photos/items/{item_id}").json()["sha256"] == sha
        assert again.client.get("/v1/collections/photos").json()["count"] >= len(acknowledged)
        found = upload(again.client, "/v1/collections/photos/match?k=1", demo_photos[5].read_bytes()).json()
        assert found["matches"][0]["filename"] == demo_photos[5].name
    finally:
        again.stop()
