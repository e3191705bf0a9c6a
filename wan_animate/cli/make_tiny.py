"""``wan-animate make-tiny-checkpoint DIR``: a tiny random checkpoint in the official layout."""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "make-tiny-checkpoint"
HELP = "write a tiny random checkpoint in the official folder layout (tests, demo)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder to write (replaced if it exists)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heads", type=int, default=2, help="DiT attention heads (pool sizes must divide it)")


def run(args: argparse.Namespace) -> int:
    from wan_animate.checkpoints.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(args.dir, seed=args.seed, dit_heads=args.heads)
    print(f"tiny checkpoint written to {folder}")
    return 0
