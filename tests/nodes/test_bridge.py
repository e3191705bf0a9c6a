"""Progress and interrupt: engine callbacks <-> ComfyUI's ProgressBar and interrupt flag."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from wan_animate.errors import Cancelled
from wan_animate.sampling.options import StepEvent


@pytest.fixture(scope="module")
def bridge(nodes):  # noqa: ANN001, ANN201
    return sys.modules[f"{nodes.__name__}.bridge"]


def test_without_comfyui_progress_is_a_no_op_and_cancel_passes_through(bridge) -> None:
    p = bridge.ComfyProgress()
    p.on_step(StepEvent(1, 2, 1, 3))
    assert p.updates == 1 and not p.cancelled()
    with pytest.raises(Cancelled):
        with p.interrupts():
            raise Cancelled("x")


def test_one_bar_over_all_steps_of_all_clips(bridge, fake_comfy) -> None:
    node = SimpleNamespace(hidden=SimpleNamespace(unique_id="6"))
    p = bridge.ComfyProgress(node)
    for clip in (1, 2):
        for step in (1, 2, 3):
            p.on_step(StepEvent(clip, 2, step, 3))
    assert fake_comfy.events == [(v, 6, "6") for v in range(1, 7)]
    p.on_stage("mask", 1, 4)                                       # a new total -> a new bar
    assert fake_comfy.events[-1] == (1, 4, "6")


def test_interrupt_becomes_cancel_then_comfy_interrupt(bridge, fake_comfy) -> None:
    p = bridge.ComfyProgress()
    fake_comfy.interrupt_at = 2
    with pytest.raises(fake_comfy.mm.InterruptProcessingException) as info:
        with p.interrupts():
            for step in range(1, 6):
                if p.cancelled():                                  # what the engine does per step
                    raise Cancelled(f"cancelled before step {step}/5")
                p.on_step(StepEvent(1, 1, step, 5))
    assert isinstance(info.value.__cause__, Cancelled)
    assert "before step 3/5" in str(info.value.__cause__)          # the flag went up after step 2
    assert [v for v, _, _ in fake_comfy.events] == [1, 2]
    assert not fake_comfy.flag                                     # consumed: the next run starts clean


def test_interrupt_seen_by_peeking_the_flag(bridge, fake_comfy) -> None:
    fake_comfy.flag = True
    assert bridge.ComfyProgress().cancelled()
    assert fake_comfy.flag                                         # peeking does not clear it


def test_interrupt_on_the_last_step_is_still_reported(bridge, fake_comfy) -> None:
    p = bridge.ComfyProgress()
    with pytest.raises(fake_comfy.mm.InterruptProcessingException):
        with p.interrupts():
            p.on_step(StepEvent(1, 1, 1, 2))
            fake_comfy.flag = True
            p.on_step(StepEvent(1, 1, 2, 2))                       # the engine finishes anyway
