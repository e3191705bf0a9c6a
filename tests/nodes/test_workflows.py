"""The example workflows: UI and API files agree with each other and with the node schemas.

Only ComfyUI core nodes may sit around ours (no other pack). The live test
(test_live_comfyui.py) repeats the UI -> API conversion with the real frontend.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("animate", "replace")
FRONTEND_ONLY = {"Note", "MarkdownNote"}
# Core nodes used around ours (ComfyUI 0.3.64 comfy_extras/nodes_video.py, nodes.py):
# widget names in widgets_values order ("*" = a frontend-only widget), input and output types.
CORE = {
    "LoadVideo": (["file", "*upload"], {}, ["VIDEO"]),
    "LoadImage": (["image", "*upload"], {}, ["IMAGE", "MASK"]),
    "GetVideoComponents": ([], {"video": "VIDEO"}, ["IMAGE", "AUDIO", "FLOAT"]),
    "CreateVideo": (["fps"], {"images": "IMAGE", "fps": "FLOAT", "audio": "AUDIO"}, ["VIDEO"]),
    "SaveVideo": (["filename_prefix", "format", "codec"], {"video": "VIDEO"}, []),
}


def load(kind: str, name: str) -> dict[str, Any]:
    path = ROOT / "workflows" / ("api" if kind == "api" else "") / f"{name}.json"
    return json.loads(path.read_text())


def node_info(nodes, class_type: str) -> tuple[list[str], dict[str, str], list[str]]:
    """(widget names in UI order, input types, output types) of a class used in a workflow."""
    if class_type in CORE:
        return CORE[class_type]
    s = nodes.NODE_CLASS_MAPPINGS[class_type].define_schema()
    widgets: list[str] = []
    for i in s.inputs:
        if str(i.io_type) in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
            widgets.append(i.id)
            if getattr(i, "control_after_generate", None):
                widgets.append("*control_after_generate")
    return widgets, {i.id: str(i.io_type) for i in s.inputs}, [str(o.io_type) for o in s.outputs]


def ui_to_api(nodes, ui: dict[str, Any]) -> dict[str, Any]:
    """What the frontend's graphToPrompt makes of a UI workflow (for our simple graphs)."""
    links = {link[0]: link for link in ui["links"]}
    out: dict[str, Any] = {}
    for n in ui["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        widgets, _, _ = node_info(nodes, n["type"])
        values = n.get("widgets_values") or []
        assert len(values) == len(widgets), (n["type"], values, widgets)
        inputs = {w: v for w, v in zip(widgets, values) if not w.startswith("*")}
        for i in n.get("inputs", []):
            if i.get("link") is not None:
                link = links[i["link"]]
                assert link[3] == n["id"], f"link {link} does not end at node {n['id']}"
                inputs[i["name"]] = [str(link[1]), link[2]]
        out[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return out


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_agree(nodes, name: str) -> None:
    api = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in load("api", name).items()}
    assert ui_to_api(nodes, load("ui", name)) == api


@pytest.mark.parametrize("name", NAMES)
def test_only_our_nodes_and_core_nodes(nodes, name: str) -> None:
    allowed = set(nodes.NODE_CLASS_MAPPINGS) | set(CORE)
    assert {v["class_type"] for v in load("api", name).values()} <= allowed
    assert {n["type"] for n in load("ui", name)["nodes"]} <= allowed | FRONTEND_ONLY


@pytest.mark.parametrize("name", NAMES)
def test_api_values_and_links_match_the_schemas(nodes, name: str) -> None:
    api = load("api", name)
    for nid, node in api.items():
        cls_type = node["class_type"]
        _, in_types, _ = node_info(nodes, cls_type)
        for key, value in node["inputs"].items():
            if isinstance(value, list):                              # a link [node id, output slot]
                src = api[value[0]]
                out_types = node_info(nodes, src["class_type"])[2]
                assert value[1] < len(out_types), (nid, key, value)
                if key in in_types:
                    assert out_types[value[1]] == in_types[key], (nid, key, out_types[value[1]])
        if cls_type not in nodes.NODE_CLASS_MAPPINGS:
            continue
        cls = nodes.NODE_CLASS_MAPPINGS[cls_type]
        spec = {i.id: i for i in cls.define_schema().inputs}
        assert set(node["inputs"]) <= set(spec), (cls_type, set(node["inputs"]) - set(spec))
        missing = [i for i, s in spec.items() if not s.optional and i not in node["inputs"]]
        assert not missing, (cls_type, missing)
        constants = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
        for key, value in constants.items():
            s = spec[key]
            if str(s.io_type) == "COMBO" and key != "checkpoint":     # checkpoint names are per machine
                assert value in s.options, (cls_type, key, value)
            if str(s.io_type) in ("INT", "FLOAT"):
                assert s.min <= value <= s.max, (cls_type, key, value)
        if "validate_inputs" in cls.__dict__ and cls_type != "WanAnimateModelLoader":
            names = inspect.signature(cls.validate_inputs).parameters
            assert cls.validate_inputs(**{k: v for k, v in constants.items() if k in names}) is True


@pytest.mark.parametrize("name", NAMES)
def test_ui_links_are_consistent(nodes, name: str) -> None:
    ui = load("ui", name)
    by_id = {n["id"]: n for n in ui["nodes"]}
    for lid, src, slot, dst, dslot, typ in ui["links"]:
        assert lid in by_id[src]["outputs"][slot]["links"]
        assert by_id[dst]["inputs"][dslot]["link"] == lid
        assert typ == by_id[src]["outputs"][slot]["type"] == node_info(nodes, by_id[src]["type"])[2][slot]
    assert ui["last_link_id"] >= max(link[0] for link in ui["links"])
    assert ui["last_node_id"] >= max(by_id)


def test_modes_are_wired_as_named(nodes) -> None:
    for name in NAMES:
        api = load("api", name)
        (sampler,) = [v for v in api.values() if v["class_type"] == "WanAnimateSampler"]
        (loader,) = [v for v in api.values() if v["class_type"] == "WanAnimateModelLoader"]
        assert sampler["inputs"]["mode"] == name
        assert ("background" in sampler["inputs"]) == ("character_mask" in sampler["inputs"]) == (name == "replace")
        assert loader["inputs"]["relighting_lora"] == (name == "replace")     # official replace setting
        assert any(v["class_type"] == "SaveVideo" for v in api.values())
