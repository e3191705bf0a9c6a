"""ComfyUI nodes of the pack (category ``WanAnimate``): thin adapters over ``wan_animate``.

Inside ComfyUI the pack registers through :func:`comfy_entrypoint` (a V3 ``ComfyExtension``).
``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS`` are the V1 fallback for a ComfyUI
without ``comfy_api`` (and what plain-Python tools enumerate). Every class imports and runs
without ComfyUI: ComfyUI is imported only inside functions (:mod:`nodes.types`,
:mod:`nodes.bridge`, :mod:`nodes.loader`).
"""
from __future__ import annotations

from .decode import WanAnimateDecode
from .loader import WanAnimateModelLoader
from .preprocess import WanAnimatePreprocess, WanAnimateReplacePreprocess
from .sampler import WanAnimateSampler
from .setup import WanAnimateModelStatus, WanAnimateUnload
from .types import USING_COMFY_API

NODES: tuple[type, ...] = (WanAnimateModelLoader, WanAnimatePreprocess, WanAnimateReplacePreprocess,
                           WanAnimateSampler, WanAnimateDecode, WanAnimateUnload, WanAnimateModelStatus)
"""Every node class; each class name is its node_id."""

NODE_CLASS_MAPPINGS: dict[str, type] = {cls.__name__: cls for cls in NODES}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {cls.__name__: cls.DISPLAY_NAME for cls in NODES}


async def comfy_entrypoint():  # noqa: ANN201 - returns ComfyUI's ComfyExtension
    """ComfyUI's V3 entry point: the extension that lists the pack's nodes."""
    from comfy_api.latest import ComfyExtension

    class WanAnimateExtension(ComfyExtension):
        async def get_node_list(self) -> list[type]:
            return list(NODES)

    return WanAnimateExtension()


__all__ = ["NODES", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "USING_COMFY_API",
           "comfy_entrypoint"]
