"""``python -m wan_animate.parity DIR [DIR ...]`` — check our modules against official fixtures."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

from wan_animate.parity.common import Comparison, error


def fixture_kind(folder: Path) -> str:
    """The runner name of a fixture folder (``config.json['fixture']`` or ``preprocess``)."""
    cfg = folder / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text())["fixture"]
    if (folder / "cases.json").is_file():
        return "preprocess"
    raise FileNotFoundError(f"{folder}: neither config.json nor cases.json; not a fixture folder")


def run_folder(folder: Path, world_size: int = 1) -> list[Comparison]:
    """Run the parity check of one fixture folder; exceptions become failed comparisons."""
    try:
        if world_size > 1:
            from wan_animate.parity import distributed

            return distributed.run(folder, world_size)
        kind = fixture_kind(folder)
        runner = importlib.import_module(f"wan_animate.parity.{kind}")
        return runner.run(folder)
    except Exception as e:  # report, keep checking the other folders
        tb = traceback.format_exc(limit=4).strip().splitlines()[-1]
        return [error(folder.name, "(runner)", f"{type(e).__name__}: {e} [{tb}]")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wan_animate.parity", description=__doc__)
    ap.add_argument("folders", nargs="+", type=Path, help="fixture folders")
    ap.add_argument("--world-size", type=int, default=1,
                    help="run the DiT fixtures through a CPU worker pool of this many ranks "
                         "(Ulysses + FSDP2)")
    args = ap.parse_args(argv)
    results: list[Comparison] = []
    for folder in args.folders:
        if not ((folder / "config.json").is_file() or (folder / "cases.json").is_file()):
            print(f"skipping {folder}: not a fixture folder (no config.json or cases.json)")
            continue
        for c in run_folder(folder, args.world_size):
            print(c.line(), flush=True)
            results.append(c)
    failed = sum(not c.passed for c in results)
    print(f"parity: {len(results) - failed} passed, {failed} failed")
    return 0 if results and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
