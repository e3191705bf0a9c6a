"""A running pool listens on loopback only: the store, gloo pairs, also with a routable hostname."""
from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from wan_animate.distributed.endpoints import check_loopback, loopback_interface
from wan_animate.distributed.pool import WorkerPool
from wan_animate.distributed.protocol import Job, PoolSpec

ROOT = Path(__file__).resolve().parents[2]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:          # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode(hex_addr: str) -> tuple[str, int]:
    """``0100007F:1F90`` (/proc/net/tcp, little-endian words) -> ("127.0.0.1", 8080)."""
    addr, port = hex_addr.split(":")
    raw = bytes.fromhex(addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw)), int(port, 16)


def listening(pids: tuple[int, ...]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by one of ``pids``."""
    owned = set().union(*(_socket_inodes(p) for p in pids))
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in owned:           # 0A = LISTEN
                out.append(_decode(cols[1]))
    return out


def _spec() -> PoolSpec:
    return PoolSpec(factory="tests.distributed.test_pool:count_factory",
                    handlers={"denoise": "tests.distributed.test_pool:denoise"}, config="E",
                    world_size=2, device_type="cpu", start_timeout_s=120, shutdown_timeout_s=5.0)


def test_a_running_pool_listens_on_loopback_only() -> None:
    sys.path.insert(0, str(ROOT))
    pool = WorkerPool(_spec())
    try:
        pool.submit(Job("denoise", {"steps": 2}))          # groups connected, store still up
        found = listening(pool.pids)
    finally:
        pool.close()
    assert found, "the pool's store should be listening while the pool runs"
    outside = [(a, p) for a, p in found if not ipaddress.ip_address(a).is_loopback]
    assert not outside, f"pool sockets listening beyond loopback: {outside} (all: {found})"


def _routable_ipv4() -> str | None:
    import fcntl
    import struct
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:       # no IPv4 address on this interface
                continue
        ip = socket.inet_ntoa(packed[20:24])
        if not ipaddress.ip_address(ip).is_loopback:
            return ip
    return None


@pytest.mark.skipif(os.environ.get("WAN_ANIMATE_HOSTS_MAPPED") == "1", reason="inner run")
def test_loopback_only_when_the_hostname_resolves_to_the_pod_ip(tmp_path: Path) -> None:
    """As on a typical pod: the hostname resolves to the machine's network address (an
    /etc/hosts bind-mounted in a private mount namespace)."""
    ip = _routable_ipv4()
    if ip is None or shutil.which("unshare") is None:
        pytest.skip("needs a non-loopback IPv4 address and unshare")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{ip} {socket.gethostname()}\n")
    inner = (f"mount --bind {hosts} /etc/hosts && {sys.executable} -m pytest -q -p no:cacheprovider "
             f"{Path(__file__)}::test_a_running_pool_listens_on_loopback_only")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {hosts} /etc/hosts"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount /etc/hosts in a mount namespace: {probe.stderr.decode()}")
    r = subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "WAN_ANIMATE_HOSTS_MAPPED": "1"}, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout


def test_only_loopback_hosts_are_accepted() -> None:
    assert check_loopback("127.0.0.1") == "127.0.0.1" and check_loopback("::1") == "::1"
    with pytest.raises(ValueError, match="not a loopback address"):
        check_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="loopback IP address"):
        PoolSpec(factory="m:f", host="localhost.example")
    assert loopback_interface().startswith("lo")
