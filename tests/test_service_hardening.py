"""The attacks of issue 24 against a live ``malle serve`` (real uvicorn, real bank): each is a 4xx JSON error
with its stable code, leaves the server up and writes nothing; and the contract's headers, lookups by code,
the quality gate, the rate limit, the in-flight bound, CORS and the JSON 500, on real HTTP."""

from __future__ import annotations

import io
import logging
import sqlite3
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
from PIL import Image
from service_server import KEY, InProcess, Server, jpeg, png, upload

from malle.bank import Bank
from malle.ops import get_op
from malle.service.app import create_app
from malle.service.flood import configure_logging

INT64_MAX = 2**63 - 1


def edited(photo) -> bytes:
    img = get_op("resize").apply(Image.open(photo).convert("RGB"), {"size": 320})
    return jpeg(get_op("watermark").apply(img, get_op("watermark").default_params()), 75)


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_photos):
    root = tmp_path_factory.mktemp("attacks")
    # A ResNet-50 weights file that is not there: the method cannot run, whatever this machine's cache holds.
    server = Server(root / "bank", root / "cache", env={"MALLE_RESNET50_WEIGHTS": str(root / "absent.pth")})
    client = server.client
    assert client.post("/v1/collections", json={"name": "p", "method": "pdq"}).status_code == 201
    assert client.post("/v1/collections", json={"name": "s", "method": "sscd_distilled"}).status_code == 201
    for photo in demo_photos[:6]:
        for name in ("p", "s"):
            assert upload(client, f"/v1/collections/{name}/items", photo.read_bytes(), photo.name).status_code == 201
    server.root = root
    yield server
    server.stop()
    assert server.internal_errors() == []


def refused(server, answer, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code and body["request_id"] == answer.headers["x-request-id"], body
    assert "Traceback" not in answer.text and server.alive()


def counts(server) -> dict:
    return {c["name"]: c["count"] for c in server.client.get("/v1/collections").json()["collections"]}


def test_index_strings_that_kill_faiss_are_refused(served):
    before = counts(served)
    for index in ("HNSW0", "HNSW1", "RR0,Flat", "IVF16_HNSW0,Flat", "IVF99999999,Flat", "IVF16,PQ8x40"):
        answer = served.client.post("/v1/collections", json={"name": "h", "method": "sscd_distilled", "index": index})
        refused(served, answer, 422, "bad_field")
        assert index in answer.json()["error"]
    assert counts(served) == before


def test_metadata_that_cannot_round_trip_is_refused_before_any_write(served, demo_photos):
    before = counts(served)
    data = demo_photos[30].read_bytes()
    for metadata in ('{"a": "\\ud800"}', '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e999}',
                     '{"a": ' * 5000 + "1" + "}" * 5000, '{"a": ' + "[" * 5000 + "]" * 5000 + "}",
                     '{"a": "' + "x" * 70_000 + '"}', "[1]", "{broken"):
        refused(served, upload(served.client, "/v1/collections/p/items", data, metadata=metadata), 422, "bad_field")
    assert counts(served) == before
    assert all(m["sha256"] != "" for m in served.client.get("/v1/collections/p/items").json()["items"])


def test_a_row_stored_before_the_checks_reads_back(served, demo_photos):
    item = upload(served.client, "/v1/collections/p/items", demo_photos[7].read_bytes(), "old.jpg").json()
    with sqlite3.connect(served.root / "bank" / "bank.sqlite") as db:  # as an older server stored it
        db.execute("UPDATE items SET metadata = ? WHERE id = ?", ('{"a": "\\ud800x"}', item["id"]))
    assert served.client.get(f"/v1/collections/p/items/{item['id']}").json()["metadata"] == {"a": "\ufffdx"}
    assert served.client.get("/v1/collections/p/items").status_code == 200
    found = upload(served.client, "/v1/collections/p/match?k=1", demo_photos[7].read_bytes()).json()
    assert found["matches"][0]["metadata"] == {"a": "\ufffdx"}


def test_a_16_bit_png_too_heavy_to_decode_is_refused(served):
    before = counts(served)
    heavy = np.zeros((9400, 9400), np.uint16)
    heavy[::97, :] = 60000
    data = png(Image.fromarray(heavy))
    assert len(data) < 1_000_000
    for path in ("/v1/collections/p/items", "/v1/collections/s/items", "/v1/collections/s/match"):
        answer = upload(served.client, path, data, "heavy.png")
        refused(served, answer, 422, "bad_image")
        assert "MiB" in answer.json()["error"]
    assert counts(served) == before


def test_ids_offsets_and_limits_beyond_int64_are_422(served):
    for method, path in (("GET", f"/v1/collections/p/items/{INT64_MAX + 1}"),
                         ("DELETE", f"/v1/collections/p/items/{INT64_MAX + 1}"),
                         ("GET", f"/v1/collections/p/items/{INT64_MAX + 1}/thumbnail"),
                         ("GET", f"/v1/collections/p/items?offset={INT64_MAX + 1}"),
                         ("GET", f"/v1/collections/p/items?limit={INT64_MAX + 1}"),
                         ("GET", "/v1/collections/p/items/-1")):
        refused(served, served.client.request(method, path), 422, "bad_field")
    refused(served, served.client.get(f"/v1/collections/p/items/{INT64_MAX}"), 404, "not_found")
    assert served.client.get(f"/v1/collections/p/items?offset={INT64_MAX}").json()["items"] == []


def test_a_method_that_cannot_run_is_refused_without_a_download(served, demo_photos):
    files = {"file_a": ("a.jpg", demo_photos[0].read_bytes()), "file_b": ("b.jpg", demo_photos[1].read_bytes())}
    refused(served, served.client.post("/v1/compare?methods=resnet50", files=files), 422, "method_unavailable")
    refused(served, served.client.post("/v1/collections", json={"name": "r", "method": "resnet50",
                                                                 "threshold": 0.5}), 422, "method_unavailable")
    assert "download" not in served.output().lower()


def test_headers_of_the_contract(served, demo_photos):
    client = served.client
    made = client.post("/v1/collections", json={"name": "hdr", "method": "phash", "threshold": 6})
    assert made.status_code == 201 and made.headers["location"] == "/v1/collections/hdr"
    added = upload(client, "/v1/collections/hdr/items", demo_photos[3].read_bytes())
    assert added.status_code == 201 and added.headers["location"] == f"/v1/collections/hdr/items/{added.json()['id']}"
    again = upload(client, "/v1/collections/hdr/items", demo_photos[3].read_bytes())
    assert again.status_code == 200 and "location" not in again.headers
    wrong = client.put("/v1/collections/hdr")
    refused(served, wrong, 405, "method_not_allowed")
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    for path in ("/v1/health", "/v1/collections", "/v1/collections/hdr", "/v1/collections/hdr/items",
                 f"/v1/collections/hdr/items/{added.json()['id']}",
                 f"/v1/collections/hdr/items/{added.json()['id']}/thumbnail"):
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path
    assert client.get("/v1/health", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    assert client.get("/v1/health", headers={"X-Request-ID": "bad id\x7f"}).headers["x-request-id"] != "bad id\x7f"
    assert len({client.get("/v1/health").headers["x-request-id"] for _ in range(3)}) == 3
    assert "[trace-42] GET /v1/health -> 200" in served.output()
    assert client.get("/v1/collections/hdr/items").json()["items"][0]["has_thumbnail"] is True


def test_lookup_with_the_codes_of_malle_hash_gives_the_matches_of_match(served, demo_photos, tmp_path):
    queries = []
    for i, photo in enumerate(demo_photos[:3]):
        queries.append(tmp_path / f"q{i}.jpg")
        queries[-1].write_bytes(edited(photo))
    (tmp_path / "notes.jpg").write_text("not a picture")
    for name, method, length in (("p", "pdq", 64), ("s", "sscd_distilled", 2732)):
        done = subprocess.run([sys.executable, "-m", "malle", "hash", *map(str, queries), str(tmp_path / "notes.jpg"),
                               "--method", method, "--cache", str(served.root / "cache")],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        lines = [line.split("\t") for line in done.stdout.splitlines()]
        assert [p for p, _ in lines] == list(map(str, queries)) and {len(c) for _, c in lines} == {length}
        assert "notes.jpg" in done.stderr
        looked = served.client.post(f"/v1/collections/{name}/lookup?k=4", json={"codes": [c for _, c in lines]})
        assert looked.status_code == 200, looked.text
        for query, result in zip(queries, looked.json()["results"]):
            matched = upload(served.client, f"/v1/collections/{name}/match?k=4", query.read_bytes()).json()
            assert result["quality"] is None and len(result["matches"]) == len(matched["matches"]) == 4
            for got, want in zip(result["matches"], matched["matches"]):
                # The same ids, verdicts and metadata; an embedding computed by another process (its own thread
                # count) may differ from the server's in the last float32 bits.
                assert {**got, "score": 0} == {**want, "score": 0}
                assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            assert matched["matches"][0]["is_match"]
    for codes in (["00" * 31], ["zz" * 32], ["AAAA"], [], ["00" * 32] * 101):
        refused(served, served.client.post("/v1/collections/p/lookup", json={"codes": codes}), 422, "bad_field")
    nan = np.full(512, np.nan, "<f4").tobytes()
    import base64
    refused(served, served.client.post("/v1/collections/s/lookup", json={"codes": [base64.b64encode(nan).decode()]}),
            422, "bad_field")


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (128, 90, 40)])
def test_a_solid_colour_is_no_match_in_a_default_collection(served, colour):
    blank = jpeg(Image.new("RGB", (512, 512), colour))
    for name in ("p", "s"):
        found = upload(served.client, f"/v1/collections/{name}/match?k=3", blank).json()
        assert found["quality"] == "low" and found["quality_reason"]
        assert not any(m["is_match"] for m in found["matches"])
        asked = upload(served.client, f"/v1/collections/{name}/match?k=3&allow_low_quality=true", blank).json()
        assert asked["quality"] == "low" and len(asked["matches"]) == 3
    tiny = jpeg(Image.new("RGB", (12, 12), colour))
    assert upload(served.client, "/v1/collections/s/match", tiny).json()["quality"] == "low"


# -- the middleware, on an app built here and served by a real uvicorn on a thread --------------------------
@pytest.fixture()
def small_bank(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    bank = Bank.open(tmp_path / "bank")
    bank.create_collection("p", "phash", threshold=6)
    yield bank
    bank.close()


def test_the_rate_limit_answers_429_with_retry_after(small_bank):
    live = InProcess(create_app(small_bank, KEY, rate=0.05, burst=2))
    try:
        answers = [httpx.get(f"{live.url}/v1/health", headers={"X-API-Key": KEY}) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 429, 429, 429]
        body = answers[2].json()
        assert body["code"] == "rate_limited" and int(answers[2].headers["retry-after"]) >= 1
        assert body["request_id"] == answers[2].headers["x-request-id"]
        assert httpx.get(f"{live.url}/v1/health").status_code == 401  # a wrong key never reaches the bucket
    finally:
        live.stop()


def test_cors_is_off_unless_an_origin_is_given(small_bank):
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "GET"}
    closed, opened = InProcess(create_app(small_bank)), InProcess(create_app(small_bank, cors_origins=[
        "https://app.example.org"]))
    try:
        assert "access-control-allow-origin" not in httpx.options(f"{closed.url}/v1/health", headers=preflight).headers
        answer = httpx.options(f"{opened.url}/v1/health", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://app.example.org"
        other = httpx.options(f"{opened.url}/v1/health", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        closed.stop()
        opened.stop()


def test_a_bug_is_a_json_500_with_the_request_id_and_a_logged_traceback(small_bank, caplog):
    app = create_app(small_bank, max_in_flight=1)
    inside, release = threading.Event(), threading.Event()

    @app.get("/test/bug")
    def bug():
        raise RuntimeError("an internal bug")

    @app.get("/test/slow")
    def slow():
        inside.set()
        release.wait(60)
        return {"done": True}

    configure_logging()
    logging.getLogger("malle.service").propagate = True
    live = InProcess(app)
    try:
        with caplog.at_level(logging.INFO, logger="malle.service"):
            answer = httpx.get(f"{live.url}/test/bug", headers={"X-Request-ID": "bug-1"})
        assert answer.status_code == 500 and answer.json() == {
            "error": "internal error; the server log has its details under request id bug-1", "code": "internal",
            "request_id": "bug-1"}
        record = next(r for r in caplog.records if "unexpected error" in r.getMessage())
        assert record.request_id == "bug-1" and "an internal bug" in caplog.text and record.exc_info
        waiting = threading.Thread(target=httpx.get, args=(f"{live.url}/test/slow",), kwargs={"timeout": 120})
        waiting.start()
        assert inside.wait(60)  # the one request allowed in flight is in
        busy = httpx.get(f"{live.url}/v1/health")
        assert busy.status_code == 503 and busy.json()["code"] == "busy" and busy.headers["retry-after"] == "1"
        release.set()
        waiting.join()
        assert httpx.get(f"{live.url}/v1/health").status_code == 200
    finally:
        release.set()
        live.stop()
        logging.getLogger("malle.service").propagate = False


def test_images_are_reduced_on_load_and_bounded(demo_photos):
    from malle.bank.bank import MAX_DECODED_BYTES, MAX_PIXELS, decode
    from malle.errors import BadImage

    big = Image.open(demo_photos[0]).convert("RGB").resize((5000, 4000))
    for data in (jpeg(big), png(big)):
        assert decode(data).width * decode(data).height <= MAX_PIXELS
    with pytest.raises(BadImage, match="over the limit"):
        decode(png(Image.new("RGBA", (6000, 6000))))
    assert 6000 * 6000 * 4 > MAX_DECODED_BYTES
    assert decode(io.BytesIO(jpeg(big)).getvalue()).mode == "RGB"
