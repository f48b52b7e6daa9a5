"""The frame's logic: data sources, allowed folders, configuration, uploads, progress, shared results.

``streamlit_app.py`` draws the sidebar with these; nothing here calls Streamlit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from malle import parallel
from malle.data.sampling import DEMO_DISTRACTORS, DEMO_N
from malle.descriptors import Unavailable, available_methods, descriptor_class, resolve_methods, weight_options
from malle.descriptors.onnx_spec import is_spec_path
from malle.descriptors.registry import MethodRegistry, folder_specs
from malle.errors import BadImage, ConfigError, DatasetError
from malle.io import cache
from malle.io.images import IMAGE_SUFFIXES, load_rgb
from malle.io.naming import safe_file_name
from malle.lab.experiment import Experiment, ExperimentConfig, Results
from malle.ops import PRESETS, AugmentConfig, get_preset
from malle.tricks.methods import TRICKS

MAX_UPLOAD_MB = 20  # keep equal to server.maxUploadSize in .streamlit/config.toml
MAX_UPLOAD_FILES = 2000  # one upload set; more are skipped with a reason
UPLOAD_TYPES = tuple(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
ENV_ALLOWED_ROOTS = "MALLE_ALLOWED_ROOTS"


@dataclass(frozen=True)
class Source:
    label: str
    key: str  # short, stable widget-key suffix
    default_n: int
    distractors: int | None = None  # None: as many as there are copies, when the data has images to spare


DEMO = Source("Built-in demo photos", "demo", DEMO_N, DEMO_DISTRACTORS)
FOLDER = Source("A folder on disk", "folder", 200)
UPLOAD = Source("Images uploaded in the browser", "upload", 200)
SOURCES = (DEMO, FOLDER, UPLOAD)


# -- configuration ----------------------------------------------------------------------------
PRESET_NAMES = tuple(PRESETS)  # the sidebar's choices, reference first


def preset_label(name: str) -> str:
    return f"{name}: {PRESETS[name].description}"


def augment_for(preset: str) -> AugmentConfig:
    return get_preset(preset).augment()

def config_key(config: ExperimentConfig) -> str:
    """A hashable, stable key for Streamlit's caches (the config itself holds a dataclass)."""
    return json.dumps(config.as_dict(), sort_keys=True)


def config_from_key(key: str) -> ExperimentConfig:
    return ExperimentConfig.from_dict(json.loads(key))


def parse_app_args(argv: Sequence[str]) -> argparse.Namespace:
    """Options after ``streamlit run streamlit_app.py --``; anything else (e.g. pytest's) is ignored."""
    parser = argparse.ArgumentParser(prog="streamlit run streamlit_app.py --", add_help=False)
    for option, cls in weight_options().items():
        parser.add_argument(f"--{option}", default=None, help=f"a {cls.display_name()} weights file")
    parser.add_argument("--allowed-root", action="append", default=None,
                        help=f"a folder the dashboard may read datasets from (repeatable; or ${ENV_ALLOWED_ROOTS})")
    args, _ = parser.parse_known_args(list(argv))
    return args


def allowed_roots(args: argparse.Namespace | None = None) -> list[Path]:
    """Folders a dataset may come from: ``--allowed-root``, else ``$MALLE_ALLOWED_ROOTS``
    (``os.pathsep``-separated), else the user's home and the working directory."""
    given = list(getattr(args, "allowed_root", None) or [])
    if not given and os.environ.get(ENV_ALLOWED_ROOTS):
        given = [p for p in os.environ[ENV_ALLOWED_ROOTS].split(os.pathsep) if p.strip()]
    roots = given or [str(Path.home()), os.getcwd()]
    return list(dict.fromkeys(Path(p).expanduser().resolve() for p in roots))


def resolve_folder(text: str, roots: Sequence[Path]) -> Path:
    """The dataset folder a user typed, if it lies inside an allowed root; else a one-line DatasetError.

    The check is on the resolved path, so ``..`` and links cannot lead outside.
    """
    raw = Path(text.strip()).expanduser()
    try:
        folder = raw.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DatasetError(f"dataset folder not found: {text.strip()}") from None
    if not any(folder.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise DatasetError(f"{text.strip()} is outside the folders this dashboard may read ({shown}); "
                           f"start it with `-- --allowed-root PATH` or set {ENV_ALLOWED_ROOTS} to allow more")
    if not folder.is_dir():
        raise DatasetError(f"dataset path is not a folder: {text.strip()}")
    return folder


def method_options(weights: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(every method that can run here, the default selection).

    A method whose weights are missing is not offered: picking it could only end
    in an error, and the frame explains how to get them. ONNX models are offered
    by the paths of the good spec files in the methods folder (``$MALLE_METHODS_DIR``,
    else ``~/.config/malle/methods``), and only those: the dashboard reads no spec
    from anywhere else.
    """
    defaults, _ = resolve_methods(None, weights)
    specs = [str(path) for path, problem in folder_spec_status() if problem is None]
    built_in = available_methods(weights)
    # Each float method also with each matching trick alone, so the Detection page can compare them.
    derived = [f"{m}+{suffix}" for m in built_in if not descriptor_class(m).metric.binary for suffix in TRICKS]
    return built_in + specs + derived, defaults


def folder_spec_status() -> list[tuple[Path, str | None]]:
    """Each spec file in the methods folder, with why it cannot be offered (None when it can)."""
    found: list[tuple[Path, str | None]] = []
    registry = MethodRegistry()  # the folder's specs together: two of one name are a problem
    for path in folder_specs():
        try:
            registry.spec_method(path)
            found.append((path, None))
        except ConfigError as err:
            found.append((path, str(err)))
    return found


def method_folder_notices() -> list[str]:
    return [f"**{path.name} is not offered:** {problem}" for path, problem in folder_spec_status() if problem]


def method_label(option: str) -> str:
    """How the method picker shows an option: a name as it is, a spec file by its method's name and file."""
    return f"{descriptor_class(option).name} ({Path(option).name}, user ONNX model)" if is_spec_path(option) \
        else option


def unavailable_notices(weights: dict[str, str] | None = None) -> list[Unavailable]:
    """Default methods left out because they cannot run here, each with how to fix it."""
    return resolve_methods(None, weights)[1]


def notice_text(skipped: Unavailable, methods: Sequence[str], registry: MethodRegistry | None = None) -> str:
    """One notice: what is missing, how to fix it, and what of the same family is shown instead (``registry``:
    the experiment's, which knows the names of its spec files)."""
    classes = registry or MethodRegistry()
    family = classes.descriptor_class(skipped.method).family
    instead = [classes.descriptor_class(m).display_name() for m in methods
               if classes.descriptor_class(m).family == family]
    shown = f" Until then the {family} shown here is **{', '.join(instead)}**." if instead else ""
    return f"**{skipped.label} is not shown:** {skipped.reason}. {skipped.fix}{shown}"


# -- progress ---------------------------------------------------------------------------------
class ProgressReporter:
    """A tqdm-like factory for ``Experiment.run(progress=...)`` that forwards to a display callback.

    Streamlit elements may only be touched from the script thread, and engine bars
    could be updated from worker threads; so only the thread that created the
    reporter calls ``show``. Other threads just count, and their updates appear
    at the next update from the script thread or at ``close``.
    """

    def __init__(self, show: Callable[[str, int, int], object],
                 finished: Callable[[str, int, int, float], None] | None = None, min_step: float = 0.01):
        self.show = show  # show(desc, done, total)
        self.finished = finished  # finished(desc, done, total, seconds)
        self.min_step = min_step  # redraw at most every 1% so a run does not flood the browser
        self.owner = threading.get_ident()

    def __call__(self, total: int | None = None, desc: str = "", **_: Any) -> ProgressBar:
        return ProgressBar(self, int(total or 0), desc)


class ProgressBar:
    def __init__(self, reporter: ProgressReporter, total: int, desc: str):
        self.reporter, self.total, self.desc = reporter, total, desc
        self.done, self.shown = 0, -1.0
        self.started = time.perf_counter()
        self.lock = threading.Lock()
        self._draw(force=True)

    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 1.0

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
        self._draw()

    def close(self) -> None:
        if self._draw(force=True) and self.reporter.finished:
            self.reporter.finished(self.desc, self.done, self.total, time.perf_counter() - self.started)

    def _draw(self, force: bool = False) -> bool:
        """Show the state if on the script thread and it moved enough; True when on that thread."""
        if threading.get_ident() != self.reporter.owner:
            return False
        fraction = self.fraction()
        if force or fraction >= 1.0 or fraction - self.shown >= self.reporter.min_step:
            self.shown = fraction
            self.reporter.show(self.desc, self.done, self.total)
        return True


def progress_text(desc: str, done: int, total: int) -> str:
    return f"{desc}: {done}/{total}" if total else desc


# -- uploads ----------------------------------------------------------------------------------
@dataclass
class SavedUploads:
    folder: Path | None  # the dataset folder (flat layout), None when nothing usable was uploaded
    saved: list[str]
    skipped: pd.DataFrame  # path, reason


def uploads_digest(files: Sequence[tuple[str, bytes]]) -> str:
    """Key of an upload set: names and bytes, independent of upload order."""
    parts = sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files)
    return cache.fingerprint(parts)


def check_upload(name: str, data: bytes, max_mb: int = MAX_UPLOAD_MB) -> None:
    """Decode one uploaded file or raise ``BadImage`` with the reason."""
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise BadImage(f"not an image file type ('{suffix or 'no suffix'}'; allowed: {', '.join(UPLOAD_TYPES)})")
    if len(data) > max_mb * 2**20:
        raise BadImage(f"larger than {max_mb} MB")
    load_rgb(data)


def save_uploads(files: Sequence[tuple[str, bytes]], cache_root: Path | str) -> SavedUploads:
    """Save uploaded images as a flat dataset under ``cache_root/uploads/<digest>/images``.

    The folder is keyed by the uploaded bytes, so re-running with the same upload
    reuses it (and the experiment cache keyed by it); bad files are skipped with a reason.
    """
    folder = Path(cache_root) / "uploads" / uploads_digest(files)
    cache.obtain(folder, lambda tmp, meta: _write_uploads(files, tmp, meta))
    saved = cache.read_json(folder / "saved.json")
    skipped = pd.DataFrame(cache.read_json(folder / "skipped.json"), columns=["path", "reason"])
    return SavedUploads(folder / "images" if saved else None, saved, skipped)


def _write_uploads(files: Sequence[tuple[str, bytes]], tmp: Path, meta: dict) -> None:
    taken: set[str] = set()
    saved, skipped = [], []
    (tmp / "images").mkdir()
    for index, (name, data) in enumerate(files):
        shown = safe_file_name(name, set())  # never echo a raw name: it may be 300 characters or a path
        try:
            if index >= MAX_UPLOAD_FILES:
                raise BadImage(f"more than {MAX_UPLOAD_FILES} files in one upload")
            check_upload(name, data)
        except BadImage as err:
            skipped.append({"path": shown, "reason": str(err)})
            continue
        target = safe_file_name(name, taken)
        cache.write_bytes(tmp / "images" / target, data)
        saved.append(target)
    cache.write_json(tmp / "saved.json", saved)
    cache.write_json(tmp / "skipped.json", skipped)
    meta.update(items=len(saved))


# -- the engine, shared by every session of this server process ----------------------------------
# What a page needs beyond the Overview's samples -> copies -> embed -> search, computed when a page asks:
# the kind of stage (one per method), and what its progress box says meanwhile.
ANALYSES = {
    "openset": "Scoring the open-set distractor queries (first time only: cached on disk)…",
    "attribution": "Replaying each missed copy without one op at a time (first time only: cached on disk)…",
}


def core_cached(exp: Experiment) -> bool:
    return all(exp.engine.is_cached(exp, node) for node in exp.core_nodes())


def prepare_core(exp: Experiment, progress=None) -> Results:
    """The results the Overview shows (``Experiment.results``), computing no analysis (``ANALYSES``: the
    background, or the page that asks first, computes those).

    When the copies are still to be made, the worker pool's fork server is launched first, so its imports
    run beside the models' loading (ONNX export, OpenVINO compile) instead of after it."""
    if not exp.is_cached("copies"):
        parallel.start()
    return exp.results(progress)


def analysis_pending(exp: Experiment, kind: str, methods: Sequence[str] | None = None) -> bool:
    """Whether the ``kind`` stage (an ``ANALYSES`` key) of a method (by default, of any) is still to be computed."""
    return not all(exp.is_cached(kind, method) for method in methods or exp.methods)


def analyse(exp: Experiment, kind: str, progress=None, methods: Sequence[str] | None = None) -> None:
    for method in methods or exp.methods:
        exp.stage(kind, method, progress=progress)


def open_experiment(key: str, cache_root: str, roots: tuple[str, ...]) -> tuple[Experiment, list[str]]:
    """The engine handle for a config (cheap: stages run lazily); returns it with its log."""
    notices: list[str] = []
    exp = Experiment(config_from_key(key), cache_root, log=notices.append,
                     allowed_roots=[Path(r) for r in roots])
    return exp, notices


class Handles:
    """One engine handle per (config key, cache root, roots) for the server process: the sessions and the
    background work share it, so a stage one of them is building is waited for, never built twice."""

    def __init__(self):
        self._found: dict[tuple, tuple[Experiment, list[str]]] = {}
        self._guard = threading.Lock()

    def get(self, key: str, cache_root: str, roots: tuple[str, ...]) -> tuple[Experiment, list[str]]:
        with self._guard:
            if (key, cache_root, roots) not in self._found:
                self._found[key, cache_root, roots] = open_experiment(key, cache_root, roots)
            return self._found[key, cache_root, roots]


def preset_key(key: str, preset: str) -> str:
    """The config key of the same experiment under another preset."""
    config = config_from_key(key)
    return config_key(replace(config, augment=augment_for(preset)))


def other_preset(key: str) -> str:
    """The preset the background computes next to the one shown: hard beside reference, reference beside others."""
    shown = config_from_key(key).augment.preset or PRESET_NAMES[0]
    return next(name for name in PRESET_NAMES if name != shown)


def engine_notices(notices: Sequence[str], unavailable: Sequence[Unavailable]) -> list[str]:
    """The engine's log lines worth showing; methods it left out get their own notice (``notice_text``)."""
    left_out = {u.notice() for u in unavailable}
    return [n for n in dict.fromkeys(notices) if n not in left_out]


class ResultsStore:
    """Finished experiments, and one lock per experiment being built.

    A session opening a cached experiment never waits, and a long build blocks
    only the sessions that asked for that same experiment.
    """

    def __init__(self):
        self._results: dict[tuple[str, str], Results] = {}
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def get(self, key: tuple[str, str]) -> Results | None:
        return self._results.get(key)

    def building(self, key: tuple[str, str]) -> bool:
        with self._guard:
            return self._locks[key].locked()

    def obtain(self, key: tuple[str, str], build: Callable[[], Results]) -> Results:
        with self._guard:
            lock = self._locks[key]
        with lock:
            if key not in self._results:
                self._results[key] = build()
            return self._results[key]
