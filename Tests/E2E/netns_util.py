"""Network namespaces, bandwidth limits and headless Chromium (also inside a namespace) for E2E tests.

The kernel here has no `tc netem`; DESIGN.md ("Testing with real peers") lists what works instead.
This module gives a test:

- `Namespace`: a network namespace joined to the host by a veth pair. The host side gets
  `host_ip` (the server listens there: HTTP and media, and announces it in its ICE candidates),
  the namespace side `ns_ip`. `limit(kbit)` puts a `tc tbf` on the host-side veth's egress, i.e.
  on everything the host sends toward the namespace (the namespace's downlink); `unlimit()` removes
  it. Deleted with everything in it on `close()`.
- `Chromium`: a headless Chromium driven over chromedriver's W3C HTTP API, like `test_echo.Browser`,
  with extra arguments (fake capture files, secure-origin exceptions, logging) and optionally run
  inside a `Namespace`: `ip netns exec NS chromedriver --port=P --allowed-ips=HOST_IP` makes
  chromedriver (and the Chromium it starts) live in the namespace, listening on the namespace's
  interfaces only; the test reaches it at `ns_ip:P` through the veth pair. The pages it opens load
  from the server at `host_ip`, and its WebRTC traffic crosses the veth (and the tbf).

Needs root, `ip` (iproute2) and `tc`; a test using it fails (never skips) without them.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import pathlib
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port
from test_echo import Browser, _chromium_binary


def sh(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=timeout)


def _addresses_in_use() -> str:
    return sh("ip", "-o", "addr", "show", check=False).stdout


class Namespace:
    """A network namespace with a veth pair to the host (see the module docstring)."""

    def __init__(self, prefix: str = "sfusim"):
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                pytest.fail(f"`{tool}` is needed (iproute2; scripts/install-deps.sh installs it), and root")
        tag = os.getpid() % 100000
        # A /24 under 10.203/16 that nothing on this host uses (another test run may hold one).
        used = _addresses_in_use()
        third = next((n for n in [tag % 250 + 1] + list(range(1, 251))
                      if f" 10.203.{n}." not in used), None)
        if third is None:
            pytest.fail("no free 10.203.x.0/24 subnet for the test namespace")
        self.name = f"{prefix}{tag}-{third}"
        self.host_if, self.ns_if = f"sh{tag}x{third}", f"sn{tag}x{third}"
        self.host_ip, self.ns_ip = f"10.203.{third}.1", f"10.203.{third}.2"
        self.limited: str | None = None
        self._closed = False
        try:
            sh("ip", "netns", "add", self.name)
        except subprocess.CalledProcessError as e:
            pytest.fail(f"`ip netns add` failed (network namespaces need root): {e.stderr}")
        try:
            sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            sh("ip", "link", "set", self.ns_if, "netns", self.name)
            sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            sh("ip", "link", "set", self.host_if, "up")
            self.exec("ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
            self.exec("ip", "link", "set", self.ns_if, "up")
            self.exec("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh(*self.prefix(), *args, check=check)

    def limit(self, rate_kbit: int, burst: str = "16kbit", latency: str = "50ms") -> None:
        """Limits the namespace's downlink (host -> namespace) to `rate_kbit` kbit/s with tc tbf."""
        verb = "change" if self.limited else "add"
        sh("tc", "qdisc", verb, "dev", self.host_if, "root", "tbf", "rate", f"{rate_kbit}kbit",
           "burst", burst, "latency", latency)
        self.limited = f"{rate_kbit}kbit"

    def unlimit(self) -> None:
        if self.limited:
            sh("tc", "qdisc", "del", "dev", self.host_if, "root")
            self.limited = None

    def qdisc_stats(self) -> str:
        """`tc -s qdisc show` of the host-side veth (sent, dropped, overlimits)."""
        return sh("tc", "-s", "qdisc", "show", "dev", self.host_if, check=False).stdout.strip()

    def tbf_dropped(self) -> int | None:
        out = self.qdisc_stats()
        if "tbf" not in out:
            return None
        m = re.search(r"dropped (\d+)", out)
        return int(m.group(1)) if m else None

    def host_bytes_sent(self) -> int:
        """Bytes the host sent into the veth (toward the namespace) since it was created."""
        try:
            return int(pathlib.Path(f"/sys/class/net/{self.host_if}/statistics/tx_bytes").read_text())
        except (OSError, ValueError):
            return -1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Processes still in the namespace keep it alive but not its veth: deleting the namespace
        # removes the namespace-side interface, and with it the pair.
        sh("ip", "netns", "del", self.name, check=False)
        sh("ip", "link", "del", self.host_if, check=False)

    def __enter__(self) -> "Namespace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def nft_namespace(prefix: str):
    """A `Namespace` for a test that drops packets with nftables inside it (the loss tests); fails
    (never skips) without `nft`."""
    if shutil.which("nft") is None:
        pytest.fail("`nft` (nftables) is needed (scripts/install-deps.sh installs it), and root")
    with Namespace(prefix=prefix) as ns:
        yield ns


BASE_ARGS = ["--headless=new", "--no-sandbox", "--no-first-run", "--disable-extensions",
             "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
             "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
             "--allow-loopback-in-peer-connection",
             # Subscribe-only pages capture nothing, so Chrome would not let them play media until a
             # click: received video is rendered (freeze figures come from rendering) and heard.
             "--autoplay-policy=no-user-gesture-required"]


class Chromium(Browser):
    """`test_echo.Browser` with extra Chromium arguments, optionally inside a `Namespace`.

    `secure_origins`: origins (http://ip:port) treated as secure, so that getUserMedia works on a
    page served from a non-loopback address. `log=True` writes Chromium's own log (WebRTC warnings
    included, e.g. decode failures) to `workdir/chromium.log`.
    """

    def __init__(self, workdir: pathlib.Path, *, netns: Namespace | None = None, extra_args: list[str] = (),
                 secure_origins: list[str] = (), video_file: pathlib.Path | None = None,
                 audio_file: pathlib.Path | None = None, log: bool = True, script_timeout_ms: int = 20000):
        driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
        binary = _chromium_binary()
        if not driver or not binary:
            pytest.fail("chromedriver and chromium are needed for this test")
        self.netns = netns
        self.profile = workdir / "chromium-profile"
        self.profile.mkdir()
        self.log_path = workdir / "chromedriver.log"
        self.chromium_log = workdir / "chromium.log"
        self.session = None
        if netns is None:
            self.host, self.port = "127.0.0.1", free_port()
            cmd = [driver, f"--port={self.port}", f"--log-path={self.log_path}"]
        else:
            # The namespace is fresh: any port is free there. chromedriver listens on all of the
            # namespace's interfaces (lo and the veth) and only accepts the host's veth address.
            self.host, self.port = netns.ns_ip, 9515
            cmd = [*netns.prefix(), driver, f"--port={self.port}", f"--allowed-ips={netns.host_ip}",
                   f"--log-path={self.log_path}"]
        self.driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self._call("GET", "/status", timeout=1)["ready"]:
                    break
            except (OSError, urllib.error.URLError, ValueError, KeyError, RuntimeError):
                pass
            if time.monotonic() > deadline or self.driver.poll() is not None:
                self.close()
                raise RuntimeError(f"chromedriver did not come up ({' '.join(cmd)})")
            time.sleep(0.1)
        args = list(BASE_ARGS) + [f"--user-data-dir={self.profile}"]
        if video_file:
            args.append(f"--use-file-for-fake-video-capture={video_file}")
        if audio_file:
            args.append(f"--use-file-for-fake-audio-capture={audio_file}")
        if secure_origins:
            args.append("--unsafely-treat-insecure-origin-as-secure=" + ",".join(secure_origins))
        if log:
            args += ["--enable-logging", f"--log-file={self.chromium_log}", "--v=0"]
        args += list(extra_args)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": binary, "args": args}}}}
        try:
            self.session = self._call("POST", "/session", caps, timeout=60)["sessionId"]
            self._call("POST", f"/session/{self.session}/timeouts", {"script": script_timeout_ms})
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.host}:{self.port}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"chromedriver {method} {path}: {e.code} {e.read()[:2000]!r}")

    def log_lines(self, *needles: str) -> list[str]:
        """Lines of Chromium's own log containing any of `needles` (case-insensitive)."""
        try:
            text = self.chromium_log.read_text(errors="replace")
        except OSError:
            return []
        low = [n.lower() for n in needles]
        return [l for l in text.splitlines() if any(n in l.lower() for n in low)]


@contextlib.contextmanager
def chromium_pool(tmp_path: pathlib.Path):
    """`start(**kw) -> Chromium` for as many browsers as a test wants; all closed afterwards, and
    no Chromium of theirs may outlive the test."""
    started: list[Chromium] = []

    def start(name: str | None = None, **kw) -> Chromium:
        workdir = tmp_path / (name or f"chromium{len(started)}")
        workdir.mkdir()
        b = Chromium(workdir, **kw)
        started.append(b)
        return b

    try:
        yield start
    finally:
        for b in started:
            b.close()
        deadline = time.monotonic() + 5
        while any(b.profile_pids() for b in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for b in started for pid in b.profile_pids()]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"Chromium processes left running: {left}"
