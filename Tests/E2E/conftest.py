"""Shared fixtures for the end-to-end suite: the real `sfu` binary on free loopback ports.

`make test` (scripts/test.sh) builds the binary and exports SFU_BIN; running pytest by hand works
too as long as SFU_BIN points at a built `sfu`.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "Fixtures"


def _sfu_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("SFU_BIN", ROOT / ".build" / "debug" / "sfu"))
    if not path.exists():
        pytest.fail(f"sfu binary not found at {path}; build it first (make test does)")
    return path


@pytest.fixture(scope="session")
def sfu_bin() -> pathlib.Path:
    return _sfu_bin()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_media_port() -> int:
    """A port free on UDP and on TCP: a worker listens for ICE-TCP on its UDP port number."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on both UDP and TCP")


class SFUProcess:
    """A running `sfu serve` with its own ports and data directory."""

    def __init__(self, binary: pathlib.Path, data_dir: pathlib.Path, env: dict[str, str] | None = None):
        self.http_port = free_port()
        self.media_port = free_media_port()
        self.data_dir = data_dir
        self.log_path = data_dir / "sfu.log"
        full_env = dict(os.environ)
        full_env.update({
            "SFU_HTTP_HOST": "127.0.0.1",
            "SFU_HTTP_PORT": str(self.http_port),
            "SFU_MEDIA_HOST": "127.0.0.1",
            "SFU_MEDIA_PORT": str(self.media_port),
            # One worker: its port is the free one picked above (worker i binds port + i).
            "SFU_WORKERS": "1",
            "SFU_DATA_DIR": str(data_dir),
            "SFU_RECORDINGS_DIR": str(data_dir / "recordings"),
            "SFU_LOG_LEVEL": "debug",
            # The scenarios leave a room by closing the socket and expect the others to see it at
            # once (a socket that ends without leave_room is a lost connection): no resume window
            # unless a test asks for one (test_resume.py).
            "SFU_RESUME_WINDOW_S": "0",
        })
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(binary), "serve"], env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sfu exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sfu not ready after {timeout}s:\n{self.log()}")

    def get(self, path: str) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as r:
                body = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as e:
            body, status = e.read().decode(), e.code
        try:
            return status, json.loads(body)
        except json.JSONDecodeError:
            return status, body

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Sends `sig` and waits up to `timeout` seconds; returns the exit code or None."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def sfu_factory(sfu_bin, tmp_path):
    """Starts servers on demand; every one is killed at teardown whatever the test did."""
    started: list[SFUProcess] = []

    def start(env: dict[str, str] | None = None, wait: bool = True) -> SFUProcess:
        data = tmp_path / f"sfu{len(started)}"
        data.mkdir()
        p = SFUProcess(sfu_bin, data, env)
        started.append(p)
        if wait:
            p.wait_ready()
        return p

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def sfu(sfu_factory) -> SFUProcess:
    return sfu_factory()
