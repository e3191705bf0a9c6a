"""A small stand-in for ``comfy_api.latest.io``, used only where ComfyUI is absent.

Inside ComfyUI the nodes subclass ComfyUI's own ``io.ComfyNode`` and build ComfyUI's own
``io.Schema`` (see :func:`nodes.types.comfy_io`). In a plain Python process (CI, tests,
scripts) this module provides the same names with the same attributes, so the node classes
import, describe themselves and run exactly as ComfyUI would run them. It also answers the
V1 attributes (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``, ...) so that a ComfyUI build
without ``comfy_api`` can load the nodes through ``NODE_CLASS_MAPPINGS``.

Only the part of the API the pack uses is here: Int, Float, String, Boolean, Combo, Image,
Mask, Custom, Hidden, Schema, NodeOutput, ComfyNode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

_INPUT_FIELDS = ("display_name", "optional", "tooltip", "lazy", "default", "min", "max", "step",
                 "round", "options", "multiline", "placeholder", "dynamic_prompts",
                 "control_after_generate", "label_on", "label_off", "force_input", "socketless")


class _Input:
    """One input socket/widget; attribute names match ComfyUI's ``io.<Type>.Input``."""

    io_type = "*"

    def __init__(self, id: str, **kw: Any) -> None:  # noqa: A002 - ComfyUI's name
        unknown = sorted(set(kw) - set(_INPUT_FIELDS))
        if unknown:
            raise TypeError(f"{self.io_type}.Input({id!r}): unknown argument(s) {unknown}")
        self.id = id
        for name in _INPUT_FIELDS:
            setattr(self, name, kw.get(name, False if name == "optional" else None))

    def v1(self) -> tuple[Any, dict[str, Any]]:
        """The V1 ``INPUT_TYPES`` entry: (type or list of choices, options)."""
        extra = {k: getattr(self, k) for k in _INPUT_FIELDS
                 if k not in ("optional", "options") and getattr(self, k) is not None}
        kind = list(self.options or []) if self.io_type == "COMBO" else self.io_type
        return kind, extra


class _Output:
    io_type = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None,  # noqa: A002
                 tooltip: str | None = None, is_output_list: bool = False) -> None:
        self.id, self.display_name, self.tooltip = id, display_name, tooltip
        self.is_output_list = is_output_list


def _socket_type(io_type: str) -> type:
    """A type namespace with ``.io_type``, ``.Input`` and ``.Output`` bound to ``io_type``."""
    inp = type("Input", (_Input,), {"io_type": io_type})
    out = type("Output", (_Output,), {"io_type": io_type})
    return type(io_type.title(), (), {"io_type": io_type, "Input": inp, "Output": out})


Int, Float, String, Boolean = (_socket_type(t) for t in ("INT", "FLOAT", "STRING", "BOOLEAN"))
Combo, Image, Mask = (_socket_type(t) for t in ("COMBO", "IMAGE", "MASK"))


def Custom(io_type: str) -> type:  # noqa: N802 - ComfyUI's name
    """A socket type of the pack's own (e.g. ``WANANIMATE_MODEL``)."""
    return _socket_type(io_type)


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[_Input] = field(default_factory=list)
    outputs: list[_Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    is_output_node: bool = False
    is_experimental: bool = False
    is_deprecated: bool = False
    not_idempotent: bool = False


class NodeOutput:
    """Positional outputs plus an optional UI dict, as ``io.NodeOutput``."""

    def __init__(self, *args: Any, ui: dict | None = None) -> None:
        self.args, self.ui = args, ui

    @property
    def result(self) -> tuple | None:
        return self.args or None

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class _NodeMeta(type):
    """V1 class attributes, derived from the V3 schema on access."""

    RETURN_TYPES = property(lambda cls: tuple(o.io_type for o in cls.define_schema().outputs))
    RETURN_NAMES = property(lambda cls: tuple(o.display_name or o.io_type
                                              for o in cls.define_schema().outputs))
    CATEGORY = property(lambda cls: cls.define_schema().category)
    DESCRIPTION = property(lambda cls: cls.define_schema().description)
    OUTPUT_NODE = property(lambda cls: cls.define_schema().is_output_node)
    NOT_IDEMPOTENT = property(lambda cls: cls.define_schema().not_idempotent)


class ComfyNode(metaclass=_NodeMeta):
    """Base of the pack's nodes outside ComfyUI: ``define_schema`` + ``execute`` classmethods."""

    hidden = None
    """ComfyUI fills this with the hidden inputs (``unique_id`` ...) per run; None here."""
    FUNCTION = "run_v1"

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "validate_inputs" in cls.__dict__:
            cls.VALIDATE_INPUTS = cls.validate_inputs
        if "fingerprint_inputs" in cls.__dict__:
            cls.IS_CHANGED = cls.fingerprint_inputs

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, tuple]]:  # noqa: N802 - ComfyUI's name
        out: dict[str, dict[str, tuple]] = {"required": {}}
        for i in cls.define_schema().inputs:
            out.setdefault("optional" if i.optional else "required", {})[i.id] = i.v1()
        return out

    @classmethod
    def run_v1(cls, **inputs: Any) -> tuple | dict:
        """What a V1 ComfyUI calls (``FUNCTION``): ``execute`` with V1's return convention."""
        out = cls.execute(**inputs)
        return {"ui": out.ui, "result": out.args} if out.ui else out.args
