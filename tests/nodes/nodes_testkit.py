"""Helpers of the node tests (imported by conftest.py and the test files): import the pack as
ComfyUI does, call a node as ComfyUI's executor does, fake ComfyUI's progress/interrupt."""
from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "wan_animate_pack_under_test"

def import_pack() -> types.ModuleType:
    """Import the pack folder like ComfyUI does: a package from <folder>/__init__.py whose parent
    is not on sys.path (ComfyUI uses the folder path as module name)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def to_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> ComfyUI IMAGE (what Get Video Components / Load Image give)."""
    return torch.from_numpy(frames).float() / 255.0


def run_node(cls: type, **inputs: Any) -> tuple:
    """Call a node the way ComfyUI's executor does: required inputs must be given; constant
    widget values go through ``validate_inputs`` (only the arguments it names, which must
    return True); then ``execute``; the outputs must match the schema's output types."""
    schema = cls.define_schema()
    ids = {i.id: i for i in schema.inputs}
    unknown = set(inputs) - set(ids)
    assert not unknown, f"{cls.__name__}: unknown inputs {unknown}"
    missing = [i.id for i in schema.inputs if not i.optional and i.id not in inputs]
    assert not missing, f"{cls.__name__}: required inputs missing {missing}"
    if "validate_inputs" in cls.__dict__:
        names = inspect.signature(cls.validate_inputs).parameters
        ok = cls.validate_inputs(**{k: v for k, v in inputs.items() if k in names})
        assert ok is True, f"{cls.__name__}.validate_inputs: {ok}"
    out = cls.execute(**inputs)
    args = tuple(out.args)
    assert len(args) == len(schema.outputs), (cls.__name__, len(args), len(schema.outputs))
    for value, o in zip(args, schema.outputs):
        check_output(str(o.io_type), value)
    return args


def check_output(io_type: str, value: Any) -> None:
    if io_type == "IMAGE":
        assert isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[-1] == 3
        assert value.dtype == torch.float32 and 0 <= value.min() and value.max() <= 1
    elif io_type == "MASK":
        assert isinstance(value, torch.Tensor) and value.ndim == 3 and value.dtype == torch.float32
        assert 0 <= value.min() and value.max() <= 1
    elif io_type == "FLOAT":
        assert isinstance(value, float)
    elif io_type == "BOOLEAN":
        assert isinstance(value, bool)
    elif io_type == "STRING":
        assert isinstance(value, str)
    elif io_type == "WANANIMATE_MODEL":
        from wan_animate.engine import WanAnimateModel
        assert isinstance(value, WanAnimateModel)
    elif io_type == "WANANIMATE_LATENT":
        from wan_animate.sampling.generate import AnimateLatent
        assert isinstance(value, AnimateLatent)


class FakeComfy:
    """``comfy.utils`` + ``comfy.model_management`` as ComfyUI's server wires them: the
    progress hook first raises InterruptProcessingException when interrupted (clearing the
    flag), then records the event (main.py ``hijack_progress``)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, str | None]] = []
        self.interrupt_at: int | None = None      # set the interrupt flag when this value is reported
        self.flag = False

        class InterruptProcessingException(Exception):
            pass

        fake = self

        class ProgressBar:
            def __init__(self, total: int, node_id: str | None = None) -> None:
                self.total, self.current, self.node_id = total, 0, node_id

            def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
                self.total = total if total is not None else self.total
                self.current = min(value, self.total)
                fake.hook(self.current, self.total, self.node_id)

        self.utils = types.ModuleType("comfy.utils")
        self.utils.ProgressBar = ProgressBar
        self.mm = types.ModuleType("comfy.model_management")
        self.mm.InterruptProcessingException = InterruptProcessingException
        self.mm.processing_interrupted = lambda: fake.flag
        self.mm.interrupt_current_processing = lambda value=True: setattr(fake, "flag", value)
        self.package = types.ModuleType("comfy")
        self.package.utils, self.package.model_management = self.utils, self.mm

    def hook(self, value: int, total: int, node_id: str | None) -> None:
        if self.flag:
            self.flag = False
            raise self.mm.InterruptProcessingException()
        self.events.append((value, total, node_id))
        if self.interrupt_at is not None and value >= self.interrupt_at:
            self.flag, self.interrupt_at = True, None


# ---- the node chain on the tiny checkpoint and the sample videos ----
SMALL = {"width": 128, "height": 72, "target_fps": 10}
"""Preprocessing settings small enough for CPU: about 128x72 pixels at 10 fps."""


def sampler_settings(**over: Any) -> dict[str, Any]:
    """Sampler widgets for a fast CPU run: 5-frame clips, 2 steps."""
    d = {"mode": "animate", "prompt": "a person dancing", "negative_prompt": "", "frame_num": 5,
         "refert_num": 1, "steps": 2, "shift": 5.0, "guide_scale": 1.0, "seed": 3, "solver": "unipc",
         "color_match": False}
    d.update(over)
    return d


