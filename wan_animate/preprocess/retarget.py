"""Retarget a driving skeleton sequence to the reference character's proportions (no FLUX).

Pure function: the inputs are not modified (the official code mutates the reference
meta it is given; the results are the same). Body points are never missing in metas
produced by our detectors (every point carries a score), so the official "missing point"
repair paths (symmetric limb fill, dropped indices) have nothing to do and are not
reproduced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wan_animate.preprocess.keypoints import PixelPose, PoseMeta
from wan_animate.preprocess.render import LIMBS

BODY_THRESHOLD = 0.4     # full / three-quarter body and hand score threshold
SCALE_THRESHOLD = 0.5    # nose / ankle / hip scores needed for the height-based scale
FOOT_TO_LOWER_LEG = 0.5
NOSE, NECK, R_WRIST, L_WRIST, R_HIP, R_ANKLE, L_HIP, L_ANKLE, L_TOE, R_TOE = 0, 1, 4, 7, 8, 10, 11, 13, 18, 19
# Bone pairs that share the larger ratio (left/right), then eye and ear pairs averaged.
SHARED_RATIO_PAIRS = ((0, 1), (2, 4), (3, 5), (6, 9), (7, 10), (8, 11), (17, 18))
AVERAGED_RATIO_PAIRS = ((13, 15), (14, 16))
FLAG_RANK = {"half_body": 0, "three_quarter_body": 1, "full_body": 2}


@dataclass
class RetargetTrace:
    """The per-sequence parameters (for debugging and parity)."""

    body_flag: str = ""
    scale_min: float = 0.0
    bone_ratio_list: list[float] = field(default_factory=list)
    delta_x: float = 0.0
    delta_y: float = 0.0
    rescaled_src_ground_x: float = 0.0


def _limb_length(body: np.ndarray, limb: tuple[int, int], height: float, width: float) -> float:
    a, b = body[limb[0] - 1], body[limb[1] - 1]
    xs = np.array([a[0], b[0]]) * float(width)
    ys = np.array([a[1], b[1]]) * float(height)
    return ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5


def _body_height(meta: PoseMeta, lower: tuple[int, int]) -> float:
    b = meta.body
    return meta.height * abs((b[lower[0]][1] + b[lower[1]][1]) / 2 - b[NOSE][1])


def _scale(src: PoseMeta, dst: PoseMeta) -> float:
    """Driving height / reference height (nose to ankles, else nose to hips, else sqrt area)."""
    for lower in ((R_ANKLE, L_ANKLE), (R_HIP, L_HIP)):
        idx = (NOSE,) + lower
        if all(src.body[i][2] > SCALE_THRESHOLD for i in idx) and \
                all(dst.body[i][2] > SCALE_THRESHOLD for i in idx):
            return 1.0 * _body_height(src, lower) / _body_height(dst, lower)
    return np.sqrt(src.height * src.width) / np.sqrt(dst.height * dst.width)


def body_flag(body: np.ndarray, threshold: float = BODY_THRESHOLD) -> str:
    """'full_body' (ankles and hips inside and confident), 'three_quarter_body' (hips), or
    'half_body'."""
    def ok(i: int) -> bool:
        return body[i][1] <= 1 and body[i][2] >= threshold
    if ok(R_ANKLE) and ok(L_ANKLE) and ok(R_HIP) and ok(L_HIP):
        return "full_body"
    if ok(R_HIP) and ok(L_HIP):
        return "three_quarter_body"
    return "half_body"


def _bone_ratios(src: PoseMeta, dst: PoseMeta, dst_h: int, dst_w: int) -> list[float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = [1.0 * _limb_length(dst.body, limb, dst_h, dst_w)
                  / _limb_length(src.body, limb, src.height, src.width) for limb in LIMBS]
    for a, b in SHARED_RATIO_PAIRS:
        ratios[a] = ratios[b] = max(ratios[a], ratios[b])
    for a, b in AVERAGED_RATIO_PAIRS:
        ratios[a] = ratios[b] = (ratios[a] + ratios[b]) / 2
    return ratios


def _rescale_limbs(points: list[list[float]], ratios: list[float]) -> tuple[list[float], list[float]]:
    """New length and angle (degrees) of every limb of ``points`` (pixels)."""
    lengths, angles = [], []
    for idx, (a, b) in enumerate(LIMBS):
        p, q = points[a - 1], points[b - 1]
        xs, ys = np.array([p[0], q[0]]), np.array([p[1], q[1]])
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        lengths.append(length * ratios[idx])
        angles.append(math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1])))
    return lengths, angles


def _walk_limbs(points: list[list[float]], lengths: list[float], angles: list[float]) -> list[list[float]]:
    """Re-place every limb end from its start along the original angle at the new length."""
    out = [list(p) for p in points]
    for idx, (a, b) in enumerate(LIMBS):
        start = out[a - 1]
        dx = lengths[idx] * math.cos(math.radians(angles[idx]))
        dy = lengths[idx] * math.sin(math.radians(angles[idx]))
        out[b - 1] = [start[0] - dx, start[1] - dy] + out[b - 1][2:]
    return out


def _hand_about_root(hand: list[list[float]], ratio: float) -> list[tuple[float, float, float] | None]:
    """Scale a normalised hand [21][x, y, s] about its point 0; points under the threshold
    become (-1, -1, 0)."""
    dx, dy = hand[0][0] * (ratio - 1), hand[0][1] * (ratio - 1)
    return [(-1, -1, 0) if p[2] < BODY_THRESHOLD else (p[0] * ratio - dx, p[1] * ratio - dy, p[2])
            for p in hand]


def _place_hand(hand: list[tuple[float, float, float]], delta: np.ndarray, src_h: int,
                src_w: int) -> list[tuple[int, int, float] | None]:
    return [None if p[2] == 0 else (int(p[0] * src_w + delta[0]), int(p[1] * src_h + delta[1]), p[2])
            for p in hand]


def _retarget_frame(meta: PoseMeta, ratios: list[float], trace: RetargetTrace, first: bool,
                    dst_hw: tuple[int, int]) -> PixelPose:
    # Ported from Wan2.2 .../preprocess/retarget_pose.py::get_scaled_pose
    H, W = dst_hw
    sh, sw = meta.height, meta.width
    pts = [[float(x) * sw, float(y) * sh, float(s)] for x, y, s in meta.body]
    lengths, angles = _rescale_limbs(pts, ratios)
    for knee_ankle, ankle_toe in ((8, 18), (11, 17)):
        if lengths[ankle_toe] > lengths[knee_ankle] * FOOT_TO_LOWER_LEG:
            lengths[ankle_toe] = lengths[knee_ankle] * FOOT_TO_LOWER_LEG
    new = _walk_limbs(pts, lengths, angles)
    dx_ground = trace.delta_x
    if first and trace.body_flag == "full_body":
        dx_ground += (new[R_HIP][0] + new[L_HIP][0]) / 2 - trace.rescaled_src_ground_x
    elif first and trace.body_flag == "half_body":
        dx_ground += new[NECK][0] - trace.rescaled_src_ground_x
    for p in new:
        p[0] = (p[0] - dx_ground) / trace.scale_min
        p[1] = (p[1] - trace.delta_y) / trace.scale_min
    # Hands: normalised by the driving size after the official px round trip.
    hands = {}
    for name, arr in (("left", meta.left_hand), ("right", meta.right_hand)):
        hands[name] = [[(float(x) * sw) / sw, (float(y) * sh) / sh, float(s)] for x, y, s in arr]
    ratio = max(ratios[0], ratios[1]) / trace.scale_min
    # NOTE: the official helper returns (right, left) and the caller unpacks (left, right):
    # "hand_a" is the driving RIGHT-hand array, tied to the RWrist (body 4), and vice versa.
    hand_a = _hand_about_root(hands["right"], ratio)
    hand_b = _hand_about_root(hands["left"], ratio)
    delta_a = np.array(new[R_WRIST][:2]) - np.array(pts[R_WRIST][:2])
    delta_b = np.array(new[L_WRIST][:2]) - np.array(pts[L_WRIST][:2])
    if hand_a[0][0] != -1:
        delta_a += np.array((pts[R_WRIST][0] - hand_a[0][0] * sw, pts[R_WRIST][1] - hand_a[0][1] * sh))
    if hand_b[0][0] != -1:
        delta_b += np.array((pts[L_WRIST][0] - hand_b[0][0] * sw, pts[L_WRIST][1] - hand_b[0][1] * sh))
    dist_a = ((pts[R_WRIST][0] - hand_a[0][0] * sw) ** 2 + (pts[R_WRIST][1] - hand_a[0][1] * sh) ** 2) ** 0.5
    dist_b = ((pts[L_WRIST][0] - hand_a[0][0] * sw) ** 2 + (pts[L_WRIST][1] - hand_a[0][1] * sh) ** 2) ** 0.5
    if dist_a > dist_b:
        out_r = _place_hand(hand_a, delta_b, sh, sw)
        out_l = _place_hand(hand_b, delta_a, sh, sw)
    else:
        out_l = _place_hand(hand_a, delta_a, sh, sw)
        out_r = _place_hand(hand_b, delta_b, sh, sw)
    body = np.array([[p[0] / W, p[1] / H, p[2]] for p in new])

    def hand_arrays(hand: list[tuple[int, int, float] | None]) -> tuple[np.ndarray, np.ndarray]:
        xy = np.array([[np.nan, np.nan] if p is None else [p[0], p[1]] for p in hand], dtype=np.float64)
        sc = np.array([0.0 if p is None else p[2] for p in hand], dtype=np.float64)
        return xy, sc

    lxy, lp = hand_arrays(out_l)
    rxy, rp = hand_arrays(out_r)
    return PixelPose(width=W, height=H, body=body[:, :2] * (W, H), body_p=body[:, 2],
                     lhand=lxy, lhand_p=lp, rhand=rxy, rhand_p=rp)


def retarget_sequence(first: PoseMeta, ref: PoseMeta, frames: list[PoseMeta],
                      trace: RetargetTrace | None = None,
                      bone_ratios: list[float] | None = None) -> list[PixelPose]:
    """Retarget the driving ``frames`` (their first frame ``first``) onto ``ref``.

    Returns one :class:`PixelPose` per frame on a canvas of the reference size (hand points
    are whole pixels; NaN where the official code puts None). ``trace`` receives the
    sequence parameters. ``bone_ratios`` replaces the ratios measured between ``first`` and
    ``ref`` (the ``--use_flux`` path measures them on FLUX-edited skeletons).
    """
    # Ported from Wan2.2 .../preprocess/retarget_pose.py::retarget_pose / get_retarget_pose
    trace = trace if trace is not None else RetargetTrace()
    scale_min = _scale(first, ref)
    dst_h, dst_w = int(ref.height * scale_min), int(ref.width * scale_min)
    flag = min(body_flag(ref.body), body_flag(first.body), key=FLAG_RANK.__getitem__)
    ratios = list(bone_ratios) if bone_ratios is not None else _bone_ratios(first, ref, dst_h, dst_w)
    src_px = [[float(x) * first.width, float(y) * first.height] for x, y, _ in first.body]
    lengths, angles = _rescale_limbs(src_px, ratios)
    rescaled = _walk_limbs(src_px, lengths, angles)
    b = ref.body
    if flag == "full_body":
        ground_y = max(b[R_ANKLE][1], b[L_ANKLE][1]) * dst_h
        right_mid = (b[R_ANKLE][1] + b[R_TOE][1]) / 2
        left_mid = (b[L_ANKLE][1] + b[L_TOE][1]) / 2
        ground_y = max(left_mid, right_mid) * dst_h
        delta_y = max(rescaled[R_ANKLE][1], rescaled[L_ANKLE][1]) - ground_y
        ground_x = (b[R_HIP][0] + b[L_HIP][0]) * dst_w / 2
        src_ground_x = (rescaled[R_HIP][0] + rescaled[L_HIP][0]) / 2
        delta_x = src_ground_x - ground_x
    else:
        delta_y = rescaled[NECK][1] - b[NECK][1] * dst_h
        delta_x = rescaled[NECK][0] - b[NECK][0] * dst_w
        src_ground_x = rescaled[NECK][0]
    trace.body_flag, trace.scale_min, trace.bone_ratio_list = flag, scale_min, list(ratios)
    trace.delta_x, trace.delta_y, trace.rescaled_src_ground_x = delta_x, delta_y, src_ground_x
    return [_retarget_frame(m, ratios, trace, i == 0, (ref.height, ref.width))
            for i, m in enumerate(frames)]
