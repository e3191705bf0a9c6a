"""The official keypoint models through onnxruntime: YOLOv10m person detector + ViTPose-H.

Files (the official ``process_checkpoint`` layout): ``det/yolov10m.onnx`` and
``pose2d/vitpose_h_wholebody.onnx``. Channel order as in the official pipeline: the
detector sees RGB, ViTPose sees the channel-swapped frame (BGR).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from wan_animate.errors import Cancelled, CheckpointError
from wan_animate.preprocess.detection import Detections, Progress
from wan_animate.preprocess.vitpose_decode import decode_heatmaps, vitpose_input

DETECTOR_FILE = "det/yolov10m.onnx"
POSE_FILE = "pose2d/vitpose_h_wholebody.onnx"
DET_INPUT = 640
DET_CONF = 0.05
DET_IOU = 0.5
DET_SHAPE_RATIO = 0.4


def _session(path: Path, providers: list[str] | None) -> Any:
    if not path.is_file():
        raise CheckpointError(f"missing preprocessing model file: {path}")
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise CheckpointError(f"the YOLO/ViTPose backend needs `pip install onnxruntime` ({e})") from e
    try:
        return ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise CheckpointError(f"cannot load ONNX model {path}: {e}") from e


def detector_input(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> float32 [3, 640, 640] in [0, 1] (plain resize, no letterbox)."""
    img = cv2.resize(rgb, (DET_INPUT, DET_INPUT))
    return np.transpose(np.array(img) / 255.0, (2, 0, 1)).astype(np.float32)


def detector_boxes(output: np.ndarray, h: int, w: int) -> np.ndarray:
    """Raw YOLO output -> [M, 6] ``x1, y1, x2, y2, score, class`` in image pixels after the
    score filter and cv2 NMS. Accepts the YOLOv10 ``[1, N, 6]`` (xyxy, score, class) and the
    YOLOv8 ``[1, 84, N]`` (cx, cy, w, h, 80 class scores) layouts."""
    # Ported from Wan2.2 .../preprocess/pose2d.py::Yolo.postprocess
    out = np.squeeze(output)
    if out.ndim == 1:
        out = out[None]
    if output.shape[-1] != 6 and output.shape[1] == 84:
        out = np.transpose(out)
    fx, fy = w / DET_INPUT, h / DET_INPUT
    if out.shape[-1] == 6:
        keep = out[:, 4] >= DET_CONF
        scores, classes = out[keep, 4], out[keep, 5]
        boxes = out[keep, :4].copy()
        boxes[:, [0, 2]] *= fx
        boxes[:, [1, 3]] *= fy
        boxes[:, 2] -= boxes[:, 0]
        boxes[:, 3] -= boxes[:, 1]
        boxes = boxes.astype(np.int32)
    else:
        cls_scores = out[:, 4:]
        best = np.amax(cls_scores, -1)
        keep = best >= DET_CONF
        scores, classes = best[keep], np.argmax(cls_scores[keep], -1)
        x, y, bw, bh = (out[keep, i:i + 1] for i in range(4))
        boxes = np.concatenate([(x - bw / 2) * fx, (y - bh / 2) * fy, bw * fx, bh * fy], -1).astype(np.int32)
    idx = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), DET_CONF, DET_IOU)
    rows = [[b[0], b[1], b[0] + b[2], b[1] + b[3], scores[i], classes[i]]
            for i in np.asarray(idx, dtype=int).reshape(-1) for b in [boxes[i]]]
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def select_person(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """The official choice: the largest-area person box whose longer side is at least 0.4 x
    the longest person box side; ``[0, 0, W, H, -1]`` (whole image) when there is none."""
    # Ported from Wan2.2 .../preprocess/pose2d.py::Yolo.process_results (single person, 'max')
    persons = [b for b in boxes if b[5] == 0 and b[4] > DET_CONF]
    if not persons:
        return np.array([0., 0., 1. * w, 1. * h, -1])
    max_shape = max(max(b[2] - b[0], b[3] - b[1]) for b in persons)
    best, best_size = None, h * w * -10
    for b in persons:
        size, shape = (b[2] - b[0]) * (b[3] - b[1]), max(b[2] - b[0], b[3] - b[1])
        if size > best_size:
            if shape < max_shape * DET_SHAPE_RATIO:
                continue
            best, best_size, max_shape = b, size, shape
    return np.array([0., 0., 1. * w, 1. * h, -1]) if best is None else np.asarray(best[:5])


class VitPoseBackend:
    """YOLOv10 + ViTPose-H whole-body (ONNX) from an official ``process_checkpoint`` folder."""

    name = "vitpose"

    def __init__(self, ckpt_dir: str | Path, providers: list[str] | None = None) -> None:
        ckpt_dir = Path(ckpt_dir)
        missing = [f for f in (DETECTOR_FILE, POSE_FILE) if not (ckpt_dir / f).is_file()]
        if missing:
            raise CheckpointError(f"process_checkpoint {ckpt_dir} lacks {', '.join(missing)}")
        self.detector = _session(ckpt_dir / DETECTOR_FILE, providers)
        self.pose = _session(ckpt_dir / POSE_FILE, providers)

    def detect_one(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """[H, W, 3] RGB -> ([133, 3] pixel keypoints float32, person box found)."""
        h, w = rgb.shape[:2]
        det_in = detector_input(rgb)[None]
        raw = self.detector.run(None, {self.detector.get_inputs()[0].name: det_in})[0]
        box = select_person(detector_boxes(raw, h, w), h, w)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        norm, center, scale, _, _ = vitpose_input(bgr, box)
        heat = self.pose.run([], {self.pose.get_inputs()[0].name: norm[None]})[0]
        preds, maxvals = decode_heatmaps(heat, center[None], scale[None] * 200)
        return np.concatenate([preds, maxvals], axis=2)[0], bool(box[-1] > 0)

    def detect(self, frames: np.ndarray, video: bool = True, segment: bool = False,
               on_progress: Progress | None = None,
               cancelled: Callable[[], bool] | None = None) -> Detections:
        t_len = frames.shape[0]
        kps = np.zeros((t_len, 133, 3), np.float32)
        person = np.zeros(t_len, bool)
        for t in range(t_len):
            if cancelled is not None and cancelled():
                raise Cancelled("preprocessing cancelled")
            kps[t], person[t] = self.detect_one(frames[t])
            if on_progress is not None:
                on_progress(t + 1, t_len)
        # ViTPose always returns points (the whole image is used without a box), as officially.
        return Detections(kps, np.ones(t_len, bool), np.ones(t_len, bool), None,
                          misses=int((~person).sum()))
