"""``wan-animate setup`` against an endpoint that accepts TCP connections and never answers.

A real stalled server (a socket on 127.0.0.1 that accepts and holds every connection without
sending a byte) stands in for a hung hub, mirror or proxy. The real CLI runs in a subprocess
with ``WAN_ANIMATE_HUB_TIMEOUT`` lowered, so a hang shows up as a killed subprocess (a test
failure) instead of a stuck test run. No internet is needed.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wan_animate.checkpoints import download as dl
from wan_animate.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_ENV = "WAN_ANIMATE_HUB_TIMEOUT"
TIMEOUT_S = 2
BOUND_S = 30.0
"""A run must end within this (interpreter start-up + import + one timed-out call, with room)."""


class StalledServer:
    """Accepts connections on 127.0.0.1 and holds them open without reading or replying."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:  # listening socket closed by stop()
                return
            self._held.append(conn)

    def start(self) -> StalledServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._sock.close()

    @property
    def accepted(self) -> int:
        return len(self._held)


@pytest.fixture()
def stalled() -> Iterator[StalledServer]:
    server = StalledServer().start()
    yield server
    server.stop()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: no saved token, no offline flag, loopback never proxied."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN",
                        "WAN_ANIMATE_CKPT_DIR", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT"}}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               **{TIMEOUT_ENV: str(TIMEOUT_S)})
    env.update(extra)
    return env


def _setup_cli(args: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    """Run ``python -m wan_animate.cli setup ARGS``; (exit code, stderr, seconds). Fails the test
    when it runs past BOUND_S (the defect: it hangs)."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "wan_animate.cli", "setup", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`wan-animate setup {' '.join(args)}` hung against a stalled endpoint: "
                    f"no exit within {BOUND_S:g} s")
    return proc.returncode, proc.stderr, time.monotonic() - t0


def _assert_clear_error(rc: int, err: str, endpoint: str) -> None:
    assert rc == 1, err
    assert "Traceback" not in err, err
    assert err.startswith("error: listing "), err
    assert f"no answer from {endpoint} within {TIMEOUT_S} s" in err, err
    for advice in ("proxy", "HF_ENDPOINT", "HF_HUB_OFFLINE=1", "wan-animate setup verify",
                   TIMEOUT_ENV):
        assert advice in err, f"{advice!r} missing from: {err}"


@pytest.mark.parametrize("action", ["download", "quick"])
def test_setup_against_stalled_endpoint_option_fails_fast(stalled, tmp_path, action):
    dest = tmp_path / "ckpt"
    rc, err, seconds = _setup_cli([action, "--local_dir", str(dest), "--endpoint", stalled.url],
                                  _env(tmp_path))
    _assert_clear_error(rc, err, stalled.url)
    assert stalled.accepted >= 1 and seconds < BOUND_S
    assert not dest.exists()


def test_setup_download_against_stalled_hf_endpoint_env_fails_fast(stalled, tmp_path):
    dest = tmp_path / "ckpt"
    rc, err, seconds = _setup_cli(["download", "--local_dir", str(dest)],
                                  _env(tmp_path, HF_ENDPOINT=stalled.url))
    _assert_clear_error(rc, err, stalled.url)
    assert stalled.accepted >= 1 and seconds < BOUND_S
    assert not dest.exists()


def test_setup_status_needs_no_network(stalled, tmp_path):
    """``setup status`` reads the disk only: it answers at once even with a stalled hub set."""
    rc, err, seconds = _setup_cli(["status", "--local_dir", str(tmp_path / "none")],
                                  _env(tmp_path, HF_ENDPOINT=stalled.url))
    assert rc == 1 and "Traceback" not in err and stalled.accepted == 0 and seconds < BOUND_S


def test_plain_url_head_against_stalled_server_names_the_url(stalled, monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    url = f"{stalled.url}/files/pose.task"
    t0 = time.monotonic()
    with pytest.raises(dl.HubAccessError) as ei:
        dl._head_url(url)
    assert time.monotonic() - t0 < 10
    msg = str(ei.value)
    assert f"no answer from {url} within 1 s" in msg and "proxy" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "HF_ENDPOINT" not in msg          # not a hub URL: a mirror would not help


def test_hub_timeout_default_env_and_invalid(monkeypatch):
    assert dl.HUB_TIMEOUT_ENV == TIMEOUT_ENV
    monkeypatch.delenv(dl.HUB_TIMEOUT_ENV, raising=False)
    assert dl.hub_timeout() == dl.DEFAULT_HUB_TIMEOUT == 20
    monkeypatch.setenv(dl.HUB_TIMEOUT_ENV, "7.5")
    assert dl.hub_timeout() == 7.5
    for bad in ("soon", "0", "-3", "inf", "nan"):
        monkeypatch.setenv(dl.HUB_TIMEOUT_ENV, bad)
        with pytest.raises(CheckpointError, match=f"{dl.HUB_TIMEOUT_ENV}='{bad}'.*unset it"):
            dl.hub_timeout()
