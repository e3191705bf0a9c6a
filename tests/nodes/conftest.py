"""Fixtures of the node tests: the pack imported as ComfyUI imports it, a tiny checkpoint,
sample media as IMAGE batches, the node chain run once per session, a fake ComfyUI."""
from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from nodes_testkit import PACK_NAME, SMALL, FakeComfy, import_pack, run_node, sampler_settings, to_image


@pytest.fixture(scope="session")
def pack() -> types.ModuleType:
    return import_pack()


@pytest.fixture(scope="session")
def nodes(pack: types.ModuleType) -> types.ModuleType:
    return sys.modules[f"{PACK_NAME}.nodes"]


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wan_animate.checkpoints.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "Wan2.2-Animate-14B")


@pytest.fixture(scope="session")
def animate_media(samples: Path) -> dict[str, Any]:
    """The first frames of the animate sample video + its reference, as ComfyUI IMAGEs."""
    from wan_animate.preprocess.video_io import read_image, read_video

    frames, fps = read_video(samples / "animate" / "video.mp4")
    return {"video": to_image(frames[:24]), "fps": float(fps),
            "reference": to_image(read_image(samples / "animate" / "image.jpeg")[None])}


@pytest.fixture(scope="session")
def replace_media(samples: Path) -> dict[str, Any]:
    from wan_animate.preprocess.video_io import read_image, read_video

    frames, fps = read_video(samples / "replace" / "video.mp4")
    return {"video": to_image(frames[:20]), "fps": float(fps),
            "reference": to_image(read_image(samples / "replace" / "image.jpeg")[None])}


@pytest.fixture
def fake_comfy(monkeypatch: pytest.MonkeyPatch) -> FakeComfy:
    fake = FakeComfy()
    monkeypatch.setitem(sys.modules, "comfy", fake.package)
    monkeypatch.setitem(sys.modules, "comfy.utils", fake.utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", fake.mm)
    return fake


@pytest.fixture(scope="session")
def loaded_model(nodes: types.ModuleType, tiny_ckpt: Path) -> Any:
    (model,) = run_node(nodes.WanAnimateModelLoader, checkpoint="(use ckpt_path)", ckpt_path=str(tiny_ckpt),
                        dtype="auto", attention="auto", gpus=1, fsdp=True, relighting_lora=False)
    return model


@pytest.fixture(scope="session")
def animate_pre(nodes: types.ModuleType, animate_media: dict[str, Any]) -> tuple:
    """(pose_video, face_video, fps) of Wan Animate Preprocess on the animate sample."""
    pytest.importorskip("mediapipe")
    return run_node(nodes.WanAnimatePreprocess, **animate_media, **SMALL, retarget=False, backend="auto")


@pytest.fixture(scope="session")
def replace_pre(nodes: types.ModuleType, replace_media: dict[str, Any]) -> tuple:
    """(pose_video, face_video, background, character_mask, fps) on the replace sample."""
    pytest.importorskip("mediapipe")
    media = {k: v for k, v in replace_media.items() if k != "reference"}
    return run_node(nodes.WanAnimateReplacePreprocess, **media, **SMALL, backend="auto", segmenter="auto",
                    mask_kernel=7, mask_iterations=3, mask_w_len=1, mask_h_len=1)


@pytest.fixture(scope="session")
def animate_latent(nodes: types.ModuleType, loaded_model: Any, animate_pre: tuple,
                   animate_media: dict[str, Any]) -> Any:
    pose, face, fps = animate_pre
    (latent,) = run_node(nodes.WanAnimateSampler, model=loaded_model, reference=animate_media["reference"],
                         pose_video=pose, face_video=face, fps=fps, **sampler_settings())
    return latent

