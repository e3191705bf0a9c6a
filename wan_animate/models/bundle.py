"""The set of loaded networks one generation needs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from wan_animate.models.clip import CLIPVisionEncoder
from wan_animate.models.dit import AnimateDiT
from wan_animate.models.t5 import T5Encoder
from wan_animate.models.tokenizer import UMT5Tokenizer
from wan_animate.models.vae import WanVAE


@dataclass
class ModelBundle:
    """Loaded networks + where and in which dtype the pipeline feeds them.

    ``dtype`` is the dtype the pipeline casts pixel batches to before the VAE/CLIP (bf16 on GPU
    as the official code, float32 for CPU parity); each network computes in its weights' dtype.
    ``tokenizer`` may be None when prompts are given as token ids.
    """

    dit: AnimateDiT
    vae: WanVAE
    t5: T5Encoder
    clip: CLIPVisionEncoder
    tokenizer: UMT5Tokenizer | None
    device: torch.device
    dtype: torch.dtype = torch.bfloat16
