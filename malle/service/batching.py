"""Matches that arrive together are encoded together (issue 26, item 3).

Each match request decodes its own upload on its own thread of the server's pool (Pillow releases the GIL, so
uploads decode in parallel, one per core at a time: ``malle.io.images.decode_slot``), then hands the decoded image
to one encoder thread and waits. The encoder takes what is queued, up to ``max_batch`` images, and runs them
through the method in one forward pass (``Bank.match_images``): a network's batch throughput is several times its
one-image rate, so under concurrent load each image costs less.

It waits for more only while another request is still decoding its upload, and then at most ``wait_s`` (5 ms by
default): a lone client's match is encoded as soon as it is decoded, as before. Requests asking different things
(collection, ``k``, threshold, ``allow_low_quality``) are encoded in separate passes. An error is its own request's
alone: when a pass fails, each of its images is run again by itself, so a bad image gets its own 4xx and its
batch-mates their matches; an error that is not a ``MalleError`` still reaches its request, which answers 500 with
its traceback in the log.

Memory: at most ``2 * max_batch`` decoded images wait per process (the batch being encoded and the next), each
bounded by the bank's decode limits.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from PIL import Image

from malle.bank import Bank
from malle.bank.bank import MatchResult, decode
from malle.errors import ConfigError
from malle.io.images import decode_slot

LOG = logging.getLogger("malle.service")
# Off by default: on the AMD EPYC (Zen 4, fp32 ONNX Runtime, 2 cores) 8 threads matching at once got 45-49 matches/s
# each encoded alone and 23-34 in passes of 8 (same process, alternating): one pass serialises the preparation and
# the search that concurrent requests overlap. Where a batch runs faster than its images one by one, --batch-size.
DEFAULT_BATCH = 1
DEFAULT_WAIT_MS = 5.0
MAX_BATCH = 256
MAX_WAIT_MS = 1000.0


@dataclass(eq=False)
class Waiting:
    """One decoded match request, waiting for its result."""

    name: str
    k: int
    threshold: float | None
    allow_low: bool
    image: Image.Image | None
    done: threading.Event = field(default_factory=threading.Event)
    result: MatchResult | None = None
    error: Exception | None = None

    @property
    def question(self) -> tuple:
        """What must be equal for two requests to share one pass."""
        return self.name, self.k, self.threshold, self.allow_low

    def pixels(self) -> Image.Image:
        assert self.image is not None, "a queued request holds its image until it is finished"
        return self.image

    def finish(self, result: MatchResult | None = None, error: Exception | None = None) -> None:
        self.result, self.error, self.image = result, error, None  # the pixels go as soon as they are encoded
        self.done.set()


def check_options(max_batch: int, wait_ms: float) -> None:
    if not 1 <= max_batch <= MAX_BATCH:
        raise ConfigError(f"--batch-size must be from 1 to {MAX_BATCH} (got {max_batch})")
    if not 0 <= wait_ms <= MAX_WAIT_MS:  # also refuses NaN
        raise ConfigError(f"--batch-wait-ms must be from 0 to {MAX_WAIT_MS:g} (got {wait_ms})")


class MatchBatcher:
    """The match path of one server process. ``max_batch`` 1: every match alone on its request's thread, as
    before batching (no encoder thread)."""

    def __init__(self, bank: Bank, max_batch: int = DEFAULT_BATCH, wait_ms: float = DEFAULT_WAIT_MS) -> None:
        check_options(max_batch, wait_ms)
        self.bank, self.max_batch, self.wait_s = bank, max_batch, wait_ms / 1000
        # Passes run, images that shared one with another, and gathers that waited for company (tests, logs).
        self.passes = self.batched = self.waits = 0
        self._queue: list[Waiting] = []
        self._decoding = 0  # requests between their start and their place in the queue
        self._cond = threading.Condition()
        self._room = threading.BoundedSemaphore(2 * max_batch)
        self._closed = False
        self._thread: threading.Thread | None = None
        if max_batch > 1:
            self._thread = threading.Thread(target=self._serve, name="match-batcher", daemon=True)
            self._thread.start()

    def match(self, name: str, data: bytes, k: int, threshold: float | None, allow_low: bool) -> MatchResult:
        """The matches of one upload (``BadImage`` for anything unusable), encoded with whatever arrives with it."""
        if self._thread is None or self._closed:  # closed: the server is stopping, the encoder thread may be gone
            return self.bank.match_bytes(name, data, k, threshold, allow_low)
        with self._room:
            job = self._decoded(Waiting(name, k, threshold, allow_low, None), data)
            job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None, "finish() gives a result or an error"
        return job.result

    def close(self) -> None:
        """Encode what is queued, then stop the encoder thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    # -- the request's side ---------------------------------------------------------------------------------
    def _decoded(self, job: Waiting, data: bytes) -> Waiting:
        with self._cond:
            self._decoding += 1
        try:
            with decode_slot():
                job.image = decode(data)
        finally:
            with self._cond:
                self._decoding -= 1
                if job.image is not None:
                    self._queue.append(job)
                self._cond.notify_all()
        return job

    # -- the encoder's side ---------------------------------------------------------------------------------
    def _serve(self) -> None:
        while (batch := self._gather()) is not None:
            if len(batch) > 1:
                self.batched += len(batch)
            for group in _by_question(batch):
                self._run(group)

    def _gather(self) -> list[Waiting] | None:
        """The next batch: what is queued, plus what arrives within the wait while others are decoding."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            started = time.monotonic()
            deadline = started + self.wait_s
            if len(self._queue) < self.max_batch and self._decoding:
                self.waits += 1
            while len(self._queue) < self.max_batch and self._decoding and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        if len(batch) > 1:
            LOG.info("%d matches encoded together (gathered in %.1f ms)", len(batch),
                     (time.monotonic() - started) * 1000)
        return batch

    def _run(self, group: list[Waiting]) -> None:
        first = group[0]
        self.passes += 1
        try:
            results = self.bank.match_images(first.name, [job.pixels() for job in group], first.k, first.threshold,
                                             first.allow_low)
        except Exception as err:  # handed to its request, which raises it: a bug still answers 500 with its traceback
            if len(group) == 1:
                first.finish(error=err)
                return
            for job in group:  # one request's error must not fail its batch-mates: each alone
                self._run([job])
            return
        for job, result in zip(group, results, strict=True):
            job.finish(result)


def _by_question(batch: list[Waiting]) -> list[list[Waiting]]:
    groups: dict[tuple, list[Waiting]] = {}
    for job in batch:
        groups.setdefault(job.question, []).append(job)
    return list(groups.values())
