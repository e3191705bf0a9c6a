"""The set of loaded networks one generation needs."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from wan_animate.models.clip import CLIPVisionEncoder
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.offload import Parked
from wan_animate.models.t5 import T5Encoder
from wan_animate.models.tokenizer import UMT5Tokenizer
from wan_animate.models.vae import WanVAE


@dataclass
class ModelBundle:
    """Loaded networks + where and in which dtype the pipeline feeds them.

    ``dtype`` is the dtype the pipeline casts pixel batches to before the VAE/CLIP (bf16 on GPU
    as the official code, float32 for CPU parity); each network computes in its weights' dtype.
    ``tokenizer`` may be None when prompts are given as token ids. ``parked``: networks kept
    in host memory between uses (``"t5"``, ``"clip"``; see :meth:`using`). ``encoded``: encoder
    outputs kept while the prompt / reference repeat (see :meth:`remember`).
    """

    dit: AnimateDiT
    vae: WanVAE
    t5: T5Encoder
    clip: CLIPVisionEncoder
    tokenizer: UMT5Tokenizer | None
    device: torch.device
    dtype: torch.dtype = torch.bfloat16
    parked: dict[str, Parked] = field(default_factory=dict)
    encoded: OrderedDict[tuple, torch.Tensor] = field(default_factory=OrderedDict)

    KEEP_ENCODED = 8
    """Encoder outputs remembered (most recent first out last): prompts and references."""

    @contextmanager
    def using(self, name: str) -> Iterator[torch.nn.Module]:
        """The network ``name`` ("t5" / "clip") ready to run: a parked one visits the GPU."""
        parked = self.parked.get(name)
        with parked.visiting() if parked is not None else nullcontext(getattr(self, name)) as module:
            yield module

    def remember(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``, or its earlier result for the same ``key`` (e.g. ("t5", prompt))."""
        if key in self.encoded:
            self.encoded.move_to_end(key)
            return self.encoded[key]
        value = compute()
        self.encoded[key] = value
        while len(self.encoded) > self.KEEP_ENCODED:
            self.encoded.popitem(last=False)
        return value
