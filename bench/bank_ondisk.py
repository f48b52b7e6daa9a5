"""A bank collection of a million references on disk: adds into the codes file, the IVF-PQ build with its lists
memory-mapped, recall against exact search, disk, memory, match time and ``verify`` time.

    python bench/bank_ondisk.py [--size 1000000] [--index IVF4096,PQ64] [--report bench/results/bank_ondisk.md]

The codes are synthetic: unit vectors of sscd_distilled's 512 dimensions around 4,096 seeded Gaussian centres, not
real embeddings, so the recall is that of this background (``bench/scale.py`` measures recall on real copies among
a background fitted to real embeddings). Adds go through ``Store.insert_items``, the primitive under
``Bank.add_codes``, in transactions of ``CHUNK`` codes. The build, the match timing and ``verify`` each run in a
fresh process, so that each one's peak RSS is its own: the build is what ``malle bank add`` runs before it exits,
the match process opens the bank and maps the snapshot as a server would. Exact search over the same codes (a
brute-force scan of the codes file) is the reference the match time is compared with, measured in the same run.
Writes ``bench/results/bank_ondisk.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)

from malle.bank import Bank, NewItem  # noqa: E402

METHOD, DIM, CENTRES = "sscd_distilled", 512, 4096
CHUNK = 20_000
QUERIES = 200

CHILD = """
import json, sys, time
import numpy as np
from malle.bank import Bank
from malle.retrieval import indexes
folder, step = sys.argv[1], sys.argv[2]
indexes._CHECKED[(sys.argv[-1], "ip", 512, "")] = None  # see skip_probe
status = open("/proc/self/status").read()
base_mb = int(status.split("VmRSS:")[1].split()[0]) / 1024  # after the imports (PyTorch among them)
start = time.perf_counter()
bank = Bank.open(folder, create=False)
out = {}
if step == "build":
    bank.refresh("refs")
    coll = bank.collection("refs")
    out = {"recall": coll.recall_at_10, "sample": coll.recall_sample,
           "factory": bank.snapshots.current(coll).factory, "mapped": bank.snapshots.current(coll).mapped}
elif step == "verify":
    states = {}
    out = {"problems": bank.verify(states), "state": states["refs"]}
else:
    coll = bank.collection("refs", count=False)
    queries = np.load(sys.argv[3])
    bank.match_codes(coll, queries[:1], k=10)  # loads and maps the snapshot
    opened = time.perf_counter() - start
    times = []
    for q in queries:
        t = time.perf_counter()
        bank.match_codes(coll, q[None, :], k=10)
        times.append(1000 * (time.perf_counter() - t))
    out = {"p50_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99)), "open_s": opened}
out["seconds"] = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child would report its parent's peak
out["max_rss_mb"] = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
out["base_mb"] = base_mb
print(json.dumps(out))
"""


def skip_probe(factory: str) -> None:
    """A new factory string is exercised once per process in a child (``malle.retrieval.indexes.probe``, which a
    server or CLI process pays once); for PQ64 strings that took 2 minutes of CPU and up to 5 of wall time on the
    loaded 2-core machine, past the probe's own 120 s limit. The strings benched here are known to work
    (``bench/scale.py``), so the bench leaves the probe out of every figure."""
    from malle.retrieval import indexes

    indexes._CHECKED[(factory, "ip", DIM, "")] = None


def codes(rng_seed: int, n: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(rng_seed)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def child(folder: Path, step: str, factory: str, *extra: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), step, *extra, factory], capture_output=True,
                          text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                               "OMP_NUM_THREADS": str(faiss.omp_get_max_threads())})
    if done.returncode:
        raise SystemExit(f"{step} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_all(bank: Bank, size: int, centres: np.ndarray) -> float:
    start = time.perf_counter()
    for first in range(0, size, CHUNK):
        part = codes(first + 1, min(CHUNK, size - first), centres)
        bank.store.insert_items("refs", [NewItem(hashlib.sha256(c.tobytes()).hexdigest(), f"{first + i}.jpg", c,
                                                 digest_of="code") for i, c in enumerate(part)])
        print(f"added {first + len(part):,}", flush=True)
    return time.perf_counter() - start


def exact_ms(bank: Bank, queries: np.ndarray) -> float:
    """The reference: a brute-force scan of every code in the codes file, per query."""
    coll = bank.collection("refs")
    with bank.store.reading() as db:
        ids, records = bank.store.records(coll, db)
    mapped = bank.store.codes_file(coll).records(records)["code"]  # read once; the scan is what is timed
    start = time.perf_counter()
    for q in queries[:20]:
        scores = mapped @ q
        np.argpartition(-scores, 10)[:10]
    return 1000 * (time.perf_counter() - start) / 20


def rss(step: dict) -> str:
    return f"{step['max_rss_mb']:,.0f} ({step['base_mb']:,.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--index", default="IVF4096,PQ64")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "bank_ondisk.md")
    args = parser.parse_args()
    centres = np.random.default_rng(0).standard_normal((CENTRES, DIM)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="malle-bank-ondisk-", dir=Path.home()) as scratch:
        folder = Path(scratch) / "bank"
        bank = Bank.open(folder)
        skip_probe(args.index)
        bank.create_collection("refs", METHOD, threshold=0.5, index=args.index)
        add_s = add_all(bank, args.size, centres)
        coll = bank.collection("refs")
        codes_mb = bank.store.codes_file(coll).path.stat().st_size / 2**20
        db_mb = sum(p.stat().st_size for p in folder.glob("bank.sqlite*")) / 2**20
        picks = np.random.default_rng(5).choice(args.size, QUERIES, replace=False)
        with bank.store.reading() as db:
            ids, records = bank.store.records(coll, db)
        near = bank.store.codes_file(coll).read(records[picks], ids[picks])
        noisy = near + 0.02 * np.random.default_rng(6).standard_normal(near.shape, dtype=np.float32)
        queries = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
        np.save(Path(scratch) / "queries.npy", queries)
        reference = exact_ms(bank, queries)
        bank.close()
        built = child(folder, "build", args.index)
        index_mb = (folder / "indexes" / built["mapped"]).stat().st_size / 2**20 if built["mapped"] else 0
        matched = child(folder, "match", args.index, str(Path(scratch) / "queries.npy"))
        verified = child(folder, "verify", args.index)
    lines = [f"# A bank collection of {args.size:,} references on disk ({args.index}, "
             f"{faiss.omp_get_max_threads()} FAISS threads)", "",
             f"Machine: {machine()}", "",
             f"Codes: synthetic unit vectors of {METHOD}'s {DIM} dimensions around {CENTRES:,} seeded Gaussian "
             "centres (not real embeddings). Queries: 200 of the collection's codes with a little Gaussian noise. "
             "Each step after the adds ran in its own process; RSS is that process's peak. The factory-string probe "
             "(`malle.retrieval.indexes.probe`, once per process and string) is left out of every figure.", "",
             "| step | seconds | peak RSS MB (of it, the imports) | result |", "|---|---|---|---|",
             f"| add {args.size:,} codes ({CHUNK:,} per transaction, fsync each) | {add_s:.1f} | "
             f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} (this process, with the code "
             f"generation) | {args.size / add_s:,.0f} codes/s; codes file {codes_mb:,.0f} MB, SQLite {db_mb:,.0f} MB |",
             f"| build {built['factory']} (train, add, write, map, measure recall) | {built['seconds']:.1f} | "
             f"{rss(built)} | index file {index_mb:,.1f} MB; recall@10 against exact search "
             f"{built['recall']:.3f} on {built['sample']} codes |",
             f"| open the bank and map the snapshot, then {QUERIES} single matches (k=10) | "
             f"{matched['seconds']:.1f} | {rss(matched)} | p50 {matched['p50_ms']:.2f} ms, p99 "
             f"{matched['p99_ms']:.2f} ms per match; exact scan of the same codes (reference, this run) "
             f"{reference:.1f} ms: {reference / matched['p50_ms']:.1f}x |",
             f"| verify (SQLite integrity, rows against records both ways) | {verified['seconds']:.1f} | "
             f"{rss(verified)} | {len(verified['problems'])} problem(s); codes file {verified['state']} |",
             ""]
    publish(lines, args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
