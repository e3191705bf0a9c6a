"""Real huggingface_hub downloads against a hub served on 127.0.0.1 from a tiny repository.

Covers: local-dir and HF-cache destinations, an interrupted download resumed with an HTTP
Range request on the next run, a corrupted file caught by ``verify``, the free-disk refusal
before any byte is written, gated/offline/unreachable errors with advice, plain-URL files
and the ``setup`` CLI.

The fake hub speaks the three calls huggingface_hub makes for a download:
``GET /api/models/<repo>[/revision/<rev>]?blobs=true`` (file list with sizes, git blob ids and
LFS sha256), ``HEAD /<repo>/resolve/<rev>/<path>`` (X-Repo-Commit, ETag, Content-Length) and
``GET`` of the same URL with Range support. ``/files/<name>`` stands in for non-hub URLs.
Knobs: cut a file's first GET after N bytes (then answer 503 to its GETs until released);
stall a file's GETs (headers never sent, until released); mark repos gated (401 +
X-Error-Code: GatedRepo on resolve).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from wan_animate.checkpoints import download as dl
from wan_animate.checkpoints import layout
from wan_animate.checkpoints.manifest import Manifest, status_report, verify
from wan_animate.cli import setup as setup_cli
from wan_animate.errors import CheckpointError


# ---- the fake hub ---------------------------------------------------------------------------
def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.lfs: set[tuple[str, str]] = set()
        self.gated: set[str] = set()
        self.commits: dict[str, str] = {}
        self.url_files: dict[str, bytes] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self.cut_after: dict[str, int] = {}      # path -> bytes sent before the connection is cut
        self.blocked: set[str] = set()           # paths whose GETs answer 503
        self.stalled: set[str] = set()           # paths whose GETs get no answer until release
        self.release = threading.Event()         # set: stalled GETs return (closing the socket)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- content --------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], lfs: set[str], gated: bool = False) -> None:
        self.repos[repo_id] = dict(files)
        self.lfs |= {(repo_id, p) for p in lfs}
        self.commits[repo_id] = hashlib.sha1(repo_id.encode()).hexdigest()
        if gated:
            self.gated.add(repo_id)

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def gets(self, path_part: str) -> list[tuple[str, str, str | None]]:
        return [e for e in self.log if e[0] == "GET" and path_part in e[1] and "/api/" not in e[1]]

    # -- server ---------------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                return

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- request handling -----------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        with self._lock:
            self.log.append((method, path, h.headers.get("Range")))
        if path.startswith("/api/models/"):
            return self._api(h, path[len("/api/models/"):])
        if path.startswith("/files/"):
            data = self.url_files.get(path[len("/files/"):])
            if data is None:
                return self._send(h, 404, b"", {})
            return self._content(h, method, path, data, {"ETag": f'"{git_sha1(data)}"'})
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(h, 404, b"", {})
        repo_id, rel = "/".join(parts[:2]), "/".join(parts[4:])
        files = self.repos.get(repo_id)
        if files is None:
            return self._send(h, 401, b"", {"X-Error-Code": "RepoNotFound"})
        if repo_id in self.gated:
            return self._send(h, 401, b"", {"X-Error-Code": "GatedRepo",
                                            "X-Error-Message": "Access to this repo is restricted"})
        data = files.get(rel)
        if data is None:
            return self._send(h, 404, b"", {"X-Error-Code": "EntryNotFound",
                                            "X-Repo-Commit": self.commits[repo_id]})
        is_lfs = (repo_id, rel) in self.lfs
        etag = hashlib.sha256(data).hexdigest() if is_lfs else git_sha1(data)
        hdr = {"X-Repo-Commit": self.commits[repo_id], "ETag": f'"{etag}"'}
        return self._content(h, method, rel, data, hdr)

    def _api(self, h: BaseHTTPRequestHandler, rest: str) -> None:
        parts = rest.split("/")
        repo_id = "/".join(parts[:2])
        files = self.repos.get(repo_id)
        if files is None:
            return self._send(h, 401, b"", {"X-Error-Code": "RepoNotFound"})
        siblings = []
        for rel, data in sorted(files.items()):
            s = {"rfilename": rel, "size": len(data), "blobId": git_sha1(data)}
            if (repo_id, rel) in self.lfs:
                s["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                            "pointerSize": 134}
            siblings.append(s)
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": self.commits[repo_id],
                           "siblings": siblings, "private": False,
                           "gated": "auto" if repo_id in self.gated else False}).encode()
        self._send(h, 200, body, {"Content-Type": "application/json"})

    def _content(self, h: BaseHTTPRequestHandler, method: str, key: str, data: bytes,
                 hdr: dict[str, str]) -> None:
        hdr = dict(hdr, **{"Accept-Ranges": "bytes"})
        if method == "HEAD":
            hdr["Content-Length"] = str(len(data))
            h.send_response(200)
            for k, v in hdr.items():
                h.send_header(k, v)
            h.end_headers()
            return
        if key in self.stalled:                  # accept the request, never answer it
            self.release.wait()
            h.close_connection = True
            return
        if key in self.blocked:
            return self._send(h, 503, b"unavailable", {})
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[len("bytes="):].split("-")[0])
        body = data[start:]
        if start:
            hdr["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        hdr["Content-Length"] = str(len(body))
        h.send_response(206 if start else 200)
        for k, v in hdr.items():
            h.send_header(k, v)
        h.end_headers()
        cut = self.cut_after.pop(key, None)
        if cut is not None:
            h.wfile.write(body[:cut])
            h.wfile.flush()
            self.blocked.add(key)
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(body)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, hdr: dict[str, str]) -> None:
        h.send_response(code)
        for k, v in hdr.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)


# ---- the tiny repository --------------------------------------------------------------------
REPO = layout.REPO_ID
SHARD1 = "diffusion_pytorch_model-00001-of-00002.safetensors"
SHARD2 = "diffusion_pytorch_model-00002-of-00002.safetensors"


def _bytes(seed: int, n: int) -> bytes:
    return hashlib.shake_256(str(seed).encode()).digest(n)


def _repo_files() -> tuple[dict[str, bytes], set[str]]:
    index = {"metadata": {"total_size": 3}, "weight_map": {"a": SHARD1, "b": SHARD2}}
    files = {
        "README.md": b"# model card\n",
        layout.DIT_CONFIG: json.dumps({"dim": 8}).encode(),
        layout.DIT_INDEX: json.dumps(index).encode(),
        SHARD1: _bytes(1, 200_000),
        SHARD2: _bytes(2, 90_000),
        layout.T5_FILE: _bytes(3, 30_000),
        f"{layout.T5_TOKENIZER_DIR}/tokenizer.json": b'{"model": "unigram"}',
        f"{layout.T5_TOKENIZER_DIR}/spiece.model": _bytes(4, 5_000),
        layout.CLIP_FILE: _bytes(5, 20_000),
        layout.VAE_FILE: _bytes(6, 10_000),
        layout.RELIGHT_LORA_FILE: _bytes(7, 12_000),
        layout.DET_FILE: _bytes(8, 3_000),
        layout.POSE2D_ONNX: _bytes(9, 2_000),
        f"{layout.POSE2D_DIR}/weights_0": _bytes(10, 2_000),
        layout.SAM2_FILE: _bytes(11, 4_000),
    }
    lfs = {p for p, d in files.items() if len(d) > 1000 and not p.endswith(".json")}
    return files, lfs


@pytest.fixture()
def hub():
    h = FakeHub()
    files, lfs = _repo_files()
    h.add_repo(REPO, files, lfs)
    h.start()
    yield h
    h.stop()


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path):
    """No saved token, no offline flag, small chunks (so a cut transfer leaves a partial file)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("WAN_ANIMATE_CKPT_DIR", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 8192)


def _dl(hub: FakeHub, **kw):
    kw.setdefault("token", False)
    kw.setdefault("endpoint", hub.endpoint)
    kw.setdefault("max_workers", 2)
    return dl.download(**kw)


# ---- tests ----------------------------------------------------------------------------------
def test_local_dir_download_manifest_and_status(hub, tmp_path):
    files, lfs = _repo_files()
    dest = tmp_path / "ckpt"
    res = _dl(hub, groups=("core", "relight"), local_dir=dest)
    want = [p for p in files if layout.matches(p, layout.GROUPS["core"].sources[0].include)
            or p == layout.RELIGHT_LORA_FILE]
    assert sorted(res.downloaded) == sorted(want)
    for p in want:
        assert (dest / p).read_bytes() == files[p]
    assert not (dest / "README.md").exists() and not (dest / layout.DET_FILE).exists()
    man = Manifest.load(dest)
    assert man.commit == hub.commits[REPO]
    assert man.files[SHARD1].origin == "hub-lfs"
    assert man.files[SHARD1].sha256 == hashlib.sha256(files[SHARD1]).hexdigest()
    assert man.files[layout.DIT_CONFIG].origin == "hub-git"
    assert verify(dest).ok
    st = status_report(dest)
    assert st.can_generate and st.has_manifest
    states = {c.name: c.state for c in st.components}
    assert states["dit"] == "present" and states["relighting-lora"] == "present"
    assert states["sam2"] == "missing" and states["det"] == "missing"
    assert "mask-sam2" in st.disabled_features and "pose-official" in st.disabled_features
    assert "animate" in st.available_features
    # a second run downloads nothing
    n = len(hub.gets("/resolve/"))
    res2 = _dl(hub, groups=("core", "relight"), local_dir=dest)
    assert res2.downloaded == () and len(hub.gets("/resolve/")) == n


def test_interrupted_download_resumes_with_range(hub, tmp_path):
    files, _ = _repo_files()
    dest = tmp_path / "ckpt"
    hub.cut_after[SHARD1] = 70_000          # first GET dies after 70 kB, then 503 until released
    with pytest.raises(dl.HubAccessError, match="partial files are kept"):
        _dl(hub, groups=("core",), local_dir=dest)
    assert not (dest / SHARD1).exists()
    parts = list((dest / dl.PARTIAL_DIR).glob("*.incomplete"))
    assert len(parts) == 1
    have = parts[0].stat().st_size
    assert 0 < have <= 70_000 and parts[0].read_bytes() == files[SHARD1][:have]
    assert (dest / SHARD2).read_bytes() == files[SHARD2]     # the other files completed
    plan = dl.plan_download(("core",), local_dir=dest, endpoint=hub.endpoint, token=False)
    [p] = plan.to_fetch
    assert (p.path, p.action, p.partial_bytes) == (SHARD1, "resume", have)
    assert plan.bytes_needed == len(files[SHARD1]) - have
    hub.blocked.clear()
    before = len(hub.gets(SHARD1))
    res = dl.execute(plan, token=False)
    assert res.downloaded == (SHARD1,)
    ranges = [r for (_, _, r) in hub.gets(SHARD1)[before:]]
    assert ranges == [f"bytes={have}-"]
    assert (dest / SHARD1).read_bytes() == files[SHARD1]
    assert not list((dest / dl.PARTIAL_DIR).glob("*.incomplete"))
    assert verify(dest).ok


def test_force_redownload_discards_a_partial_file(hub, tmp_path):
    files, _ = _repo_files()
    dest = tmp_path / "ckpt"
    hub.cut_after[SHARD1] = 50_000
    with pytest.raises(dl.HubAccessError):
        _dl(hub, groups=("core",), local_dir=dest)
    hub.blocked.clear()
    plan = dl.plan_download(("core",), local_dir=dest, endpoint=hub.endpoint, token=False,
                            force_redownload=True)
    assert {f.action for f in plan.files} == {"fetch"} and plan.bytes_needed == sum(
        len(files[f.path]) for f in plan.files)
    before = len(hub.gets(SHARD1))
    dl.execute(plan, token=False)
    assert [r for (_, _, r) in hub.gets(SHARD1)[before:]] == [None]      # no Range: from byte 0
    assert verify(dest).ok


def test_stalled_transfer_times_out_then_resumes(hub, tmp_path, monkeypatch):
    """A GET that never answers (after the listing and HEAD did) fails within the hub timeout
    and the bounded retries, not huggingface_hub's 5 x 10 s; the hub constant is restored."""
    import time

    from huggingface_hub import constants

    files, _ = _repo_files()
    dest = tmp_path / "ckpt"
    monkeypatch.setenv("WAN_ANIMATE_HUB_TIMEOUT", "1")
    saved = constants.HF_HUB_DOWNLOAD_TIMEOUT
    hub.stalled.add(SHARD1)
    t0 = time.monotonic()
    with pytest.raises(dl.HubAccessError) as ei:
        _dl(hub, groups=("core",), local_dir=dest)
    elapsed = time.monotonic() - t0
    msg = str(ei.value)
    assert elapsed < 15, f"a stalled transfer took {elapsed:.1f} s to fail"
    assert f"downloading {SHARD1}" in msg and "no answer from " + hub.endpoint in msg
    assert "HF_ENDPOINT" in msg and "HF_HUB_OFFLINE=1" in msg and "WAN_ANIMATE_HUB_TIMEOUT" in msg
    assert len(hub.gets(SHARD1)) == 1 + dl.TRANSFER_RETRIES
    assert constants.HF_HUB_DOWNLOAD_TIMEOUT == saved
    assert (dest / SHARD2).read_bytes() == files[SHARD2]     # the other files completed
    hub.stalled.clear()
    assert _dl(hub, groups=("core",), local_dir=dest).downloaded == (SHARD1,)
    assert verify(dest).ok


def test_corrupt_file_caught_by_verify_and_fixed_by_force(hub, tmp_path):
    files, _ = _repo_files()
    dest = tmp_path / "ckpt"
    _dl(hub, groups=("core", "relight"), local_dir=dest)
    vae = dest / layout.VAE_FILE
    data = bytearray(vae.read_bytes())
    data[5000] ^= 0xFF                                    # same size, one byte flipped
    vae.write_bytes(bytes(data))
    lora = dest / layout.RELIGHT_LORA_FILE
    lora.write_bytes(lora.read_bytes()[:100])             # truncated
    (dest / layout.T5_FILE).unlink()                      # missing
    rep = verify(dest)
    assert not rep.ok
    bad = {c.path: c.state for c in rep.problems}
    assert bad == {layout.VAE_FILE: "corrupt", layout.RELIGHT_LORA_FILE: "corrupt",
                   layout.T5_FILE: "missing"}
    quick = {c.path for c in verify(dest, sizes_only=True).problems}
    assert layout.VAE_FILE not in quick and layout.RELIGHT_LORA_FILE in quick
    st = status_report(dest)
    comp = {c.name: c for c in st.components}
    assert comp["relighting-lora"].state == "corrupt" and comp["t5"].state == "missing"
    assert comp["relighting-lora"].disables == ("relighting",)
    assert not st.can_generate
    # a plain re-run keeps the same-size corrupt file (it trusts size + manifest) ...
    _dl(hub, groups=("core",), local_dir=dest, only_files=[layout.VAE_FILE])
    assert not verify(dest).ok
    # ... the command verify prints (--force-redownload --file ...) repairs everything
    fix = rep.format().splitlines()[-1]
    assert "--force-redownload --with core,relight" in fix and f"--file {layout.VAE_FILE}" in fix
    args = fix.split("wan-animate setup ")[1].split()
    assert _cli(*args, "--endpoint", hub.endpoint) == 0
    assert verify(dest).ok and vae.read_bytes() == files[layout.VAE_FILE]


def test_full_disk_refused_before_any_byte(hub, tmp_path):
    dest = tmp_path / "ckpt"
    with pytest.raises(dl.DiskSpaceError) as ei:
        _dl(hub, groups=("core",), local_dir=dest, free_bytes=lambda p: 300_000, reserve_bytes=0)
    msg = str(ei.value)
    assert "Nothing was written" in msg and "--local_dir" in msg and str(dest) in msg
    assert not dest.exists()
    assert hub.gets("/resolve/") == []
    # enough room: the same call succeeds
    _dl(hub, groups=("core",), local_dir=dest, free_bytes=lambda p: 10**9, reserve_bytes=0)
    assert verify(dest).ok


def test_parallel_run_of_the_same_file_is_refused(hub, tmp_path):
    from filelock import FileLock

    dest = tmp_path / "ckpt"
    plan = dl.plan_download(("relight",), local_dir=dest, endpoint=hub.endpoint, token=False)
    [f] = plan.to_fetch
    (dest / dl.PARTIAL_DIR).mkdir(parents=True)
    with FileLock(str(dest / dl.PARTIAL_DIR / f.key) + ".lock"):
        with pytest.raises(CheckpointError, match="another download of this file is running"):
            dl.execute(plan, token=False)
    dl.execute(plan, token=False)
    assert verify(dest).ok and not (dest / dl.PARTIAL_DIR).exists()


def test_hf_cache_destination_is_readable_by_huggingface_hub(hub, tmp_path):
    from huggingface_hub import try_to_load_from_cache

    cache = tmp_path / "hf"
    res = _dl(hub, groups=("core",), cache_dir=cache)
    commit = hub.commits[REPO]
    assert res.folder == (cache / ("models--" + REPO.replace("/", "--")) / "snapshots" / commit).resolve()
    assert (res.folder / layout.VAE_FILE).is_symlink()
    found = try_to_load_from_cache(REPO, layout.VAE_FILE, cache_dir=str(cache), revision="main")
    assert isinstance(found, str) and Path(found).read_bytes() == _repo_files()[0][layout.VAE_FILE]
    st = status_report(None, cache_dir=cache)
    assert st.found and st.folder == res.folder and st.can_generate
    assert verify(res.folder).ok


def test_gated_repo_error_says_licence_and_token(hub, tmp_path):
    hub.add_repo("gated-org/Gated-Model", {"model_index.json": b"{}", "vae/w.bin": _bytes(20, 2000)},
                 {"vae/w.bin"}, gated=True)
    groups = {"core": layout.GROUPS["core"], "flux": layout.Group("flux", "gated", 0.0, (
        layout.Source(repo_id="gated-org/Gated-Model", include=("*",), dest_prefix=layout.FLUX_DIR + "/",
                      gated=True),))}
    with pytest.raises(dl.HubAccessError) as ei:
        _dl(hub, groups=("flux",), local_dir=tmp_path / "c", group_defs=groups)
    msg = str(ei.value)
    assert "gated" in msg and "licence" in msg and "HF_TOKEN" in msg and "--token" in msg


def test_offline_and_unreachable_errors(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(dl.HubAccessError, match="HF_HUB_OFFLINE"):
        _dl(hub, groups=("core",), local_dir=tmp_path / "a")
    assert hub.log == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(dl.HubAccessError) as ei:
        dl.download(("core",), local_dir=tmp_path / "b", endpoint=f"http://127.0.0.1:{port}", token=False)
    assert "cannot reach" in str(ei.value) and "HF_ENDPOINT" in str(ei.value)
    assert not (tmp_path / "b").exists()


def test_plain_url_files_and_existing_files_without_manifest(hub, tmp_path):
    hub.url_files["pose.task"] = _bytes(30, 6000)
    groups = dict(layout.GROUPS)
    groups["mediapipe"] = layout.Group("mediapipe", "", 0.0, (layout.Source(urls=(
        layout.UrlFile(f"{layout.MEDIAPIPE_DIR}/pose.task", f"{hub.endpoint}/files/pose.task"),)),))
    dest = tmp_path / "a"
    _dl(hub, groups=("relight", "mediapipe"), local_dir=dest, group_defs=groups)
    man = Manifest.load(dest)
    entry = man.files[f"{layout.MEDIAPIPE_DIR}/pose.task"]
    assert entry.origin == "url" and entry.sha256 == hashlib.sha256(hub.url_files["pose.task"]).hexdigest()
    # a folder copied by hand (no manifest): files are hashed against the hub and kept
    copy = tmp_path / "b"
    (copy / layout.RELIGHT_LORA_FILE).parent.mkdir(parents=True)
    (copy / layout.RELIGHT_LORA_FILE).write_bytes((dest / layout.RELIGHT_LORA_FILE).read_bytes())
    n = len(hub.gets("/resolve/"))
    res = _dl(hub, groups=("relight",), local_dir=copy)
    assert res.kept == (layout.RELIGHT_LORA_FILE,) and res.downloaded == ()
    assert len(hub.gets("/resolve/")) == n and verify(copy).ok


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="wan-animate setup")
    setup_cli.add_arguments(parser)
    return setup_cli.run(parser.parse_args(list(argv)))


def test_setup_cli_download_status_verify(hub, tmp_path, capsys):
    dest = tmp_path / "ckpt"
    assert _cli("download", "--local_dir", str(dest), "--endpoint", hub.endpoint, "--dry-run") == 0
    assert not dest.exists() and "to download" in capsys.readouterr().out
    assert _cli("quick", "--local_dir", str(dest), "--endpoint", hub.endpoint) == 0
    out = capsys.readouterr().out
    assert "can generate: yes" in out and (dest / layout.SAM2_FILE).is_file()
    assert _cli("verify", "--local_dir", str(dest)) == 0
    assert "all good" in capsys.readouterr().out
    (dest / layout.SAM2_FILE).write_bytes(b"x")
    assert _cli("verify", "--local_dir", str(dest), "--json") == 1
    body = json.loads(capsys.readouterr().out)
    assert [f["path"] for f in body["files"] if f["state"] == "corrupt"] == [layout.SAM2_FILE]
    assert _cli("status", "--local_dir", str(dest), "--json") == 0
    st = json.loads(capsys.readouterr().out)
    assert st["disabled_features"] == ["mask-sam2", "flux-edit", "mediapipe-tasks"]
    with pytest.raises(CheckpointError, match="no wan_animate_manifest.json"):
        _cli("verify", "--local_dir", str(tmp_path))
