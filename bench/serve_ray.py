"""``malle serve --ray ADDRESS --replicas N`` against ``malle serve --workers N`` on the same bank, in the same run.

    ray start --head --num-cpus 3 --port 6380 --include-dashboard false     # token authentication on (Ray >= 2.59)
    python bench/serve_ray.py --ray 127.0.0.1:6380 [--replicas 2] [--clients 4] [--matches 50] [--rounds 2]

What runs, plainly:
* the bank: one ``sscd_distilled`` collection (exact ``Flat`` index) of the 50 demo photos (added from their files)
  and ``--background`` synthetic 512-d unit vectors (``bench/serve_load.py``'s, inserted through
  ``Bank.add_codes``), in a temporary folder given to both servers by its absolute path;
* the reference first: ``python -m malle serve --workers N`` on a free loopback port; then the same bank served by
  ``python -m malle serve --ray ADDRESS --replicas N`` (N matcher replicas and the one writer on the cluster, Serve's
  proxy on a free loopback port); each started afresh and stopped (SIGTERM) after its load;
* the load, the same for both (``bench/serve_load.py``'s clients): one client alone for ``--matches`` matches,
  then ``--clients`` clients of ``--matches`` matches each while one more client adds edited demo photos (distinct
  bytes) until the matches end. Queries are edited copies of the 50 photos.

Reported per server: matches/s and p50/p99 for one client and for ``--clients``, adds/s during the matching, R@1 of
the copies (the planted photo first), errors; and the Ray rows' ratios to the reference. Writes
bench/results/serve_ray.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)
from serve_load import COLLECTION, METHOD, PLANTED, Tally, adder, edited, free_port, matcher, photos, synthetic  # noqa: E402

from malle.bank import Bank  # noqa: E402
from malle.bank.store import NewItem  # noqa: E402
from malle.io.cache import default_root  # noqa: E402

START_TIMEOUT_S = 600
MAX_SECONDS = 900


class Served:
    """``malle serve`` with ``extra`` as a subprocess on a free loopback port, ready once it said so."""

    def __init__(self, bank: Path, cache: Path, extra: list[str]) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = tempfile.TemporaryFile("w+")
        env = {k: v for k, v in os.environ.items() if k != "MALLE_API_KEY"} | {"MALLE_CACHE": str(cache)}
        self.proc = subprocess.Popen([sys.executable, "-m", "malle", "serve", "--bank", str(bank), "--port",
                                      self.url.rsplit(":", 1)[1], *extra], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"malle serve {' '.join(extra)} did not start: {self.output()[-2000:]}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        said = self.output()
        wanted = said.count("ready to serve") >= 2 if "--workers" in self.proc.args else "on Ray Serve" in said
        if not wanted:
            return False
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=30).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def prepare(folder: Path, cache: Path, background: int) -> list[tuple[str, bytes]]:
    sources = photos()
    bank = Bank.open(folder, model_cache=cache)
    try:
        bank.create_collection(COLLECTION, METHOD)
        bank.add_files(COLLECTION, sources[:PLANTED])
        rng = np.random.default_rng(0)
        for start in range(0, background, 5000):
            vectors = synthetic(rng, min(5000, background - start), 512)
            bank.add_codes(COLLECTION, [NewItem(f"{start + i:064x}", f"bg-{start + i}", v, {}, "code")
                                        for i, v in enumerate(vectors)])
        bank.snapshots.rebuild(COLLECTION)
    finally:
        bank.close()
    return [(p.name, edited(p, n)) for n, p in enumerate(sources[:PLANTED])]


def measure(server: Served, queries, args) -> dict:
    one = Tally()
    started = time.perf_counter()
    matcher(server.url, queries, args.matches, 0, time.monotonic() + MAX_SECONDS, one)
    one_wall = time.perf_counter() - started
    many, stop = Tally(), threading.Event()
    adding = threading.Thread(target=adder, args=(server.url, photos()[PLANTED:], 10_000, stop, 1000, many))
    started = time.perf_counter()
    adding.start()
    clients = [threading.Thread(target=matcher, args=(server.url, queries, args.matches, c * 7,
                                                      time.monotonic() + MAX_SECONDS, many))
               for c in range(args.clients)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    wall = time.perf_counter() - started
    stop.set()
    adding.join()
    return {"one/s": len(one.match_s) / one_wall, "one p50": _ms(one.match_s, 50), "many/s": len(many.match_s) / wall,
            "many p50": _ms(many.match_s, 50), "many p99": _ms(many.match_s, 99), "adds/s": len(many.add_s) / wall,
            "R@1": (one.hits + many.hits) / max(1, len(one.match_s) + len(many.match_s)),
            "errors": len(one.errors) + len(many.errors), "first errors": (one.errors + many.errors)[:2]}


def _ms(seconds: list[float], q: int) -> float:
    return float(np.percentile(seconds, q) * 1000) if seconds else float("nan")


def report(rounds: list[dict[str, dict]], args, load: tuple[float, float]) -> list[str]:
    lines = ["# malle serve on Ray Serve against --workers", "", f"Machine: {machine()}; load average {load[0]:.1f} "
             f"before, {load[1]:.1f} after. {args.replicas} workers / {args.replicas} matcher replicas (and the "
             f"writer), one local `ray start --head` cluster; bank: {PLANTED} photos + {args.background} synthetic "
             f"codes, {METHOD}, Flat; one client alone, then {args.clients} clients of {args.matches} matches while "
             f"one client adds; {len(rounds)} rounds, the reference first in each.", "",
             f"| round | server | 1 client matches/s | p50 ms | {args.clients} clients matches/s | p50 ms | p99 ms | "
             "adds/s | R@1 | errors |", "|---" * 10 + "|"]
    for number, rows in enumerate(rounds, 1):
        for name, row in rows.items():
            lines.append(f"| {number} | {name} | {row['one/s']:.1f} | {row['one p50']:.0f} | {row['many/s']:.1f} | "
                         f"{row['many p50']:.0f} | {row['many p99']:.0f} | {row['adds/s']:.1f} | {row['R@1']:.3f} | "
                         f"{row['errors']} |")
    lines.append("")
    for number, rows in enumerate(rounds, 1):
        ref, ray = rows["workers"], rows["ray"]
        adds = ray["adds/s"] / max(ref["adds/s"], 1e-9)
        lines.append(f"- round {number}, Ray Serve / workers: 1 client {ray['one/s'] / ref['one/s']:.2f}x matches/s, "
                     f"{args.clients} clients {ray['many/s'] / ref['many/s']:.2f}x matches/s, p99 "
                     f"{ray['many p99'] / ref['many p99']:.2f}x, adds/s {adds:.2f}x.")
    errors = [e for rows in rounds for row in rows.values() for e in row["first errors"]]
    return lines + ([f"First errors: {errors}"] if errors else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ray", required=True, help="HOST:PORT of a running `ray start --head`")
    parser.add_argument("--replicas", type=int, default=2, help="workers of the reference, matcher replicas on Ray")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--matches", type=int, default=50, help="match requests per client")
    parser.add_argument("--background", type=int, default=10_000, help="synthetic codes in the bank (default 10000)")
    parser.add_argument("--rounds", type=int, default=2, help="reference then Ray, this many times")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_ray.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="malle-serve-ray-") as work:
        folder, cache = Path(work).resolve() / "bank", default_root()  # the models exported once, kept
        queries = prepare(folder, cache, args.background)
        load_before, rounds = os.getloadavg()[0], []
        for _ in range(args.rounds):
            rows = {}
            for name, extra in (("workers", ["--workers", str(args.replicas)]),
                                ("ray", ["--ray", args.ray, "--replicas", str(args.replicas)])):
                server = Served(folder, cache, extra)
                try:
                    rows[name] = measure(server, queries, args)
                finally:
                    server.stop()
                print(name, rows[name], flush=True)
            rounds.append(rows)
        lines = report(rounds, args, (load_before, os.getloadavg()[0]))
    publish(lines, args.out)


if __name__ == "__main__":
    main()
