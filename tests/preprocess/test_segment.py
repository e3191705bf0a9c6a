"""SAM2 video-predictor path with a tiny SAM2 built from a small config (real sam2 code)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wan_animate.errors import CheckpointError, InputError
from wan_animate.preprocess.keypoints import PoseMeta
from wan_animate.preprocess.segment import fill_empty_masks, masks_from_segmentation

torch = pytest.importorskip("torch")


def tiny_cfg() -> dict[str, Any]:
    """A ~0.6 M-parameter SAM2 (Hiera, 128 px) with the official config schema."""
    pe = lambda n: {"_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine", "num_pos_feats": n,
                    "normalize": True, "scale": None, "temperature": 10000}
    d, mem = 32, 16
    att = lambda **kw: dict({"_target_": "sam2.modeling.sam.transformer.RoPEAttention", "rope_theta": 10000.0,
                             "feat_sizes": [8, 8], "embedding_dim": d, "num_heads": 1, "downsample_rate": 1,
                             "dropout": 0.0}, **kw)
    return {"model": {
        "_target_": "sam2.modeling.sam2_base.SAM2Base",
        "image_encoder": {"_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder", "scalp": 1,
            "trunk": {"_target_": "sam2.modeling.backbones.hieradet.Hiera", "embed_dim": 8, "num_heads": 1,
                      "stages": [1, 1, 1, 1], "global_att_blocks": [],
                      "window_pos_embed_bkg_spatial_size": [4, 4], "window_spec": [4, 4, 4, 4]},
            "neck": {"_target_": "sam2.modeling.backbones.image_encoder.FpnNeck", "position_encoding": pe(d),
                     "d_model": d, "backbone_channel_list": [64, 32, 16, 8], "fpn_top_down_levels": [2, 3],
                     "fpn_interp_model": "nearest"}},
        "memory_attention": {"_target_": "sam2.modeling.memory_attention.MemoryAttention", "d_model": d,
            "pos_enc_at_input": True, "num_layers": 1,
            "layer": {"_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer", "activation": "relu",
                      "dim_feedforward": 64, "dropout": 0.0, "pos_enc_at_attn": False, "d_model": d,
                      "pos_enc_at_cross_attn_keys": True, "pos_enc_at_cross_attn_queries": False,
                      "self_attention": att(), "cross_attention": att(rope_k_repeat=True, kv_in_dim=mem)}},
        "memory_encoder": {"_target_": "sam2.modeling.memory_encoder.MemoryEncoder", "out_dim": mem, "in_dim": d,
            "position_encoding": pe(mem),
            "mask_downsampler": {"_target_": "sam2.modeling.memory_encoder.MaskDownSampler",
                                 "kernel_size": 3, "stride": 2, "padding": 1, "embed_dim": d},
            "fuser": {"_target_": "sam2.modeling.memory_encoder.Fuser", "num_layers": 1,
                      "layer": {"_target_": "sam2.modeling.memory_encoder.CXBlock", "dim": d, "kernel_size": 7,
                                "padding": 3, "layer_scale_init_value": 1e-6, "use_dwconv": True}}},
        "num_maskmem": 3, "image_size": 128, "sigmoid_scale_for_mem_enc": 20.0, "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True, "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": True, "multimask_output_in_sam": True, "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True, "add_tpos_enc_to_obj_ptrs": False,
        "only_obj_ptrs_in_the_past_for_eval": True, "pred_obj_scores": True, "pred_obj_scores_mlp": True,
        "fixed_no_obj_ptr": True, "multimask_output_for_tracking": True, "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0, "multimask_max_pt_num": 1, "use_mlp_for_obj_ptr_proj": True,
        "compile_image_encoder": False}}


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    pytest.importorskip("sam2")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = instantiate(OmegaConf.create(cfg).model, _recursive_=True)
    path = tmp_path_factory.mktemp("sam2") / "tiny_sam2.pt"
    torch.save({"model": model.state_dict()}, path)
    return path, cfg


def _metas(t: int, h: int, w: int) -> list[PoseMeta]:
    body = np.tile([[0.5, 0.5, 0.9]], (20, 1))
    z = np.zeros((21, 3))
    return [PoseMeta(w, h, body, z, z, np.zeros((69, 3))) for _ in range(t)]


def test_tiny_sam2_tracks_through_the_video(tiny_sam2: tuple[Path, dict[str, Any]]) -> None:
    from wan_animate.preprocess.segment import build_sam2_predictor, sam2_masks
    path, cfg = tiny_sam2
    pred = build_sam2_predictor(path, cfg)
    assert pred.fill_hole_area == 8 and pred.binarize_mask_from_pts_for_mem_enc  # official settings
    frames = np.random.default_rng(0).integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)
    seen: list[int] = []
    masks = sam2_masks(pred, frames, _metas(6, 48, 64), on_progress=lambda d, n: seen.append(d))
    assert masks.shape == (6, 48, 64) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    assert sorted(seen) == list(range(1, 7))


def test_sam2_checkpoint_errors(tiny_sam2: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from wan_animate.preprocess.segment import build_sam2_predictor
    path, cfg = tiny_sam2
    with pytest.raises(CheckpointError, match="missing SAM2 checkpoint"):
        build_sam2_predictor(tmp_path / "nope.pt", cfg)
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"unrelated.weight": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match="does not fit"):
        build_sam2_predictor(bad, cfg)


def test_mask_helpers() -> None:
    seg = np.zeros((3, 4, 4), np.float32)
    seg[0, 1:3, 1:3] = 0.9
    masks = masks_from_segmentation(seg)
    filled, n = fill_empty_masks(masks)
    assert n == 2 and (filled[2] == masks[0]).all()
    with pytest.raises(InputError, match="every frame"):
        fill_empty_masks(np.zeros((2, 4, 4), np.uint8))
