"""A collection's approximate index with its inverted lists on disk, and its recall against exact search.

An IVF factory string (``IVF4096,PQ64``, ``IVF1024,Flat``, ``IVF4096_HNSW32,PQ64``; ``BIVF`` for hashes) is built
from the codes file without holding every code in memory: trained on a seeded sample of ``TRAIN_PER_LIST`` codes per
list (at least ``MIN_TRAIN``, as ``malle index-build`` does), filled ``CHUNK`` codes at a time, written once, and
read back with ``IO_FLAG_MMAP``: FAISS then maps the inverted lists from the file instead of copying them, so every
process that searches the same snapshot file shares its pages. The index file is never changed after it is written.

Recall is measured when the index is built (``measure_recall``): ``SAMPLE`` live codes, drawn with a seed, are the
queries; exact search over every live code gives each query's nearest other item, and a query counts as found when
the approximate index's top 10 (the query's own item left out) holds an item at least that close by exact score
(so a tie at the nearest is found). This is FAISS's 1-recall@10, as ``bench/scale.py`` reports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from malle.bank.codefile import CodesFile
from malle.errors import ConfigError
from malle.retrieval import indexes
from malle.retrieval.metrics import Metric
from malle.retrieval.topk import save_index, search

LISTS = re.compile(r"(?:^|,)B?IVF(\d+)")
TRAIN_PER_LIST = 64  # FAISS wants 30 to 256 training points a list, as malle.scale.ondisk
MIN_TRAIN = 10_000
CHUNK = 65_536  # codes read, checked and added at a time
SAMPLE = 200  # queries of the recall measurement
TOP = 10
# The build probes the fewest lists whose recall reaches this (bench/scale.py's bar for a tuned index): a fixed share
# of the lists was not enough where codes spread evenly (bench/results/serve_load.md: a copy's original sat in a
# list its query ranked 134th of 1,024). At most a quarter of the lists are probed: past that, scan exactly.
RECALL_TARGET = 0.95
MOST_PROBED = 4
PLATEAU = 0.01
# FAISS's readers: lists inside the index file, mapped from it; or lists in their own file beside the header, which
# FAISS's on-disk lists map already (``malle index-build``'s output). MMAP on the latter skips its lists.
IN_FILE, BESIDE = faiss.IO_FLAG_MMAP, faiss.IO_FLAG_ONDISK_SAME_DIR


@dataclass(frozen=True)
class CodeSource:
    """The live codes an index is built from: item ids ascending, and each one's record in the codes file."""

    codes: CodesFile
    ids: np.ndarray
    records: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.codes.read(self.records[positions], self.ids[positions])

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(self.ids), CHUNK):
            yield start, self.take(np.arange(start, min(len(self.ids), start + CHUNK)))

    def all(self) -> np.ndarray:
        return self.codes.read(self.records, self.ids)


def uses_lists(factory: str) -> bool:
    """An IVF index, whose inverted lists can stay on disk."""
    return LISTS.search(factory) is not None


def read_mapped(path: Path, metric: Metric, search_params: str, lists_beside: bool = False):
    """An index file with its inverted lists memory-mapped (from the file, or from the lists file beside it), its
    search parameters set."""
    reader = faiss.read_index_binary if metric.binary else faiss.read_index
    index = reader(str(path), BESIDE if lists_beside else IN_FILE)
    ivf = index if metric.binary else faiss.extract_index_ivf(index)  # type: ignore[arg-type]  # a float index
    lists = faiss.downcast_InvertedLists(ivf.invlists)  # type: ignore[union-attr]  # IVF either way, as built
    if isinstance(lists, faiss.OnDiskInvertedLists):
        # FAISS starts 32 threads per search to read the probed lists ahead, for lists on slow disks: on a busy 2-core
        # machine a mapped 1M-code search took 256 ms with them; the page cache serves the lists without them.
        lists.prefetch_nthread = 0
    indexes.set_search_params(index, search_params, metric)
    return index


def read_shared(path: Path, metric: Metric):
    """An exact index file mapped, not copied (``IO_FLAG_MMAP_IFC``): processes serving one bank share its pages."""
    reader = faiss.read_index_binary if metric.binary else faiss.read_index
    return reader(str(path), faiss.IO_FLAG_MMAP_IFC)


def build_lists(choice: indexes.IndexChoice, dim: int, metric: Metric, source: CodeSource, path: Path, seed: int):
    """Train on a sample, add in chunks, write to ``path``, map it back; a one-line ConfigError when there are too
    few codes to train the lists (the caller searches exactly until the collection grows)."""
    index = indexes.new_index(choice, metric, dim)
    found = LISTS.search(choice.factory)
    if found is None:
        raise ConfigError(f"{choice.factory} names no inverted lists (IVF<n>): nothing to map from disk")
    lists = int(found[1])
    wanted = min(len(source), max(MIN_TRAIN, TRAIN_PER_LIST * lists))
    sample = np.sort(np.random.default_rng(seed).choice(len(source), wanted, replace=False))
    try:
        index.train(source.take(sample))
    except RuntimeError as err:
        raise ConfigError(f"{choice.factory} cannot be trained on {wanted:,} codes ({indexes.faiss_reason(err)})") \
            from None
    for _, codes in source.chunks():
        index.add(codes)
    save_index(index, path, metric)
    del index  # the lists in memory go; the mapped file holds them
    return read_mapped(path, metric, choice.search_params)


@dataclass(frozen=True)
class Truth:
    """The recall measurement's queries (``SAMPLE`` live codes drawn with a seed), their items, and the sort key of
    each one's exact nearest other item."""

    queries: np.ndarray
    own: np.ndarray
    nearest: np.ndarray

    @classmethod
    def of(cls, source: CodeSource, metric: Metric, seed: int) -> Truth:
        picks = np.sort(np.random.default_rng(seed).choice(len(source), min(SAMPLE, len(source)), replace=False))
        queries = source.take(picks)
        nearest = np.full(len(picks), np.inf)
        for start, codes in source.chunks():
            keys = metric.sort_key(metric.compare(queries, codes))
            mine = (picks >= start) & (picks < start + len(codes))
            keys[np.flatnonzero(mine), picks[mine] - start] = np.inf  # a query is not its own neighbour
            nearest = np.minimum(nearest, keys.min(axis=1))
        return cls(queries, source.ids[picks], nearest)

    def found(self, index, rows: np.ndarray, metric: Metric, source: CodeSource) -> float:
        """The share of queries whose approximate top 10 (own item left out) holds an item as close as the nearest."""
        hits = search(index, self.queries, TOP + 1, metric).ids
        found = 0
        for q in range(len(self.own)):
            item_ids = rows[hits[q][hits[q] >= 0]]
            item_ids = item_ids[item_ids != self.own[q]][:TOP]
            positions = np.searchsorted(source.ids, item_ids)
            positions = positions[(positions < len(source)) & (source.ids[np.minimum(positions, len(source) - 1)]
                                                               == item_ids)]
            if len(positions) == 0:
                continue
            codes = source.take(positions)
            best = metric.sort_key(metric.pair_scores(np.repeat(self.queries[q:q + 1], len(codes), 0), codes)).min()
            found += bool(best <= self.nearest[q] + 1e-6)
        return found / len(self.own)


def measure_recall(index, rows: np.ndarray, metric: Metric, source: CodeSource, seed: int) -> tuple[float | None, int]:
    """(1-recall@10 against exact search, queries); (None, 0) below two codes. ``rows`` maps index rows to item ids;
    ``source`` holds every live code (see the module)."""
    if len(source) < 2:
        return None, 0
    truth = Truth.of(source, metric, seed)
    return truth.found(index, rows, metric, source), len(truth.own)


def ladder(lists: int) -> list[int]:
    """The probe counts tried, ascending: 1, 2, 3, 4, 6, 8, 12, ... up to a ``MOST_PROBED`` share of the lists."""
    top = max(1, lists // MOST_PROBED)
    steps = sorted({base << shift for base in (2, 3) for shift in range(top.bit_length())} | {1})
    return [n for n in steps if n <= top]


def tune_probes(index, choice: indexes.IndexChoice, rows: np.ndarray, metric: Metric, source: CodeSource, seed: int,
                target: float = RECALL_TARGET) -> tuple[float | None, int, str]:
    """(recall, queries, search parameters): the fewest probed lists whose recall reaches ``target``, set on
    ``index`` (as FAISS's autotune does, on this build's own sample). When no count up to the ladder's top reaches
    it, the fewest within ``PLATEAU`` of the best tried: past that, the codes (PQ) limit recall, not the probes.
    An index without lists keeps the choice's parameters and is only measured."""
    found = LISTS.search(choice.factory)
    if found is None or len(source) < 2:
        recall, sample = measure_recall(index, rows, metric, source, seed)
        return recall, sample, choice.search_params
    truth = Truth.of(source, metric, seed)
    tried: dict[int, float] = {}
    for nprobe in ladder(int(found[1])):
        indexes.set_search_params(index, f"nprobe={nprobe}", metric)
        tried[nprobe] = truth.found(index, rows, metric, source)
        if tried[nprobe] >= target:
            break
    best = max(tried.values())
    enough = target if best >= target else best - PLATEAU
    chosen = min(n for n, recall in tried.items() if recall >= enough)
    indexes.set_search_params(index, f"nprobe={chosen}", metric)
    return tried[chosen], len(truth.own), f"nprobe={chosen}"
