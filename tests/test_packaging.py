"""``pip install .`` into a fresh virtual environment gives a working ``malle``.

The environment is made with ``--system-site-packages``: the heavy dependencies (torch, FAISS, ONNX
Runtime) are already there, so pip resolves every dependency pyproject.toml declares without downloading
any, and builds and installs only Malle itself (not editable). The installed commands then run from a folder
outside the checkout, so the installed package is what gets imported, not the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from malle.data.sampling import demo_root

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What a build must not see: history, caches, outputs, and an earlier in-tree build whose leftovers would ship.
NOT_SOURCE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".*_cache", ".malle-cache", "build", "dist",
                                    "*.egg-info", "test-output", "out", ".venv")


def run(argv: list, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(the environment's bin folder, a work folder outside the checkout, the environment variables)."""
    base = tmp_path_factory.mktemp("packaging")
    source, venv, elsewhere = base / "source", base / "venv", base / "elsewhere"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE, symlinks=True)
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["MALLE_CACHE"] = str(base / "cache")
    ok(run([sys.executable, "-m", "venv", "--system-site-packages", venv], elsewhere, env))
    pip = ok(run([venv / "bin" / "python", "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                  source], elsewhere, env))
    # Everything declared was already satisfied: pip built and installed Malle alone, and nothing else.
    assert f"Successfully installed malle-{VERSION}\n" in pip.stdout, pip.stdout
    return venv / "bin", elsewhere, env


def test_the_installed_package_is_imported_not_the_checkout(installed):
    bin_dir, elsewhere, env = installed
    where = ok(run([bin_dir / "python", "-c", "import malle; print(malle.__file__)"], elsewhere, env)).stdout.strip()
    assert Path(where).is_relative_to(bin_dir.parent), where
    assert not Path(where).is_relative_to(ROOT), where


def test_the_package_holds_every_file_of_malle_and_nothing_else(installed):
    """Every module and every data file the product reads at run time (e.g. inference/choices.toml)."""
    bin_dir, elsewhere, env = installed
    listing = ("import importlib.metadata as m\n"
               "for f in m.distribution('malle').files: print(f.as_posix())")
    files = ok(run([bin_dir / "python", "-c", listing], elsewhere, env)).stdout.split()
    shipped = {f for f in files if f.startswith("malle/") and "__pycache__" not in f}
    in_checkout = {p.relative_to(ROOT).as_posix() for p in (ROOT / "malle").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert in_checkout == shipped
    # Top level: the package, its metadata and the console script; the harness and the tests stay behind.
    tops = {f.split("/")[0] for f in files if not f.startswith("..")}
    assert tops == {"malle", f"malle-{VERSION}.dist-info"}
    assert any(f.endswith("bin/malle") for f in files)
    harness = run([bin_dir / "python", "-c", "import harness"], elsewhere, env)
    assert harness.returncode != 0 and "No module named 'harness'" in harness.stderr


def test_malle_version(installed):
    bin_dir, elsewhere, env = installed
    assert ok(run([bin_dir / "malle", "--version"], elsewhere, env)).stdout == f"malle {VERSION}\n"
    assert ok(run([bin_dir / "python", "-m", "malle", "--version"], elsewhere, env)).stdout == f"malle {VERSION}\n"


def test_malle_demo(installed):
    bin_dir, elsewhere, env = installed
    out = elsewhere / "demo-out"
    ok(run([bin_dir / "malle", "demo", "--n", "4", "--methods", "phash", "--out", out], elsewhere, env))
    assert_results(out)


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
