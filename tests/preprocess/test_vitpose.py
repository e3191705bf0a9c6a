"""YOLO + ViTPose path through onnxruntime with tiny ONNX models of the official signature."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wan_animate.errors import CheckpointError
from wan_animate.preprocess.vitpose import (DETECTOR_FILE, POSE_FILE, VitPoseBackend,
                                            detector_boxes, select_person)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

H, W = 320, 480                       # test image size
BOX = (120.0, 40.0, 360.0, 300.0)     # the person box in image pixels


def _constant_model(path: Path, in_name: str, in_shape: list[int], out: np.ndarray) -> None:
    """input -> const + 0 * mean(input): a real graph whose output is ``out``."""
    const = numpy_helper.from_array(out.astype(np.float32), "const")
    zero = numpy_helper.from_array(np.zeros([1] * out.ndim, np.float32), "zero")
    shape = numpy_helper.from_array(np.ones(out.ndim, np.int64), "shape")
    nodes = [helper.make_node("ReduceMean", [in_name], ["m"], keepdims=1),
             helper.make_node("Reshape", ["m", "shape"], ["m2"]),
             helper.make_node("Mul", ["m2", "zero"], ["z"]),
             helper.make_node("Add", ["const", "z"], ["out"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(out.shape))],
                              [const, zero, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _heat_points() -> np.ndarray:
    """[133, 2] integer heatmap positions (x in 4..43, y in 4..59), distinct for the face."""
    pts = np.zeros((133, 2))
    rng = np.random.default_rng(1)
    pts[:] = rng.integers([6, 6], [42, 58], size=(133, 2))
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts[23:91] = np.stack([24 + 5 * np.cos(ang), 14 + 6 * np.sin(ang)], 1).round()
    return pts


def _heatmaps(pts: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:48]
    return np.stack([0.9 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0) for x, y in pts])[None]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("process_checkpoint")
    dets = np.zeros((1, 300, 6), np.float32)
    sx, sy = 640 / W, 640 / H
    dets[0, 0] = [BOX[0] * sx, BOX[1] * sy, BOX[2] * sx, BOX[3] * sy, 0.9, 0]      # the person
    dets[0, 1] = [10 * sx, 10 * sy, 40 * sx, 60 * sy, 0.8, 0]                      # far too small
    dets[0, 2] = [400 * sx, 250 * sy, 470 * sx, 310 * sy, 0.95, 2]                 # a car (NMS is class-agnostic)
    _constant_model(root / DETECTOR_FILE, "images", [1, 3, 640, 640], dets)
    _constant_model(root / POSE_FILE, "input", [1, 3, 256, 192], _heatmaps(_heat_points()))
    return root


def test_person_selection_from_raw_output() -> None:
    raw = np.zeros((1, 3, 6), np.float32)
    raw[0, 0] = [64, 64, 320, 576, 0.9, 0]
    raw[0, 1] = [0, 0, 640, 640, 0.9, 5]
    raw[0, 2] = [0, 0, 10, 10, 0.01, 0]            # below the 0.05 score threshold
    boxes = detector_boxes(raw, 640, 640)
    assert len(boxes) == 2
    assert select_person(boxes, 640, 640).tolist() == pytest.approx([64, 64, 320, 576, 0.9])
    assert select_person(np.zeros((0, 6)), 10, 20).tolist() == [0, 0, 20, 10, -1]


def test_tiny_models_give_keypoints_in_the_box(ckpt: Path) -> None:
    backend = VitPoseBackend(ckpt)
    img = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    kps, found = backend.detect_one(img)
    assert found and kps.shape == (133, 3)
    # expected: heatmap position -> crop -> image, through the official box recipe
    cx, cy = (BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2
    size = max((BOX[2] - BOX[0]) * 256 / 192, BOX[3] - BOX[1]) * 1.25
    sw, sh = size * 192 / 256, size
    pts = _heat_points()
    exp = np.stack([pts[:, 0] * sw / 48 + cx - sw / 2, pts[:, 1] * sh / 64 + cy - sh / 2], 1)
    assert np.abs(kps[:, :2] - exp).max() < 0.5
    assert np.allclose(kps[:, 2], 0.9, atol=1e-5)


def test_engine_runs_with_the_vitpose_backend(ckpt: Path) -> None:
    from wan_animate.preprocess.pipeline import PreprocessOptions, preprocess
    frames = np.random.default_rng(0).integers(0, 255, (3, H, W, 3), dtype=np.uint8)
    ref = np.random.default_rng(1).integers(0, 255, (200, 150, 3), dtype=np.uint8)
    opts = PreprocessOptions(ckpt_path=str(ckpt), resolution_area=(256, 256), fps=-1)
    res = preprocess(frames, 10.0, ref, opts)
    assert res.backend == "vitpose" and res.detector_misses == 0
    assert res.pose.shape[0] == 3 and res.pose.shape[1] % 16 == 0 and res.pose.any()
    assert res.face.shape == (3, 512, 512, 3)
    retarget = preprocess(frames, 10.0, ref, PreprocessOptions(
        ckpt_path=str(ckpt), resolution_area=(256, 256), fps=-1, retarget=True))
    assert retarget.pose.shape == res.pose.shape


def test_missing_model_file_is_named(ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "det").mkdir()
    (tmp_path / DETECTOR_FILE).write_bytes((ckpt / DETECTOR_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="vitpose_h_wholebody.onnx"):
        VitPoseBackend(tmp_path)
    (tmp_path / "pose2d").mkdir()
    (tmp_path / POSE_FILE).write_bytes(b"not an onnx file")
    with pytest.raises(CheckpointError, match="cannot load ONNX"):
        VitPoseBackend(tmp_path)
