"""Every node: importable without ComfyUI, schema sane, V3 and V1 surfaces consistent."""
from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from wan_animate.sampling.options import SampleOptions

ROOT = Path(__file__).resolve().parents[2]
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
EXPECTED = {"WanAnimateModelLoader", "WanAnimatePreprocess", "WanAnimateReplacePreprocess",
            "WanAnimateSampler", "WanAnimateDecode", "WanAnimateUnload", "WanAnimateModelStatus"}


def test_pack_imports_with_comfyui_blocked() -> None:
    """A fresh interpreter with comfy, comfy_api, folder_paths, server and nodes blocked."""
    code = f"""
import importlib.util, sys
for name in ("comfy", "comfy_api", "folder_paths", "server", "nodes", "execution"):
    sys.modules[name] = None
spec = importlib.util.spec_from_file_location("pack", {str(ROOT / "__init__.py")!r})
pack = importlib.util.module_from_spec(spec); sys.modules["pack"] = pack; spec.loader.exec_module(pack)
assert sorted(pack.NODE_CLASS_MAPPINGS) == {sorted(EXPECTED)!r}, pack.NODE_CLASS_MAPPINGS
assert {str(ROOT)!r} in sys.path
for cls in pack.NODE_CLASS_MAPPINGS.values():
    cls.define_schema(); cls.INPUT_TYPES()
heavy = [m for m in ("mediapipe", "onnxruntime", "sam2", "jax") if m in sys.modules]
assert not heavy, heavy
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_mappings(pack, nodes) -> None:
    assert set(pack.NODE_CLASS_MAPPINGS) == EXPECTED == {c.__name__ for c in nodes.NODES}
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == {n: c.define_schema().display_name
                                               for n, c in pack.NODE_CLASS_MAPPINGS.items()}
    assert callable(pack.comfy_entrypoint)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_is_sane(nodes, name: str) -> None:
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    s = cls.define_schema()
    assert s.node_id == name and name.startswith("WanAnimate")
    assert s.category.startswith("WanAnimate/") and s.display_name and s.description
    for ids in ([i.id for i in s.inputs], [o.display_name for o in s.outputs]):
        assert len(set(ids)) == len(ids), ids
    for i in s.inputs:
        where = f"{name}.{i.id}"
        assert i.tooltip, f"{where}: no tooltip"
        kind = str(i.io_type)
        if kind not in WIDGETS:
            continue
        assert i.default is not None, f"{where}: widget without default"
        if kind in ("INT", "FLOAT"):
            assert None not in (i.min, i.max, i.step), f"{where}: min/max/step missing"
            assert i.min <= i.default <= i.max, f"{where}: default {i.default} outside {i.min}..{i.max}"
            if kind == "INT":
                assert (i.default - i.min) % i.step == 0, f"{where}: default off the step grid"
        if kind == "COMBO":
            assert i.default in i.options, f"{where}: default {i.default!r} not in {i.options}"
    for o in s.outputs:
        assert o.display_name, f"{name}: output without a name"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_execute_takes_exactly_the_schema_inputs(nodes, name: str) -> None:
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    s = cls.define_schema()
    params = inspect.signature(cls.execute).parameters
    kwargs = [p for p in params.values() if p.kind is p.VAR_KEYWORD]
    named = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
    for i in s.inputs:
        if i.id in named:
            assert (params[i.id].default is not inspect.Parameter.empty) == bool(i.optional), i.id
        else:
            assert kwargs, f"{name}.execute lacks input {i.id}"
    assert named <= {i.id for i in s.inputs}
    if "validate_inputs" in cls.__dict__:
        names = inspect.signature(cls.validate_inputs).parameters
        assert set(names) <= {i.id for i in s.inputs} and "kwargs" not in names


def test_sampler_widgets_are_sample_options(nodes) -> None:
    s = nodes.WanAnimateSampler.define_schema()
    named = set(inspect.signature(nodes.WanAnimateSampler.execute).parameters)
    widgets = {i.id for i in s.inputs} - named
    assert widgets == {f.name for f in dataclasses.fields(SampleOptions)}
    defaults = SampleOptions()
    for i in s.inputs:
        if i.id in widgets:
            assert i.default == getattr(defaults, i.id), i.id        # official defaults


def test_progress_nodes_ask_for_their_node_id(nodes) -> None:
    for cls in (nodes.WanAnimatePreprocess, nodes.WanAnimateReplacePreprocess, nodes.WanAnimateSampler,
                nodes.WanAnimateDecode):
        assert [h.value for h in cls.define_schema().hidden] == ["UNIQUE_ID"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_v1_fallback_surface(nodes, name: str) -> None:
    """What a ComfyUI without comfy_api reads through NODE_CLASS_MAPPINGS."""
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    s = cls.define_schema()
    spec = cls.INPUT_TYPES()
    assert list(spec["required"]) == [i.id for i in s.inputs if not i.optional]
    assert list(spec.get("optional", {})) == [i.id for i in s.inputs if i.optional]
    for i in s.inputs:
        kind, opts = (spec["optional"] if i.optional else spec["required"])[i.id]
        assert kind == (i.options if str(i.io_type) == "COMBO" else i.io_type)
        assert opts.get("tooltip") == i.tooltip
    assert cls.RETURN_TYPES == tuple(o.io_type for o in s.outputs)
    assert cls.CATEGORY == s.category and cls.OUTPUT_NODE == s.is_output_node
    assert callable(getattr(cls(), cls.FUNCTION))
    assert hasattr(cls, "VALIDATE_INPUTS") == ("validate_inputs" in cls.__dict__)


def test_node_files_stay_small() -> None:
    for path in sorted((ROOT / "nodes").glob("*.py")):
        n = len(path.read_text().splitlines())
        assert n <= 300, f"{path.name}: {n} lines (STYLE: node modules <= 300)"
