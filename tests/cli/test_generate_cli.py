"""`wan-animate generate`, `make-tiny-checkpoint` and `demo` as a user runs them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wan_animate.cli.__main__ import main
from wan_animate.cli.demo_media import write_preprocessed
from wan_animate.preprocess.video_io import read_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("c") / "tiny"
    assert main(["make-tiny-checkpoint", str(d)]) == 0
    return d


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("refert,frames", [(1, 5), (1, 9), (1, 7), (5, 13), (5, 21), (5, 14)])
def test_generate_writes_n_frames_at_source_fps(ckpt, tmp_path, replace, refert, frames):
    src = write_preprocessed(tmp_path / "src", frames, 32, 48, fps=12.5, replace=replace)
    out = tmp_path / "out.mp4"
    argv = ["generate", "--ckpt_dir", str(ckpt), "--src_root_path", str(src), "--frame_num",
            "13" if refert == 5 else "5", "--refert_num", str(refert), "--sample_steps", "2",
            "--base_seed", "7", "--save_file", str(out), "--device", "cpu"]
    if replace:
        argv += ["--replace_flag", "--use_relighting_lora"]
    assert main(argv) == 0
    video, fps = read_video(out)
    assert video.shape == (frames, 32, 48, 3) and fps == pytest.approx(12.5)


def test_generate_bad_input_exit_code(ckpt, tmp_path, capsys):
    src = write_preprocessed(tmp_path / "src", 5, 32, 48)
    code = main(["generate", "--ckpt_dir", str(ckpt), "--src_root_path", str(src),
                 "--frame_num", "6", "--device", "cpu"])
    assert code == 1 and "4n+1" in capsys.readouterr().err
    code = main(["generate", "--ckpt_dir", str(ckpt), "--src_root_path", str(src), "--replace_flag",
                 "--device", "cpu"])
    assert code == 1 and "src_bg.mp4" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.mp4"))


@pytest.mark.parametrize("where", ["folder", "read_only", "full"])
def test_bad_save_file_fails_before_any_model_loads(where, tmp_path, capsys, request):
    """The destination is checked first: neither the (missing) checkpoint nor the inputs are
    read, so a bad --save_file costs seconds, not a whole generation."""
    if where == "folder":
        save = tmp_path
    else:
        save = request.getfixturevalue("read_only_dir" if where == "read_only" else "full_disk") / "o.mp4"
    code = main(["generate", "--ckpt_dir", str(tmp_path / "no_ckpt"), "--src_root_path",
                 str(tmp_path / "no_src"), "--save_file", str(save), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and f"--save_file {save}" in err, err
    assert ("file name" if where == "folder" else "read-only" if where == "read_only" else "full") in err


def test_a_failed_final_write_keeps_the_video(ckpt, tmp_path, capsys, monkeypatch):
    """If the destination breaks during the run, the finished video lands in the temp folder."""
    import tempfile

    from wan_animate.sampling import folder as folder_mod
    src = write_preprocessed(tmp_path / "src", 5, 32, 48)
    out = tmp_path / "gone" / "out.mp4"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "rescue"))
    (tmp_path / "rescue").mkdir()
    real = folder_mod.save_output

    def save_after_the_folder_became_a_file(video, path, fps):
        if Path(path).parent == out.parent:         # the user's folder was replaced by a file
            out.parent.mkdir(exist_ok=True)
            out.parent.rmdir()
            out.parent.write_text("now a file")
        return real(video, path, fps)

    monkeypatch.setattr(folder_mod, "save_output", save_after_the_folder_became_a_file)
    code = main(["generate", "--ckpt_dir", str(ckpt), "--src_root_path", str(src), "--frame_num", "5",
                 "--sample_steps", "1", "--save_file", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "saved to" in err and str(tmp_path / "rescue" / "out.mp4") in err, err
    assert read_video(tmp_path / "rescue" / "out.mp4")[0].shape == (5, 32, 48, 3)


def test_demo_runs_in_a_fresh_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wan_animate.cli", "demo", "--out", str(tmp_path / "d"),
                        "--frames", "17", "--steps", "2"], capture_output=True, text=True, timeout=600,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tiny random weights give noise" in r.stdout
    video, _ = read_video(tmp_path / "d" / "demo.mp4")
    assert video.shape[0] == 17


def test_generate_on_a_pool_of_two(ckpt, tmp_path):
    src = write_preprocessed(tmp_path / "src", 7, 32, 48)
    outs = []
    for gpus in ("1", "2"):
        out = tmp_path / f"out{gpus}.mp4"
        assert main(["generate", "--ckpt_dir", str(ckpt), "--src_root_path", str(src), "--frame_num", "5",
                     "--sample_steps", "2", "--base_seed", "3", "--save_file", str(out),
                     "--device", "cpu", "--gpus", gpus]) == 0
        outs.append(read_video(out)[0])
    assert outs[0].shape == outs[1].shape == (7, 32, 48, 3)
    # bf16 weights on both paths; the pooled result may differ by rounding only
    assert abs(outs[0].astype(int) - outs[1].astype(int)).mean() < 2.0


def test_generate_under_torchrun(ckpt, tmp_path):
    """The same worker code as the pool, launched by torchrun (as across nodes), 2 CPU ranks."""
    import socket

    src = write_preprocessed(tmp_path / "src", 7, 32, 48)
    out = tmp_path / "trun.mp4"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(port),
                        "-m", "wan_animate.cli", "generate", "--ckpt_dir", str(ckpt),
                        "--src_root_path", str(src), "--frame_num", "5", "--sample_steps", "2",
                        "--base_seed", "3", "--save_file", str(out), "--device", "cpu"],
                       capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_video(out)[0].shape == (7, 32, 48, 3)


def test_lora_flag_parsing():
    from wan_animate.cli.generate import parse_lora
    from wan_animate.errors import InputError

    assert parse_lora("loras/x.safetensors") == ("loras/x.safetensors", 1.0)
    assert parse_lora("loras/x.safetensors:0.5") == ("loras/x.safetensors", 0.5)
    with pytest.raises(InputError, match="strength"):
        parse_lora("x.safetensors:strong")
