"""The engine: keys, order, memo, locks, verification and timing for every stage, in one place.

A stage's cache key is derived here from its own key parts and the keys of the stages it
needs, so a stage cannot read an input its key does not cover:

- keys are computed without running anything: a key part that would need a built stage fails;
- while a stage builds (in one thread), it may only obtain stages among its needs, transitively.

Each stage instance is obtained at most once per engine, under its own lock, so one
experiment can serve several threads (dashboard sessions): reading a finished stage never
waits for another one that is still being built. ``malle.io.cache.obtain`` verifies what is
on disk, builds into a temporary folder and renames it into place, and times the build
(``meta["seconds"]``, which ``timings.csv`` reports).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from malle.io import cache
from malle.lab.stages.base import Built, Ctx, Node, Progress, Stage

if TYPE_CHECKING:
    from malle.lab.stages.context import RunContext


class StageGraphError(RuntimeError):
    """A stage read something its key does not cover: a bug in that stage's spec, never bad input."""


class StageRunner:
    def __init__(self, stages: Mapping[str, Stage], root: Path, log: Callable[[str], None]):
        self.stages = stages
        self.root = root
        self.log = log
        self._built: dict[Node, Built] = {}
        self._folders: dict[Node, Path] = {}
        self._needs: dict[Node, tuple[Node, ...]] = {}
        self._locks: defaultdict[Node, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._local = threading.local()  # per thread: what is being keyed or built, to check reads against

    def spec(self, node: Node) -> Stage:
        spec = self.stages[node.kind]
        if len(node.args) != len(spec.params):
            raise StageGraphError(f"{node} needs parameters {spec.params}")
        return spec

    # -- keys -------------------------------------------------------------------------------
    def needs(self, run: RunContext, node: Node) -> tuple[Node, ...]:
        if node not in self._needs:
            with self._keying(node):
                self._needs[node] = tuple(self.spec(node).needs(Ctx(run, node)))
        return self._needs[node]

    def folder(self, run: RunContext, node: Node) -> Path:
        """``<root>/<kind>/<key>``: the key covers the stage's version, its own parts and its inputs' keys."""
        if node not in self._folders:
            spec = self.spec(node)
            inputs = [self.folder(run, need).name for need in self.needs(run, node)]
            with self._keying(node):
                parts = spec.key_parts(Ctx(run, node))
            self._folders[node] = self.root / node.kind / cache.fingerprint(node.kind, spec.version, *parts, *inputs)
        return self._folders[node]

    def is_cached(self, run: RunContext, node: Node) -> bool:
        """Whether the stage is complete on disk, computing nothing."""
        return (self.folder(run, node) / cache.DONE_MARK).is_file()

    def upstream(self, run: RunContext, node: Node) -> set[Node]:
        found: set[Node] = set()
        for need in self.needs(run, node):
            found |= {need, *self.upstream(run, need)}
        return found

    def order(self, run: RunContext, nodes: Iterable[Node]) -> list[Node]:
        """``nodes`` and everything they need, each after its needs."""
        ordered: list[Node] = []

        def visit(node: Node) -> None:
            if node not in ordered:
                for need in self.needs(run, node):
                    visit(need)
                ordered.append(node)

        for node in nodes:
            visit(node)
        return ordered

    # -- running -----------------------------------------------------------------------------
    def obtain(self, run: RunContext, node: Node, progress: Progress | None = None) -> Built:
        """The stage, from this engine's memo, the cache, or built (its needs first)."""
        self._check_read(run, node)
        if node in self._built:
            return self._built[node]
        spec = self.spec(node)
        for need in self.needs(run, node):
            self.obtain(run, need, progress)
        folder = self.folder(run, node)
        with self._lock(node):
            if node not in self._built:
                ctx = Ctx(run, node, progress)
                with self._building(node):
                    found = cache.obtain(folder, lambda tmp, meta: spec.build(ctx, tmp, meta), self.log)
                built = Built(node, folder, found.meta, found.cached)
                if (line := spec.notice(ctx, built)) is not None:
                    self.log(line)
                self._built[node] = built
            return self._built[node]

    def _lock(self, node: Node) -> threading.Lock:
        with self._guard:
            return self._locks[node]

    # -- the checks that keep keys and reads together -------------------------------------------
    def _stack(self) -> list[tuple[str, Node]]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def _check_read(self, run: RunContext, node: Node) -> None:
        stack = self._stack()
        if not stack:
            return
        doing, reader = stack[-1]
        if doing == "key":
            raise StageGraphError(f"the key of {reader} would need {node} built; keys must be computable "
                                  "before anything runs")
        if node not in self.upstream(run, reader):
            raise StageGraphError(f"{reader} reads {node}, which is not among its needs")

    def _keying(self, node: Node):
        return _Pushed(self._stack(), ("key", node))

    def _building(self, node: Node):
        return _Pushed(self._stack(), ("build", node))


class _Pushed:
    def __init__(self, stack: list, entry):
        self.stack, self.entry = stack, entry

    def __enter__(self):
        self.stack.append(self.entry)

    def __exit__(self, *exc):
        self.stack.pop()
