"""Which FAISS index holds the database: an index-factory string, or ``auto``.

The index is configuration, as in faiss.contrib: ``Flat`` (exact, the default),
``HNSW32``, ``IVF4096_HNSW32,Flat``, ``IVF16384_HNSW32,PQ64``... One string serves
float and binary codes: for hashes the Hamming metric translates it to FAISS's binary
factory (``Flat`` -> ``BFlat``, ``HNSW32`` -> ``BHNSW32``, ``IVF1024,Flat`` -> ``BIVF1024``).

``auto`` follows the FAISS wiki's "Guidelines to choose an index" by database
size and memory: Flat while exact search is cheap, HNSW32 up to a million, IVF with
an HNSW quantizer beyond, and IVF-PQ when full vectors would not fit in half the RAM.
K, the number of IVF lists, follows the wiki's 4·sqrt(N) rule, rounded to a power
of two so training stays feasible on a small machine.

Only ``Flat`` is exact. The tie rule of ``malle.retrieval.topk`` (a tie group at the K-th
place is completed) applies to it alone; approximate indexes return what they find.

A string is checked before any work (``check``): its sizes must be in range (``PARAM_RANGES``), then it
is built, trained, filled and searched once on a tiny random sample in a child process, because FAISS
answers some strings with an assertion that aborts the process (``HNSW0`` on its first add) or a
segfault, not an exception. Whatever the child dies of is a one-line ``ConfigError``.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from malle.errors import ConfigError
from malle.retrieval.metrics import Metric

EXACT = "Flat"
AUTO = "auto"
# Where auto leaves exact search: a 100k x 512 float scan costs a few ms per query on 2 cores.
FLAT_UP_TO = 100_000
HNSW_UP_TO = 1_000_000
BINARY_FLAT_UP_TO = 10_000_000  # 64- and 256-bit codes scan with popcount: flat stays cheap far longer
HNSW_EF_SEARCH = 128
# IVF probes one list in 32: at 100k (K=1,024, nprobe 32) and at 1M (K=4,096, nprobe 128) that reached R@10 0.96
# against exact search in bench/scale.py; FAISS's default of one list reached 0.43-0.56.
PROBED_SHARE = 32
MIN_NPROBE = 16
MAX_FACTORY_CHARS = 200
MAX_SIZE = 1 << 20  # any size in a string: beyond it FAISS allocates without bound (IVF lists are vectors)
# name, pattern of a size in the string, its smallest and largest value
PARAM_RANGES = (("HNSW links", re.compile(r"HNSW(\d+)"), 2, 512),
                ("PQ bits per code", re.compile(r"PQ\d+x(\d+)"), 1, 16),
                ("any size", re.compile(r"(\d+)"), 1, MAX_SIZE))
PROBE_ROWS = 300  # codes of the sample a string is exercised on (more than HNSW's first level and 16 IVF lists)
PROBE_TIMEOUT_S = 120
_CHECKED: dict[tuple, str | None] = {}  # (spec, metric, dim, params) -> None when good, else the reason
_CHECKED_LOCK = threading.Lock()


@dataclass(frozen=True)
class IndexChoice:
    """A factory string in its float form, the search parameters FAISS should use, and why it was chosen."""

    factory: str
    search_params: str = ""
    reason: str = "as asked"

    @property
    def exact(self) -> bool:
        return self.factory == EXACT

    def describe(self) -> str:
        params = f" ({self.search_params})" if self.search_params else ""
        return f"{self.factory}{params}"


def choose(spec: str, n: int, dim: int, metric: Metric, search_params: str = "",
           ram_bytes: int | None = None) -> IndexChoice:
    """``spec`` as given, or for ``auto`` the wiki's choice for ``n`` codes of ``dim`` dimensions (bits)."""
    if spec != AUTO:
        return IndexChoice(spec, search_params or default_search_params(spec))
    ram = ram_bytes or physical_memory()
    if metric.binary:
        if n <= BINARY_FLAT_UP_TO:
            return IndexChoice(EXACT, "", f"{n:,} binary codes: a flat popcount scan is exact and fast")
        k = ivf_lists(n)
        return IndexChoice(f"IVF{k},Flat", nprobe_for(k), f"{n:,} binary codes: inverted lists, K={k}")
    if n <= FLAT_UP_TO:
        return IndexChoice(EXACT, "", f"{n:,} vectors: exact search is cheap")
    vector_bytes = 4 * dim
    if n * vector_bytes > ram // 2:
        k, m = ivf_lists(n), pq_subquantizers(dim)
        return IndexChoice(f"IVF{k}_HNSW32,PQ{m}", nprobe_for(k),
                           f"{n:,} x {vector_bytes} B exceed half the RAM ({ram / 2**30:.0f} GiB): "
                           f"IVF-PQ, {m} B per vector")
    if n <= HNSW_UP_TO:
        return IndexChoice("HNSW32", f"efSearch={HNSW_EF_SEARCH}", f"{n:,} vectors: HNSW32, memory allows full vectors")
    k = ivf_lists(n)
    return IndexChoice(f"IVF{k}_HNSW32,Flat", nprobe_for(k), f"{n:,} vectors: IVF with an HNSW quantizer, K={k}")


def check(spec: str, metric: Metric, dim: int, search_params: str = "") -> None:
    """Fail before any work on a string FAISS rejects or dies on (auto is decided later, when the database size
    is known, and only ever picks strings that work); each string is exercised once per process."""
    if not isinstance(spec, str) or not spec or len(spec) > MAX_FACTORY_CHARS or not spec.isprintable():
        raise ConfigError(f"--index must be a FAISS index-factory string of 1-{MAX_FACTORY_CHARS} characters")
    if spec == AUTO:
        return
    check_ranges(spec, search_params)
    if spec == EXACT and not search_params:
        return
    key = (spec, metric.name, dim, search_params)
    with _CHECKED_LOCK:
        if key not in _CHECKED:
            new_index(choose(spec, 0, dim, metric, search_params), metric, dim)  # a string FAISS rejects: its words
            _CHECKED[key] = probe(spec, metric, dim, search_params)
        problem = _CHECKED[key]
    if problem:
        raise ConfigError(problem)


def check_ranges(spec: str, search_params: str = "") -> None:
    """Every size in the string and its search parameters within ``PARAM_RANGES``."""
    for text, what in ((spec, "--index"), (search_params, "--index-params")):
        for name, pattern, low, high in PARAM_RANGES:
            for found in pattern.finditer(text):
                value = int(found[1])
                if not low <= value <= high:
                    raise ConfigError(f"{what} {text!r}: {found[0]} is out of range ({name} must be "
                                      f"{low}..{high})")


def probe(spec: str, metric: Metric, dim: int, search_params: str = "") -> str | None:
    """Build, train, fill and search ``spec`` on a tiny sample in a child process; None when all went well, else
    why not in one line (FAISS's exception, or the signal that killed the child)."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    code = "import sys; from malle.retrieval.indexes import probe_child; sys.exit(probe_child(*sys.argv[1:]))"
    try:
        done = subprocess.run([sys.executable, "-c", code, spec, metric.name, str(dim), search_params], env=env,
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"--index {spec!r}: FAISS did not finish building it on {PROBE_ROWS} codes in {PROBE_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return (f"--index {spec!r} crashes FAISS ({name}) when built and searched on {PROBE_ROWS} codes of "
                f"{dim} {'bits' if metric.binary else 'dimensions'}; choose another index")
    lines = done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or ["no reason given"]
    return lines[-1][:300]


def probe_child(spec: str, metric_name: str, dim_text: str, search_params: str) -> int:
    """The child of ``probe``: 0 when ``spec`` builds, trains (or cannot, as on a small bank), adds and searches."""
    import numpy as np

    from malle.retrieval.metrics import METRICS

    metric, dim = METRICS[metric_name], int(dim_text)
    rng = np.random.default_rng(0)
    if metric.binary:
        codes: np.ndarray = rng.integers(0, 256, (PROBE_ROWS, dim // 8), dtype=np.uint8)
    else:
        codes = rng.standard_normal((PROBE_ROWS, dim)).astype(np.float32)
        codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    try:
        index = new_index(choose(spec, PROBE_ROWS, dim, metric, search_params), metric, dim)
        try:
            train_and_add(index, codes, metric)
        except ConfigError:
            return 0  # too few codes to train: the bank searches exactly until it grows, as it would here
        index.search(codes[:4], 5)
    except ConfigError as err:
        print(err)
        return 3
    except RuntimeError as err:
        print(f"--index {spec!r} fails in FAISS on {PROBE_ROWS} codes: {faiss_reason(err)}")
        return 3
    return 0


def default_search_params(spec: str) -> str:
    """FAISS's own defaults (efSearch 16, nprobe 1) lose too much recall to be a fair comparison."""
    lists = re.search(r"(?:^|,)B?IVF(\d+)", spec)
    if lists:
        return nprobe_for(int(lists[1]))
    if spec.removeprefix("B").startswith("HNSW"):
        return f"efSearch={HNSW_EF_SEARCH}"
    return ""


def nprobe_for(lists: int) -> str:
    return f"nprobe={max(MIN_NPROBE, lists // PROBED_SHARE)}"


def ivf_lists(n: int) -> int:
    """4·sqrt(n) inverted lists, rounded to a power of two, at least 16."""
    return max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))


def pq_subquantizers(dim: int) -> int:
    """One byte per 8 dimensions, as the wiki's PQ examples use; a divisor of ``dim``."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30  # platforms without sysconf: assume a modest machine


def new_index(choice: IndexChoice, metric: Metric, dim: int):
    """An empty index for ``dim``-d (or ``dim``-bit) codes, its search parameters set; a string FAISS
    rejects is a one-line ConfigError."""
    try:
        index = metric.new_index(dim, choice.factory)
    except RuntimeError as err:
        raise ConfigError(f"--index {choice.factory!r} is not an index FAISS can build for {dim}-"
                          f"{'bit' if metric.binary else 'd'} codes: {faiss_reason(err)}") from None
    set_search_params(index, choice.search_params, metric)
    return index


def set_search_params(index, params: str, metric: Metric) -> None:
    """``efSearch=128`` / ``nprobe=64`` onto ``index``; one that does not apply is a one-line error."""
    if not params:
        return
    try:
        metric.set_search_params(index, params)
    except (RuntimeError, AttributeError, ValueError) as err:
        raise ConfigError(f"--index-params {params!r} do not apply to {type(index).__name__}: "
                          f"{faiss_reason(err)}") from None


def train_and_add(index, codes, metric: Metric) -> None:
    """Train where the index needs it (IVF, PQ), then add; too few codes for the lists is a one-line error."""
    if not index.is_trained:
        try:
            index.train(codes)
        except RuntimeError as err:
            raise ConfigError(f"the index cannot be trained on {len(codes):,} database codes ({faiss_reason(err)}); "
                              "use fewer IVF lists or a larger database") from None
    index.add(codes)


def faiss_reason(err: Exception) -> str:
    """FAISS's message without the C++ location it starts with."""
    text = " ".join(str(err).split())
    match = re.match(r"Error in .*? at \S+:\d+: (?:Error: )?(.*)$", text)
    return (match[1] if match else text)[:200]
