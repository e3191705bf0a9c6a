"""Engine callbacks <-> ComfyUI: progress bar, interrupt and cancel.

The engine reports progress through callbacks (``on_step(StepEvent)``, ``on_progress(stage,
done, total)``) and polls ``cancelled() -> bool`` at every step boundary. Inside ComfyUI:

- every callback drives one ``comfy.utils.ProgressBar`` (the websocket ``progress`` event;
  for the sampler one bar over all steps of all clips);
- ComfyUI's progress hook raises ``InterruptProcessingException`` when the user pressed
  cancel (and clears the flag): we swallow it there and remember it, so ``cancelled()``
  returns True at the next step and the engine stops cleanly (the worker pool stays healthy);
- the engine's :class:`~wan_animate.errors.Cancelled` is turned back into ComfyUI's
  ``InterruptProcessingException``, which ComfyUI reports as ``execution_interrupted``.

Outside ComfyUI (tests, scripts) progress is a no-op and nothing is ever cancelled.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from wan_animate.errors import Cancelled
from wan_animate.sampling.options import StepEvent

log = logging.getLogger(__name__)


def _comfy() -> tuple[ModuleType, ModuleType] | None:
    """(comfy.utils, comfy.model_management) inside ComfyUI, else None."""
    try:
        import comfy.model_management as mm
        import comfy.utils as utils
    except ModuleNotFoundError as e:
        if e.name not in ("comfy", "comfy.utils", "comfy.model_management"):
            raise
        return None
    return utils, mm


class ComfyProgress:
    """Progress and cancel callbacks of one node execution (create one per ``execute``)."""

    def __init__(self, node: Any = None) -> None:
        """``node``: the executing node class; its hidden ``unique_id`` names the bar's node
        (so events sent from another thread still land on the right node)."""
        hidden = getattr(node, "hidden", None)
        self.node_id = getattr(hidden, "unique_id", None) if hidden is not None else None
        self._comfy = _comfy()
        self._bar: Any = None
        self._interrupted = False
        self.updates = 0

    # ---- engine callbacks ------------------------------------------------------------------
    def on_step(self, event: StepEvent) -> None:
        """Sampler steps: one bar over all clips (value = steps done, max = clips x steps)."""
        self.update(event.done, event.total)

    def on_stage(self, stage: str, done: int, total: int) -> None:
        """Preprocessing stages (reference, pose, mask): the bar restarts per stage."""
        self.update(done, total)

    def cancelled(self) -> bool:
        """True once the user pressed cancel in ComfyUI (polled by the engine between steps)."""
        if self._interrupted:
            return True
        return self._comfy is not None and bool(self._comfy[1].processing_interrupted())

    # ---- ComfyUI side ----------------------------------------------------------------------
    def update(self, done: int, total: int) -> None:
        """Move the ComfyUI progress bar to ``done`` of ``total``."""
        self.updates += 1
        if self._comfy is None or total <= 0:
            return
        utils, mm = self._comfy
        if self._bar is None or self._bar.total != total:
            self._bar = utils.ProgressBar(total, node_id=self.node_id)
        try:
            self._bar.update_absolute(done, total)
        except mm.InterruptProcessingException:
            # ComfyUI's hook cleared its flag and raised: remember the request; the engine
            # sees it through cancelled() at its next step boundary.
            self._interrupted = True

    @contextmanager
    def interrupts(self) -> Iterator[ComfyProgress]:
        """Run an engine call: its ``Cancelled`` becomes ComfyUI's InterruptProcessingException.

        A cancel pressed while the last step finished is honoured too (raised after the call).
        """
        mm = self._comfy[1] if self._comfy else None
        try:
            yield self
        except Cancelled as e:
            if mm is None:
                raise
            log.info("WanAnimate: %s", e)
            mm.interrupt_current_processing(False)      # consumed, as ComfyUI's own check does
            raise mm.InterruptProcessingException() from e
        if self._interrupted and mm is not None:
            raise mm.InterruptProcessingException()
