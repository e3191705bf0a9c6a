"""Checkpoint discovery, reading and strict loading (official and ComfyUI layouts)."""
