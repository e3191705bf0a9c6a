"""Wan2.2-Animate-14B engine: networks, checkpoints, preprocessing, sampling, worker pool.

Imports nothing from ComfyUI; the ComfyUI nodes and the ``wan-animate`` CLI both call the
same engine entries.
"""
__version__ = "0.1.0"
