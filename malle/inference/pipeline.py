"""Feed a model without starving it: items are prepared (decoded, resized, normalised) on worker threads,
up to two batches ahead, while the model runs the current batch.

Pillow and NumPy release the GIL, so the threads overlap preparation with inference.
The pool is sized to the machine: one thread per four cores, at least one. On 2
cores one thread keeps pace with the model while the inference runtime takes both
cores; on 16 cores four threads keep up with an int8 model on all of them.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
LOOKAHEAD = 2  # batches prepared ahead of the model: enough to hide a slow image, bounded in memory


def prep_workers() -> int:
    return max(1, (os.cpu_count() or 1) // 4)


def pipelined(items: Sequence[Any], batch_size: int, prepare: Callable[[Any], Any],
              run: Callable[[list], T], on_batch: Callable[[int], None] = lambda n: None,
              workers: int | None = None) -> list[T]:
    """``run(prepared batch)`` for each batch of ``items`` in order; a preparation error re-raises here."""
    slices = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
    results: list[T] = []
    with ThreadPoolExecutor(max_workers=workers or prep_workers(), thread_name_prefix="prepare") as pool:
        pending: deque[list] = deque()

        def submit(index: int) -> None:
            pending.append([pool.submit(prepare, item) for item in slices[index]])

        for index in range(min(LOOKAHEAD, len(slices))):
            submit(index)
        for index, part in enumerate(slices):
            prepared = [future.result() for future in pending.popleft()]
            if index + LOOKAHEAD < len(slices):
                submit(index + LOOKAHEAD)
            results.append(run(prepared))
            on_batch(len(part))
    return results
