"""Error types of the engine. Every message names the input and how to fix it."""
from __future__ import annotations


class WanAnimateError(Exception):
    """Base class: an error the user can act on (shown as-is by the CLI and the nodes)."""


class CheckpointError(WanAnimateError):
    """A checkpoint file is missing, unreadable, or its keys/shapes do not match the model."""


class InputError(WanAnimateError, ValueError):
    """A user input (video, frame count, size, flag) is invalid."""


class ParallelConfigError(WanAnimateError, ValueError):
    """A parallel layout (GPU count, heads, sequence length) is invalid."""


class Cancelled(WanAnimateError):
    """The job was cancelled by the user; no partial output was written."""
