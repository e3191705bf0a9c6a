"""Relighting LoRA: parity merged and unmerged, PEFT prefix, zero-touch error."""
from __future__ import annotations

import pytest
import torch

from wan_animate.checkpoints.load import read_safetensors
from wan_animate.errors import CheckpointError
from wan_animate.models.lora import apply_lora, normalize_lora_state, relighting_targets
from wan_animate.parity import dit_animate, relighting_lora


def test_parity_relighting_lora(official_fixtures):
    results = relighting_lora.run(official_fixtures / "relighting_lora")
    assert any(r.name.startswith("unmerged.") for r in results)
    failed = [r.line() for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_peft_prefix_is_accepted_and_equal(official_fixtures):
    state = read_safetensors(official_fixtures / "relighting_lora" / "weights.safetensors")
    prefixed = {f"base_model.model.{k}".replace(".weight", ".default.weight"): v
                for k, v in state.items()}
    a = normalize_lora_state(state, "plain")
    b = normalize_lora_state(prefixed, "prefixed")
    assert [(p.module, p.scale) for p in a] == [(p.module, p.scale) for p in b]
    model, _ = dit_animate.build_dit(official_fixtures / "dit_animate")
    assert apply_lora(model, b, "prefixed") == len(relighting_targets(model))


def test_zero_modules_is_an_error(official_fixtures):
    model, _ = dit_animate.build_dit(official_fixtures / "dit_animate")
    with pytest.raises(CheckpointError, match="0 modules"):
        apply_lora(model, [], "empty.safetensors")
    bad = {"blocks.0.not_a_layer.lora_A.weight": torch.zeros(4, 96),
           "blocks.0.not_a_layer.lora_B.weight": torch.zeros(96, 4)}
    with pytest.raises(CheckpointError, match="not_a_layer"):
        apply_lora(model, normalize_lora_state(bad, "bad"), "bad")
