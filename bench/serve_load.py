"""``malle serve`` under a bounded load on loopback: matches from several clients while adds go on.

    python bench/serve_load.py [--sizes 10000,100000] [--clients 4] [--matches 200] [--adds 100]
    python bench/serve_load.py --sizes 100000,1000000 --clients 8 --index IVF4096,PQ64 --workers 1,2
    python bench/serve_load.py --burst-only [--burst 8]     # only the memory under a burst of heavy uploads

What runs, plainly:
* the bank: one ``sscd_distilled`` collection (index ``--index``, exact ``Flat`` by default; precision
  ``--precision``) holding the real embeddings of 50 demo photos (added from their files) and a synthetic
  background of 512-d unit vectors up to each size (seeded Gaussian clusters, inserted through
  ``Bank.add_codes``, the path every add takes); it grows from one size to the next, and the index is
  rebuilt once before the server starts;
* exact search, for reference: the queries' codes (encoded here by the same method and precision) are scored
  against every code as it is inserted, so each size knows which queries exact search answers with their photo
  first (R@1 of the copies against exact search, without a second copy of the codes in memory);
* the server: ``python -m malle serve --workers W`` as a subprocess on a free 127.0.0.1 port, for each W of
  ``--workers`` in turn (batching as ``--batch-size`` and ``--batch-wait-ms``);
* the load: ``--clients`` threads, each with its own HTTP client, send ``--matches`` match requests
  each (real JPEG bytes of edited copies of the 50 photos: cropped, shrunk, watermarked), while ``--adders``
  more threads add new photos (other edited demo photos, each distinct bytes) until the matches end
  or ``--adds`` are done. Every loop is bounded in count and in time (``--max-seconds``).

Reported per size and worker count: match requests per second, p50/p99 latency, the same for one client alone
(the reference, measured first in the same run) and the ratios to it, adds done, adds a second during the
matching and their p50, R@1 of the copies as served and as exact search gives it, the probes the index's build
chose for its recall target (``nprobe=N``, from ``GET /v1/collections``) and the recall it measured, errors, the
memory of the server (VmRSS and PSS of each worker, PSS in total: shared pages such as a mapped index counted once
across processes), and the load average of the machine before and after.
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
@dataclass
class Exact:
    """Exact search for the queries, kept as the bank grows: each query's score to its own photo and the best
    score of any other item so far."""

    codes: np.ndarray  # the queries' codes, (queries, dim)
    own: np.ndarray  # score to the photo it copies
    best_other: np.ndarray

    def see(self, codes: np.ndarray, owners: np.ndarray | None = None) -> None:
        """Score ``codes`` (``owners``: the query each code is the photo of, -1 for none)."""
        scores = self.codes @ codes.T
        if owners is not None:
            mine = owners[None, :] == np.arange(len(self.codes))[:, None]
            self.own = np.maximum(self.own, np.where(mine, scores, -np.inf).max(axis=1))
            scores = np.where(mine, -np.inf, scores)
        self.best_other = np.maximum(self.best_other, scores.max(axis=1, initial=-np.inf))

    def r1(self) -> float:
        return float(np.mean(self.own > self.best_other))


def prepare(bank_dir: Path, cache: Path, args, queries: list[tuple[str, bytes]]) -> Exact:
    """A new bank holding the planted photos (named by file, as matches report them); exact search's state."""
    from malle.bank.bank import decode

    bank = Bank.open(bank_dir, model_cache=cache)
    try:
        coll = bank.create_collection(COLLECTION, METHOD, index=args.index, precision=args.precision)
        report = bank.add_files(COLLECTION, photos()[:PLANTED])
        assert len(report.added) == PLANTED, report.skipped
        desc = bank.descriptor(METHOD, coll.precision)
        query_codes = desc.encode_queries([decode(data) for _, data in queries])
        planted = desc.encode([decode(p.read_bytes()) for p in photos()[:PLANTED]])
    finally:
        bank.close()
    exact = Exact(query_codes, np.full(len(queries), -np.inf), np.full(len(queries), -np.inf))
    names = [name for name, _ in queries]
    exact.see(planted, np.asarray([names.index(p.name) if p.name in names else -1 for p in photos()[:PLANTED]]))
    return exact


def grow(bank_dir: Path, cache: Path, size: int, rng: np.random.Generator, exact: Exact) -> float:
    """Synthetic codes up to ``size`` items, then one index rebuild; returns the seconds it took."""
    started = time.perf_counter()
    bank = Bank.open(bank_dir, model_cache=cache)  # a fresh Bank: no snapshot in memory, so no rebuild per chunk
    try:
        coll = bank.collection(COLLECTION)
        missing = size - coll.count
        for start in range(0, missing, INSERT_CHUNK):
            codes = synthetic(rng, min(INSERT_CHUNK, missing - start), coll.dim)
            exact.see(codes)
            bank.add_codes(COLLECTION, [NewItem(hashlib.sha256(c.tobytes()).hexdigest(),
                                                f"synthetic-{coll.count + start + i}", c, {}, "code")
                                        for i, c in enumerate(codes)])
        bank.snapshots.rebuild(COLLECTION)
    finally:
        bank.close()
    return time.perf_counter() - started


# -- the server ----------------------------------------------------------------------------------------
class Server:
    def __init__(self, bank_dir: Path, cache: Path, workers: int = 1, batch: tuple[str, str] = ("1", "5")):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.workers = workers
        env = {**os.environ, "MALLE_CACHE": str(cache)}
        env.pop("MALLE_API_KEY", None)
        started = time.perf_counter()
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "malle", "serve", "--bank", str(bank_dir), "--host",
                                      "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--workers", str(workers),
                                      "--batch-size", batch[0], "--batch-wait-ms", batch[1]], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while time.perf_counter() - started < START_TIMEOUT_S:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"malle serve exited with {self.proc.returncode}: {self.output()[-2000:]}")
                try:
                    if client.get("/v1/health").status_code == 200 and self.ready() >= workers:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            else:
                raise RuntimeError("malle serve did not answer in time")
        self.start_s = time.perf_counter() - started

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def ready(self) -> int:
        """Worker processes that said they are ready (one process serving: its health answer says it)."""
        return 1 if self.workers == 1 else self.output().count("ready to serve")

    def processes(self) -> list[int]:
        """The processes that serve: the server itself, or its workers."""
        if self.workers == 1:
            return [self.proc.pid]
        return children(self.proc.pid)

    def memory(self) -> dict:
        """MiB: VmRSS of each serving process, and PSS of all (the supervisor too): shared pages counted once."""
        serving = self.processes()
        rss = [_proc_kib(pid, "status", "VmRSS:") / 1024 for pid in serving]
        everyone = {self.proc.pid, *serving}
        return {"rss_each": rss, "rss_sum": sum(rss), "pss": sum(_proc_kib(p, "smaps_rollup", "Pss:") for p in everyone)
                / 1024, "supervisor_rss": _proc_kib(self.proc.pid, "status", "VmRSS:") / 1024 if self.workers > 1
                else 0.0}

    def rss_mib(self) -> float:
        return sum(_proc_kib(pid, "status", "VmRSS:") for pid in self.processes()) / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _proc_kib(pid: int, file: str, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


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


def alone(server: Server, args, queries) -> tuple[float, float, float]:
    """The reference, in the same run: one client, no adds; (matches/s, p50 ms, p99 ms)."""
    tally = Tally()
    started = time.perf_counter()
    matcher(server.url, queries, args.reference, 0, time.monotonic() + args.max_seconds, tally)
    wall = time.perf_counter() - started
    if tally.errors or not tally.match_s:
        raise RuntimeError(f"the reference matches failed: {tally.errors[:3]}")
    return (len(tally.match_s) / wall, float(np.median(tally.match_s) * 1000),
            float(np.percentile(tally.match_s, 99) * 1000))


def load(server: Server, args, queries, round_number: int) -> dict:
    load_before = os.getloadavg()[0]
    built = httpx.get(f"{server.url}/v1/collections/{COLLECTION}", timeout=60).json()  # the probes its build chose
    alone_rps, alone_p50, alone_p99 = alone(server, args, queries)
    tally, stop, peak = Tally(), threading.Event(), [server.rss_mib()]
    idle = server.memory()
    deadline = time.monotonic() + args.max_seconds
    sampler = threading.Thread(target=sample_rss, args=(server, stop, peak), daemon=True)
    sampler.start()
    adding = [threading.Thread(target=adder, args=(server.url, photos()[PLANTED:], args.adds // args.adders, stop,
                                                   round_number * 100_000 + a * 10_000, tally))
              for a in range(args.adders)]
    clients = [threading.Thread(target=matcher, args=(server.url, queries, args.matches, c * 7, deadline, tally))
               for c in range(args.clients)]
    started = time.perf_counter()
    for thread in adding + clients:
        thread.start()
    for thread in clients:
        thread.join()
    wall = time.perf_counter() - started
    adds_during = len(tally.add_s)
    stop.set()
    for thread in adding:
        thread.join()
    sampler.join()
    latencies = np.asarray(tally.match_s) * 1000
    busy = server.memory()
    return {"matches": len(latencies), "wall_s": wall, "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
            "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
            "adds": len(tally.add_s), "adds_per_s": adds_during / wall,
            "add_p50_ms": float(np.median(tally.add_s) * 1000) if tally.add_s else float("nan"),
            "hit_share": tally.hits / max(1, len(latencies)), "errors": tally.errors,
            "rss_idle_mib": idle["rss_sum"], "rss_peak_mib": peak[0], "rss_each": busy["rss_each"],
            "pss_mib": busy["pss"], "pss_idle_mib": idle["pss"], "rss_idle_each": idle["rss_each"],
            "supervisor_rss": busy["supervisor_rss"], "alone_rps": alone_rps,
            "alone_p50_ms": alone_p50, "alone_p99_ms": alone_p99, "load_before": load_before,
            "probes": built.get("search_params") or "exact", "build_recall": built.get("recall_at_10"),
            "load_after": os.getloadavg()[0]}


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
    parser.add_argument("--adders", type=int, default=1, help="clients adding photos during the load")
    parser.add_argument("--reference", type=int, default=40, help="matches of the one-client reference first")
    parser.add_argument("--max-seconds", type=float, default=900, help="time bound of one size's load")
    parser.add_argument("--index", default="Flat", help="the collection's FAISS index-factory string")
    parser.add_argument("--precision", default="fp32", help="the collection's precision (fp32, bf16, int8, auto)")
    parser.add_argument("--workers", default="1", help="worker counts to serve with, in turn, e.g. 1,2")
    parser.add_argument("--batch-size", default="1", help="malle serve --batch-size")
    parser.add_argument("--batch-wait-ms", default="5", help="malle serve --batch-wait-ms")
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
        shutil.rmtree(work, ignore_errors=True)  # a 1M bank is some GB
    publish(report(rows, args), args.out)


def measure(work: Path, sizes: list[int], args) -> list[dict]:
    cache = work / "cache"
    bank_dir = work / "bank"
    queries = [(p.name, edited(p)) for p in photos()[:PLANTED]]
    exact = prepare(bank_dir, cache, args, queries)
    rng = np.random.default_rng(0)
    rows = []
    round_number = 0
    for size in sizes:
        grow_s = grow(bank_dir, cache, size, rng, exact)
        for workers in (int(w) for w in args.workers.split(",")):
            server = Server(bank_dir, cache, workers, (args.batch_size, args.batch_wait_ms))
            try:
                result = load(server, args, queries, round_number)
            finally:
                server.stop()
            round_number += 1
            rows.append({"size": size, "workers": workers, "grow_s": grow_s, "start_s": server.start_s,
                         "exact_r1": exact.r1(), **result})
            print(f"{size:,} items, {workers} worker(s): {result['rps']:.1f} matches/s, p50 {result['p50_ms']:.0f} "
                  f"ms, p99 {result['p99_ms']:.0f} ms, {result['adds_per_s']:.1f} adds/s, PSS "
                  f"{result['pss_mib']:.0f} MiB, load {result['load_before']:.1f}-{result['load_after']:.1f}, "
                  f"{result['probes']} (recall@10 {result['build_recall']})",
                  flush=True)
    return rows


def report(rows: list[dict], args) -> list[str]:
    lines = ["# malle serve under load (bench/serve_load.py)", "",
             f"Machine: {machine()}; load average (1 min) before and after each row in its last column (a shared "
             "machine: other processes compete for the same cores, so these times are upper bounds)", "",
             f"Load per row: {args.clients} clients x {args.matches} matches (k=10, real JPEG copies of "
             f"{PLANTED} planted photos, decode and encode included), {args.adders} client(s) adding new photos "
             f"meanwhile (at most {args.adds}); {METHOD} at {args.precision}, index {args.index}, "
             f"--batch-size {args.batch_size} --batch-wait-ms {args.batch_wait_ms}, 127.0.0.1.", "",
             f"Reference, measured first in each row: one client, {args.reference} matches, no adds. R@1 served: the "
             "copy's photo first in the served answer; R@1 exact: the same by exact search over every code. "
             "Probes: the search parameters the index's build chose for its recall target, with the recall@10 it "
             "measured on its own sample. Memory "
             "before the load (after the start and the reference) and after it: VmRSS of each serving process, and PSS "
             "of all of them with the supervisor (a page several processes map, such as the index file, counted once)."
             " After the load a worker may be rebuilding the index (the adds pass its delta limit).", "",
             "| items | workers | matches/s | p50 ms | p99 ms | one client alone: matches/s, p50, p99 ms | "
             "matches/s vs alone | adds/s during matching | add p50 ms | R@1 served | R@1 exact | "
             "probes (recall@10 at build) | errors | "
             "RSS per worker MiB, before / after | PSS total MiB, before / after | server start s | load avg |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---|---|---:|---|"]
    for r in rows:
        each = " / ".join(" + ".join(f"{m:.0f}" for m in r[key]) for key in ("rss_idle_each", "rss_each"))
        recall = "-" if r["build_recall"] is None else f"{r['build_recall']:.3f}"
        lines.append(f"| {r['size']:,} | {r['workers']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['alone_rps']:.1f}, {r['alone_p50_ms']:.0f}, {r['alone_p99_ms']:.0f} | "
                     f"{r['rps'] / r['alone_rps']:.2f}x | {r['adds_per_s']:.1f} | {r['add_p50_ms']:.0f} | "
                     f"{r['hit_share']:.3f} | {r['exact_r1']:.3f} | {r['probes']} ({recall}) | {len(r['errors'])} | "
                     f"{each} | "
                     f"{r['pss_idle_mib']:.0f} / {r['pss_mib']:.0f} | {r['start_s']:.1f} | "
                     f"{r['load_before']:.1f}-{r['load_after']:.1f} |")
    errors = [e for r in rows for e in r["errors"]][:5]
    if errors:
        lines += ["", "First errors:", *[f"- {e}" for e in errors]]
    return lines


if __name__ == "__main__":
    main()
