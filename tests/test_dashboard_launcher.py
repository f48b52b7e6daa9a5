"""``malle dashboard``: the Streamlit server with its worker pool's fork server started before it, so that the
pool's imports (PyTorch, torchvision) run while the server starts and the browser connects. A real server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from harness.browser import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


def children_of(pid: int) -> list[str]:
    """The command lines of ``pid``'s child processes."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError):
            continue
    return found


def test_the_pool_starts_with_the_server_before_any_session(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "malle", "dashboard", "--server.port", str(port),
                             "--server.headless", "true"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "MALLE_CACHE": str(tmp_path / "cache")})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, 120)
        assert urllib.request.urlopen(f"{url}/_stcore/health", timeout=5).read() == b"ok"
        # No browser has connected, so streamlit_app.py has not run: the fork server is the launcher's.
        deadline = time.monotonic() + 30
        while not any("forkserver" in cmd for cmd in children_of(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any("forkserver" in cmd for cmd in children_of(proc.pid)), children_of(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_streamlit_options_pass_through_and_unknown_malle_options_still_fail():
    from malle.cli import build_parser

    args, unknown = build_parser().parse_known_args(["dashboard", "--server.port", "1", "--", "--x", "y"])
    assert args.command == "dashboard" and unknown == ["--server.port", "1", "--", "--x", "y"]
    result = subprocess.run([sys.executable, "-m", "malle", "methods", "--server.port", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unrecognized arguments: --server.port" in result.stderr
