"""Peak RSS of preprocessing a long video at a low --fps, versus a clip of only the kept frames.

python3 bench/preprocess_memory.py [--stage read|cli|both] [--fps 2] \
    [--video ../shared/samples/animate/video.mp4] [--refer ../shared/samples/animate/image.jpeg] \
    [--out results.json]

Every case runs in a fresh Python process; its peak resident set (``ru_maxrss`` from
``os.wait4``) is the number reported, so one case's allocations never inflate another's.
The trimmed clip is the kept frames (``read_video(video, fps=F)``) written losslessly at the
effective rate, read back at ``--fps -1``: the same frames reach the same code, so
``peak / trimmed peak`` is the cost of the frames that ``--fps`` drops (1.0 is ideal).

Stages:
  read  ``read_video`` alone: frame-indexed (``fps=F``), the full decode then ``frames[idx]``
        (the CLI path until it passes ``fps``), and the pre-change list + ``np.stack`` decode.
  cli   the real ``python -m wan_animate.cli preprocess ... --fps F`` (MediaPipe, CPU) on the
        video and on the trimmed clip (``--fps -1``).
Prints a markdown table (case, frames decoded / kept, peak RSS MiB, ratio to the trimmed case).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("WAN_ANIMATE_SHARED", REPO.parent / "shared")).resolve() / "samples"
MIB = 1024 ** 2

# Child programs for --stage read. argv: mode path fps. They print one JSON line.
_READ_CHILD = r"""
import json, resource, sys
import numpy as np
from wan_animate.preprocess.frames import resample_plan
from wan_animate.preprocess.video_io import read_video
mode, path, fps = sys.argv[1], sys.argv[2], float(sys.argv[3])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "indexed":
    frames, eff = read_video(path, fps=fps)
    decoded = None
elif mode == "full":
    full, src = read_video(path)
    eff, _, idx = resample_plan(len(full), src, fps)
    frames, decoded = full[idx], len(full)
    del full
else:  # legacy: the decode loop before frame indexing (a list of frames, then np.stack)
    import av
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        src = float(s.average_rate or s.guessed_rate or 30)
        full = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
    eff, _, idx = resample_plan(len(full), src, fps)
    frames, decoded = full[idx], len(full)
    del full
print(json.dumps({"kept": len(frames), "decoded": decoded, "shape": list(frames.shape),
                  "import_maxrss_kib": base}))
"""


def _measure(cmd: list[str]) -> tuple[int, float, str]:
    """Run ``cmd`` through a wrapper that waits for it with ``os.wait4``: returns
    ``(peak RSS KiB of cmd, seconds, cmd's stdout)``."""
    wrapper = ("import json, os, subprocess, sys, time\n"
               "t = time.perf_counter()\n"
               "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
               "out = p.stdout.read(); err = p.stderr.read()\n"
               "_, status, ru = os.wait4(p.pid, 0)\n"
               "sys.stderr.write(err.decode(errors='replace'))\n"
               "print(json.dumps({'status': os.waitstatus_to_exitcode(status), 'maxrss_kib': ru.ru_maxrss,\n"
               "                  'seconds': time.perf_counter() - t, 'stdout': out.decode(errors='replace')}))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=REPO, capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"wrapper failed for {' '.join(cmd[:5])}:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["status"] != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... exited {res['status']}:\n{proc.stderr[-3000:]}")
    return int(res["maxrss_kib"]), float(res["seconds"]), res["stdout"]


def _probe(path: Path) -> tuple[int, float, str]:
    """``(decoded frames, fps, WxH)`` of a video (a full decode, counted, not kept)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate or Fraction(30))
        n = sum(1 for _ in c.decode(s))
        return n, rate, f"{s.width}x{s.height}"


def make_trimmed(video: Path, fps: float, folder: Path) -> tuple[Path, int, float]:
    """The kept frames of ``video`` at ``fps`` as a lossless clip: ``(path, frames, effective fps)``."""
    from wan_animate.preprocess.video_io import read_video, write_video

    frames, eff = read_video(video, fps=fps)
    path = write_video(folder / "trimmed.mp4", frames, eff, lossless=True)
    return path, len(frames), eff


def stage_read(video: Path, trimmed: Path, fps: float, n_src: int) -> list[dict[str, Any]]:
    rows = []
    cases = [("read_video(fps=F), frame-indexed", "indexed", video, fps, n_src),
             ("read_video() full decode, then frames[idx] (CLI today)", "full", video, fps, n_src),
             ("pre-change list + np.stack decode, then frames[idx]", "legacy", video, fps, n_src),
             ("trimmed clip, read_video(fps=-1)", "indexed", trimmed, -1.0, None)]
    for name, mode, path, f, decoded in cases:
        rss, sec, out = _measure([sys.executable, "-c", _READ_CHILD, mode, str(path), str(f)])
        info = json.loads(out.strip().splitlines()[-1])
        rows.append({"stage": "read", "case": name, "video": str(path), "fps": f,
                     "decoded": decoded if decoded is not None else info["kept"], "kept": info["kept"],
                     "shape": info["shape"], "peak_rss_mib": rss / 1024,
                     "import_rss_mib": info["import_maxrss_kib"] / 1024, "seconds": sec})
        print(f"  {name}: {rss / 1024:.0f} MiB, {sec:.1f} s", file=sys.stderr)
    return rows


def stage_cli(video: Path, trimmed: Path, refer: Path, fps: float, n_src: int, n_kept: int,
              folder: Path, extra: list[str]) -> list[dict[str, Any]]:
    rows = []
    cases = [(f"wan-animate preprocess --fps {fps:g} (source video)", video, fps, n_src),
             ("wan-animate preprocess --fps -1 (trimmed clip)", trimmed, -1.0, n_kept)]
    for i, (name, path, f, decoded) in enumerate(cases):
        save = folder / f"out{i}"
        cmd = [sys.executable, "-m", "wan_animate.cli", "preprocess", "--video_path", str(path),
               "--refer_path", str(refer), "--save_path", str(save), "--fps", str(f), "--quiet", *extra]
        rss, sec, out = _measure(cmd)
        kept = _probe(save / "src_pose.mp4")[0] if (save / "src_pose.mp4").is_file() else None
        rows.append({"stage": "cli", "case": name, "video": str(path), "fps": f, "decoded": decoded,
                     "kept": kept, "peak_rss_mib": rss / 1024, "seconds": sec,
                     "stdout": out.strip().splitlines()[-1:] if out.strip() else []})
        print(f"  {name}: {rss / 1024:.0f} MiB, {sec:.1f} s", file=sys.stderr)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table; ratio = peak RSS / the trimmed case's peak RSS of the same stage."""
    lines = ["| stage | case | frames decoded / kept | peak RSS MiB | ratio to trimmed | s |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        ref = next(x for x in rows if x["stage"] == r["stage"] and "trimmed" in x["case"])
        lines.append(f"| {r['stage']} | {r['case']} | {r['decoded']} / {r['kept']} | "
                     f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] / ref['peak_rss_mib']:.2f} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--stage", choices=("read", "cli", "both"), default="both")
    p.add_argument("--video", type=Path, default=SAMPLES / "animate" / "video.mp4",
                   help="driving video (default: the 1920x1080 30 fps sample)")
    p.add_argument("--refer", type=Path, default=SAMPLES / "animate" / "image.jpeg",
                   help="reference image for the cli stage")
    p.add_argument("--fps", type=float, default=2.0, help="--fps of the subsampled cases")
    p.add_argument("--cli-args", default="", help="extra arguments for the preprocess CLI, one string")
    p.add_argument("--out", type=Path, default=None, help="also write every number as JSON here")
    args = p.parse_args()
    for f in (args.video, args.refer):
        if not f.is_file():
            p.error(f"{f} not found: clone the project beside ../shared or pass --video / --refer")

    sys.path.insert(0, str(REPO))
    n_src, src_fps, size = _probe(args.video)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="preprocess_memory.") as tmp:
        trimmed, n_kept, eff = make_trimmed(args.video, args.fps, Path(tmp))
        print(f"{args.video.name}: {size}, {n_src} frames at {src_fps:g} fps; --fps {args.fps:g} keeps "
              f"{n_kept} (trimmed clip at {eff:g} fps, lossless)", file=sys.stderr)
        if args.stage in ("read", "both"):
            rows += stage_read(args.video, trimmed, args.fps, n_src)
        if args.stage in ("cli", "both"):
            rows += stage_cli(args.video, trimmed, args.refer, args.fps, n_src, n_kept, Path(tmp),
                              args.cli_args.split())
    print(f"\n{args.video.name} ({size}, {n_src} frames, {src_fps:g} fps), --fps {args.fps:g}: "
          f"{n_kept} frames kept\n")
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps({"video": str(args.video), "size": size, "frames": n_src,
                                        "fps": src_fps, "target_fps": args.fps, "kept": n_kept,
                                        "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
