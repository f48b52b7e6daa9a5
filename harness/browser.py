"""Drive the dashboard in a real browser: ``streamlit run`` on loopback plus headless Chromium.

Shared by the browser test and the dashboard benchmark. Uses Debian's
``/usr/bin/chromium`` through Playwright (which cannot download a browser here).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: the harness is not shipped
CHROMIUM = Path("/usr/bin/chromium")
# What a root, offline, display-less machine needs: no sandbox and no background traffic.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUNNING = '[data-testid="stStatusWidget"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(script: Path, cache_root: Path, log_path: Path, timeout_s: float = 120,
                     drop_env: tuple[str, ...] = ()) -> Iterator[str]:
    """Serve ``script`` on a free loopback port with ``MALLE_CACHE=cache_root``; yield its URL.

    ``drop_env`` names variables of this process that the server must not inherit.
    """
    env = {key: value for key, value in os.environ.items() if key not in drop_env}
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            # No --server.address: where it listens is the project's own config's choice, which a test checks.
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=script.parent, env={**env, "MALLE_CACHE": str(cache_root)}, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, timeout_s)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        time.sleep(0.3)
    raise TimeoutError(f"streamlit at {url} did not become healthy within {timeout_s:.0f} s")


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port``, read from the kernel's tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in list(fh)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(_address(address, width))
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # IPv6 is stored as four little-endian 32-bit words.
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A Playwright Chromium browser on Debian's binary."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def settle(page, timeout_ms: int = 240_000) -> None:
    """Wait until the script run triggered by the last navigation or action has finished."""
    page.wait_for_selector("h1", timeout=timeout_ms)
    page.wait_for_timeout(700)  # give a rerun time to start before asking whether it is over
    page.wait_for_function(f"() => !document.querySelector('{RUNNING}')", timeout=timeout_ms)
    page.wait_for_timeout(300)
