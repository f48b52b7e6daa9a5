"""``malle serve`` as a real uvicorn process on a free loopback port, driven over HTTP with httpx; shared by the
service tests. Its log goes to a file, so a test can assert that no request got an internal error."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

KEY = "test-key-0123456789abcdef"
START_TIMEOUT_S = 300  # a cold import of torch on a busy 2-core machine
AUTH = {"Authorization": f"Bearer {KEY}"}
BUG = "unexpected error (a bug)"  # what the server logs, with a traceback, for any request it answers 500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, bank: Path, cache: Path, *extra: str, key: str | None = KEY, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MALLE_CACHE": str(cache), **(env or {})}
        env.pop("MALLE_API_KEY", None)
        if key:
            env["MALLE_API_KEY"] = key
        self.log_path = Path(tempfile.mkstemp(prefix="malle-serve-", suffix=".log")[1])
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "malle", "serve", "--bank", str(bank),
                                      "--port", str(self.port), *extra], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)
        self.client = httpx.Client(base_url=self.url, headers=AUTH if key else {}, timeout=120)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.output()}")
            try:
                if self.client.get("/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        raise AssertionError("server did not start")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None and self.client.get("/v1/health").status_code == 200

    def internal_errors(self) -> list[str]:
        return [line for line in self.output().splitlines() if BUG in line]

    def stop(self, sig=signal.SIGTERM) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        self.log.close()


def jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def upload(client, path: str, data: bytes, name: str = "image.jpg", **form):
    return client.post(path, files={"file": (name, data, "image/jpeg")}, data=form)


class InProcess:
    """A real uvicorn serving an app built here, on a thread of this process (for the middleware's own tests,
    which build the app with options or extra routes; a crash here would take the test run with it, so the
    attacks go to ``Server``)."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("in-process server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
