"""``pip install .`` gives a working ``malle`` with no extra installed, as a newcomer meets it.

Two environments, the same checks:

- ``blocked`` (always): a virtual environment over this machine's packages (``--system-site-packages``), so pip
  builds and installs Malle alone, not editable, in seconds; and every command runs with an import blocker
  (``sitecustomize`` on ``PYTHONPATH``: a meta-path finder) that makes every top-level module of every extra
  (dashboard, ray, service, report; found from the installed distributions' own file lists) impossible to import.
  That is what a base install lacks, and what the system's packages would otherwise hide.
- ``fresh`` (``MALLE_FRESH_VENV=1``): a virtual environment without the system's packages, where
  ``pip install SOURCE`` installs every base dependency. It took 6 min 13 s and 6.8 GB here (AMD EPYC, 2 cores,
  from the local package index: PyPI's torch brings CUDA), too long for every run; it also catches a base
  dependency that only an extra brought before.

The commands run from a folder outside the checkout, so the installed package is what gets imported.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from malle.data.sampling import demo_root
from malle.errors import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
# What a build must not see: history, caches, outputs, and an earlier in-tree build whose leftovers would ship.
NOT_SOURCE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".*_cache", ".malle-cache", "build", "dist",
                                    "*.egg-info", "test-output", "out", ".venv", "site")
FRESH = os.environ.get("MALLE_FRESH_VENV") == "1"
BLOCKER = '''"""Test-only: the modules of Malle's extras cannot be imported, as in a base install."""
import os
import sys

BLOCKED = frozenset(os.environ["MALLE_BLOCKED_MODULES"].split(","))


class BlockExtras:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a base install has no extras)",
                                      name=name)
        return None


sys.meta_path.insert(0, BlockExtras())
'''


def user_extras() -> list[str]:
    """The extras a user installs: those ``all`` gathers (dashboard, ray, service, report)."""
    [spec] = PYPROJECT["project"]["optional-dependencies"]["all"]
    return re.fullmatch(r"malle\[(.+)\]", spec)[1].split(",")


def extra_modules() -> dict[str, set[str]]:
    """Extra -> the top-level modules its distributions install, read from their installed file lists."""
    by_distribution: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            by_distribution.setdefault(canonical(distribution), set()).add(module)
    found = {}
    for extra in user_extras():
        names = [canonical(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
        found[extra] = set().union(*(by_distribution[name] for name in names))
    return found


def canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def run(argv: list, cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module", params=["blocked", pytest.param("fresh", marks=pytest.mark.skipif(
    not FRESH, reason="a fresh venv installs every base dependency (6 min here): set MALLE_FRESH_VENV=1"))])
def installed(request, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(the environment's bin folder, a work folder outside the checkout, the environment variables)."""
    base = tmp_path_factory.mktemp(f"packaging-{request.param}")
    source, venv, elsewhere = base / "source", base / "venv", base / "elsewhere"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE, symlinks=True)
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["MALLE_CACHE"] = str(base / "cache")
    blocked = request.param == "blocked"
    ok(run([sys.executable, "-m", "venv", *(["--system-site-packages"] if blocked else []), venv], elsewhere, env))
    pip = ok(run([venv / "bin" / "python", "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                  source], elsewhere, env, timeout=1800))
    if blocked:  # every dependency was already satisfied: pip built and installed Malle alone
        assert f"Successfully installed malle-{VERSION}\n" in pip.stdout, pip.stdout
        (base / "blocker").mkdir()
        (base / "blocker" / "sitecustomize.py").write_text(BLOCKER)
        env["PYTHONPATH"] = str(base / "blocker")
        env["MALLE_BLOCKED_MODULES"] = ",".join(sorted(set().union(*extra_modules().values())))
    return venv / "bin", elsewhere, env


def test_the_blocker_covers_every_extra_and_what_malle_imports_from_it():
    modules = extra_modules()
    assert sorted(modules) == sorted(EXTRAS)
    for extra, imported in EXTRAS.items():  # what import_extra names is what that extra installs
        assert set(imported) <= modules[extra], extra
    assert {"streamlit", "altair", "ray", "fastapi", "uvicorn", "multipart", "playwright"} <= set().union(
        *modules.values())


def test_no_extra_can_be_imported(installed):
    bin_dir, elsewhere, env = installed
    for module in sorted(set().union(*extra_modules().values())):
        result = run([bin_dir / "python", "-c", f"import {module}"], elsewhere, env)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, module


def test_the_installed_package_is_imported_not_the_checkout(installed):
    bin_dir, elsewhere, env = installed
    where = ok(run([bin_dir / "python", "-c", "import malle; print(malle.__file__)"], elsewhere, env)).stdout.strip()
    assert Path(where).is_relative_to(bin_dir.parent), where
    assert not Path(where).is_relative_to(ROOT), where


def test_the_package_holds_every_file_of_malle_and_nothing_else(installed):
    """Every module and every data file the product reads at run time (e.g. inference/choices.toml), and the
    ``py.typed`` marker that lets type checkers read Malle's annotations."""
    bin_dir, elsewhere, env = installed
    listing = ("import importlib.metadata as m\n"
               "for f in m.distribution('malle').files: print(f.as_posix())")
    files = ok(run([bin_dir / "python", "-c", listing], elsewhere, env)).stdout.split()
    shipped = {f for f in files if f.startswith("malle/") and "__pycache__" not in f}
    in_checkout = {p.relative_to(ROOT).as_posix() for p in (ROOT / "malle").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert in_checkout == shipped
    assert "malle/py.typed" in shipped
    # Top level: the package, its metadata and the console script; the harness and the tests stay behind.
    tops = {f.split("/")[0] for f in files if not f.startswith("..")}
    assert tops == {"malle", f"malle-{VERSION}.dist-info"}
    assert any(f.endswith("bin/malle") for f in files)
    harness = run([bin_dir / "python", "-c", "import harness"], elsewhere, env)
    assert harness.returncode != 0 and "No module named 'harness'" in harness.stderr


def test_every_module_outside_the_extras_products_imports(installed):
    """Only the dashboard (Streamlit's pages) and the service's HTTP modules (FastAPI's app, routes, schemas,
    statuses, flood control) need their extra to be imported; every other module of the package, the service's
    guard included (`malle serve`'s options use it), imports in a base install."""
    bin_dir, elsewhere, env = installed
    script = ("import importlib, pkgutil, malle\n"
              "for m in pkgutil.walk_packages(malle.__path__, 'malle.'):\n"
              "    web = m.name.startswith('malle.service.') and m.name != 'malle.service.guard'\n"
              "    if not (web or m.name.startswith('malle.dashboard') or m.name == 'malle.__main__'):\n"
              "        importlib.import_module(m.name)\n"
              "print('imported')")
    assert ok(run([bin_dir / "python", "-c", script], elsewhere, env)).stdout == "imported\n"


def test_malle_version(installed):
    bin_dir, elsewhere, env = installed
    assert ok(run([bin_dir / "malle", "--version"], elsewhere, env)).stdout == f"malle {VERSION}\n"
    assert ok(run([bin_dir / "python", "-m", "malle", "--version"], elsewhere, env)).stdout == f"malle {VERSION}\n"


def test_malle_demo_then_report_names_the_missing_extra(installed):
    bin_dir, elsewhere, env = installed
    out = elsewhere / "demo-out"
    ok(run([bin_dir / "malle", "demo", "--n", "4", "--methods", "phash", "--out", out], elsewhere, env))
    assert_results(out)
    report = run([bin_dir / "malle", "report", out], elsewhere, env)
    assert report.returncode == 2, report.stderr
    assert report.stderr == ("malle: error: malle report needs the 'dashboard' extra: "
                             "pip install 'malle[dashboard]'\n")
    assert not (out / "report.html").exists()


def test_malle_serve_names_the_missing_extra(installed, tmp_path):
    bin_dir, elsewhere, env = installed
    serve = run([bin_dir / "malle", "serve", "--bank", tmp_path / "bank"], elsewhere, env)
    assert serve.returncode == 2
    assert serve.stderr == "malle: error: malle serve needs the 'service' extra: pip install 'malle[service]'\n"


def test_malle_run(installed):
    bin_dir, elsewhere, env = installed
    out = elsewhere / "run-out"
    ok(run([bin_dir / "malle", "run", "--data", demo_root(), "--n", "6", "--n-classes", "2", "--methods", "phash",
            "--out", out], elsewhere, env))
    assert_results(out)


def assert_results(out: Path) -> None:
    """The run wrote its tables, with rows, for the one method asked for."""
    assert json.loads((out / "config.json").read_text())["methods"] == ["phash"]
    for name in ("recall.csv", "per_query.csv", "manifest.csv", "methods.csv"):
        assert len((out / name).read_text().splitlines()) > 1, name


def test_requirements_txt_installs_this_checkout_with_the_dashboard_extra(tmp_path):
    """Hosts such as Streamlit Community Cloud run ``pip install -r requirements.txt`` in the checkout. pip's own
    resolution of the file (``--dry-run --report``, here where every dependency is installed): it names this
    checkout's Malle with the dashboard extra, and every requirement it brings can be met. It installs nothing."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE, symlinks=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = ok(run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-input", "--disable-pip-version-check",
                     "--quiet", "--report", tmp_path / "report.json", "-r", "requirements.txt"], source, env))
    report = json.loads((tmp_path / "report.json").read_text())
    [malle] = [item for item in report["install"] if item["metadata"]["name"] == "malle"]
    assert malle["requested_extras"] == ["dashboard"], result.stdout
    assert Path(malle["download_info"]["url"].removeprefix("file://")) == source
    dashboard = {canonical(Requirement(r).name) for r in malle["metadata"].get("requires_dist", [])
                 if Requirement(r).marker is not None and Requirement(r).marker.evaluate({"extra": "dashboard"})}
    declared = PYPROJECT["project"]["optional-dependencies"]["dashboard"]
    assert dashboard == {canonical(Requirement(r).name) for r in declared}
