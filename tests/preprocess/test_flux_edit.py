"""``--use_flux``: clear errors before any work, the official prompt choice, the bone ratios
from edited skeletons, and (with diffusers installed) a real run of a tiny FluxKontextPipeline."""
from __future__ import annotations

import functools
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from wan_animate.errors import CheckpointError, InputError
from wan_animate.preprocess import flux_edit, pipeline
from wan_animate.preprocess.detection import Detections
from wan_animate.preprocess.flux_edit import (PROMPT_ARMS_DOWN, PROMPT_FACE, PROMPT_T_POSE, SUFFIX_ARMS,
                                              SUFFIX_LEGS, edited_bone_ratios, editing_prompts, flux_folder,
                                              retarget_with_ratios, scale_compensation)
from wan_animate.preprocess.keypoints import PoseMeta, metas_from_wholebody
from wan_animate.preprocess.pipeline import PreprocessOptions, preprocess, save_preprocessed
from wan_animate.preprocess.render import draw_pose
from wan_animate.preprocess.retarget import RetargetTrace, retarget_sequence

# A standing person, COCO-WholeBody body + feet (normalised x, y); face and hands built around it.
BODY = np.array([[.50, .12], [.52, .10], [.48, .10], [.54, .11], [.46, .11], [.58, .22], [.42, .22],
                 [.62, .36], [.38, .36], [.63, .48], [.37, .48], [.55, .52], [.45, .52], [.56, .70],
                 [.44, .70], [.56, .88], [.44, .88], [.58, .92], [.60, .91], [.55, .90], [.42, .92],
                 [.40, .91], [.45, .90]])


def wholebody(w: int, h: int, score: float = 0.9, body: np.ndarray = BODY) -> np.ndarray:
    """[133, 3] pixel keypoints of the standing person on a w x h image."""
    kps = np.zeros((133, 3))
    kps[:23, :2] = body
    ang = np.linspace(0, 2 * np.pi, 69)[:68]
    kps[23:91, :2] = body[0] + 0.03 * np.stack([np.cos(ang), np.sin(ang)], 1)
    for start, wrist in ((91, 9), (112, 10)):
        kps[start:start + 21, :2] = body[wrist] + np.linspace(0, 0.05, 21)[:, None] * (0.3, 1)
    kps[:, 2] = score
    return kps * (w, h, 1)


def meta(w: int, h: int, score: float = 0.9, body: np.ndarray = BODY) -> PoseMeta:
    return metas_from_wholebody(wholebody(w, h, score, body)[None], w, h)[0]


def zoomed(m: PoseMeta, f: float, centre: tuple[float, float] = (0.5, 0.5)) -> PoseMeta:
    """``m`` with the person scaled by ``f`` about ``centre`` (normalised), same image size."""
    def z(a: np.ndarray) -> np.ndarray:
        out = a.copy()
        out[:, :2] = (a[:, :2] - centre) * f + centre
        return out
    return PoseMeta(m.width, m.height, z(m.body), z(m.left_hand), z(m.right_hand), z(m.face))


class StubBackend:
    """Finds the standing person (scaled to the image) in every image; counts calls."""

    name = "stub"

    def __init__(self, person: bool = True) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.person = person

    def detect(self, frames: np.ndarray, video: bool = True, segment: bool = False,
               on_progress: Callable[[int, int], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> Detections:
        self.calls.append(frames.shape)
        t, h, w = frames.shape[:3]
        kps = np.stack([wholebody(w, h)] * t)
        return Detections(kps, np.full(t, self.person), np.full(t, self.person))


# ---- errors before any work --------------------------------------------------------------------
@pytest.fixture
def fake_diffusers(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in ``diffusers`` module (only the error paths use it; never run)."""
    mod = types.ModuleType("diffusers")
    mod.FluxKontextPipeline = object  # type: ignore[attr-defined]
    real = importlib.util.find_spec
    fake = ("diffusers", "transformers")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in fake else real(name, *a))
    monkeypatch.setitem(sys.modules, "diffusers", mod)
    return mod


def test_missing_diffusers_fails_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "diffusers" else real(name, *a))
    backend = StubBackend()
    monkeypatch.setattr(pipeline, "make_backend", lambda opts: backend)
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    opts = PreprocessOptions(retarget=True, use_flux=True, ckpt_path=str(tmp_path), fps=-1)
    with pytest.raises(CheckpointError, match="pip install diffusers"):
        preprocess(frames, 30, frames[0], opts)
    assert backend.calls == []                        # nothing was detected first


def test_flux_folder_errors(fake_diffusers: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="--ckpt_path"):
        flux_folder(None)
    with pytest.raises(CheckpointError, match="setup download --with flux") as e:
        flux_folder(tmp_path)
    assert "FLUX.1-Kontext-dev" in str(e.value)
    folder = tmp_path / "FLUX.1-Kontext-dev"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxKontextPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "transformer": ["diffusers", "FluxTransformer2DModel"], "image_encoder": [None, None]}))
    (folder / "vae").mkdir()
    with pytest.raises(CheckpointError, match="missing transformer/"):
        flux_folder(tmp_path)
    (folder / "transformer").mkdir()
    assert flux_folder(tmp_path) == folder
    del fake_diffusers.FluxKontextPipeline                  # a diffusers before Kontext
    with pytest.raises(CheckpointError, match="diffusers >= 0.34"):
        flux_folder(tmp_path)


def test_no_person_in_an_edit_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="FLUX-edited reference"):
        flux_edit._edited_meta(StubBackend(person=False), np.zeros((32, 32, 3), np.uint8), "reference")


# ---- prompts -----------------------------------------------------------------------------------
def test_prompt_choice() -> None:
    land, port = meta(640, 360), meta(360, 640)
    assert editing_prompts([land], port) == (PROMPT_T_POSE + SUFFIX_LEGS, PROMPT_ARMS_DOWN + SUFFIX_LEGS)
    assert editing_prompts([port], land) == (PROMPT_ARMS_DOWN + SUFFIX_LEGS, PROMPT_T_POSE + SUFFIX_LEGS)
    no_legs = BODY.copy()
    no_legs[13:17, 1] = 1.2                                   # knees and ankles below the frame
    assert editing_prompts([meta(640, 360, body=no_legs)], land) == (
        PROMPT_T_POSE + SUFFIX_ARMS, PROMPT_T_POSE + SUFFIX_ARMS)
    # legs seen in a later frame count; so does a leg point at score >= 0.75 only
    assert editing_prompts([meta(640, 360, body=no_legs), land], port)[0] == PROMPT_T_POSE + SUFFIX_LEGS
    assert editing_prompts([meta(640, 360, score=0.74)], port) == (PROMPT_FACE, PROMPT_FACE)
    hidden = BODY.copy()
    hidden[7:17, 1] = 1.5                                     # only the head and shoulders
    assert editing_prompts([meta(640, 360, body=hidden)], port) == (PROMPT_FACE, PROMPT_FACE)
    zero_x = no_legs.copy()
    zero_x[7:11, 0] = 0.0                                     # official quirk: x == 0 is "not visible"
    assert editing_prompts([meta(640, 360, body=zero_x)], port) == (PROMPT_FACE, PROMPT_FACE)


# ---- ratios ------------------------------------------------------------------------------------
def _trace_ratios(first: PoseMeta, ref: PoseMeta) -> list[float]:
    trace = RetargetTrace()
    retarget_sequence(first, ref, [first], trace)
    return trace.bone_ratio_list


@pytest.mark.parametrize("score", [0.9, 0.45])          # height-based scale / sqrt(area) fallback
def test_edited_ratios_without_a_real_edit_are_the_plain_ones(score: float) -> None:
    first, ref = meta(640, 360, score), zoomed(meta(300, 400, score), 0.8)
    assert np.allclose(edited_bone_ratios(first, ref, first, ref), _trace_ratios(first, ref), rtol=1e-12)


@pytest.mark.parametrize("score", [0.9, 0.45])
def test_flux_zoom_is_compensated(score: float) -> None:
    """FLUX redraws the reference at 60 % and the driving frame at 120 %: the ratios stay."""
    first, ref = meta(640, 360, score), zoomed(meta(300, 400, score), 0.8)
    plain = _trace_ratios(first, ref)
    edited = edited_bone_ratios(first, ref, zoomed(first, 1.2), zoomed(ref, 0.6, (0.3, 0.6)))
    assert np.allclose(edited, plain, rtol=1e-2)
    # without the compensation the sqrt(area) case would be off by 2x
    assert scale_compensation(ref, zoomed(ref, 0.6)) == pytest.approx(1 / 0.6)


def test_a_longer_edited_limb_changes_its_ratio_only() -> None:
    first, ref = meta(640, 360), meta(300, 400)
    ref_edit = PoseMeta(ref.width, ref.height, ref.body.copy(), ref.left_hand, ref.right_hand, ref.face)
    ref_edit.body[4, :2] = ref.body[3, :2] + 1.5 * (ref.body[4, :2] - ref.body[3, :2])   # R forearm x1.5
    plain, edited = _trace_ratios(first, ref), edited_bone_ratios(first, ref, first, ref_edit)
    # limbs 3 (RElbow-RWrist) and 5 (LElbow-LWrist) share the larger ratio
    assert edited[3] == pytest.approx(1.5 * plain[3]) and edited[5] == edited[3]
    others = [i for i in range(19) if i not in (3, 5)]
    assert np.allclose(np.array(edited)[others], np.array(plain)[others])


def test_scale_compensation_takes_the_larger_ratio_and_survives_degenerate_edits() -> None:
    m = meta(640, 360)
    e = PoseMeta(m.width, m.height, m.body.copy(), m.left_hand, m.right_hand, m.face)
    e.body[[0, 14, 15, 16, 17], 0] = m.body[0, 0] + (m.body[[0, 14, 15, 16, 17], 0] - m.body[0, 0]) / 2
    assert scale_compensation(m, e) == pytest.approx(2.0)         # head half as wide, same shoulders
    e.body[[0, 14, 15, 16, 17], 0] = 0.5
    e.body[5, :2] = e.body[2, :2]
    assert scale_compensation(m, e) == 1.0


@pytest.mark.parametrize("ref_size,no_legs", [((300, 400), False), ((512, 288), True)])
def test_retarget_with_ratios_is_retarget_sequence(ref_size: tuple[int, int], no_legs: bool) -> None:
    body = BODY.copy()
    if no_legs:
        body[11:17, 1] = 1.3                                    # half body: neck anchor
    rng = np.random.default_rng(1)
    frames = [meta(640, 360, body=body + rng.normal(0, 0.01, body.shape)) for _ in range(3)]
    ref = meta(*ref_size)
    trace = RetargetTrace()
    expect = retarget_sequence(frames[0], ref, frames, trace)
    got = retarget_with_ratios(frames[0], ref, frames, trace.bone_ratio_list)
    for a, b in zip(got, expect):
        for f in ("body", "body_p", "lhand", "lhand_p", "rhand", "rhand_p"):
            assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)


# ---- a real (tiny) FluxKontextPipeline ---------------------------------------------------------
def _tiny_flux(folder: Path) -> None:
    """Save a ~100 k-parameter FluxKontextPipeline (real diffusers classes, small configs)."""
    import torch
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline,
                           FluxTransformer2DModel)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    prompts = (PROMPT_T_POSE, PROMPT_ARMS_DOWN, SUFFIX_LEGS, SUFFIX_ARMS, PROMPT_FACE)
    words = {w for p in prompts for w in p.split()}

    def tokenizer(max_len: int) -> Any:
        vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(sorted(words))}}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                       unk_token="<unk>", model_max_length=max_len)

    torch.manual_seed(0)
    FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4,
                          block_out_channels=(4, 4, 4, 4), layers_per_block=1, latent_channels=1,
                          norm_num_groups=1, sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
                          shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=CLIPTextModel(CLIPTextConfig(vocab_size=128, hidden_size=32, intermediate_size=37,
                                                  num_attention_heads=4, num_hidden_layers=1, projection_dim=32,
                                                  bos_token_id=0, eos_token_id=1, pad_token_id=0)),
        tokenizer=tokenizer(77),
        text_encoder_2=T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=1,
                                               num_heads=4)),
        tokenizer_2=tokenizer(512),
        transformer=FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                           attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                           pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]),
    ).save_pretrained(str(folder))


def test_preprocess_with_a_tiny_flux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("diffusers", minversion="0.34")
    pytest.importorskip("transformers")
    _tiny_flux(tmp_path / "FLUX.1-Kontext-dev")
    config = flux_edit.FluxEditConfig(num_inference_steps=2, max_area=64 * 48, seed=0)
    monkeypatch.setattr(flux_edit, "flux_retarget", functools.partial(flux_edit.flux_retarget, config=config))
    backend = StubBackend()
    monkeypatch.setattr(pipeline, "make_backend", lambda opts: backend)
    frames = np.random.default_rng(0).integers(0, 255, (3, 72, 128, 3), np.uint8)
    stages: list[tuple[str, int, int]] = []
    opts = PreprocessOptions(retarget=True, use_flux=True, ckpt_path=str(tmp_path), fps=-1,
                             resolution_area=(96, 128))
    res = preprocess(frames, 30, frames[0, :, :96], opts, on_progress=lambda *a: stages.append(a))
    rh, rw = res.pose.shape[1:3]
    assert res.reference_edit.shape == (rh, rw, 3) and res.template_edit.shape == frames.shape[1:]
    assert res.reference_edit.dtype == np.uint8 and res.reference_edit.max() > 0
    assert ("flux reference", 2, 2) in stages and ("flux frame", 2, 2) in stages
    # detections: reference, video, then the two edited images at their own sizes
    assert backend.calls[-2:] == [(1, 72, 128, 3), (1, rh, rw, 3)]
    # the stub finds the same person everywhere, so the edit-based ratios equal the plain ones
    plain = retarget_sequence(res.metas[0], meta(rw, rh), res.metas)
    assert np.array_equal(res.pose, np.stack([draw_pose(p) for p in plain]))
    out = save_preprocessed(res, tmp_path / "job", lossless=True)
    assert {"refer_edit.png", "tpl_edit.png"} <= {p.name for p in out.iterdir()}
