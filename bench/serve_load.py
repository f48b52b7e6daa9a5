"""``malle serve`` under a bounded load on loopback: matches from several clients while adds go on.

    python bench/serve_load.py [--sizes 10000,100000] [--clients 4] [--matches 200] [--adds 100]
    python bench/serve_load.py --burst-only [--burst 8]     # only the memory under a burst of heavy uploads

What runs, plainly:
* the bank: one ``sscd_distilled`` collection (exact ``Flat`` index, the default) holding the real
  embeddings of 50 demo photos (added from their files) and synthetic 512-d unit vectors up to each
  size (seeded Gaussian clusters, inserted through ``Bank.add_codes``, the path every add takes);
  it grows from one size to the next, and the index is rebuilt once before the server starts;
* the server: ``python -m malle serve`` as a subprocess on a free 127.0.0.1 port;
* the load: ``--clients`` threads, each with its own HTTP client, send ``--matches`` match requests
  each (real JPEG bytes of edited copies of the 50 photos: cropped, shrunk, watermarked), while one
  more thread adds new photos (other edited demo photos, each distinct bytes) until the matches end
  or ``--adds`` are done. Every loop is bounded in count and in time (``--max-seconds``).

Reported per size: match requests per second, p50/p99 latency, the same for one client alone (the
reference, measured first in the same run) and the ratios to it, adds done and their p50, whether each
match found its photo first (a sanity check, not a quality measure), errors, and the server's resident
memory (VmRSS) before the load (after start and the reference) and at its peak during it.
Writes bench/results/serve_load.md.

The burst (issue 24): on the bank of the planted photos alone, ``--burst`` clients each upload at once one of
the heaviest images the bank accepts (every one distinct bytes, so each is decoded): a lossless 8-bit RGB PNG
just under the bank's decoded-bytes limit, then a 16-bit grey PNG just under it, and the 16-bit 9,400 x 9,400
PNG of the issue (refused); the server's peak VmRSS above its idle RSS just before, sampled every 50 ms. Writes
bench/results/serve_burst.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)

from malle.bank import Bank  # noqa: E402
from malle.bank.store import NewItem  # noqa: E402
from malle.data.sampling import demo_root  # noqa: E402

METHOD = "sscd_distilled"
COLLECTION = "load"
PLANTED = 50  # demo photos 0..49 are in the bank; their edited copies are the queries
START_TIMEOUT_S = 600
INSERT_CHUNK = 5000
RSS_EVERY_S = 0.25


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def photos() -> list[Path]:
    return sorted(demo_root().glob("*.jpg"), key=lambda p: int(p.stem))


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def edited(photo: Path, variant: int = 0) -> bytes:
    """A modified copy: a crop that moves with ``variant`` (so every variant is new bytes), 320 px, a bar of text."""
    image = Image.open(photo).convert("RGB")
    w, h = image.size
    shift = variant % 8
    image = image.crop((w // 12 + shift, h // 12, w - w // 12 + shift - 8, h - h // 12)).resize((320, 320))
    ImageDraw.Draw(image).rectangle((0, 290, 320, 320), fill=(20, 20, 20))
    ImageDraw.Draw(image).text((8, 298), f"copy {variant}", fill=(240, 240, 240))
    return jpeg(image, 70 + variant % 20)


def synthetic(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


# -- the bank ------------------------------------------------------------------------------------------
def prepare(bank_dir: Path, cache: Path) -> None:
    """A new bank holding the planted photos (named by file, as matches report them)."""
    bank = Bank.open(bank_dir, model_cache=cache)
    try:
        bank.create_collection(COLLECTION, METHOD)
        report = bank.add_files(COLLECTION, photos()[:PLANTED])
        assert len(report.added) == PLANTED, report.skipped
    finally:
        bank.close()


def grow(bank_dir: Path, cache: Path, size: int, rng: np.random.Generator) -> float:
    """Synthetic codes up to ``size`` items, then one index rebuild; returns the seconds it took."""
    started = time.perf_counter()
    bank = Bank.open(bank_dir, model_cache=cache)  # a fresh Bank: no snapshot in memory, so no rebuild per chunk
    try:
        coll = bank.collection(COLLECTION)
        missing = size - coll.count
        for start in range(0, missing, INSERT_CHUNK):
            codes = synthetic(rng, min(INSERT_CHUNK, missing - start), coll.dim)
            bank.add_codes(COLLECTION, [NewItem(hashlib.sha256(c.tobytes()).hexdigest(),
                                                f"synthetic-{coll.count + start + i}", c, {}, "code")
                                        for i, c in enumerate(codes)])
        bank.snapshots.rebuild(COLLECTION)
    finally:
        bank.close()
    return time.perf_counter() - started


# -- the server ----------------------------------------------------------------------------------------
class Server:
    def __init__(self, bank_dir: Path, cache: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "MALLE_CACHE": str(cache)}
        env.pop("MALLE_API_KEY", None)
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "malle", "serve", "--bank", str(bank_dir), "--host",
                                      "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while time.perf_counter() - started < START_TIMEOUT_S:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"malle serve exited with {self.proc.returncode}")
                try:
                    if client.get("/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            else:
                raise RuntimeError("malle serve did not answer in time")
        self.start_s = time.perf_counter() - started

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the load ------------------------------------------------------------------------------------------
@dataclass
class Tally:
    match_s: list[float] = field(default_factory=list)
    add_s: list[float] = field(default_factory=list)
    hits: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def matcher(url: str, queries: list[tuple[str, bytes]], count: int, offset: int, deadline: float,
            tally: Tally) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        for n in range(count):
            if time.monotonic() > deadline:
                return
            want, data = queries[(offset + n) % len(queries)]
            started = time.perf_counter()
            answer = client.post(f"/v1/collections/{COLLECTION}/match", params={"k": 10},
                                 files={"file": ("query.jpg", data, "image/jpeg")})
            took = time.perf_counter() - started
            with tally.lock:
                if answer.status_code != 200:
                    tally.errors.append(f"match {answer.status_code}: {answer.text[:120]}")
                    continue
                tally.match_s.append(took)
                best = answer.json()["matches"][:1]
                tally.hits += bool(best) and best[0]["filename"] == want


def adder(url: str, sources: list[Path], limit: int, stop: threading.Event, first_variant: int, tally: Tally) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        for n in range(limit):
            if stop.is_set():
                return
            data = edited(sources[n % len(sources)], first_variant + n)
            started = time.perf_counter()
            answer = client.post(f"/v1/collections/{COLLECTION}/items", files={"file": (f"add-{n}.jpg", data)})
            took = time.perf_counter() - started
            with tally.lock:
                if answer.status_code not in (200, 201):
                    tally.errors.append(f"add {answer.status_code}: {answer.text[:120]}")
                else:
                    tally.add_s.append(took)


def sample_rss(server: Server, stop: threading.Event, peak: list[float], every_s: float = RSS_EVERY_S) -> None:
    while not stop.wait(every_s):
        peak[0] = max(peak[0], server.rss_mib())


def alone(server: Server, args, queries) -> tuple[float, float]:
    """The reference, in the same run: one client, no adds; (matches/s, p50 ms)."""
    tally = Tally()
    started = time.perf_counter()
    matcher(server.url, queries, args.reference, 0, time.monotonic() + args.max_seconds, tally)
    wall = time.perf_counter() - started
    if tally.errors or not tally.match_s:
        raise RuntimeError(f"the reference matches failed: {tally.errors[:3]}")
    return len(tally.match_s) / wall, float(np.median(tally.match_s) * 1000)


def load(server: Server, args, queries, round_number: int) -> dict:
    alone_rps, alone_p50 = alone(server, args, queries)
    tally, stop, peak = Tally(), threading.Event(), [server.rss_mib()]
    idle = peak[0]
    deadline = time.monotonic() + args.max_seconds
    sampler = threading.Thread(target=sample_rss, args=(server, stop, peak), daemon=True)
    sampler.start()
    adding = threading.Thread(target=adder, args=(server.url, photos()[PLANTED:], args.adds, stop,
                                                  round_number * 10_000, tally))
    clients = [threading.Thread(target=matcher, args=(server.url, queries, args.matches, c * 7, deadline, tally))
               for c in range(args.clients)]
    started = time.perf_counter()
    adding.start()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    wall = time.perf_counter() - started
    stop.set()
    adding.join()
    sampler.join()
    latencies = np.asarray(tally.match_s) * 1000
    return {"matches": len(latencies), "wall_s": wall, "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
            "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
            "adds": len(tally.add_s),
            "add_p50_ms": float(np.median(tally.add_s) * 1000) if tally.add_s else float("nan"),
            "hit_share": tally.hits / max(1, len(latencies)), "errors": tally.errors,
            "rss_idle_mib": idle, "rss_peak_mib": peak[0], "alone_rps": alone_rps, "alone_p50_ms": alone_p50}


# -- the burst ----------------------------------------------------------------------------------------------
def heavy_png(kind: str, variant: int) -> bytes:
    """One of the heaviest uploads the bank takes (or, for "issue", the one it must refuse), compressible (a few
    MB) and distinct per ``variant``."""
    from malle.bank.bank import MAX_DECODED_BYTES

    if kind == "rgb":
        side = int((MAX_DECODED_BYTES / 3) ** 0.5)
        ramp = np.linspace(0, 255, side, dtype=np.float32)
        pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, -ramp) / 2 + 128,
                           np.tile(ramp, (side, 1))], axis=2).astype(np.uint8)
    else:
        side = int((MAX_DECODED_BYTES / 2) ** 0.5) if kind == "gray16" else 9400
        pixels = np.add.outer(np.arange(side, dtype=np.uint32) * 7, np.arange(side, dtype=np.uint32) * 3)
        pixels = (pixels % 65536).astype(np.uint16)
    pixels[variant, :64] = 255 - variant  # distinct bytes: each upload is decoded, none is found by its SHA-256
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def burst(server: Server, uploads: list[bytes]) -> dict:
    """Every upload at once, from its own client; peak RSS above the idle RSS just before."""
    stop, peak = threading.Event(), [server.rss_mib()]
    idle = peak[0]
    statuses: list[int] = []
    sampler = threading.Thread(target=sample_rss, args=(server, stop, peak, 0.05), daemon=True)
    sampler.start()

    def send(data: bytes) -> None:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            answer = client.post(f"/v1/collections/{COLLECTION}/items", files={"file": ("heavy.png", data)})
            statuses.append(answer.status_code)

    started = time.perf_counter()
    senders = [threading.Thread(target=send, args=(data,)) for data in uploads]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    wall = time.perf_counter() - started
    time.sleep(0.3)
    stop.set()
    sampler.join()
    return {"idle_mib": idle, "peak_mib": peak[0], "above_mib": peak[0] - idle, "wall_s": wall,
            "statuses": sorted(statuses), "bytes_mb": sum(map(len, uploads)) / 1e6}


def burst_only(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="malle-serve-burst-"))
    rows = []
    try:
        cache = work / "cache"
        prepare(work / "bank", cache)
        server = Server(work / "bank", cache)
        try:
            for kind, label in (("rgb", "8-bit RGB PNG"), ("gray16", "16-bit grey PNG"), ("issue", "16-bit grey PNG "
                                                                                                  "of the issue")):
                uploads = [heavy_png(kind, i) for i in range(args.burst)]
                side = Image.open(io.BytesIO(uploads[0])).size[0]
                rows.append({"label": f"{label}, {side:,} x {side:,}", **burst(server, uploads)})
                print(rows[-1], flush=True)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish(burst_report(rows, args), args.burst_out)


def burst_report(rows: list[dict], args) -> list[str]:
    from malle.bank.bank import MAX_DECODED_BYTES, MAX_PIXELS

    lines = ["# malle serve under a burst of heavy uploads (bench/serve_load.py --burst-only)", "",
             f"Machine: {machine()}; load average at the end {os.getloadavg()[0]:.1f} (a shared machine)", "",
             f"Each row: {args.burst} clients upload at once one image each (distinct bytes, so each is decoded) "
             f"to a {METHOD} collection; the bank decodes at most {MAX_DECODED_BYTES / 2**20:.0f} MiB per image "
             f"(pixels x bands x bytes per band), reduces images past {MAX_PIXELS / 1e6:.1f} MP as they load, and "
             f"runs one decode per core ({len(os.sched_getaffinity(0))} here). Peak: the server's VmRSS sampled "
             "every 50 ms; above idle: against its RSS just before the burst. Target (issue 24): under 1.5 GB "
             "above idle.", "",
             "| uploads | uploaded MB | answers | wall s | RSS idle MiB | RSS peak MiB | above idle MiB |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        answers = ", ".join(f"{n} x {s}" for s, n in sorted(Counter(r["statuses"]).items()))
        lines.append(f"| {r['label']} | {r['bytes_mb']:.1f} | {answers} | {r['wall_s']:.1f} | {r['idle_mib']:.0f} "
                     f"| {r['peak_mib']:.0f} | {r['above_mib']:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="bank sizes to measure at, ascending")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--matches", type=int, default=200, help="match requests per client")
    parser.add_argument("--adds", type=int, default=100, help="most adds during one size's load")
    parser.add_argument("--reference", type=int, default=40, help="matches of the one-client reference first")
    parser.add_argument("--max-seconds", type=float, default=900, help="time bound of one size's load")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_load.md")
    parser.add_argument("--burst", type=int, default=8, help="heavy uploads sent at once")
    parser.add_argument("--burst-only", action="store_true", help="measure only the burst of heavy uploads")
    parser.add_argument("--burst-out", type=Path, default=ROOT / "bench" / "results" / "serve_burst.md")
    args = parser.parse_args()
    if args.burst_only:
        burst_only(args)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(tempfile.mkdtemp(prefix="malle-serve-load-"))
    try:
        rows = measure(work, sizes, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a 100k bank is some 250 MB of SQLite
    publish(report(rows, args), args.out)


def measure(work: Path, sizes: list[int], args) -> list[dict]:
    cache = work / "cache"
    bank_dir = work / "bank"
    prepare(bank_dir, cache)
    queries = [(p.name, edited(p)) for p in photos()[:PLANTED]]
    rng = np.random.default_rng(0)
    rows = []
    for number, size in enumerate(sizes):
        grow_s = grow(bank_dir, cache, size, rng)
        server = Server(bank_dir, cache)
        try:
            result = load(server, args, queries, number)
        finally:
            server.stop()
        rows.append({"size": size, "grow_s": grow_s, "start_s": server.start_s, **result})
        print(f"{size:,} items: {result['rps']:.1f} matches/s, p50 {result['p50_ms']:.0f} ms, "
              f"p99 {result['p99_ms']:.0f} ms, {result['adds']} adds, RSS {result['rss_peak_mib']:.0f} MiB",
              flush=True)
    return rows


def report(rows: list[dict], args) -> list[str]:
    lines = ["# malle serve under load (bench/serve_load.py)", "",
             f"Machine: {machine()}; load average at the end {os.getloadavg()[0]:.1f} (a shared machine: other "
             "processes compete for the same cores, so these times are upper bounds)", "",
             f"Load per size: {args.clients} clients x {args.matches} matches (k=10, real JPEG copies of "
             f"{PLANTED} planted photos), one client adding new photos meanwhile (at most {args.adds}); "
             f"{METHOD}, exact Flat index, 127.0.0.1.", "",
             f"Reference, measured first at each size: one client, {args.reference} matches, no adds. The ratios "
             "to it say what the concurrent load costs on the same machine at the same moment.", "",
             "| items | matches/s | p50 ms | p99 ms | one client alone: matches/s, p50 ms | matches/s vs alone | "
             "p50 vs alone | adds done | add p50 ms | top-1 is the photo | errors | RSS before MiB | RSS peak MiB | "
             "server start s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']:,} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['alone_rps']:.1f}, {r['alone_p50_ms']:.0f} | {r['rps'] / r['alone_rps']:.2f}x | "
                     f"{r['p50_ms'] / r['alone_p50_ms']:.1f}x | {r['adds']} | {r['add_p50_ms']:.0f} | "
                     f"{r['hit_share']:.3f} | {len(r['errors'])} | {r['rss_idle_mib']:.0f} | {r['rss_peak_mib']:.0f} | "
                     f"{r['start_s']:.1f} |")
    errors = [e for r in rows for e in r["errors"]][:5]
    if errors:
        lines += ["", "First errors:", *[f"- {e}" for e in errors]]
    return lines


if __name__ == "__main__":
    main()
