"""Fault injection into real runs: the cache, the dataset, the options and the process.

Shared by ``tests/test_faults.py`` (one test per fault) and ``bench/faults.py``
(every fault in one table with its time to recover). Each fault starts from a
finished clean run, injects one thing, runs ``python -m malle`` again and judges
the outcome against what a user must get:

* ``same``: exit 0 and exactly the clean run's per-query results;
* ``refused``: exit 2 and one line ``malle: error: ...``;
* ``skipped``: exit 0, and the bad file listed in ``skipped.csv`` with its reason.

Any traceback counts against the fault whatever the exit code.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from malle.cli import main
from malle.io import cache
from malle.lab.stages.outputs import CopiesOutputs, EmbedOutputs, SamplesOutputs, SearchOutputs

ROOT = Path(__file__).resolve().parents[1]  # the checkout: the harness is not shipped
BASE_ARGS = ("--methods", "phash", "--n", "12", "--n-classes", "2", "--copies", "2", "--chain-lengths", "1-3")
CNN_ARGS = ("--methods", "efficientnet_lite2,phash", "--n", "12", "--n-classes", "2", "--copies", "4")


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float
    out_dir: Path

    def per_query(self) -> pd.DataFrame:
        return pd.read_csv(self.out_dir / "per_query.csv")

    def skipped(self) -> pd.DataFrame:
        return pd.read_csv(self.out_dir / "skipped.csv")


@dataclass
class Lab:
    """A workspace: a small real dataset, a clean run's cache and results, and a scratch area."""

    data: Path
    clean_cache: Path
    reference: pd.DataFrame
    scratch: Path
    counter: list = field(default_factory=lambda: [0])

    def fresh(self, name: str, own_data: bool = False) -> tuple[Path, Path, Path]:
        """(dataset, copy of the clean cache, out folder) for one fault.

        ``own_data``: a private copy of the dataset to damage. A copy has new ctimes,
        so the cache rightly treats it as another dataset; cache faults use the original.
        """
        self.counter[0] += 1
        base = self.scratch / f"{self.counter[0]:02d}-{name.split()[0]}"
        data = base / "data" if own_data else self.data
        if own_data:
            shutil.copytree(self.data, data, symlinks=True)
        shutil.copytree(self.clean_cache, base / "cache", symlinks=True)
        return data, base / "cache", base / "out"


def run_cli(data: Path | None, cache_dir: Path, out: Path, args: tuple = BASE_ARGS, extra: tuple = ()) -> Run:
    """``python -m malle run`` in this process (the real CLI entry point, stdout and stderr captured)."""
    argv = ["run", "--data", str(data), *args, "--cache", str(cache_dir), "--out", str(out), *extra]
    out_text, err_text = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own errors
            code = int(exit_.code or 0)
    return Run(code, out_text.getvalue(), err_text.getvalue(), time.perf_counter() - start, out)


def spawn_cli(data: Path, cache_dir: Path, out: Path, args: tuple = BASE_ARGS) -> subprocess.Popen:
    """The CLI as a separate real process."""
    argv = [sys.executable, "-m", "malle", "run", "--data", str(data), *args, "--cache", str(cache_dir),
            "--out", str(out)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def make_dataset(folder: Path, photos: list[Path], classes: int = 4, per_class: int = 3) -> Path:
    """ROOT/<class>/<file> of real photos."""
    for i, photo in enumerate(photos[: classes * per_class]):
        target = folder / f"c{i // per_class}" / f"c{i // per_class}_{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
    return folder


def prepare(scratch: Path, photos: list[Path]) -> Lab:
    data = make_dataset(scratch / "dataset", photos)
    clean = run_cli(data, scratch / "clean-cache", scratch / "clean-out")
    if clean.code != 0:
        raise RuntimeError(f"the clean run failed: {clean.err}")
    return Lab(data, scratch / "clean-cache", clean.per_query(), scratch)


# -- judging ------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    fault: str
    expected: str
    survived: bool
    wrong_result: bool
    traceback: bool
    seconds: float
    detail: str


def judge(lab: Lab, name: str, expected: str, run: Run, skipped_file: str | None = None,
          reference: pd.DataFrame | None = None) -> Outcome:
    traceback = "Traceback" in run.err or "Traceback" in run.out
    wrong, detail = False, ""
    if expected == "same":
        ok = run.code == 0
        if ok:
            wrong = not run.per_query().equals(lab.reference if reference is None else reference)
        detail = "identical results" if ok and not wrong else f"exit {run.code}: {last_line(run.err)}"
        survived = ok and not wrong
    elif expected == "refused":
        lines = run.err.strip().splitlines()
        survived = run.code == 2 and len(lines) == 1 and lines[0].startswith("malle: error:")
        detail = lines[-1] if lines else f"exit {run.code}, nothing said"
    else:  # skipped
        survived = run.code == 0 and skipped_file is not None and \
            run.skipped()["path"].str.endswith(skipped_file).any()
        if survived:
            reason = run.skipped().set_index("path")["reason"]
            detail = "skipped: " + reason[reason.index.str.endswith(skipped_file)].iloc[0]
        else:
            detail = f"exit {run.code}: {last_line(run.err)}"
    return Outcome(name, expected, survived and not traceback, wrong, traceback, run.seconds, detail)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


# -- the faults -----------------------------------------------------------------------------------------
def stage_folder(cache_dir: Path, kind: str, index: int = 0) -> Path:
    return sorted(p for p in (cache_dir / kind).iterdir() if p.is_dir() and not p.name.startswith("."))[index]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def zeros_npy(path: Path) -> None:
    np.save(path, np.zeros_like(np.load(path, allow_pickle=False)), allow_pickle=False)


def first_image(folder: Path) -> Path:
    return sorted(folder.glob("*.JPEG"))[0]


CacheFault = Callable[[Path], None]

CACHE_FAULTS: dict[str, CacheFault] = {
    "queries.npy overwritten with valid zeros, search stage deleted": lambda c: (
        zeros_npy(EmbedOutputs(stage_folder(c, "embed")).queries), shutil.rmtree(stage_folder(c, "search"))),
    "originals.npy truncated": lambda c: truncate(EmbedOutputs(stage_folder(c, "embed")).originals),
    "index.faiss replaced by garbage": lambda c: EmbedOutputs(stage_folder(c, "embed")).index.write_bytes(b"garbage"),
    "index.faiss deleted": lambda c: EmbedOutputs(stage_folder(c, "embed")).index.unlink(),
    "per_query.parquet truncated": lambda c: truncate(SearchOutputs(stage_folder(c, "search")).per_query),
    "per_query.parquet deleted": lambda c: SearchOutputs(stage_folder(c, "search")).per_query.unlink(),
    "neighbour_ids.npy altered by one byte": lambda c: flip_byte(
        SearchOutputs(stage_folder(c, "search")).neighbour_ids),
    "done.json of search is garbage": lambda c: (stage_folder(c, "search") / cache.DONE_MARK).write_text("}{ garbage"),
    "done.json of embed is {}": lambda c: (stage_folder(c, "embed") / cache.DONE_MARK).write_text("{}"),
    "done.json of copies deleted": lambda c: (stage_folder(c, "copies") / cache.DONE_MARK).unlink(),
    "manifest.parquet deleted": lambda c: CopiesOutputs(stage_folder(c, "copies")).manifest.unlink(),
    "a copy image deleted": lambda c: first_image(CopiesOutputs(stage_folder(c, "copies")).images).unlink(),
    "a copy image truncated": lambda c: truncate(first_image(CopiesOutputs(stage_folder(c, "copies")).images)),
    "an original image deleted": lambda c: first_image(SamplesOutputs(stage_folder(c, "samples")).originals).unlink(),
    "originals.parquet replaced by garbage": lambda c: (
        SamplesOutputs(stage_folder(c, "samples")).table.write_bytes(b"PAR1 not really")),
    "skipped.csv deleted": lambda c: SamplesOutputs(stage_folder(c, "samples")).skipped.unlink(),
    "the whole copies stage deleted": lambda c: shutil.rmtree(stage_folder(c, "copies")),
    "a stage folder emptied": lambda c: [p.unlink() for p in stage_folder(c, "search").iterdir()],
    "a leftover temp folder of a killed build": lambda c: (
        c / "copies" / f".{stage_folder(c, 'copies').name}{cache.TEMP_MARK}killed").mkdir(),
    "a stale lock file beside a stage": lambda c: Path(str(stage_folder(c, "embed")) + cache.LOCK_SUFFIX).touch(),
    "done.json records a wrong size": lambda c: _wrong_size(stage_folder(c, "embed")),
}


def _wrong_size(folder: Path) -> None:
    record = cache.read_json(folder / cache.DONE_MARK)
    record["artifacts"][EmbedOutputs.queries.name][0] += 1
    cache.write_json(folder / cache.DONE_MARK, record)


def cache_fault(lab: Lab, name: str) -> Outcome:
    data, cache_dir, out = lab.fresh("cache")
    CACHE_FAULTS[name](cache_dir)
    run = run_cli(data, cache_dir, out)
    outcome = judge(lab, name, "same", run)
    leftovers = cache.leftovers(cache_dir)
    if outcome.survived and (leftovers or cache.verify(cache_dir)):
        outcome.survived, outcome.detail = False, f"cache not clean afterwards: {leftovers}"
    return outcome


# Options a user may get wrong: (fault, extra arguments or a function of the workspace giving them).
def _file(lab: Lab, name: str) -> Path:
    path = lab.scratch / name
    path.write_text("not a folder")
    return path


OPTION_FAULTS: dict[str, Callable[[Lab], tuple[Path | str, tuple]]] = {
    "--out names an existing file": lambda lab: (lab.data, ("--out", str(_file(lab, "out-file")))),
    "--cache names an existing file": lambda lab: (lab.data, ("--cache", str(_file(lab, "cache-file")))),
    "--out is an unwritable place": lambda lab: (lab.data, ("--out", "/proc/malle-out")),
    "--cache is an unwritable place": lambda lab: (lab.data, ("--cache", "/proc/malle-cache")),
    "--data ''": lambda lab: ("", ()),
    "--data names a missing folder": lambda lab: (lab.scratch / "absent", ()),
    "--seed -1": lambda lab: (lab.data, ("--seed", "-1")),
    "--n-classes -1": lambda lab: (lab.data, ("--n-classes", "-1")),
    "--n 0": lambda lab: (lab.data, ("--n", "0")),
}


def option_fault(lab: Lab, name: str) -> Outcome:
    data, cache_dir, out = lab.fresh("option")
    target, extra = OPTION_FAULTS[name](lab)
    run = run_cli(target if target == "" else Path(target), cache_dir, out, extra=extra)
    outcome = judge(lab, name, "refused", run)
    if outcome.survived and out.exists() and any(out.iterdir()):
        outcome.survived, outcome.detail = False, "wrote output although refused"
    return outcome


# Bad files dropped into the dataset: (fault, how to make it, the file name skipped.csv must list).
def _long_thin(folder: Path) -> str:
    Image.new("RGB", (10, 3000), "gray").save(folder / "c0" / "c0_strip.png")
    return "c0_strip.png"


def _broken_link(folder: Path) -> str:
    (folder / "c0" / "c0_link.jpg").symlink_to("/nonexistent/target.jpg")
    return "c0_link.jpg"


def _empty_file(folder: Path) -> str:
    (folder / "c0" / "c0_empty.jpg").write_bytes(b"")
    return "c0_empty.jpg"


def _text_as_jpeg(folder: Path) -> str:
    (folder / "c0" / "c0_notes.jpg").write_text("not a picture")
    return "c0_notes.jpg"


def _truncated_jpeg(folder: Path) -> str:
    source = next((folder / "c1").glob("*.jpg")).read_bytes()
    (folder / "c0" / "c0_cut.jpg").write_bytes(source[: len(source) // 3])
    return "c0_cut.jpg"


DATASET_FAULTS: dict[str, Callable[[Path], str]] = {
    "a 10x3000 PNG in the dataset": _long_thin,
    "a link to a place that does not exist": _broken_link,
    "a zero-byte image": _empty_file,
    "a text file named .jpg": _text_as_jpeg,
    "a truncated JPEG": _truncated_jpeg,
}


def dataset_fault(lab: Lab, name: str) -> Outcome:
    data, cache_dir, out = lab.fresh("dataset", own_data=True)
    bad = DATASET_FAULTS[name](data)
    # n covers the whole folder so every candidate, the bad one included, is tried.
    run = run_cli(data, cache_dir, out, args=(*BASE_ARGS, "--n", "40"))
    return judge(lab, name, "skipped", run, skipped_file=bad)


def in_place_edit(lab: Lab) -> Outcome:
    """An original rewritten with the same size and its old mtime restored must not be served stale."""
    name = "an original rewritten in place, same size, old mtime restored"
    data, cache_dir, out = lab.fresh("edit", own_data=True)
    victim = sorted(data.rglob("*.jpg"))[0]
    info = victim.stat()
    body = bytearray(victim.read_bytes())
    middle = len(body) // 2  # entropy-coded data: the photo still decodes, to other pixels
    body[middle : middle + 16] = bytes(255 - x for x in body[middle : middle + 16])
    victim.write_bytes(bytes(body))
    os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns))
    run = run_cli(data, cache_dir, out)
    n = lab.counter[0]
    clean = run_cli(data, lab.scratch / f"edit-clean-{n}", lab.scratch / f"edit-clean-out-{n}")
    return judge(lab, name, "same", run, reference=clean.per_query() if clean.code == 0 else None)


def methods_of(args: tuple) -> str:
    return args[args.index("--methods") + 1]


def kill_during(lab: Lab, kind: str, args: tuple = BASE_ARGS, reference: pd.DataFrame | None = None) -> Outcome:
    """SIGKILL a real run while it builds ``kind``, then rerun on the same cache."""
    name = f"kill -9 while building {kind} ({methods_of(args)})"
    data, _, out = lab.fresh("kill")
    cache_dir = out.parent / "kill-cache"
    proc = spawn_cli(data, cache_dir, out, args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (cache_dir / kind).is_dir() and any(cache.TEMP_MARK in p.name for p in (cache_dir / kind).iterdir()):
            break
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = run_cli(data, cache_dir, out, args)
    outcome = judge(lab, name, "same", run, reference=reference)
    if not killed:
        outcome.survived, outcome.detail = False, f"the run ended before {kind} could be interrupted"
    elif outcome.survived and cache.leftovers(cache_dir):
        outcome.survived, outcome.detail = False, "temp folders left after the rerun"
    return outcome


def concurrent_runs(lab: Lab, args: tuple = BASE_ARGS, reference: pd.DataFrame | None = None) -> Outcome:
    """Two real processes on one empty cache, the second started 1 s after the first."""
    name = f"two processes on one cache, started 1 s apart ({methods_of(args)})"
    data, _, out = lab.fresh("twin")
    cache_dir = out.parent / "shared-cache"
    start = time.perf_counter()
    first = spawn_cli(data, cache_dir, out.parent / "out-1", args)
    time.sleep(1.0)
    second = spawn_cli(data, cache_dir, out.parent / "out-2", args)
    results = [(p, *p.communicate(timeout=600)) for p in (first, second)]
    seconds = time.perf_counter() - start
    codes = [p.returncode for p, _, _ in results]
    errors = "".join(err for _, _, err in results)
    expected = lab.reference if reference is None else reference
    if codes != [0, 0]:
        return Outcome(name, "same", False, False, "Traceback" in errors, seconds, f"exit codes {codes}: "
                       + last_line(errors))
    tables = [pd.read_csv(out.parent / f"out-{i}" / "per_query.csv") for i in (1, 2)]
    wrong = not all(t.equals(expected) for t in tables)
    return Outcome(name, "same", not wrong and "Traceback" not in errors, wrong, "Traceback" in errors, seconds,
                   "both succeeded with identical results" if not wrong else "results differ")


def every_fault(lab: Lab, cnn_reference: pd.DataFrame | None = None) -> list[Outcome]:
    outcomes = [cache_fault(lab, name) for name in CACHE_FAULTS]
    outcomes += [option_fault(lab, name) for name in OPTION_FAULTS]
    outcomes += [dataset_fault(lab, name) for name in DATASET_FAULTS]
    outcomes += [in_place_edit(lab), kill_during(lab, "copies"), concurrent_runs(lab)]
    if cnn_reference is not None:
        outcomes += [kill_during(lab, "embed", CNN_ARGS, cnn_reference), concurrent_runs(lab, CNN_ARGS, cnn_reference)]
    return outcomes


def cnn_reference(lab: Lab) -> pd.DataFrame:
    run = run_cli(lab.data, lab.scratch / "cnn-clean-cache", lab.scratch / "cnn-clean-out", CNN_ARGS)
    if run.code != 0:
        raise RuntimeError(f"the clean CNN run failed: {run.err}")
    return run.per_query()
