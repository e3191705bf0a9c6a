"""fp8 weights in ComfyUI-style files: detection, dequantization on load, and the bf16 keep-list.

Three fp8 forms are found in ComfyUI model folders (checked against ComfyUI's own loader,
``comfy/utils.py::convert_old_quants`` and ``comfy/ops.py::mixed_precision_ops``):

- plain fp8: ``<layer>.weight`` stored as float8_e4m3fn / float8_e5m2, no scale (scale 1);
- legacy "scaled" fp8: a marker tensor ``scaled_fp8`` (its dtype names the fp8 format) and a
  ``<layer>.scale_weight`` per fp8 weight (usually a 0-d/1-element float32), plus optional
  ``<layer>.scale_input`` (an activation scale; unused when dequantizing);
- "comfy_quant": per layer ``<layer>.comfy_quant`` (uint8 bytes of JSON ``{"format": ...}``, or
  the same in the safetensors metadata ``_quantization_metadata``), ``<layer>.weight_scale`` and
  optional ``<layer>.input_scale``. Formats float8_e4m3fn / float8_e5m2 are dequantized here;
  others (nvfp4, int8, ...) are refused with an error naming the layer.

Dequantized weight = ``weight.float() * scale`` (a scalar, or one value per output row),
then cast to the target dtype. The face adapter, face encoder and motion encoder are never
kept in fp8 (fp8 there is known to ruin faces): :func:`storage_dtype` gives them bf16 (or the
target when it is float32/float64), and the report warns when a file stores them in fp8.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from wan_animate.errors import CheckpointError

FP8_DTYPES: tuple[torch.dtype, ...] = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
KEEP_BF16_PREFIXES: tuple[str, ...] = ("face_adapter.", "face_encoder.", "motion_encoder.")
MARKER_KEY = "scaled_fp8"
QUANT_METADATA_KEY = "_quantization_metadata"
_LEGACY_SCALE, _LEGACY_INPUT = ".scale_weight", ".scale_input"
_QUANT_SCALE, _QUANT_INPUT, _QUANT_CONF = ".weight_scale", ".input_scale", ".comfy_quant"


def is_protected(key: str, prefixes: tuple[str, ...] = KEEP_BF16_PREFIXES) -> bool:
    """Keys that must not be stored below bf16 precision (face adapter / encoder, motion encoder)."""
    return key.startswith(prefixes)


def storage_dtype(key: str, target: torch.dtype,
                  prefixes: tuple[str, ...] = KEEP_BF16_PREFIXES) -> torch.dtype:
    """The dtype a floating tensor is stored in for a requested ``target``.

    Protected keys get bf16 unless the target is float32/float64 (parity runs), whatever the
    target (fp8, fp16, bf16) or the file's dtype.
    """
    if is_protected(key, prefixes) and target not in (torch.float32, torch.float64):
        return torch.bfloat16
    return target


def dtype_rule(target: torch.dtype, prefixes: tuple[str, ...] = KEEP_BF16_PREFIXES
               ) -> Callable[[str, torch.Tensor], torch.dtype | None]:
    """A ``checkpoints.load.DtypeRule`` for ``load_into``: floating tensors -> :func:`storage_dtype`.

    NOTE: with an fp8 ``target`` this is a plain cast (no scales); real fp8 linears need scaled
    weights (see :func:`quantize`).
    """
    def rule(key: str, t: torch.Tensor) -> torch.dtype | None:
        return storage_dtype(key, target, prefixes) if t.is_floating_point() else None
    return rule


@dataclass(frozen=True)
class Fp8Layout:
    """How a key set stores fp8. ``kind``: none | plain | scaled | comfy_quant.

    ``scales`` maps a weight key to its scale key; ``aux`` are keys that are not weights
    (markers, scales, input scales, quant configs) and never reach the model.
    """

    kind: str = "none"
    fp8_keys: frozenset[str] = frozenset()
    scales: Mapping[str, str] = field(default_factory=dict)
    aux: frozenset[str] = frozenset()
    formats: Mapping[str, str] = field(default_factory=dict)


def _decode_conf(value: torch.Tensor | str | bytes | Mapping) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, torch.Tensor):
        value = bytes(value.to(torch.uint8).flatten().tolist())
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    conf = json.loads(value)
    return {"format": conf} if isinstance(conf, str) else dict(conf)


def _collect_scales(keys: set[str], scale_suffix: str, input_suffix: str,
                    scales: dict[str, str], aux: set[str]) -> None:
    """Record ``<layer>.weight`` -> its scale key, and mark scale / input-scale keys auxiliary."""
    for k in keys:
        if k.endswith(scale_suffix):
            scales[k[:-len(scale_suffix)] + ".weight"] = k
            aux.add(k)
        elif k.endswith(input_suffix):
            aux.add(k)


def detect(dtypes: Mapping[str, torch.dtype], source: str,
           get: Callable[[str], torch.Tensor] | None = None,
           metadata: Mapping[str, str] | None = None) -> Fp8Layout:
    """Find the fp8 form of a key set.

    Args:
        dtypes: key -> dtype of every tensor in the file (cheap to get from a safetensors header).
        source: file name for errors.
        get: reads one (small) tensor, needed for ``comfy_quant`` configs.
        metadata: safetensors header metadata (may hold ``_quantization_metadata``).
    """
    keys = set(dtypes)
    fp8 = frozenset(k for k, d in dtypes.items() if d in FP8_DTYPES and k != MARKER_KEY)
    aux: set[str] = set()
    scales: dict[str, str] = {}
    formats: dict[str, str] = {}
    kind = "plain" if fp8 else "none"
    if MARKER_KEY in keys or any(k.endswith(_LEGACY_SCALE) for k in keys):
        kind = "scaled"
        aux |= {MARKER_KEY} & keys
        _collect_scales(keys, _LEGACY_SCALE, _LEGACY_INPUT, scales, aux)
    confs = {k[:-len(_QUANT_CONF)]: k for k in keys if k.endswith(_QUANT_CONF)}
    meta_layers = {}
    if metadata and QUANT_METADATA_KEY in metadata:
        meta_layers = json.loads(metadata[QUANT_METADATA_KEY]).get("layers", {})
    if confs or meta_layers or any(k.endswith(_QUANT_SCALE) for k in keys):
        kind = "comfy_quant"
        for layer, v in meta_layers.items():
            formats[layer] = _decode_conf(v).get("format", "")
        for layer, ck in confs.items():
            if get is None:
                raise CheckpointError(f"{source}: comfy_quant configs need the tensors to be read")
            formats[layer] = _decode_conf(get(ck)).get("format", "")
            aux.add(ck)
        _collect_scales(keys, _QUANT_SCALE, _QUANT_INPUT, scales, aux)
        bad = {layer: f for layer, f in formats.items() if f not in FP8_FORMATS}
        if bad:
            layer, f = sorted(bad.items())[0]
            raise CheckpointError(
                f"{source}: layer {layer!r} is quantized as {f!r} ({len(bad)} such layers); only "
                f"float8_e4m3fn / float8_e5m2 can be dequantized here. Use a bf16, fp16 or fp8 file.")
    orphans = [w for w in scales if w not in keys]
    if orphans:
        raise CheckpointError(f"{source}: scale key {scales[orphans[0]]!r} has no weight {orphans[0]!r}")
    return Fp8Layout(kind, fp8, scales, frozenset(aux), formats)


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype,
               key: str = "<weight>") -> torch.Tensor:
    """fp8 (or any) ``weight`` times ``scale`` (scalar or per output row) -> ``dtype``.

    weight [out, ...]; scale [] / [1] / [out] / [out, 1, ...]. Computed in float32.
    """
    w = weight.to(torch.float32)
    if scale is not None:
        s = scale.to(torch.float32)
        if s.numel() == 1:
            w = w * s.reshape(())
        elif s.numel() == w.shape[0]:
            w = w * s.reshape(w.shape[0], *([1] * (w.dim() - 1)))           # [out] -> [out, 1, ...]
        else:
            try:
                w = w * s
            except RuntimeError as e:
                raise CheckpointError(f"{key}: scale {tuple(s.shape)} does not broadcast to the weight "
                                      f"{tuple(w.shape)}") from e
    return w.to(dtype)


@dataclass(frozen=True)
class Fp8Report:
    kind: str
    dequantized: int
    protected_fp8: tuple[str, ...]
    dropped: tuple[str, ...]

    def warnings(self) -> list[str]:
        if not self.protected_fp8:
            return []
        return [f"{len(self.protected_fp8)} face-adapter/face-encoder/motion-encoder weights are stored "
                f"in fp8 in this file (e.g. {self.protected_fp8[0]}); they are loaded in bf16 but the "
                f"precision lost in the file cannot be recovered. Faces may degrade: prefer a bf16 "
                f"file for the DiT."]


def convert_tensor(key: str, t: torch.Tensor, lay: Fp8Layout, dtype: torch.dtype,
                   get: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """One weight of a file with layout ``lay`` -> a floating tensor in its storage dtype.

    fp8 tensors are dequantized (with their scale when the file has one); others pass unchanged
    (the loader casts them).
    """
    if t.dtype not in FP8_DTYPES:
        return t
    scale_key = lay.scales.get(key)
    return dequantize(t, get(scale_key) if scale_key else None, storage_dtype(key, dtype), key)


def dequantize_state(state: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16,
                     source: str = "<state>", metadata: Mapping[str, str] | None = None
                     ) -> tuple[dict[str, torch.Tensor], Fp8Report]:
    """A whole state dict with fp8 weights -> plain tensors (aux keys removed) + a report."""
    if dtype in FP8_DTYPES:
        raise ValueError("dequantize to bf16/fp16/fp32; keeping fp8 needs scaled linears")
    lay = detect({k: v.dtype for k, v in state.items()}, source, state.__getitem__, metadata)
    out = {k: convert_tensor(k, v, lay, dtype, state.__getitem__)
           for k, v in state.items() if k not in lay.aux}
    return out, report(lay)


def report(lay: Fp8Layout) -> Fp8Report:
    protected = tuple(sorted(k for k in lay.fp8_keys if is_protected(k)))
    return Fp8Report(lay.kind, len(lay.fp8_keys), protected, tuple(sorted(lay.aux)))


def quantize(weight: torch.Tensor, fmt: torch.dtype = torch.float8_e4m3fn,
             per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, ...] -> (fp8 weight, float32 scale [] or [out]) with amax scaling.

    ``dequantize(q, scale, ...)`` approximates ``weight``. Used to write fp8-scaled files
    (tests, tiny checkpoints) and by fast modes that keep fp8 weights.
    """
    w = weight.to(torch.float32)
    fmax = torch.finfo(fmt).max
    amax = w.abs().flatten(1).amax(dim=1) if per_channel and w.dim() > 1 else w.abs().amax()
    scale = (amax / fmax).clamp(min=1e-12)
    s = scale.reshape(-1, *([1] * (w.dim() - 1))) if scale.dim() else scale
    q = (w / s).clamp(-fmax, fmax).to(fmt)
    return q, scale


def fp8_keys(keys: Iterable[str], dtypes: Mapping[str, torch.dtype]) -> list[str]:
    """Keys stored in an fp8 dtype (for reports)."""
    return sorted(k for k in keys if dtypes.get(k) in FP8_DTYPES)
