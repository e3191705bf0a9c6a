"""Parity checks against fixtures produced by the official implementation.

``python -m wan_animate.parity DIR [DIR ...]``: one line per output, exit 0 only if all pass.
Each fixture kind has a runner module ``wan_animate.parity.<fixture>`` exposing
``run(folder: Path) -> list[Comparison]``; the kind is read from the folder's ``config.json``
(``"fixture"``), or is the folder name for preprocessing fixtures (``cases.json``).
"""
