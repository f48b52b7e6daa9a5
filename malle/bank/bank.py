"""``Bank``: the Python API over a bank folder (database, indexes and the methods that encode images).

    bank = Bank.open("refs")                                  # a new folder becomes an empty bank
    bank.create_collection("logos", "sscd_distilled")         # threshold: the calibrated default
    item, created = bank.add_bytes("logos", data, "a.jpg", {"owner": "x"})
    result = bank.match_bytes("logos", query_bytes, k=5)      # MatchResult: threshold, matches best first
    bank.remove("logos", item.id)

Several threads and processes may use one bank at once: matches run concurrently, writes are
serialised (``malle.bank.store``), and the index is rebuilt in the background and swapped in
(``malle.bank.snapshots``). Scores and thresholds are in the method's own unit: cosine similarity
(higher is closer) for embeddings, Hamming distance in bits (lower is closer) for hashes; ``is_match``
says whether a score is at least as close as the threshold.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from malle.bank import codes as code_text
from malle.bank import confidence, quality, thresholds
from malle.bank.metadata import metadata_json
from malle.bank.snapshots import Snapshots
from malle.bank.store import Collection, Item, NewItem, Store, check_name, new_uid, now
from malle.descriptors import Descriptor, create_descriptor, descriptor_class
from malle.descriptors.cnn import PRECISIONS, check_precision
from malle.errors import BadImage, ConfigError, WeightsUnavailable
from malle.io import cache, shards
from malle.io.images import decode_slot, encode_jpeg, load_rgb
from malle.retrieval.indexes import check as check_index
from malle.retrieval.metrics import METRICS, Metric

MAX_K = 1000
MAX_LOOKUP_CODES = 100
THUMB_PX = 192
# Images with more pixels are reduced as they load (malle.io.images): every method here reads far fewer, and a
# full-size 9,400 x 9,400 image would otherwise be converted and hashed at full size, hundreds of MB a request.
MAX_PIXELS = 4096 * 4096
# Decoded bytes (pixels x bands x bytes per band) the bank decodes at most per image: an 8-bit RGB PNG of 44 MP, a
# 16-bit one of 8,000 x 8,000; JPEGs are scaled down while they decode, so this binds lossless formats. With one
# decode per core (malle.io.images.decode_slot) it bounds what a burst of uploads can take.
MAX_DECODED_BYTES = 128 * 2**20


@dataclass(frozen=True)
class Match:
    item: Item
    score: float
    is_match: bool
    confidence: float | None = None  # P(true copy) at this score (malle.bank.confidence); None: no calibration

    def public(self) -> dict:
        return {"id": self.item.id, "filename": self.item.filename, "score": self.score, "is_match": self.is_match,
                "confidence": self.confidence, "metadata": self.item.metadata, "sha256": self.item.sha256}


@dataclass(frozen=True)
class MatchResult:
    threshold: float
    matches: list[Match]  # best first
    quality: str | None = None  # the query's verdict (malle.bank.quality): "ok", "low", None for a code lookup
    quality_reason: str | None = None

    def public(self) -> dict:
        return {"threshold": self.threshold, "matches": [m.public() for m in self.matches], "quality": self.quality,
                "quality_reason": self.quality_reason}


@dataclass
class AddReport:
    """What a bulk add did: items added, items already there (same bytes), files skipped with reasons."""

    added: list[Item]
    existing: list[Item]
    skipped: pd.DataFrame  # path, reason


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_close_enough(metric: Metric, scores: np.ndarray, threshold: float) -> np.ndarray:
    """At least as close as ``threshold``: score >= t for similarities, distance <= t for Hamming."""
    return metric.similarity(np.asarray(scores)) >= metric.similarity(np.asarray([threshold]))[0]


class Bank:
    """One bank folder. Create with ``Bank.open(folder)``; ``log`` receives one-line notices."""

    def __init__(self, store: Store, log: Callable[[str], None] = lambda message: None,
                 model_cache: Path | None = None) -> None:
        self.store, self.log = store, log
        self.folder = store.folder
        self.snapshots = Snapshots(store, log)
        self.model_cache = Path(model_cache) if model_cache else cache.default_root()
        self._methods: dict[tuple[str, str], Descriptor] = {}
        self._methods_lock = threading.Lock()
        self._fingerprints_checked: set[str] = set()  # collection uids whose method fingerprint was compared

    @classmethod
    def open(cls, folder: str | Path, create: bool = True, log: Callable[[str], None] = lambda m: None,
             model_cache: Path | None = None) -> Bank:
        """Open ``folder``; with ``create`` a missing or empty folder becomes an empty bank."""
        return cls(Store(Path(folder), create=create), log, model_cache)

    def close(self) -> None:
        self.snapshots.wait()
        self.store.close()

    # -- methods ----------------------------------------------------------------------------------------------
    def descriptor(self, method: str, precision: str = "fp32") -> Descriptor:
        """One loaded descriptor per method and precision, shared by every thread (ONNX Runtime sessions and
        hashes are safe to call concurrently)."""
        key = (method, precision)
        with self._methods_lock:
            desc = self._methods.get(key)
            if desc is None:
                desc = load_descriptor(method, precision, self.model_cache, self.log)
                self._methods[key] = desc
        return desc

    def _descriptor_for(self, coll: Collection) -> Descriptor:
        desc = self.descriptor(coll.method, coll.precision)
        if coll.uid not in self._fingerprints_checked:  # once per collection: the fingerprint stats weight files
            self._fingerprints_checked.add(coll.uid)
            if cache.fingerprint(desc.fingerprint()) != coll.fingerprint_digest:
                self.log(f"Bank: {coll.name!r} was filled by {coll.method} with another fingerprint (a library or "
                         "model version changed); its codes may differ slightly from new ones.")
        return desc

    # -- collections ------------------------------------------------------------------------------------------
    def create_collection(self, name: str, method: str, threshold: float | None = None,
                          threshold_from: str | Path | None = None, index: str = "Flat",
                          precision: str = "fp32", precision_target: float | None = None) -> Collection:
        """A new, empty collection. The threshold is ``threshold`` (the method's unit), else the method's threshold
        at ``precision_target`` (default 0.9) in the lab run ``threshold_from``, else the calibrated default. From a
        lab run it also takes the run's confidence map (``malle.bank.confidence``)."""
        check_name(name)
        check_precision(precision)
        desc = self.descriptor(method, precision)
        metric = desc.metric
        check_index(index, metric, desc.dim)
        value, source = thresholds.choose(method, metric, desc.dim, threshold, threshold_from, precision_target)
        calibration = confidence.from_lab(threshold_from, method, metric) if threshold_from is not None else None
        self.store.insert_collection({
            "name": name, "uid": new_uid(), "method": method, "fingerprint": desc.fingerprint(),
            "fingerprint_digest": cache.fingerprint(desc.fingerprint()),
            "precision": precision if desc.precision_choice else desc.precision,
            "metric": metric.name, "dim": desc.dim, "width": desc.code_width(), "dtype": np.dtype(metric.dtype).name,
            "threshold": value, "threshold_source": source, "index_factory": index, "created": now()}, calibration)
        self.snapshots.rebuild(name)  # an empty index on disk from the start: a missing one later is news
        return self.collection(name)

    def collection(self, name: str, count: bool = True) -> Collection:
        """A collection with its live item count (``count=False`` skips counting, for the hot paths)."""
        with self.store.reading() as db:
            return self.store.collection(name, db, count)

    def collections(self) -> list[Collection]:
        return self.store.collections()

    def delete_collection(self, name: str) -> None:
        coll = self.collection(name, count=False)
        self.store.delete_collection(name)
        self.snapshots.forget(coll)

    # -- adding -------------------------------------------------------------------------------------------------
    def add_bytes(self, name: str, data: bytes, filename: str, metadata=None) -> tuple[Item, bool]:
        """Add one image; (item, True) when new, (the existing item, False) when these bytes are there.
        Raises ``BadImage`` for anything that is not a usable image. Returns after the commit."""
        metadata_json(metadata)  # a malformed field fails before any work
        coll = self.collection(name, count=False)
        sha = sha256_of(data)
        existing = self.store.find(name, sha)
        if existing is not None:
            return existing, False
        desc = self._descriptor_for(coll)
        with decode_slot():  # held until the full-size pixels are gone: one image per core in memory at once
            img = decode(data)
            code, small = desc.encode([img])[0], thumbnail(img)
            del img
        [(item, created)] = self.add_codes(name, [NewItem(sha, filename, code, _as_dict(metadata), thumbnail=small)])
        return item, created

    def add_codes(self, name: str, new: Sequence[NewItem]) -> list[tuple[Item, bool]]:
        """The primitive every add goes through: codes already computed (by this bank, ``malle embed`` or a
        Ray job), written in one transaction. Each code must be the collection's dtype and width."""
        done = self.store.insert_items(name, new)
        self._after_write(name)
        return done

    def add_files(self, name: str, paths: Sequence[str | Path], metadata=None, progress=None,
                  chunk: int = 64) -> AddReport:
        """Add image files and every image under folders; unusable files are skipped with their reason.
        Each chunk of ``chunk`` files is committed before the next is encoded."""
        from malle.data.sampling import image_files

        coll = self.collection(name)
        desc = self._descriptor_for(coll)
        files, skipped = image_files([Path(p) for p in paths])
        report = AddReport([], [], pd.DataFrame(columns=["path", "reason"]))
        bar = progress(total=len(files), desc=f"{desc.label}: {name}") if progress else None
        for start in range(0, len(files), chunk):
            self._add_chunk(coll, desc, files[start:start + chunk], metadata, report, skipped)
            if bar is not None:
                bar.update(len(files[start:start + chunk]))
        if bar is not None:
            bar.close()
        report.skipped = pd.DataFrame(skipped, columns=["path", "reason"])
        return report

    def _add_chunk(self, coll: Collection, desc: Descriptor, files: list[Path], metadata, report: AddReport,
                   skipped: list[dict]) -> None:
        todo, digests = [], []
        for path in files:
            try:
                sha = cache.file_digest(path)
            except OSError as err:
                skipped.append({"path": str(path), "reason": f"not readable ({err.strerror or err})"})
                continue
            existing = self.store.find(coll.name, sha)
            if existing is not None:
                report.existing.append(existing)
            else:
                todo.append(path)
                digests.append(sha)
        if not todo:
            return
        encoded = desc.encode_files_skipping(todo)
        skipped += encoded.skipped.to_dict("records")
        new = [NewItem(digests[i], todo[i].name, code, _as_dict(metadata), thumbnail=thumbnail(load_rgb(todo[i])))
               for i, code in zip(encoded.kept, encoded.codes)]
        for item, created in self.add_codes(coll.name, new):
            (report.added if created else report.existing).append(item)

    def add_embeddings(self, name: str, folder: str | Path, images: str | Path | None = None,
                       chunk: int = 4096) -> AddReport:
        """Add the codes ``malle embed`` wrote to ``folder``. With ``images`` (the folder that was embedded) each
        item's SHA-256 is of its file, as for any add; without it, of its code (``digest_of`` = 'code')."""
        coll = self.collection(name)
        desc = self._descriptor_for(coll)
        found = shards.read(Path(folder), desc)
        if found.manifest.get("precision") != desc.precision:
            raise ConfigError(f"embeddings in {folder} were computed at {found.manifest.get('precision')} "
                              f"precision; collection {name!r} holds {desc.precision} codes")
        if shards.fingerprint_differs(found.manifest, desc):
            self.log(f"Bank: embeddings in {folder} were made with another {coll.method} fingerprint "
                     "(a library or model version differs).")
        report = AddReport([], [], pd.DataFrame(columns=["path", "reason"]))
        skipped = []
        new = []
        for path, code in zip(found.paths, found.vectors.astype(np.dtype(coll.dtype), copy=False)):
            file = Path(images) / path if images is not None else None
            if file is not None and not file.is_file():
                skipped.append({"path": str(path), "reason": f"not found under {images}"})
                continue
            sha, of = (cache.file_digest(file), "bytes") if file is not None else (sha256_of(code.tobytes()), "code")
            new.append(NewItem(sha, Path(path).name, code, {"path": str(path)}, of))
        for start in range(0, len(new), chunk):  # one index rebuild at the end, not one per chunk
            for item, created in self.store.insert_items(name, new[start:start + chunk]):
                (report.added if created else report.existing).append(item)
        self._after_write(name)
        report.skipped = pd.DataFrame(skipped, columns=["path", "reason"])
        return report

    def remove(self, name: str, item_id: int) -> Item:
        """Mark an item removed (its row stays, for the record); removing it again changes nothing."""
        item = self.store.remove_item(name, item_id)
        self._after_write(name)
        return item

    def _after_write(self, name: str) -> None:
        # Matches see a write at once through the delta; the index itself is rebuilt once the delta is large.
        if self.snapshots.rebuild_due(name):
            self.snapshots.schedule(name)

    # -- matching ---------------------------------------------------------------------------------------------
    def match_bytes(self, name: str, data: bytes, k: int = 10, threshold: float | None = None,
                    allow_low_quality: bool = False) -> MatchResult:
        """Best ``k`` items for one image (``BadImage`` for anything unusable)."""
        self.collection(name, count=False)  # an unknown collection is the error, not the image
        with decode_slot():
            return self.match_images(name, [decode(data)], k, threshold, allow_low_quality)[0]

    def match_images(self, name: str, images: Sequence[Image.Image], k: int = 10,
                     threshold: float | None = None, allow_low_quality: bool = False) -> list[MatchResult]:
        """Each image's matches with its quality verdict; a low-quality image's matches have ``is_match`` False
        unless ``allow_low_quality``."""
        coll = self.collection(name, count=False)
        desc = self._descriptor_for(coll)
        queries = desc.encode_queries(list(images))
        gate = quality.gate_for(desc)
        verdicts = [gate.verdict(img) for img in images]
        results = self.match_codes(coll, queries, k, threshold)
        return [_judged(result, verdict, allow_low_quality) for result, verdict in zip(results, verdicts)]

    def lookup(self, name: str, texts: Sequence[str], k: int = 10, threshold: float | None = None
               ) -> list[MatchResult]:
        """Matches for codes a client computed (``malle hash``; ``malle.bank.codes`` for their text form), with
        no image: the same matches as ``match_bytes`` with the image, without a quality verdict."""
        coll = self.collection(name, count=False)
        if not 1 <= len(texts) <= MAX_LOOKUP_CODES:
            raise ConfigError(f"give 1 to {MAX_LOOKUP_CODES} codes (got {len(texts)})")
        found = np.stack([code_text.from_text(text, coll) for text in texts])
        return self.match_codes(coll, found, k, threshold)

    def match_files(self, name: str, paths: Sequence[Path], k: int = 10, threshold: float | None = None
                    ) -> tuple[list[tuple[Path, MatchResult]], pd.DataFrame]:
        """(path, result) per usable file, and the files skipped with their reason."""
        results, skipped = [], []
        for path in paths:
            try:
                results.append((path, self.match_images(name, [load_rgb(path)], k, threshold)[0]))
            except BadImage as err:
                skipped.append({"path": str(path), "reason": str(err)})
        return results, pd.DataFrame(skipped, columns=["path", "reason"])

    def match_codes(self, coll: Collection, queries: np.ndarray, k: int = 10,
                    threshold: float | None = None) -> list[MatchResult]:
        """Match codes computed by the collection's method (``encode_queries``)."""
        metric = METRICS[coll.metric]
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ConfigError(f"k must be an integer from 1 to {MAX_K} (got {k!r})")
        limit = coll.threshold if threshold is None else thresholds.check(threshold, metric, coll.dim)
        out = []
        sure = confidence.map_of(coll.calibration)
        for ranked in self.snapshots.rank(coll, queries, k):
            items = {item.id: item for item in self.store.items(coll.name, [int(i) for i in ranked.ids])}
            close = is_close_enough(metric, ranked.scores, limit)
            probability = sure(ranked.scores).tolist() if sure is not None else [None] * len(ranked.scores)
            out.append(MatchResult(limit, [Match(items[int(i)], _plain(metric, s), bool(c), p)
                                           for i, s, c, p in zip(ranked.ids, ranked.scores, close, probability)
                                           if int(i) in items]))
        return out

    def compare(self, a: bytes, b: bytes, methods: Sequence[str]) -> list[dict]:
        """Score two images with every method in ``methods``, each against its calibrated threshold."""
        for method in methods:  # a method that cannot run is refused before any decode, and without loading any
            check_runs(method)
        with decode_slot():
            images = [decode(a), decode(b)]
            return [self._compare_one(self.descriptor(method), images) for method in methods]

    def _compare_one(self, desc: Descriptor, images: list[Image.Image]) -> dict:
        queries = desc.encode_queries(images[:1])
        reference = desc.encode(images[1:])
        score = _best_score(desc.metric, queries, reference)
        calibrated = thresholds.DEFAULTS.get(desc.name)
        limit = calibrated.threshold if calibrated else None
        gate = quality.gate_for(desc)
        low = next((v for v in map(gate.verdict, images) if v.low), None)
        close = None if limit is None else bool(is_close_enough(desc.metric, np.asarray([score]), limit)[0])
        sure = confidence.map_of(confidence.default_for(desc.name))  # the shipped map, as for a collection
        return {"method": desc.name, "label": desc.label, "score": score, "score_name": desc.score_name,
                "confidence": float(sure(score)[0]) if sure is not None else None,
                "threshold": limit, "is_match": close if low is None or close is None else False,
                "quality": quality.LOW if low else quality.OK, "quality_reason": low.reason if low else None}

    # -- upkeep -------------------------------------------------------------------------------------------------
    def refresh(self, name: str | None = None) -> None:
        """Bring the index files up to the database now (the CLI does this before it exits)."""
        self.snapshots.wait()
        for coll in [self.collection(name)] if name else self.collections():
            if self.snapshots.state(coll) != "current":
                self.snapshots.rebuild(coll.name)

    def use_index(self, name: str, folder: str | Path) -> None:
        """Take the index ``malle index-build`` wrote to ``folder`` as the collection's (``malle.bank.adopt``)."""
        self.snapshots.adopt(name, Path(folder))

    def verify(self, states: dict | None = None) -> list[str]:
        """Problems with the database (SQLite's integrity check, rows against codes files both ways; each file's
        state in words into ``states``); an index that is not current is no problem (it is rebuilt from the
        database) and is reported by ``info``."""
        return self.store.integrity(states)

    def info(self) -> list[dict]:
        return [{**coll.public(), "index_file": self.snapshots.state(coll)} for coll in self.collections()]


def decode(source: bytes | Path) -> Image.Image:
    """An image as the bank reads every upload and ``malle hash`` every file: reduced past ``MAX_PIXELS``, refused
    past ``MAX_DECODED_BYTES``."""
    return load_rgb(source, MAX_PIXELS, MAX_DECODED_BYTES)


def check_runs(method: str) -> None:
    """``WeightsUnavailable`` when ``method`` cannot run here, from the registry's own weights check."""
    unavailable = descriptor_class(method).unavailable()
    if unavailable is not None:
        raise WeightsUnavailable(f"{method} cannot run on this server: {unavailable.reason}")


def load_descriptor(method: str, precision: str, model_cache: Path, log: Callable[[str], None]) -> Descriptor:
    """A descriptor ready to encode, refused at once (``WeightsUnavailable``, from the registry's own weights
    check) when it cannot run here, so a request never makes it try to download anything."""
    check_runs(method)
    # Methods without a precision choice store their own (e.g. 'binary hash'); ask for the default.
    desc = create_descriptor(method, precision=precision if precision in PRECISIONS else "auto")
    desc.use_cache(model_cache)
    desc.load()
    for notice in desc.notices:
        log(notice)
    return desc


def _judged(result: MatchResult, verdict: quality.Verdict, allow_low: bool) -> MatchResult:
    """``result`` with the query's verdict; a low-quality query's matches lose ``is_match`` unless allowed."""
    matches = result.matches if allow_low or not verdict.low else \
        [Match(m.item, m.score, False, m.confidence) for m in result.matches]
    return MatchResult(result.threshold, matches, verdict.quality, verdict.reason)


def thumbnail(img: Image.Image) -> bytes:
    """The small JPEG kept with an item, so galleries can show what matched."""
    small = img.copy()
    small.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    return encode_jpeg(small, 80)


def _as_dict(metadata) -> dict:
    return json.loads(metadata_json(metadata))


def _plain(metric: Metric, score) -> float:
    """A JSON-friendly score: whole bits for Hamming distances, a float for similarities."""
    return int(score) if metric.binary else float(score)


def _best_score(metric: Metric, queries: np.ndarray, reference: np.ndarray) -> float:
    if queries.ndim == 3:
        scores = np.stack([metric.compare(queries[:, v], reference)[0, 0] for v in range(queries.shape[1])])
        return _plain(metric, scores[np.argmin(metric.sort_key(scores))])
    return _plain(metric, metric.compare(queries, reference)[0, 0])
