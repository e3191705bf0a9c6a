"""ComfyUI nodes of the pack (category ``WanAnimate``): thin adapters over ``wan_animate``."""
from __future__ import annotations

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
