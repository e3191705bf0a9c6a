"""Sampling: flow-matching sigma schedules and solvers (UniPC, DPM++), conditioning, clip chaining."""
