"""ComfyUI entry point of ComfyUI-WanAnimate-MultiGPU.

ComfyUI imports this folder from ``custom_nodes/`` as a package whose parent is not on
``sys.path``; the engine ``wan_animate`` (absolute imports) lives beside this file, so the
folder is appended to ``sys.path`` first (appended: ComfyUI's own modules keep precedence).

With ComfyUI's V3 API present the nodes register through ``comfy_entrypoint``; ComfyUI only
looks for it when ``NODE_CLASS_MAPPINGS`` is None, so the V1 mappings are exported only as the
fallback for a ComfyUI without ``comfy_api`` (and for plain Python, where the nodes run on the
small stand-in ``nodes/io_shim.py``).
"""
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

import importlib  # noqa: E402

# ComfyUI imports this file as a package (``custom_nodes.<folder>``): take ``.nodes`` relative to
# it, never ComfyUI's own top-level ``nodes`` module. A tool that imports this file as a plain
# module (pytest collecting a checkout whose folder name is not an identifier) has no package:
# then the pack's ``nodes`` is the one on the path appended above.
_nodes = importlib.import_module(".nodes", __package__) if __package__ else importlib.import_module("nodes")
_V1_NODES, _V1_NAMES = _nodes.NODE_CLASS_MAPPINGS, _nodes.NODE_DISPLAY_NAME_MAPPINGS
USING_COMFY_API, comfy_entrypoint = _nodes.USING_COMFY_API, _nodes.comfy_entrypoint

NODE_CLASS_MAPPINGS = None if USING_COMFY_API else _V1_NODES
NODE_DISPLAY_NAME_MAPPINGS = None if USING_COMFY_API else _V1_NAMES
WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "comfy_entrypoint"]
