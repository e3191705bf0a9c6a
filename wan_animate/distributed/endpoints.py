"""The one place where a spawned pool's network endpoints are chosen: loopback only.

A spawned pool lives on one machine, so nothing of it has to be reachable from outside:

- the rendezvous store (a ``TCPStore`` on rank 0) listens on a socket that this module binds
  to the pool's loopback host itself and hands over by file descriptor
  (``master_listen_fd``); torch's own store server would listen on every interface (``*:port``,
  IPv4 and IPv6) whatever host it is given;
- the gloo pairs (the model group on CPU and the control group everywhere) and NCCL's
  bootstrap sockets bind to the loopback interface (``GLOO_SOCKET_IFNAME`` /
  ``NCCL_SOCKET_IFNAME``); without that they bind to the address the machine's hostname
  resolves to, which on a typical pod is its network IP. NCCL's data paths on one machine are
  NVLink / PCIe / shared memory, not sockets, so this costs nothing.

A ``torchrun`` launch spans machines and keeps the endpoints its launcher chose.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.distributed as dist

IFNAME_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
"""Environment variables that pick the interface gloo / NCCL sockets bind to."""


def check_loopback(host: str) -> str:
    """``host`` when it is a loopback IP address (``127.0.0.0/8``, ``::1``); else ``ValueError``."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the pool's host must be a loopback IP address such as 127.0.0.1, "
                         f"got {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"the pool's host {host} is not a loopback address: a spawned pool "
                         f"never listens outside the machine (use 127.0.0.1)")
    return host


def loopback_interface() -> str:
    """The name of this machine's loopback network interface (``lo`` on Linux, ``lo0`` on macOS)."""
    names = [name for _, name in socket.if_nameindex()]
    for name in ("lo", "lo0"):
        if name in names:
            return name
    for name in names:
        if name.startswith("lo"):
            return name
    raise RuntimeError(f"no loopback network interface found among {names}")


def pin_to_loopback() -> None:
    """Make this process's gloo and NCCL sockets bind to the loopback interface (call before
    ``init_process_group``)."""
    lo = loopback_interface()
    for var in IFNAME_VARS:
        os.environ[var] = lo


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def rendezvous_store(host: str, port: int, world_size: int, rank: int,
                     timeout: timedelta) -> dist.TCPStore:
    """The pool's store: rank 0 serves it on ``host:port`` only (a loopback socket it binds
    itself), the other ranks connect to it."""
    import torch.distributed as dist

    check_loopback(host)
    if rank != 0:
        return dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
    sock = _listen(host, port)
    try:
        store = dist.TCPStore(host, port, world_size, is_master=True, timeout=timeout,
                              master_listen_fd=sock.fileno())
    except BaseException:
        sock.close()
        raise
    sock.detach()           # the store's server owns the descriptor now
    return store


__all__ = ["IFNAME_VARS", "check_loopback", "free_port", "loopback_interface", "pin_to_loopback",
           "rendezvous_store"]
