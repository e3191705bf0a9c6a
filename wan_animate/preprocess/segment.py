"""Character masks for replace mode: SAM2's video predictor prompted from keypoints (the
official way), or a person segmentation from the keypoint backend (MediaPipe) otherwise.

Masks are uint8 {0, 1} [T, H, W].
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from wan_animate.errors import Cancelled, CheckpointError, InputError
from wan_animate.preprocess.detection import nearest_valid
from wan_animate.preprocess.keypoints import PoseMeta

SAM2_FILE = "sam2/sam2_hiera_large.pt"
SAM2_CONFIG = "configs/sam2/sam2_hiera_l.yaml"
CHUNK = 400                                   # frames per fresh SAM2 state
PROMPT_POINTS = (0, 1, 2, 5, 8, 11, 10, 13)   # Nose, Neck, shoulders, hips, ankles
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The official post-processing settings of the SAM2 video predictor.
SAM2_OVERRIDES = {
    "sam_mask_decoder_extra_args": {"dynamic_multimask_via_stability": True,
                                    "dynamic_multimask_stability_delta": 0.05,
                                    "dynamic_multimask_stability_thresh": 0.98},
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 8,
}


def build_sam2_predictor(ckpt_path: str | Path, config: str | Mapping[str, Any] = SAM2_CONFIG,
                         device: str = "cpu") -> Any:
    """A SAM2 video predictor with the official post-processing settings.

    ``config``: a config path inside the sam2 package (default: Hiera-L) or a mapping with a
    ``model`` entry (same schema). The checkpoint is ``{"model": state_dict}``, loaded strictly.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise CheckpointError(f"missing SAM2 checkpoint: {ckpt_path}")
    try:
        import sam2
        import torch
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
    except ImportError as e:
        raise CheckpointError("the SAM2 mask path needs `SAM2_BUILD_CUDA=0 pip install "
                              f"--no-build-isolation sam2` (and hydra-core, iopath) ({e})") from e
    if isinstance(config, str):
        cfg_path = Path(sam2.__file__).parent / config
        if not cfg_path.is_file():
            raise CheckpointError(f"SAM2 config {config} not found in the sam2 package")
        cfg = OmegaConf.load(cfg_path)
    else:
        cfg = OmegaConf.create(dict(config))
    cfg.model._target_ = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    cfg.model = OmegaConf.merge(cfg.model, OmegaConf.create(SAM2_OVERRIDES))
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["model"]
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt_path} does not fit the SAM2 config: {e}") from e
    return model.to(device).eval()


def _video_tensor(frames: np.ndarray, size: int) -> Any:
    """uint8 [T, H, W, 3] RGB -> float32 [T, 3, size, size], PIL-resized, ImageNet-normalised."""
    import torch
    from PIL import Image
    out = torch.zeros(frames.shape[0], 3, size, size, dtype=torch.float32)
    for t, f in enumerate(frames):
        img = np.array(Image.fromarray(f).convert("RGB").resize((size, size))) / 255.0
        out[t] = torch.from_numpy(img).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (out - mean) / std


def _init_state(predictor: Any, frames: np.ndarray) -> dict[str, Any]:
    """The predictor's inference state for in-memory frames (sam2 1.1 state layout)."""
    from collections import OrderedDict
    dev = predictor.device
    images = _video_tensor(frames, predictor.image_size).to(dev)
    state: dict[str, Any] = {
        "images": images, "num_frames": len(images), "offload_video_to_cpu": False,
        "offload_state_to_cpu": False, "video_height": frames.shape[1],
        "video_width": frames.shape[2], "device": dev, "storage_device": dev,
        "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {},
        "constants": {}, "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(),
        "obj_ids": [], "output_dict_per_obj": {}, "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    predictor._get_image_feature(state, frame_idx=0, batch_size=1)
    return state


def _chunks(n: int) -> list[tuple[int, int]]:
    steps = 1 if n < CHUNK else (n + CHUNK) // CHUNK
    return [(i * CHUNK, min((i + 1) * CHUNK, n)) for i in range(steps) if i * CHUNK < n]


def sam2_masks(predictor: Any, frames: np.ndarray, metas: list[PoseMeta],
               on_progress: Callable[[int, int], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """Track the character with SAM2 through ``frames`` uint8 [T, H, W, 3].

    Per chunk of 400 frames: positive clicks at 8 body points on about 4 key frames, then
    propagation; mask = logits > 0. Returns uint8 [T, H, W].
    """
    import torch
    # Ported from Wan2.2 .../preprocess/process_pipepline.py::ProcessPipeline.get_mask
    t_len, h, w = frames.shape[:3]
    out = np.zeros((t_len, h, w), np.uint8)
    wh = np.array([[metas[0].width, metas[0].height]])
    for lo, hi in _chunks(t_len):
        n = hi - lo
        step = n // (4 if n > 4 else 1)
        with torch.inference_mode():
            state = _init_state(predictor, frames[lo:hi])
            predictor.reset_state(state)
            for k in range(0, n, step):
                pts = (metas[lo + k].body[list(PROMPT_POINTS), :2] * wh).astype(np.int32)
                predictor.add_new_points_or_box(inference_state=state, frame_idx=k, obj_id=1,
                                                points=pts, labels=np.ones(len(pts), np.int32))
            for idx, _, logits in predictor.propagate_in_video(state):
                if cancelled is not None and cancelled():
                    raise Cancelled("preprocessing cancelled")
                out[lo + idx] = (logits[0, 0] > 0.0).cpu().numpy().astype(np.uint8)
                if on_progress is not None:
                    on_progress(lo + idx + 1, t_len)
    return out


def masks_from_segmentation(seg: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """[T, H, W] person probabilities -> uint8 {0, 1} masks (> threshold)."""
    return (seg > threshold).astype(np.uint8)


def fill_empty_masks(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace empty masks by the nearest non-empty one; returns (masks, number replaced)."""
    nonempty = masks.reshape(masks.shape[0], -1).any(axis=1)
    if not nonempty.any():
        raise InputError("the character mask is empty in every frame (no person found)")
    empty = ~nonempty
    if empty.any():
        masks = masks.copy()
        src = nearest_valid(nonempty)
        masks[empty] = masks[src[empty]]
    return masks, int(empty.sum())
