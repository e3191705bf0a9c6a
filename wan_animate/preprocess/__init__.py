"""Preprocessing: video I/O, pose/face/mask backends, pose rendering, retargeting, bg/mask."""
