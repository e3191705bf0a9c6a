"""Progress display of the CLI: tqdm bars per clip and step, fed by engine StepEvents."""
from __future__ import annotations

from typing import Any

from wan_animate.sampling.options import StepEvent


class StepBars:
    """One tqdm bar over all steps of all clips; the description names the clip."""

    def __init__(self, desc: str = "denoising") -> None:
        self.desc = desc
        self.bar: Any = None

    def __call__(self, ev: StepEvent) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=ev.total, desc=self.desc, unit="step", dynamic_ncols=True)
        self.bar.set_description(f"{self.desc} clip {ev.clip}/{ev.clips}")
        self.bar.update(ev.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
