"""ComfyUI entry point of ComfyUI-WanAnimate-MultiGPU.

ComfyUI imports this package from ``custom_nodes/``; the node classes live in ``nodes/`` and
import ComfyUI only inside functions, so the pack also imports in a plain Python process.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
