"""Manifests, offline verification, the status report and the layout constants."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from wan_animate.checkpoints import layout
from wan_animate.checkpoints.manifest import (Manifest, git_blob_sha1, list_files, sha256_file,
                                              status_report, verify, write_manifest)
from wan_animate.errors import CheckpointError


def _official_folder(root, shards=2, skip=()):
    """A folder with the official file names (contents are arbitrary bytes)."""
    names = [layout.dit_shard_name(i, shards) for i in range(1, shards + 1)]
    files = {
        layout.DIT_CONFIG: b"{}",
        layout.DIT_INDEX: json.dumps({"weight_map": {f"k{i}": n for i, n in enumerate(names)}}).encode(),
        layout.T5_FILE: b"t5" * 100,
        f"{layout.T5_TOKENIZER_DIR}/tokenizer.json": b"{}",
        layout.CLIP_FILE: b"clip" * 50,
        layout.VAE_FILE: b"vae" * 40,
        layout.RELIGHT_LORA_FILE: b"lora" * 30,
        **{n: bytes([i]) * (1000 + i) for i, n in enumerate(names)},
    }
    for rel, data in files.items():
        if rel in skip:
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_hashes_match_git_and_hashlib(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"hello\n")
    assert git_blob_sha1(p) == "ce013625030ba8dba906f756967f9e9ca394464a"   # `git hash-object`
    seen = []
    big = tmp_path / "big"
    big.write_bytes(os.urandom(9 << 20))
    assert sha256_file(big, seen.append) == hashlib.sha256(big.read_bytes()).hexdigest()
    assert sum(seen) == 9 << 20 and len(seen) == 2


def test_write_manifest_and_verify(tmp_path):
    files = _official_folder(tmp_path)
    (tmp_path / ".wan_animate_partial").mkdir()
    (tmp_path / ".wan_animate_partial" / "x.incomplete").write_bytes(b"part")
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "meta").write_bytes(b"m")
    man = write_manifest(tmp_path, created_by="make-tiny-checkpoint")
    assert set(man.files) == set(files)
    assert not (tmp_path / (layout.MANIFEST_NAME + ".tmp")).exists()
    loaded = Manifest.load(tmp_path)
    assert loaded.created_by == "make-tiny-checkpoint"
    assert loaded.files[layout.VAE_FILE].sha256 == hashlib.sha256(files[layout.VAE_FILE]).hexdigest()
    assert loaded.files[layout.VAE_FILE].size == len(files[layout.VAE_FILE])
    rep = verify(tmp_path)
    assert rep.ok and rep.hashed and {c.state for c in rep.checks} == {"ok"}
    # an extra file is reported but does not fail verification
    (tmp_path / "notes.txt").write_text("x")
    rep = verify(tmp_path)
    assert rep.ok and [c.path for c in rep.checks if c.state == "unverified"] == ["notes.txt"]
    # corrupt (same size), truncated and missing files are each named
    clip = tmp_path / layout.CLIP_FILE
    clip.write_bytes(b"CLIP" + clip.read_bytes()[4:])
    (tmp_path / layout.T5_FILE).write_bytes(b"t5")
    (tmp_path / layout.VAE_FILE).unlink()
    rep = verify(tmp_path)
    assert not rep.ok
    assert {(c.path, c.state) for c in rep.problems} == {
        (layout.CLIP_FILE, "corrupt"), (layout.T5_FILE, "corrupt"), (layout.VAE_FILE, "missing")}
    text = rep.format()
    assert "sha256" in text and "--force-redownload" in text and layout.VAE_FILE in text
    assert {c.path for c in verify(tmp_path, sizes_only=True).problems} == {layout.T5_FILE, layout.VAE_FILE}
    assert rep.to_dict()["ok"] is False


def test_write_manifest_updates_entries(tmp_path):
    _official_folder(tmp_path)
    write_manifest(tmp_path, files=[layout.VAE_FILE])
    assert set(Manifest.load(tmp_path).files) == {layout.VAE_FILE}
    write_manifest(tmp_path, files=[layout.CLIP_FILE])
    assert set(Manifest.load(tmp_path).files) == {layout.VAE_FILE, layout.CLIP_FILE}
    with pytest.raises(CheckpointError, match="no such file"):
        write_manifest(tmp_path, files=["nope.bin"])


def test_verify_errors_without_manifest_or_with_a_broken_one(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        verify(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="setup download --local_dir"):
        verify(tmp_path)
    (tmp_path / layout.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable manifest"):
        verify(tmp_path)


def test_status_report_names_missing_components_and_lost_features(tmp_path):
    _official_folder(tmp_path)
    st = status_report(tmp_path)
    comp = {c.name: c for c in st.components}
    assert st.found and not st.has_manifest and st.can_generate
    assert comp["dit"].state == "present" and len(comp["dit"].paths) == 4    # config, index, 2 shards
    assert comp["sam2"].state == "missing" and comp["sam2"].disables == ("mask-sam2",)
    assert set(st.disabled_features) == {"pose-official", "mask-sam2", "flux-edit", "mediapipe-tasks"}
    assert "relighting" in st.available_features
    # one shard gone -> partial, and every generation feature is lost
    (tmp_path / layout.dit_shard_name(2, 2)).unlink()
    (tmp_path / layout.CLIP_FILE).unlink()
    st = status_report(tmp_path)
    comp = {c.name: c for c in st.components}
    assert comp["dit"].state == "partial" and comp["clip"].state == "missing"
    assert not st.can_generate and {"animate", "replace", "relighting"} <= set(st.disabled_features)
    text = st.format()
    assert "PARTIAL" in text and "MISSING" in text and layout.CLIP_FILE in text
    assert json.loads(json.dumps(st.to_dict()))["can_generate"] is False


def test_status_report_uses_manifest_sizes(tmp_path):
    _official_folder(tmp_path)
    write_manifest(tmp_path)
    (tmp_path / layout.RELIGHT_LORA_FILE).write_bytes(b"short")
    (tmp_path / f"{layout.T5_TOKENIZER_DIR}/tokenizer.json").write_bytes(b"{ }")
    st = status_report(tmp_path)
    comp = {c.name: c for c in st.components}
    assert st.has_manifest
    assert comp["relighting-lora"].state == "corrupt" and "relighting" in st.disabled_features
    assert comp["t5-tokenizer"].state == "corrupt"
    assert "animate" in st.disabled_features


def test_status_report_finds_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("WAN_ANIMATE_CKPT_DIR", raising=False)
    cache = tmp_path / "hub"
    assert not status_report(None, cache_dir=cache).found
    assert "setup quick" in status_report(None, cache_dir=cache).format()
    storage = cache / ("models--" + layout.REPO_ID.replace("/", "--"))
    snap = storage / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text("a" * 40)
    _official_folder(snap)
    st = status_report(None, cache_dir=cache)
    assert st.found and st.folder == snap and st.can_generate
    monkeypatch.setenv("WAN_ANIMATE_CKPT_DIR", str(tmp_path / "elsewhere"))
    st = status_report(None, cache_dir=cache)
    assert st.folder == tmp_path / "elsewhere" and not st.found and not st.can_generate


def test_layout_constants_and_helpers(tmp_path, official_fixtures):
    assert layout.dit_shard_names() == [f"diffusion_pytorch_model-0000{i}-of-00004.safetensors"
                                        for i in range(1, 5)]
    _official_folder(tmp_path, shards=3)
    assert layout.dit_shard_names(tmp_path) == [layout.dit_shard_name(i, 3) for i in range(1, 4)]
    assert layout.component_of(layout.dit_shard_name(2)).name == "dit"
    assert layout.component_of(f"{layout.POSE2D_DIR}/weights_7").name == "pose2d"
    assert layout.component_of("README.md") is None
    assert layout.disabled_features(["vae"]) == ["animate", "replace", "relighting"]
    assert layout.disabled_features(["det", "sam2"]) == ["pose-official", "mask-sam2"]
    assert layout.parse_groups(None) == layout.DEFAULT_GROUPS
    assert layout.parse_groups("sam2,core") == ("core", "sam2")
    assert layout.parse_groups(["all"]) == tuple(layout.GROUPS)
    with pytest.raises(ValueError, match="unknown download group"):
        layout.parse_groups("core,weights")
    core = layout.GROUPS["core"].sources[0]
    for rel in (layout.DIT_INDEX, layout.dit_shard_name(3), layout.T5_FILE, layout.VAE_FILE,
                f"{layout.T5_TOKENIZER_DIR}/spiece.model"):
        assert layout.matches(rel, core.include), rel
    assert not layout.matches(layout.RELIGHT_LORA_FILE, core.include)
    assert not layout.matches("README.md", core.include)
    spec = json.loads((official_fixtures / "dit_animate" / "full_size_key_shapes.json").read_text())
    kernels = [k for k in spec["keys"] if layout.is_rebuildable_dit_key(k)]
    assert len(kernels) == 14 and len(spec["keys"]) == 1441
    listed = list_files(tmp_path)
    assert listed == sorted(listed) and layout.DIT_CONFIG in listed and len(listed) == 10
