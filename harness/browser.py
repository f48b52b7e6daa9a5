"""Drive the dashboard in a real browser: ``streamlit run`` on loopback plus headless Chromium.

Shared by the browser test and the dashboard benchmark. Uses Debian's
``/usr/bin/chromium`` through Playwright (which cannot download a browser here).
"""

from __future__ import annotations

import contextlib
import json
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
                     drop_env: tuple[str, ...] = (), extra_env: dict[str, str] | None = None,
                     launcher: bool = False) -> Iterator[str]:
    """Serve ``script`` on a free loopback port with ``MALLE_CACHE=cache_root``; yield its URL.

    ``drop_env`` names variables of this process that the server must not inherit; ``extra_env`` adds some.
    ``launcher``: through ``malle dashboard`` (the worker pool started before the server) rather than
    ``streamlit run``; the script is then the checkout's own.
    """
    env = {key: value for key, value in os.environ.items() if key not in drop_env} | (extra_env or {})
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            # No --server.address: where it listens is the project's own config's choice, which a test checks.
            [sys.executable, "-m", *(["malle", "dashboard"] if launcher else ["streamlit", "run", str(script)]),
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
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


# -- what the tests read off a page ----------------------------------------------------------------------
class ForwardMessages:
    """Every message the Streamlit server sends a page, as it arrives over the page's websocket (protobuf
    ``ForwardMsg``): the charts' Vega-Lite specs and data exactly as the browser gets them."""

    def __init__(self, page):
        self.frames: list[bytes] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._received))

    def _received(self, payload) -> None:
        if isinstance(payload, bytes):
            self.frames.append(payload)

    def clear(self) -> None:
        self.frames.clear()

    def charts(self) -> list[tuple[dict, dict]]:
        """(Vega-Lite spec, {dataset name: DataFrame}) of each chart of the last script run, in page order."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        found: dict[tuple[int, ...], tuple[dict, dict]] = {}
        for raw in self.frames:
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            if msg.WhichOneof("type") != "delta" or msg.delta.WhichOneof("type") != "new_element":
                continue
            element = msg.delta.new_element
            if element.WhichOneof("type") == "vega_lite_chart":
                chart = element.vega_lite_chart
                datasets = {d.name: _arrow_frame(d.data.data) for d in chart.datasets}
                found[tuple(msg.metadata.delta_path)] = (json.loads(chart.spec), datasets)
        return [found[path] for path in sorted(found)]


def _arrow_frame(data: bytes):
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all().to_pandas()


def discrete_x_columns(spec: dict, datasets: dict, data: str | None = None) -> list[int]:
    """For each x axis a chart draws on a discrete (nominal or ordinal) scale, in drawing order: how many distinct
    values its data has there, i.e. how many labels the axis must show. A layer shares one axis; a concatenation
    draws one per panel."""
    data = (spec.get("data") or {}).get("name", data)
    if "layer" in spec:
        counts = [count for layer in spec["layer"] for count in discrete_x_columns(layer, datasets, data)]
        return counts[:1]
    for key in ("concat", "hconcat", "vconcat"):
        if key in spec:
            return [count for part in spec[key] for count in discrete_x_columns(part, datasets, data)]
    x = (spec.get("encoding") or {}).get("x") or {}
    if x.get("type") not in ("nominal", "ordinal") or data not in datasets:
        return []
    return [int(datasets[data][x["field"]].nunique())]


# Per chart on the page, per x axis with a discrete scale: (the values its scale has, the labels drawn visible).
DRAWN_X_LABELS_JS = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(chart =>
  [...chart.querySelectorAll('g[aria-roledescription="axis"]')]
    .filter(axis => /^X-axis.*discrete scale with (\\d+) value/.test(axis.getAttribute('aria-label') || ''))
    .map(axis => [Number(axis.getAttribute('aria-label').match(/discrete scale with (\\d+) value/)[1]),
                  [...axis.querySelectorAll('g.role-axis-label text')].filter(text =>
                     Number(text.getAttribute('opacity') ?? 1) > 0 && getComputedStyle(text).opacity !== '0'
                     && text.textContent.trim() !== '').length]))"""

# Every st.dataframe on view whose grid scrolls sideways: its scroller is wider inside than on screen.
SIDEWAYS_TABLES_JS = """() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
  .filter(grid => !grid.closest('details:not([open])')).flatMap((grid, i) =>
  [...grid.querySelectorAll('.dvn-scroller')].filter(s => s.scrollWidth > s.clientWidth + 1)
    .map(s => `table ${i + 1} (${grid.innerText.split('\\n')[0].slice(0, 60)}): `
              + `${s.scrollWidth} px in ${s.clientWidth}`))"""


def wait_for_charts(page, timeout_ms: int = 60_000) -> None:
    """Until every chart on the page has drawn its axes and every table its grid (both render after the script
    run ends; a grid sizes its columns once it has measured its text, so give it a moment more)."""
    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
        .every(c => c.querySelector('g[aria-roledescription="axis"]'))
        && [...document.querySelectorAll('[data-testid="stDataFrame"]')].filter(g => !g.closest('details:not([open])'))
        .every(g => { const s = g.querySelector('.dvn-scroller'); return s && s.scrollWidth > 0; })""",
                           timeout=timeout_ms)
    page.wait_for_timeout(2000)


def open_expanders(page) -> int:
    """Open every closed expander of the page (tables inside one are drawn only then); how many were opened."""
    closed = page.locator('[data-testid="stExpander"] details:not([open]) > summary')
    count = closed.count()
    for _ in range(count):
        closed.first.click()
        page.wait_for_timeout(300)
    return count


def small_png(source: Path, target: Path, colours: int = 256) -> None:
    """A screenshot as a small PNG for the docs: a palette of ``colours`` (dashboards are mostly flat colour)."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as img:
        img.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, optimize=True)
