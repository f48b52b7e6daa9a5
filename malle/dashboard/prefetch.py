"""What the dashboard computes in the background, and how ready each page's data is. Nothing here calls Streamlit.

The first Overview computes only what it shows (``frame.prepare_core``). Right after it is drawn the frame
schedules the rest (``plan``): the current experiment's attribution, the default Robustness sweeps, its open set,
then the other preset's experiment (its results and analyses). One background thread per server process runs
the jobs in order through each experiment's own stage engine, which hands their stages to the worker pool; a
page that needs a stage the thread is computing waits on that stage's lock in the engine, so nothing is built
twice, and meanwhile draws this job's progress (``Prefetcher.progress``).

A job that fails records its first line and leaves its traceback in the server's log; the page that needs the
stage then computes it itself, so the error reaches the user as it would have without the background.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from malle.dashboard.frame import ProgressReporter, ResultsStore, progress_text
from malle.evaluation import recall as evaluate
from malle.lab.experiment import Experiment, Results
from malle.lab.stages import Node
from malle.tricks import methods as trick_names


@dataclass(frozen=True)
class Readiness:
    """How far the data a page needs is: one of the objects below."""

    name: str
    label: str
    done: bool


READY = Readiness("ready", "ready", True)
RUNNING = Readiness("running", "being computed in the background", False)
QUEUED = Readiness("queued", "waiting for the background work before it", False)
ABSENT = Readiness("absent", "not scheduled: computed when a page asks", False)
FAILED = Readiness("failed", "failed in the background", False)


@dataclass
class Job:
    """Stages of one experiment, computed in order; with ``results_key``, its results go to the store at the end."""

    label: str
    experiment: Experiment
    nodes: list[Node]
    results_key: tuple[str, str] | None = None
    then: Callable[[], list[Planned]] | None = None
    state: Readiness = QUEUED
    done: int = 0
    current: str = ""
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, desc: str, n: int, total: int) -> None:
        with self.lock:
            self.current = progress_text(desc, n, total)


@dataclass(frozen=True)
class JobProgress:
    """What a page shows while it waits."""

    label: str
    readiness: Readiness
    done: int = 0
    total: int = 0
    current: str = ""
    error: str | None = None

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else float(self.readiness.done)

    @property
    def text(self) -> str:
        if self.readiness.done:
            return f"{self.label}: ready"
        stage = f", now {self.current}" if self.current and self.readiness is RUNNING else ""
        return f"{self.label}: {self.readiness.label} (stage {min(self.done + 1, self.total)} of {self.total}{stage})"


class Prefetcher:
    """The background jobs of one server process, run one at a time on one daemon thread, in order."""

    def __init__(self, store: ResultsStore):
        self.store = store
        self._jobs: list[Job] = []
        self._guard = threading.Condition()
        self._thread: threading.Thread | None = None
        self._started: set = set()

    def start(self, owner, planned: Callable[[], Sequence[Planned]]) -> None:
        """Queue ``planned()`` once per ``owner`` (the experiment shown). A new owner is what the user looks at
        now: the jobs still queued for earlier ones are dropped (a running one finishes; finished ones are
        forgotten), and those owners are planned again if they come back (their finished stages are cached then)."""
        with self._guard:
            if owner in self._started:
                return
            self._jobs = [job for job in self._jobs if job.state is RUNNING]
            self._started = {owner}
        for job in planned():
            self.schedule(job)

    def schedule(self, planned: Planned) -> Job | None:
        """Queue the planned stages not cached yet and not held by another job; returns the job (None: nothing
        to do). A job with nothing left to compute still runs its ``then``."""
        label, exp, nodes, results_key = planned.label, planned.experiment, planned.nodes, planned.results_key
        with self._guard:
            held = {(id(job.experiment), node) for job in self._jobs if job.state in (QUEUED, RUNNING)
                    for node in job.nodes}
            wanted = [n for n in dict.fromkeys(nodes) if (id(exp), n) not in held and not exp.engine.is_cached(exp, n)]
            if not wanted and (results_key is None or self.store.get(results_key) is not None) \
                    and planned.then is None:
                return None
            job = Job(label, exp, wanted, results_key, planned.then)
            self._jobs.append(job)
            self._guard.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="malle-prefetch", daemon=True)
                self._thread.start()
            return job

    def progress(self, exp: Experiment, nodes: Sequence[Node]) -> JobProgress:
        """How ready ``nodes`` of ``exp`` are: READY when cached; else the state of the job that holds them."""
        pending = [n for n in nodes if not exp.engine.is_cached(exp, n)]
        if not pending:
            return JobProgress("", READY)
        job = self._job_holding(exp, pending)
        if job is None:
            return JobProgress("", ABSENT)
        with job.lock:
            return JobProgress(job.label, job.state, job.done, len(job.nodes), job.current, job.error)

    def results_progress(self, key: tuple[str, str]) -> JobProgress:
        """How ready the store's results for ``key`` (an experiment's config key and cache root) are."""
        if self.store.get(key) is not None:
            return JobProgress("", READY)
        with self._guard:
            job = next((j for j in reversed(self._jobs) if j.results_key == key), None)
        if job is None:
            return JobProgress("", ABSENT)
        with job.lock:
            return JobProgress(job.label, job.state, job.done, len(job.nodes), job.current, job.error)

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._guard:
            return self._guard.wait_for(lambda: all(j.state in (READY, FAILED) for j in self._jobs), timeout)

    def _job_holding(self, exp: Experiment, nodes: Sequence[Node]) -> Job | None:
        with self._guard:
            for job in reversed(self._jobs):
                if job.experiment is exp and set(nodes) & set(job.nodes):
                    return job
        return None

    def _loop(self) -> None:
        while True:
            with self._guard:
                self._guard.wait_for(lambda: any(job.state is QUEUED for job in self._jobs))
                job = next(job for job in self._jobs if job.state is QUEUED)
                job.state = RUNNING
            state, followers = self._run(job)
            with self._guard:  # the followers are queued before anyone sees this job end
                for follower in followers:
                    self.schedule(follower)
                job.state = state
                self._guard.notify_all()

    def _run(self, job: Job) -> tuple[Readiness, list[Planned]]:
        exp = job.experiment
        reporter = ProgressReporter(show=job.note)  # made on this thread, so this thread shows its updates
        try:
            for node in job.nodes:
                exp.engine.obtain(exp, node, reporter)
                with job.lock:
                    job.done += 1
            if job.results_key is not None:
                self.store.obtain(job.results_key, lambda: exp.results(reporter))
            return READY, job.then() if job.then is not None else []
        except Exception as err:  # noqa: BLE001  (kept in the log; the page that needs it computes it and raises)
            if not threading.main_thread().is_alive():
                # The server is exiting: its worker pool was shut down under this job, which is not a failure
                # to report (it printed "cannot schedule new futures after shutdown" at every exit).
                return FAILED, []
            print(f"malle: background job {job.label!r} failed:", file=sys.stderr)
            traceback.print_exc()
            job.error = str(err).splitlines()[0] if str(err) else type(err).__name__
            return FAILED, []


# -- what to compute after the first Overview ------------------------------------------------------
@dataclass(frozen=True)
class Planned:
    """A job to schedule; ``then`` plans the jobs that can only be listed once it is done (they read its stages)."""

    label: str
    experiment: Experiment
    nodes: list[Node]
    results_key: tuple[str, str] | None = None
    then: Callable[[], list[Planned]] | None = None


def plan(exp: Experiment, sweep_ops: Sequence[str], other: Experiment | None = None,
         other_key: tuple[str, str] | None = None) -> list[Planned]:
    """The background work after the first Overview, in the order the pages come: attribution (Per-transformation,
    Failure gallery), the default sweeps (Robustness), the open set (Detection); then the other preset: its
    results (so the sidebar switches to it at once), then its own analyses and sweeps. Listing a run's open set
    reads its copies, so ``exp``'s must be made already, and the other preset's are listed after its results."""
    jobs = analyses(exp, sweep_ops)
    if other is not None:
        jobs.append(Planned(f"The {preset_of(other)} preset", other, other.core_nodes(), other_key,
                            then=lambda: [Planned(f"{job.label} ({preset_of(other)} preset)", other, job.nodes)
                                          for job in analyses(other, sweep_ops)]))
    return jobs


def analyses(exp: Experiment, sweep_ops: Sequence[str]) -> list[Planned]:
    """Attribution, the sweeps of ``sweep_ops`` (base methods: tricks apply to a run's queries) and the open set."""
    nodes = exp.analysis_nodes()
    sweeps = [n for n in exp.severity_nodes(sweep_ops) if not trick_names.parse(n.args[0]).is_derived]
    return [Planned("Attribution of each miss", exp, [n for n in nodes if n.kind == "attribution"]),
            Planned("Robustness sweeps", exp, sweeps),
            Planned("Open-set detection", exp, [n for n in nodes if n.kind in ("openset", "calibrate")])]


def preset_of(exp: Experiment) -> str:
    return exp.config.augment.preset or "reference"


# -- where the failures are --------------------------------------------------------------------------
@dataclass(frozen=True)
class Alternative:
    """One preset and method, with its instance-level failures (true original not at rank 1) among its queries."""

    preset: str
    method: str
    failures: int
    queries: int


def failure_counts(results_by_preset: Mapping[str, Results]) -> list[Alternative]:
    """Every ready preset's methods with their failures, in the presets' and methods' order."""
    found = []
    for preset, results in results_by_preset.items():
        per_query = results.per_query
        for method in results.methods:
            part = per_query[per_query["method"] == method]
            missed = int((~evaluate.hit_at_k(part, 1).to_numpy()).sum())
            found.append(Alternative(preset, method, missed, len(part)))
    return found


def failing_alternatives(results_by_preset: Mapping[str, Results], preset: str, method: str) -> list[Alternative]:
    """The other (preset, method) pairs with failures: the current preset's other methods first, then the other
    presets', each most failures first. Empty when no ready result fails anywhere else."""
    others = [a for a in failure_counts(results_by_preset) if a.failures and (a.preset, a.method) != (preset, method)]
    return sorted(others, key=lambda a: (a.preset != preset, -a.failures))


def ready_results(store: ResultsStore, keys: Mapping[str, tuple[str, str]]) -> dict[str, Results]:
    """The presets (name -> store key) whose results are in the store already; none is computed here."""
    return {preset: found for preset, key in keys.items() if (found := store.get(key)) is not None}

