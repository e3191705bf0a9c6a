"""Model Status and Unload nodes."""
from __future__ import annotations

import torch

from wan_animate import engine

from nodes_testkit import run_node


def test_status_of_a_complete_and_a_missing_folder(nodes, tiny_ckpt, tmp_path) -> None:
    text, ok = run_node(nodes.WanAnimateModelStatus, checkpoint="(use ckpt_path)", ckpt_path=str(tiny_ckpt))
    assert ok is True and "can generate: yes" in text and str(tiny_ckpt) in text
    out = nodes.WanAnimateModelStatus.execute(checkpoint="(use ckpt_path)", ckpt_path=str(tmp_path / "no"))
    assert out.args[1] is False and "not a folder" in out.args[0] and out.ui == {"text": [out.args[0]]}
    (tmp_path / "empty").mkdir()
    text, ok = run_node(nodes.WanAnimateModelStatus, checkpoint="(use ckpt_path)",
                        ckpt_path=str(tmp_path / "empty"))
    assert ok is False and "MISSING" in text
    assert nodes.WanAnimateModelStatus.fingerprint_inputs() != nodes.WanAnimateModelStatus.fingerprint_inputs()


def test_unload_frees_models_and_passes_images_through(nodes, tiny_ckpt) -> None:
    (model,) = run_node(nodes.WanAnimateModelLoader, checkpoint="(use ckpt_path)", ckpt_path=str(tiny_ckpt),
                        dtype="auto", attention="auto", gpus=1, fsdp=True, relighting_lora=False)
    model._models()                                               # weights in memory
    assert engine._LOADED
    images = torch.rand(2, 16, 16, 3)
    (out,) = run_node(nodes.WanAnimateUnload, images=images, model=model)
    assert out is images and not engine._LOADED and not model.loaded
    assert nodes.WanAnimateUnload.execute().args == (None,)          # nothing connected
