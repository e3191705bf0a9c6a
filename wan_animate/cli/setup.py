"""``wan-animate setup``: download, check and report the model files.

    wan-animate setup quick                     # core + relight + preprocess + sam2, then status
    wan-animate setup download [--with core,relight,preprocess,sam2,flux,mediapipe|all]
                               [--local_dir DIR] [--force-redownload] [--file PATH ...] [--dry-run]
    wan-animate setup status   [--local_dir DIR] [--json]
    wan-animate setup verify   [--local_dir DIR] [--sizes-only] [--json]

Without ``--local_dir`` files go to (and are looked for in) the Hugging Face cache
(``HF_HUB_CACHE`` / ``--cache_dir``); status/verify also honour ``WAN_ANIMATE_CKPT_DIR``.
quick/download contact ``--endpoint`` (default ``HF_ENDPOINT``, huggingface.co); every network
call waits at most ``WAN_ANIMATE_HUB_TIMEOUT`` seconds (default 20) for an answer, so a stalled
hub, mirror or proxy ends in an error with advice. status/verify never use the network.
Exit codes: 0 ok, 1 error (verify: any missing or corrupt file; status: cannot generate).
"""
from __future__ import annotations

import argparse
import json
import sys

from wan_animate.checkpoints import layout

NAME = "setup"
HELP = "download, verify and report the Wan2.2-Animate-14B model files (quick | download | status | verify)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--local_dir", "--local-dir", dest="local_dir", default=None,
                   help="checkpoint folder (default: the official repo's snapshot in the Hugging Face cache)")
    p.add_argument("--cache_dir", "--cache-dir", dest="cache_dir", default=None,
                   help="Hugging Face cache root (default: HF_HUB_CACHE, ~/.cache/huggingface/hub)")


def _download_args(p: argparse.ArgumentParser, default_groups: tuple[str, ...]) -> None:
    _common(p)
    groups = "; ".join(f"{g.name}: {g.description} (~{g.approx_gb:g} GB)" for g in layout.GROUPS.values())
    p.add_argument("--with", dest="groups", action="append", default=None, metavar="GROUPS",
                   help=f"comma-separated groups or 'all' (default: {','.join(default_groups)}). {groups}")
    p.add_argument("--file", dest="files", action="append", default=None, metavar="PATH",
                   help="only this checkpoint-relative file (repeatable), e.g. one that verify flagged")
    p.add_argument("--force-redownload", "--force_redownload", dest="force", action="store_true",
                   help="download again even when a complete file is present (fixes corrupt files)")
    p.add_argument("--revision", default=layout.DEFAULT_REVISION, help="branch, tag or commit")
    p.add_argument("--token", default=None,
                   help="Hugging Face token (default: HF_TOKEN or the `hf auth login` token)")
    p.add_argument("--endpoint", default=None,
                   help="hub URL or mirror (default: HF_ENDPOINT); each call waits at most "
                        "WAN_ANIMATE_HUB_TIMEOUT seconds (default 20) for an answer")
    p.add_argument("--max-workers", "--max_workers", dest="max_workers", type=int, default=4,
                   help="files downloaded in parallel")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="show the plan (sizes, free space) and exit without writing anything")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = sub.add_parser("quick", help="download the official set (core, relight, preprocess, sam2) "
                                     "into the cache or --local_dir, then show the status")
    _download_args(q, layout.QUICK_GROUPS)
    d = sub.add_parser("download", help="download chosen groups; resumes partial files")
    _download_args(d, layout.DEFAULT_GROUPS)
    s = sub.add_parser("status", help="what is present, missing or corrupt and which features that disables")
    _common(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    v = sub.add_parser("verify", help="re-hash every file against the folder's manifest (offline)")
    _common(v)
    v.add_argument("--sizes-only", "--sizes_only", dest="sizes_only", action="store_true",
                   help="compare sizes only (seconds instead of minutes)")
    v.add_argument("--json", action="store_true", help="machine-readable output")


def _print_event(e) -> None:
    if e.kind == "keep":
        print(f"  have     {e.path}")
    elif e.kind == "resume":
        print(f"  resume   {e.path} at {e.offset / 1e9:.2f} GB")
    elif e.kind == "start":
        print(f"  get      {e.path}" + (f" ({e.size / 1e9:.2f} GB)" if e.size else ""))
    elif e.kind == "done":
        print(f"  done     {e.path}")
    sys.stdout.flush()


def _download(args: argparse.Namespace, default_groups: tuple[str, ...]) -> tuple[int, object]:
    """Plan, check the disk, fetch. Returns (exit code, checkpoint folder)."""
    from wan_animate.checkpoints import download as dl

    try:
        groups = layout.parse_groups(args.groups, default_groups)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1, None
    plan = dl.plan_download(groups, local_dir=args.local_dir, cache_dir=args.cache_dir,
                            revision=args.revision, token=args.token, endpoint=args.endpoint,
                            force_redownload=args.force, only_files=args.files)
    print(plan.format())
    if args.dry_run:
        return 0, plan.folder
    dl.check_disk_space(plan)
    result = dl.execute(plan, token=args.token, max_workers=args.max_workers, on_event=_print_event)
    print(f"{len(result.downloaded)} downloaded, {len(result.kept)} already present; "
          f"manifest: {result.manifest}")
    print(f"checkpoint folder: {result.folder}")
    return 0, result.folder


def run(args: argparse.Namespace) -> int:
    from wan_animate.checkpoints.manifest import default_checkpoint_dir, status_report, verify

    if args.action in ("quick", "download"):
        rc, folder = _download(args, layout.QUICK_GROUPS if args.action == "quick" else
                               layout.DEFAULT_GROUPS)
        if rc or args.action == "download" or args.dry_run:
            return rc
        args.local_dir, args.json = folder, False
    if args.action in ("quick", "status"):
        report = status_report(args.local_dir, cache_dir=args.cache_dir)
        if getattr(args, "json", False):
            print(json.dumps(report.to_dict(), indent=1))
        else:
            print(report.format())
        return 0 if report.can_generate else 1
    folder = args.local_dir or default_checkpoint_dir(args.cache_dir)
    if folder is None:
        print("error: no checkpoint folder found; pass --local_dir DIR or run `wan-animate setup quick`",
              file=sys.stderr)
        return 1

    def progress(n: int, state={"done": 0, "mark": 0}) -> None:
        state["done"] += n
        if state["done"] - state["mark"] >= 5e9:
            state["mark"] = state["done"]
            print(f"  hashed {state['done'] / 1e9:.0f} GB", file=sys.stderr)

    report = verify(folder, sizes_only=args.sizes_only, on_bytes=progress)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.format())
    return 0 if report.ok else 1
