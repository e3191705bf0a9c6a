"""Parity runner for the preprocessing fixtures (folders with ``cases.json``).

The folder name tells the fixture kind (render, face_bbox, resize, frame_indices, kp_split,
retarget, mask_post, vitpose_decode, clip_plan). Where the official code raises, our code must
raise a clear error (or, where we deliberately do better, return a valid result: noted).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from wan_animate.parity.common import Comparison, compare, error, exact

Case = dict[str, Any]


class _Files:
    """Resolves ``x.png`` / ``arrays.npz:key`` references relative to a fixture folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._npz: dict[Path, Any] = {}

    def __call__(self, ref: str) -> np.ndarray:
        if ".npz:" in ref:
            name, key = ref.split(":", 1)
            path = (self.folder / name).resolve()
            if path not in self._npz:
                self._npz[path] = np.load(path)
            return self._npz[path][key]
        img = cv2.imread(str(self.folder / ref), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise FileNotFoundError(self.folder / ref)
        return img[..., ::-1].copy() if img.ndim == 3 else img


def _t(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(np.asarray(a)))


def _raises(fx: str, name: str, fn: Callable[[], Any], expected: dict[str, Any]) -> Comparison:
    """Official raised ``expected['error']``: ours must raise too."""
    try:
        fn()
    except Exception as e:  # any clear error is acceptable; report it
        return Comparison(fx, name, 0.0, 0.0, None, None, True,
                          f"official {expected['error']['type']}; ours {type(e).__name__}: {e}")
    return error(fx, name, f"official raises {expected['error']['type']}, ours returned")


def _exact_np(fx: str, name: str, ours: np.ndarray, ref: np.ndarray) -> Comparison:
    return exact(fx, name, _t(ours), _t(ref))


# ----------------------------------------------------------------------------- resize
def _run_resize(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.frames import padding_resize, resize_by_area
    out = []
    for c in cases:
        a, e = c["args"], c["expected"]
        img = files(a["image"])
        if c["function"] == "resize_by_area":
            ours = resize_by_area(img, a["target_area"], a.get("divisor", 16))
        else:
            interp = getattr(cv2, a["interpolation"])
            ours = padding_resize(img, a["height"], a["width"], interpolation=interp)
        out.append(_check_image(fx, c["id"], ours, e, files))
    return out


def _sha(arr: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes()).hexdigest()


def _check_image(fx: str, name: str, ours: np.ndarray, e: dict[str, Any], files: _Files,
                 key: str = "image", sha_key: str = "sha256") -> Comparison:
    if key in e:
        return _exact_np(fx, name, ours, files(e[key]))
    ours = np.ascontiguousarray(ours)
    return exact(fx, name + " (sha256)", _sha(ours), e[sha_key])


# ----------------------------------------------------------------------------- frame indices
def _run_frame_indices(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.frames import effective_frame_count, resample_plan, sample_frame_indices
    out = []
    for c in cases:
        a, e = c["args"], c["expected"]
        if c["function"] == "frame_count_rule":
            n = effective_frame_count(a["decord_len"], a["avg_fps"], a["last_frame_timestamp"][-1])
            _, target, idx = resample_plan(n, a["avg_fps"], a["fps"])
            ours = {"frame_num_used": n, "target_num": target, "indices": idx}
            ref = {k: e[k] for k in ours}
        elif "clip_length" in a:
            ours = sample_frame_indices(a["frame_num"], a["video_fps"], a["clip_length"], a["train_fps"])
            ref = e["indices"]
        else:
            eff, target, idx = resample_plan(a["frame_num"], a["video_fps"], a["fps"])
            ours = {"effective_fps": eff, "target_num": target, "indices": idx}
            ref = {k: e[k] for k in ours}
        out.append(exact(fx, c["id"], ours, ref))
    return out


# ----------------------------------------------------------------------------- kp split
def _run_kp_split(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.keypoints import metas_from_wholebody, split_wholebody
    out = []
    for c in cases:
        a, e = c["args"], c["expected"]
        if c["function"] == "split_kp2ds_for_aa":
            ours = split_wholebody(files(a["kp2ds"]))
            for key, arr in zip(("body", "lhand", "rhand", "face"), ours):
                out.append(_exact_np(fx, f"{c['id']}.{key}", arr, files(e[key])))
            continue
        seq = files(a["kp2ds_seq"])
        fn = lambda: metas_from_wholebody(seq, a["width"], a["height"])  # noqa: E731
        if "error" in e:
            out.append(_raises(fx, c["id"], fn, e))
            continue
        metas = fn()
        for key, attr in (("keypoints_body", "body"), ("keypoints_left_hand", "left_hand"),
                          ("keypoints_right_hand", "right_hand"), ("keypoints_face", "face")):
            ours = np.stack([getattr(m, attr) for m in metas])
            out.append(_exact_np(fx, f"{c['id']}.{key}", ours, files(e[key])))
    return out


# ----------------------------------------------------------------------------- render
def _pose_from_meta(meta: dict[str, Any]) -> Any:
    from wan_animate.preprocess.keypoints import PoseMeta
    arr = lambda k: np.asarray(meta[k], dtype=np.float64)  # noqa: E731
    face = arr("keypoints_face") if "keypoints_face" in meta else np.zeros((69, 3))
    return PoseMeta(meta["width"], meta["height"], arr("keypoints_body"),
                    arr("keypoints_left_hand"), arr("keypoints_right_hand"), face)


def _run_render(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.frames import padding_resize
    from wan_animate.preprocess.render import draw_pose
    out = []
    for c in cases:
        a, e = c["args"], c["expected"]
        pose = _pose_from_meta(a["meta"]).to_pixels()
        h, w = a.get("canvas_hw", [pose.height, pose.width])
        img = draw_pose(pose, np.zeros((h, w, 3), np.uint8))
        if c["function"].endswith("+padding_resize"):
            th, tw = _target_hw(a)
            img = padding_resize(img, th, tw, interpolation=cv2.INTER_LINEAR)
        out.append(_check_image(fx, c["id"], img, e, files))
    return out


def _target_hw(a: dict[str, Any]) -> tuple[int, int]:
    for key in ("target_hw", "ref_hw", "resize_to_hw", "padding_resize_hw"):
        if key in a:
            return tuple(a[key])  # type: ignore[return-value]
    raise KeyError(f"no target size among {sorted(a)}")


# ----------------------------------------------------------------------------- face bbox
def _run_face_bbox(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.face_crop import crop_face, face_box
    out = []
    for c in cases:
        a, e = c["args"], c["expected"]
        kp = np.asarray(a["kp2ds"], dtype=np.float64)
        fn = lambda: face_box(kp, tuple(a["image_shape"]), a["scale"])  # noqa: E731
        if "error" in e:
            out.append(_raises(fx, c["id"], fn, e))
            continue
        box = fn()
        out.append(exact(fx, c["id"] + ".bbox", list(box), e["bbox_x1_x2_y1_y2"]))
        if "crop" in e or "crop_error" in e:
            frame = files(a["frame"])
            if "crop_error" in e:
                out.append(_raises(fx, c["id"] + ".crop", lambda: crop_face(frame, box),
                                   {"error": e["crop_error"]}))
            else:
                out.append(_exact_np(fx, c["id"] + ".crop", crop_face(frame, box), files(e["crop"])))
    return out


# ----------------------------------------------------------------------------- mask post
def _run_mask_post(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.mask import (MaskOptions, background, block_mask, dilate,
                                             mask_box, postprocess_mask)
    out = []
    for c in cases:
        a, e = c["args"], c["expected"]
        if c["function"] == "get_aug_mask":
            m = files(a["body_mask"])
            fn = lambda: block_mask(m, a["w_len"], a["h_len"])  # noqa: E731
            if "error" in e:
                out.append(_raises(fx, c["id"], fn, e))
            else:
                out.append(_exact_np(fx, c["id"], fn(), files(e["aug_mask"])))
            continue
        frame, m = files(a["frame"]), files(a["mask"])
        opts = MaskOptions(a["k"], a["iterations"], a["w_len"], a["h_len"])
        if "dilation" in e:
            dil = dilate(m, opts.k, opts.iterations)
            out.append(_exact_np(fx, c["id"] + ".dilation", dil, files(e["dilation"])))
            out.append(exact(fx, c["id"] + ".bbox", list(mask_box(dil)),
                             e["bbox_of_dilation_xyxy_inclusive"]))
        aug = postprocess_mask(m, opts)
        out.append(_exact_np(fx, c["id"] + ".aug_mask", aug, files(e["aug_mask"])))
        out.append(_exact_np(fx, c["id"] + ".bg", background(frame, aug), files(e["bg"])))
    return out


# ----------------------------------------------------------------------------- vitpose
def _run_vitpose(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.keypoints import metas_from_wholebody
    from wan_animate.preprocess.vitpose_decode import decode_heatmaps, vitpose_input
    out = []
    for c in cases:
        a, e, n = c["args"], c["expected"], c["id"]
        hms = files(a["heatmaps"])
        if c["function"] == "keypoints_from_heatmaps":
            preds, maxvals = decode_heatmaps(hms, np.asarray(a["center"]), np.asarray(a["scale"]))
            out.append(compare(fx, n + ".preds", _t(preds), _t(files(e["preds"])), 1e-3))
            out.append(_exact_np(fx, n + ".maxvals", maxvals, files(e["maxvals"])))
            continue
        img = files(a["image"])
        bgr = np.ascontiguousarray(img[..., ::-1])      # what the official ViTPose receives
        box = np.asarray(a["bbox_xyxy_score"], dtype=np.float64)
        norm, center, scale, crop, info = vitpose_input(bgr, box)
        out.append(compare(fx, n + ".center", _t(center), _t(e["center"]), 0.0, 1e-12))
        out.append(compare(fx, n + ".scale", _t(scale), _t(e["scale"]), 0.0, 1e-12))
        out.append(exact(fx, n + ".crop_bookkeeping",
                         [info.new_shape, [list(x) for x in info.old_xy], [list(x) for x in info.new_xy]],
                         [e["crop_new_shape"], e["crop_old_xy"], e["crop_new_xy"]]))
        out.append(compare(fx, n + ".img_norm", _t(norm), _t(files(e["img_norm"])), 1e-4))
        if "crop_float32" in e:
            out.append(compare(fx, n + ".crop", _t(crop), _t(files(e["crop_float32"])), 1e-4))
        preds, maxvals = decode_heatmaps(hms, center[None], scale[None] * 200)
        kp2ds = np.concatenate([preds, maxvals], axis=2)
        out.append(compare(fx, n + ".preds", _t(preds), _t(files(e["preds"])), 1e-3))
        out.append(_exact_np(fx, n + ".maxvals", maxvals, files(e["maxvals"])))
        out.append(compare(fx, n + ".kp2ds", _t(kp2ds), _t(files(e["kp2ds"])), 1e-3))
        h, w = a["image_hw"]
        body = metas_from_wholebody(kp2ds, w, h)[0].body
        out.append(compare(fx, n + ".meta_body", _t(body), _t(files(e["meta_keypoints_body"])), 1e-5))
    return out


# ----------------------------------------------------------------------------- retarget
def _run_retarget(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.render import draw_pose
    from wan_animate.preprocess.retarget import RetargetTrace, retarget_sequence
    out = []
    for c in cases:
        a, e, n = c["args"], c["expected"], c["id"]
        src = [_pose_from_meta(m) for m in a["src_metas"]]
        ref = _pose_from_meta(a["ref_meta"])
        trace = RetargetTrace()
        poses = retarget_sequence(src[0], ref, src, trace)
        exp_frames = e["frames"]
        if len(poses) != len(exp_frames):
            out.append(error(fx, n, f"{len(poses)} frames, expected {len(exp_frames)}"))
            continue
        body = np.stack([p.body for p in poses])
        out.append(compare(fx, n + ".kps_body", _t(body),
                           _t([f["kps_body"] for f in exp_frames]), 1e-6))
        scores = np.stack([np.concatenate([p.body_p, p.lhand_p, p.rhand_p]) for p in poses])
        out.append(_exact_np(fx, n + ".scores", scores, np.array(
            [f["kps_body_p"] + f["kps_lhand_p"] + f["kps_rhand_p"] for f in exp_frames], np.float64)))
        hands = [[_hand_list(p.lhand), _hand_list(p.rhand)] for p in poses]
        out.append(exact(fx, n + ".hands", hands,
                         [[f["kps_lhand"], f["kps_rhand"]] for f in exp_frames]))
        iw = e.get("intermediate_write_to_poses_args", {})
        if "body_flag" in iw:
            out.append(exact(fx, n + ".body_flag", trace.body_flag, iw["body_flag"]))
        if "bone_ratio_list" in iw:
            ours_p = [trace.scale_min, trace.delta_x, trace.delta_y, trace.rescaled_src_ground_x]
            ref_p = [iw["scale_min"], iw["delta_x"], iw["delta_y"], iw["rescaled_src_ground_x"]]
            out.append(compare(fx, n + ".bone_ratios", _t(np.asarray(trace.bone_ratio_list, float)),
                               _t(np.asarray(iw["bone_ratio_list"], float)), 1e-9))
            out.append(compare(fx, n + ".scale_and_offsets", _t(np.asarray(ours_p, float)),
                               _t(np.asarray(ref_p, float)), 1e-6))
        for r in e.get("renders", []):
            img = draw_pose(poses[r["frame"]])
            out.append(_check_image(fx, f"{n}.render{r['frame']}", img, r, files))
        # the inputs must not have been modified
        out.append(exact(fx, n + ".inputs_untouched", [ref.width, ref.height],
                         [a["ref_meta"]["width"], a["ref_meta"]["height"]]))
    return out


def _hand_list(xy: np.ndarray) -> list[list[int] | list[None]]:
    return [[None, None] if not np.isfinite(p).all() else [int(p[0]), int(p[1])] for p in xy]


# ----------------------------------------------------------------------------- clip plan
def _run_clip_plan(fx: str, cases: list[Case], files: _Files) -> list[Comparison]:
    from wan_animate.preprocess.clip_plan import (i2v_mask, pingpong_indices, plan_clips,
                                                  valid_length)
    out = []
    for c in cases:
        a, e, n, f = c["args"], c["expected"], c["id"], c["function"]
        if f == "get_valid_len":
            out.append(exact(fx, n, valid_length(a["real_len"], a["clip_len"], a["overlap"]),
                             e["target_len"]))
        elif f == "inputs_padding":
            ours = pingpong_indices(a["n"], a["target_len"])
            if "error" in e:   # official IndexError for one frame; ours repeats it
                ok = ours == [0] * a["target_len"]
                out.append(Comparison(fx, n, 0.0, 0.0, None, None, ok,
                                      f"official {e['error']['type']}; ours repeats the single frame"))
            else:
                out.append(exact(fx, n, ours, e["indices"]))
        elif f == "get_i2v_mask":
            mpv = a.get("mask_pixel_values")
            mpv_t = None if mpv is None else _t(files(mpv)).to(torch.bfloat16)
            ours = i2v_mask(a["lat_t"], a["lat_h"], a["lat_w"], a["mask_len"], mpv_t)
            out.append(compare(fx, n, ours.float(), _t(files(e["mask"])), None))
        else:
            out.extend(_check_generate_plan(fx, c, files, plan_clips))
    return out


def _check_generate_plan(fx: str, c: Case, files: _Files, plan_clips: Callable[..., Any]) -> list[Comparison]:
    from wan_animate.preprocess.clip_plan import i2v_mask, replace_keep_mask
    a, e, n = c["args"], c["expected"], c["id"]
    N, T, r = a["N"], a["clip_len"], a["refert_num"]
    plan = plan_clips(N, T, r, a.get("n_face_frames", N))
    if "error" in e:    # official fails (N <= r); ours must give N output frames
        ok = len(plan.output_map()) == N and len(plan.clips) >= 1
        return [Comparison(fx, n, 0.0, 0.0, None, None, ok,
                           f"official {e['error']['type']}; ours plans {len(plan.clips)} clip(s)")]
    res = [exact(fx, n + ".target_len", plan.target_len, e["target_len"]),
           exact(fx, n + ".padded_indices", plan.pose_indices, e["padded_indices"]),
           exact(fx, n + ".output_map", [list(x) for x in plan.output_map()], e["output_map_clip_t"]),
           exact(fx, n + ".output_pose_frame", [plan.pose_indices[i] for i in range(N)],
                 e["output_pose_frame"]),
           exact(fx, n + ".num_clips", len(plan.clips), len(e["clips"]))]
    fh, fw = a["frame_hw"]
    lat_h, lat_w, lat_t = fh // 8, fw // 8, T // 4 + 1
    masks = None
    if a.get("replace_flag"):
        masks = (files(a["mask_frames_u8"]) / 255 if "mask_frames_u8" in a
                 else files(a["mask_frames"]))
    for clip, ec in zip(plan.clips, e["clips"]):
        name = f"{n}.clip{clip.index}"
        idx = plan.pose_indices[clip.start:clip.end]
        ours = {"start": clip.start, "end": clip.end, "mask_reft_len": clip.reuse,
                "pose_frames": idx, "face_frames": plan.face_indices[clip.start:clip.end],
                "seq_len": (lat_t + 1) * lat_h * lat_w // 4, "y_shape": [20, lat_t + 1, lat_h, lat_w]}
        if clip.reuse:
            ours["y_reft_first_frames_from_previous_output"] = [
                [clip.index - 1, T - r + j] for j in range(clip.reuse)]
        if masks is not None:
            ours["y_reft_bg_frames"] = idx[clip.reuse:]
        res.append(exact(fx, name, ours, {k: ec[k] for k in ours}))
        keep = None
        if masks is not None:
            keep = replace_keep_mask(np.stack([masks[i] for i in idx]), lat_h, lat_w)
        msk = i2v_mask(lat_t, lat_h, lat_w, clip.reuse, keep)
        res.append(compare(fx, name + ".msk_reft", msk.float(), _t(files(ec["msk_reft"])), None))
    return res


RUNNERS: dict[str, Callable[[str, list[Case], _Files], list[Comparison]]] = {
    "resize": _run_resize, "frame_indices": _run_frame_indices, "kp_split": _run_kp_split,
    "render": _run_render, "face_bbox": _run_face_bbox, "mask_post": _run_mask_post,
    "vitpose_decode": _run_vitpose, "retarget": _run_retarget, "clip_plan": _run_clip_plan,
}


def run(folder: Path) -> list[Comparison]:
    """Check every case of one preprocessing fixture folder."""
    folder = Path(folder)
    kind = folder.name
    if kind not in RUNNERS:
        return [error(kind, "(runner)", f"unknown preprocess fixture kind {kind!r}; "
                      f"known: {', '.join(sorted(RUNNERS))}")]
    cases = json.loads((folder / "cases.json").read_text())
    files = _Files(folder)
    results: list[Comparison] = []
    for c in cases:   # one failing case must not hide the others
        try:
            results.extend(RUNNERS[kind](kind, [c], files))
        except Exception as ex:  # report the case as failed with its error
            results.append(error(kind, c.get("id", "?"), f"{type(ex).__name__}: {ex}"))
    return results
