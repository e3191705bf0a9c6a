"""Block swap: run the DiT on a GPU that cannot hold all of it (24 GB cards).

``BlockSwap`` keeps the last ``swap`` DiT blocks in pinned host memory and brings each one to the
GPU just for its own forward, on a side CUDA stream one block ahead (while block i computes,
block i+1's weights are copied), then drops the GPU copy again. The blocks stay where they are
in the model (same state-dict keys, compiled forward untouched): the swap is set from outside
with ``AnimateDiT.set_block_runner`` (``None`` restores plain calls).

Cost: the swapped weights cross PCIe once per step (0.8 GiB per bf16 block, 0.45 GiB in fp8),
hidden behind compute as long as a block's compute outlasts its copy (at 480p and 720p it does:
bench/README.md). At most two swapped blocks are on the GPU at a time.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _check_swap(swap: int, n: int) -> None:
    if not 0 <= swap <= n:
        raise ValueError(f"swap_blocks must be between 0 and {n} (the DiT's blocks), got {swap}")


class BlockSwap:
    """Stream ``blocks[len - swap:]`` from pinned host memory to ``device`` one block ahead.

    Call it as the DiT's block runner: ``runner(i, block, *args) -> block(*args)``.
    ``restore()`` moves every swapped block back to ``device`` for good.
    """

    def __init__(self, blocks: nn.ModuleList, swap: int, device: torch.device | str) -> None:
        self.device = torch.device(device)
        n = len(blocks)
        _check_swap(swap, n)
        self.order = list(range(n - swap, n))
        pin = self.device.type == "cuda"
        self.host: dict[int, list[tuple[nn.Parameter, torch.Tensor]]] = {}
        for i in self.order:
            entries = []
            for p in blocks[i].parameters():
                cpu = torch.empty(p.shape, dtype=p.dtype, pin_memory=pin)
                cpu.copy_(p.data)
                p.data = cpu
                entries.append((p, cpu))
            self.host[i] = entries
        self.stream = torch.cuda.Stream(self.device) if pin else None
        self.inflight: dict[int, tuple[torch.cuda.Event | None, list[torch.Tensor]]] = {}
        if pin:
            torch.cuda.empty_cache()

    @property
    def swapped(self) -> list[int]:
        """Indices of the blocks that live on the host."""
        return list(self.order)

    def host_bytes(self) -> int:
        """Bytes of weights kept in (pinned) host memory."""
        return sum(cpu.numel() * cpu.element_size() for e in self.host.values() for _, cpu in e)

    def _fetch(self, i: int) -> None:
        """Start copying block ``i``'s weights to the GPU (on the side stream)."""
        if i in self.inflight:
            return
        tensors = self.host[i]
        if self.stream is None:
            self.inflight[i] = (None, [cpu.to(self.device) for _, cpu in tensors])
            return
        with torch.cuda.stream(self.stream):
            gpu = [cpu.to(self.device, non_blocking=True) for _, cpu in tensors]
            done = torch.cuda.Event()
            done.record(self.stream)
        self.inflight[i] = (done, gpu)

    def __call__(self, i: int, block: nn.Module, *args: object) -> torch.Tensor:
        if i not in self.host:
            return block(*args)
        self._fetch(i)
        done, gpu = self.inflight.pop(i)
        if done is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(done)
            for t in gpu:
                t.record_stream(current)   # freed only after this stream used it
        for (p, _), t in zip(self.host[i], gpu):
            p.data = t
        pos = self.order.index(i)
        self._fetch(self.order[(pos + 1) % len(self.order)])   # next one (next step's first)
        try:
            return block(*args)
        finally:
            for p, cpu in self.host[i]:
                p.data = cpu

    def restore(self) -> None:
        """Put every swapped block back on the device for good (and drop the host copies)."""
        self.inflight.clear()
        for i in self.order:
            for p, cpu in self.host[i]:
                p.data = cpu.to(self.device)
        self.host.clear()
        self.order = []


def place_with_swap(dit: nn.Module, swap: int, device: torch.device | str,
                    fp8: bool = False) -> BlockSwap:
    """Place a DiT loaded on the CPU: the last ``swap`` blocks to pinned host memory, the rest on
    ``device``; with ``fp8`` each block is quantized (fast mode) on ``device`` on its way.

    Peak GPU memory while placing: the resident part plus one block. Returns the runner to give
    to ``dit.set_block_runner``.
    """
    from wan_animate.models.fp8 import quantize_block

    device = torch.device(device)
    n = len(dit.blocks)
    _check_swap(swap, n)
    for i, block in enumerate(dit.blocks):
        block.to(device)
        if fp8:
            quantize_block(block)
        if i >= n - swap:
            block.to("cpu")
    for name, module in dit.named_children():       # everything outside the blocks is resident
        if name != "blocks":
            module.to(device)
    for p in dit.parameters(recurse=False):
        p.data = p.data.to(device)
    return BlockSwap(dit.blocks, swap, device)


@contextmanager
def parked_on_host(module: nn.Module, runner: BlockSwap | None = None) -> Iterator[None]:
    """Move ``module``'s GPU parameters and buffers to host memory for the duration (the VAE
    decode of a block-swapped model: the decoder's activations need the room), then back.

    A ``runner``'s prefetched block is dropped too. Values are unchanged.
    """
    if runner is not None:
        runner.inflight.clear()
    moved = []
    for t in [*module.parameters(), *module.buffers()]:
        if t.device.type == "cuda":
            moved.append((t, t.device, t.data.to("cpu")))
            t.data = moved[-1][2]
    if moved:
        torch.cuda.empty_cache()
    try:
        yield
    finally:
        for t, device, cpu in moved:
            t.data = cpu.to(device)


class Parked:
    """A network whose weights live in host memory (pinned on CUDA) and visit ``device`` only
    for the length of a :meth:`visiting` block: umT5 and CLIP encode once per new prompt /
    reference and hold no GPU memory while the DiT denoises or the VAE decodes.

    Cost per visit: the weights cross PCIe once (umT5-XXL 10.6 GiB, CLIP 1.2 GiB); values are
    unchanged. On a CPU ``device`` the weights simply stay where they are.
    """

    def __init__(self, module: nn.Module, device: torch.device | str) -> None:
        self.module = module
        self.device = torch.device(device)
        pin = self.device.type == "cuda"
        self.host: list[tuple[torch.Tensor, torch.Tensor]] = []
        for t in [*module.parameters(), *module.buffers()]:
            cpu = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
            cpu.copy_(t.data)
            t.data = cpu
            self.host.append((t, cpu))
        if pin:
            torch.cuda.empty_cache()

    def host_bytes(self) -> int:
        """Bytes of weights kept in host memory."""
        return sum(cpu.numel() * cpu.element_size() for _, cpu in self.host)

    @contextmanager
    def visiting(self) -> Iterator[nn.Module]:
        """The module with its weights on ``device``; back on the host (GPU copies freed) after."""
        for t, cpu in self.host:
            t.data = cpu.to(self.device, non_blocking=True)
        try:
            yield self.module
        finally:
            for t, cpu in self.host:
                t.data = cpu
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
