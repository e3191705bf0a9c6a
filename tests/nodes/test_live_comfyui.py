"""The pack in a real ComfyUI server (runs only when COMFY_DIR and COMFY_PYTHON are set).

Uses the harness in ../shared/tools/comfy: serve.sh starts ComfyUI (CPU) with a copy of the
pack named ComfyUI-WanAnimate-MultiGPU and a models folder holding a tiny checkpoint as
``models/wan_animate/Wan2.2-Animate-14B``; the sample videos go to its input folder under
the names the workflows use. Checks: /object_info lists every node with our schema; both API
workflows run from the queue (small sizes) with one progress event per sampler step and a
video comes out; the UI workflows load in the graph editor with no missing node (screenshot)
and the frontend converts them to our API files; an interrupt stops the sampler within one
step and the next run works, in-process (gpus=1) and on a worker pool of 2 CPU ranks (gpus=2),
and the Unload node stops that pool. The ComfyUI environment needs the pack's requirements.txt.

WAN_ANIMATE_LIVE_OUT=DIR keeps the screenshots and videos there (default: a pytest tmp dir).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(os.environ.get("WAN_ANIMATE_SHARED", ROOT.parent / "shared")).resolve() / "tools" / "comfy"
PACK = "ComfyUI-WanAnimate-MultiGPU"
PORT = int(os.environ.get("WAN_ANIMATE_LIVE_PORT", "8491"))
NODE_IDS = ("WanAnimateModelLoader", "WanAnimatePreprocess", "WanAnimateReplacePreprocess",
            "WanAnimateSampler", "WanAnimateDecode", "WanAnimateUnload", "WanAnimateModelStatus")
MEDIA = {"wan_animate_animate_video.mp4": "animate/video.mp4", "wan_animate_animate_ref.jpeg": "animate/image.jpeg",
         "wan_animate_replace_video.mp4": "replace/video.mp4", "wan_animate_replace_ref.jpeg": "replace/image.jpeg"}
# Small enough for CPU: ~160x96 frames at 4 fps, 9-frame clips (several clips), 3 steps.
SMALL = {"5": {"width": 160, "height": 96, "target_fps": 4}, "6": {"frame_num": 9, "steps": 3}}
FRONTEND_EXTRAS = {"video-preview", "upload"}

pytestmark = pytest.mark.skipif(
    not (os.environ.get("COMFY_DIR") and os.environ.get("COMFY_PYTHON")),
    reason="live ComfyUI test: set COMFY_DIR (a ComfyUI checkout) and COMFY_PYTHON (its environment's python)")


def sh(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def get(path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=120) as r:
        return json.load(r)


def small_workflow(name: str, folder: Path, **sampler: Any) -> Path:
    wf = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    for node, values in SMALL.items():
        wf[node]["inputs"].update(values)
    wf["6"]["inputs"].update(sampler)
    path = folder / f"{name}_{len(list(folder.glob('*.json')))}.json"
    path.write_text(json.dumps(wf))
    return path


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("WAN_ANIMATE_LIVE_OUT")
    path = Path(env) if env else tmp_path_factory.mktemp("live")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Any:
    """A running ComfyUI with the pack; yields its run folder; stopped and removed afterwards."""
    from wan_animate.checkpoints.tiny import write_tiny_checkpoint

    probe = sh(os.environ["COMFY_PYTHON"], "-c", "import mediapipe, cv2, ftfy, einops, safetensors")
    assert probe.returncode == 0, ("the ComfyUI environment lacks the pack's requirements; install them "
                                   f"with {HARNESS}/install_pack_requirements.sh {ROOT}\n{probe.stderr[-800:]}")
    base = tmp_path_factory.mktemp("comfy")
    pack = base / PACK
    shutil.copytree(ROOT, pack, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", ".pytest_cache", "tests", "bench", "out", "tmp"))
    write_tiny_checkpoint(base / "models" / "wan_animate" / "Wan2.2-Animate-14B")
    r = sh(str(HARNESS / "serve.sh"), str(pack), str(PORT),
           env={"MODELS_DIR": str(base / "models"), "PYTHONDONTWRITEBYTECODE": "1"}, timeout=300)
    run_dir = re.search(r"^RUN_DIR=(.+)$", r.stdout, re.M)
    try:
        assert r.returncode == 0, f"serve.sh exit {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
        assert run_dir, r.stdout
        for name, src in MEDIA.items():
            shutil.copy(samples / src, Path(run_dir.group(1)) / "input" / name)
        yield Path(run_dir.group(1))
    finally:
        if run_dir:
            sh(str(HARNESS / "stop.sh"), run_dir.group(1), "--clean", timeout=60)


def test_object_info_lists_every_node(server: Path, nodes) -> None:
    info = get("/object_info")
    for node_id in NODE_IDS:
        assert node_id in info, f"{node_id} missing from /object_info"
        spec = info[node_id]
        assert spec["python_module"] == f"custom_nodes.{PACK}"
        assert spec["category"].startswith("WanAnimate/")
        schema = nodes.NODE_CLASS_MAPPINGS[node_id].define_schema()
        assert list(spec["input"]["required"]) == [i.id for i in schema.inputs if not i.optional]
        assert list(spec["input"].get("optional", {})) == [i.id for i in schema.inputs if i.optional]
        assert spec["output"] == [str(o.io_type) for o in schema.outputs]
    checkpoint = info["WanAnimateModelLoader"]["input"]["required"]["checkpoint"][1]
    assert checkpoint["options"][0] == "Wan2.2-Animate-14B"            # found in models/wan_animate/
    templates = get("/workflow_templates")                             # workflows/ served as templates
    assert sorted(templates[PACK]) == ["animate", "replace"]


def sampler_progress(output: str) -> list[tuple[int, int]]:
    return [(int(v), int(m)) for v, m in re.findall(r"progress node 6 \(WanAnimateSampler\): (\d+)/(\d+)", output)]


@pytest.mark.parametrize("name", ["animate", "replace"])
def test_api_workflow_runs_from_the_queue(server: Path, out_dir: Path, name: str) -> None:
    from wan_animate.preprocess.video_io import read_video

    wf = small_workflow(name, out_dir)
    r = sh(sys.executable, str(HARNESS / "run_workflow.py"), "--port", str(PORT), "--workflow", str(wf),
           "--expect-nodes", ",".join(NODE_IDS), "--timeout", "800", "--download", str(out_dir / name))
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    steps = sampler_progress(r.stdout)
    total = steps[-1][1]
    assert steps == [(v, total) for v in range(1, total + 1)]           # one event per step, in order
    assert total % SMALL["6"]["steps"] == 0 and total // SMALL["6"]["steps"] >= 2   # several clips
    (video,) = sorted((out_dir / name).glob("*.mp4"))
    frames, fps = read_video(video)
    assert frames.shape[0] > 9 and frames.shape[1] % 16 == 0 and frames.shape[2] % 16 == 0
    assert fps == pytest.approx(SMALL["5"]["target_fps"])


@pytest.mark.parametrize("name", ["animate", "replace"])
def test_ui_workflow_loads_in_the_graph_editor(server: Path, out_dir: Path, name: str) -> None:
    png, api = out_dir / f"{name}_graph.png", out_dir / f"{name}_from_ui.json"
    r = sh(sys.executable, str(HARNESS / "screenshot.py"), "--port", str(PORT),
           "--workflow", str(ROOT / "workflows" / f"{name}.json"), "--out", str(png), "--export-api", str(api),
           "--width", "2300", "--height", "1350", "--console-errors", timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "missing" not in r.stdout.lower() and png.stat().st_size > 50_000
    print(f"\ngraph editor screenshot: {png}")
    exported = json.loads(api.read_text())
    ours = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    strip = lambda wf: {k: (v["class_type"], {i: x for i, x in v["inputs"].items() if i not in FRONTEND_EXTRAS})
                        for k, v in wf.items()}  # noqa: E731
    assert strip(exported) == strip(ours)


@pytest.mark.parametrize("gpus", [1, 2])
def test_interrupt_stops_within_one_step_and_the_next_run_works(server: Path, out_dir: Path, gpus: int) -> None:
    """gpus=2: the worker pool (2 gloo ranks on CPU; the tiny DiT has 2 heads) inside ComfyUI."""
    wf = small_workflow("animate", out_dir, seed=1234 + gpus, steps=30)
    patch_json(wf, {"1": {"gpus": gpus}})
    r = sh(os.environ["COMFY_PYTHON"], str(Path(__file__).with_name("comfy_live_client.py")), "--port", str(PORT),
           "--workflow", str(wf), "--interrupt-node", "6", "--interrupt-at", "3", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["state"] == "interrupted", summary
    events = summary["events"]
    sent = next(i for i, e in enumerate(events) if e["type"] == "interrupt_sent")
    after = [e for e in events[sent:] if e["type"] == "progress" and e["node"] == "6"]
    assert len(after) <= 1, after                                       # at most the step in flight
    assert events[-1]["node_type"] == "WanAnimateSampler"
    log = (server / "comfyui.log").read_text()
    stopped = [int(k) for k in re.findall(r"WanAnimate: .*cancelled.*?step (\d+)/30", log)]
    assert stopped and stopped[-1] <= summary["interrupt_sent_after"] + 2, (stopped, summary)
    again = small_workflow("animate", out_dir, seed=99 + gpus)
    patch_json(again, {"1": {"gpus": gpus}})
    r = sh(sys.executable, str(HARNESS / "run_workflow.py"), "--port", str(PORT), "--workflow", str(again),
           "--timeout", "800")
    assert r.returncode == 0 and "execution_success" in r.stdout, r.stdout[-4000:]
    assert sampler_progress(r.stdout)[-1][0] == sampler_progress(r.stdout)[-1][1]


def test_unload_stops_the_worker_pool(server: Path, out_dir: Path) -> None:
    pid = int(re.search(r"^SERVER_PID=(\d+)", (server / "server.env").read_text(), re.M).group(1))
    assert workers(pid), "the gpus=2 run should have left its pool running for reuse"
    wf = out_dir / "unload.json"
    wf.write_text(json.dumps({"1": {"class_type": "WanAnimateUnload", "inputs": {}}}))
    r = sh(sys.executable, str(HARNESS / "run_workflow.py"), "--port", str(PORT), "--workflow", str(wf),
           "--timeout", "120")
    assert r.returncode == 0 and "unloaded 1 Wan Animate model(s)" in r.stdout, r.stdout[-3000:]
    deadline = time.monotonic() + 10
    while workers(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workers(pid)


def patch_json(path: Path, values: dict[str, dict[str, Any]]) -> None:
    wf = json.loads(path.read_text())
    for node, inputs in values.items():
        wf[node]["inputs"].update(inputs)
    path.write_text(json.dumps(wf))


def workers(server_pid: int) -> list[int]:
    """Pids of the server's live spawned child processes (the pool's ranks; not the resource tracker)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text()
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        ppid = re.search(r"^PPid:\s+(\d+)", status, re.M)
        if ppid and int(ppid.group(1)) == server_pid and "multiprocessing.spawn" in cmd:
            out.append(int(proc.name))
    return out
