"""Ray the way users start it: ``ray start --head`` (token authentication on, Ray >= 2.59), then a driver
``python -m malle ... --ray HOST:PORT`` run without ``RAY_AUTH_MODE``, in a separate process.

The cluster is this module's own: a private ``HOME`` holding its token (``~/.ray/auth_token``), a private
``--temp-dir`` and free ports, and it is stopped by killing its own process group (``ray stop`` would stop
every Ray process of this user, other tests' clusters included).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from malle.descriptors import create_descriptor
from malle.io import shards as embeddings
from malle.scale import ondisk
from malle.scale.embed_folder import EmbedJob
from malle.scale.embed_folder import run as embed_run

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
METHOD = "sscd_distilled"
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
STOP_GRACE_S = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(home: Path, cache: Path, **extra: str) -> dict[str, str]:
    """This environment without any Ray auth setting, with its own HOME and Malle cache."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARIABLES}
    return {**env, "HOME": str(home), "MALLE_CACHE": str(cache), **extra}


def stop_cluster(group: int) -> None:
    """SIGTERM to the cluster's process group, SIGKILL to what is left (as ``ray stop`` does, but only ours)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@contextlib.contextmanager
def running_token_cluster(tmp_path_factory, cpus: int, prefix: str) -> Iterator[tuple[str, Path]]:
    """``ray start --head --num-cpus CPUS --port P --include-dashboard false`` with a token in ``~/.ray/auth_token``
    of its own ``HOME``; yields (address, home) and stops the cluster by its process group."""
    home = tmp_path_factory.mktemp(f"{prefix}-home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    temp_dir = Path(tempfile.mkdtemp(prefix=f"malle-{prefix}-", dir="/tmp"))  # Ray's socket paths must fit 107 bytes
    port = free_port()
    # Free ports for the dashboard's leftovers too, so that two clusters on this machine do not collide.
    command = [str(RAY), "start", "--head", "--num-cpus", str(cpus), "--port", str(port), "--include-dashboard",
               "false", "--temp-dir", str(temp_dir), "--dashboard-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats"]
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARIABLES} | {"HOME": str(home)}
    starter = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # the daemons stay in this session's process group
    try:
        log, _ = starter.communicate(timeout=180)
        assert starter.returncode == 0, log
        assert "Token authentication is enabled" in log, log
        yield f"127.0.0.1:{port}", home
    finally:
        stop_cluster(starter.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """A token cluster with two CPUs."""
    with running_token_cluster(tmp_path_factory, 2, "ray") as cluster:
        yield cluster


def malle(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "malle", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, demo_photos) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for photo in demo_photos[:12]:
        shutil.copyfile(photo, folder / photo.name)
    return folder


def test_embed_on_a_token_cluster_without_ray_auth_mode_equals_the_local_path(token_cluster, photos, tmp_path):
    address, home = token_cluster
    cache = tmp_path / "cache"
    done = malle("embed", "--data", str(photos), "--method", METHOD, "--out", str(tmp_path / "ray"),
                 "--ray", address, env=clean_env(home, cache))
    assert done.returncode == 0, done.stderr[-3000:]
    local = embed_run(EmbedJob(photos, METHOD, tmp_path / "local", cache_root=cache), log=lambda m: None)
    a, b = embeddings.read(tmp_path / "local"), embeddings.read(tmp_path / "ray")
    assert a.paths == b.paths and len(a.paths) == local["count"] == 12
    assert a.vectors.dtype == b.vectors.dtype == np.float32
    assert a.vectors.tobytes() == b.vectors.tobytes()


@pytest.mark.parametrize("setting, message", [
    ({}, "uses token authentication and no token was found here: set RAY_AUTH_TOKEN_PATH"),
    ({"RAY_AUTH_TOKEN": "0" * 64}, "uses token authentication and rejected the token from RAY_AUTH_TOKEN"),
    ({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "0" * 64}, "uses token authentication but RAY_AUTH_MODE=disabled"),
])
def test_a_driver_the_cluster_refuses_gets_one_line_saying_why(token_cluster, photos, tmp_path, setting, message):
    address, _ = token_cluster
    stranger = tmp_path / "home"  # no ~/.ray/auth_token here
    stranger.mkdir()
    done = malle("embed", "--data", str(photos), "--method", "phash", "--out", str(tmp_path / "out"),
                 "--ray", address, env=clean_env(stranger, tmp_path / "cache", **setting), timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"malle: error: --ray {address}: the cluster at {address} ") and message in lines[0]
    assert not (tmp_path / "out" / embeddings.MANIFEST).exists()


def test_index_build_adds_shards_as_tasks_on_a_token_cluster(token_cluster, tmp_path):
    address, home = token_cluster
    vectors = np.random.default_rng(5).standard_normal((10_000, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    folder = tmp_path / "embeddings"
    embeddings.write(folder, create_descriptor(METHOD), [f"v{i}" for i in range(len(vectors))], vectors)
    options = ["--factory", "IVF16,PQ32x4", "--train-size", "2048", "--shards-per-task", "1"]
    local = ondisk.build(ondisk.BuildPlan(folder, "IVF16,PQ32x4", tmp_path / "here", 2048, 1), log=lambda m: None)
    done = malle("index-build", "--embeddings", str(folder), *options, "--out", str(tmp_path / "ray"), "--ray", address,
                 env=clean_env(home, tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    on_ray = ondisk.read_manifest(tmp_path / "ray")
    assert on_ray["count"] == 10_000
    # The same trained index and, merged in shard order whatever order the tasks ended in, the same lists.
    # (index.faiss itself records where its lists file was written, so its bytes differ.)
    for name in (ondisk.TRAINED, ondisk.IVFDATA):
        assert on_ray["files"][name] == local["files"][name]
