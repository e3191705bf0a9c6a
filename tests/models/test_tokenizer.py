"""umT5 tokenizer: official cleaning, HF-style padding/EOS/truncation, the tiny tokenizer folder."""
from __future__ import annotations

import json

import pytest
import torch

from wan_animate.errors import CheckpointError
from wan_animate.models.tokenizer import UMT5Tokenizer, clean_prompt, write_tiny_tokenizer

PROMPT_ZH = "视频中的人在做动作"
PROMPT_EN = "A person is dancing in the video, low quality!"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("umt5") / "google" / "umt5-xxl", 256)


def test_clean_prompt_whitespace_html_and_ftfy():
    assert clean_prompt("  a\t\n  b \u3000 c  ") == "a b c"
    assert clean_prompt("fish &amp;amp; chips &lt;b&gt;") == "fish & chips <b>"  # unescaped twice
    assert clean_prompt("sch\u00c3\u00b6n") == "schön"  # ftfy repairs mojibake
    assert clean_prompt(PROMPT_ZH) == PROMPT_ZH


def test_folder_format(tiny_folder):
    names = {p.name for p in tiny_folder.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    spec = json.loads((tiny_folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["model"]["type"] == "Unigram" and spec["model"]["unk_id"] == 2
    assert [p[0] for p in spec["model"]["vocab"][:3]] == ["<pad>", "</s>", "<unk>"]
    cfg = json.loads((tiny_folder / "tokenizer_config.json").read_text())
    assert (cfg["pad_token"], cfg["eos_token"], cfg["unk_token"]) == ("<pad>", "</s>", "<unk>")


def test_padding_eos_and_mask(tiny_folder):
    tok = UMT5Tokenizer(tiny_folder)
    assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 1, 256)
    ids, mask = tok([PROMPT_ZH, PROMPT_EN, ""])
    assert ids.shape == mask.shape == (3, 512) and ids.dtype == mask.dtype == torch.int64
    for row_ids, row_mask in zip(ids, mask):
        n = int(row_mask.sum())
        assert row_mask[:n].eq(1).all() and row_mask[n:].eq(0).all()
        assert row_ids[n - 1] == 1                    # EOS closes the real tokens
        assert row_ids[n:].eq(0).all()                # right padding with <pad> = 0
        assert row_ids[: n - 1].ne(1).all() and row_ids[: n - 1].ne(0).all()
    assert mask[2].sum() == 1                         # an empty prompt is just EOS
    assert ids.max() < 256
    assert not ids[:2].eq(2).any()                    # both prompts are inside the vocabulary


def test_single_string_and_cleaning_flag(tiny_folder):
    tok = UMT5Tokenizer(tiny_folder, max_length=16)
    ids, _ = tok("a   person")
    ids_list, _ = tok(["a person"])
    assert torch.equal(ids, ids_list) and ids.shape == (1, 16)
    raw, _ = tok("a &amp; b", clean=False)
    cleaned, _ = tok("a &amp; b")
    assert torch.equal(cleaned, tok("a & b", clean=False)[0])
    assert not torch.equal(raw, cleaned)              # without cleaning the entity survives


def test_truncation_keeps_eos_last(tiny_folder):
    long_text = " ".join(["dancing person"] * 400)
    short = UMT5Tokenizer(tiny_folder, max_length=64)
    full = UMT5Tokenizer(tiny_folder, max_length=4096)
    ids, mask = short(long_text)
    ids_full, mask_full = full(long_text)
    assert mask.sum() == 64 and mask_full.sum() > 64
    assert ids[0, -1] == 1
    assert torch.equal(ids[0, :63], ids_full[0, :63])  # HF: keep max_length - 1, then EOS


def test_decode_roundtrip(tiny_folder):
    tok = UMT5Tokenizer(tiny_folder, max_length=64)
    for text in (PROMPT_ZH, PROMPT_EN, "walking   at  night"):
        ids, _ = tok(text)
        assert tok.decode(ids[0]) == clean_prompt(text)


def test_small_vocab_and_determinism(tmp_path):
    a = write_tiny_tokenizer(tmp_path / "a", 40)
    b = write_tiny_tokenizer(tmp_path / "b", 40)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    ids, _ = UMT5Tokenizer(a, max_length=32)([PROMPT_EN, PROMPT_ZH])
    assert ids.max() < 40 and ids.eq(2).any()         # unknown characters become <unk>
    with pytest.raises(ValueError):
        write_tiny_tokenizer(tmp_path / "c", 3)


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="umt5-xxl"):
        UMT5Tokenizer(tmp_path / "google" / "umt5-xxl")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="broken"):
        UMT5Tokenizer(tmp_path / "broken")


def test_matches_transformers_autotokenizer(tiny_folder):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tiny_folder))
    texts = [PROMPT_ZH, PROMPT_EN, "", "x" * 100, "hello </s> world"]
    ours = UMT5Tokenizer(tiny_folder, max_length=24)(texts)
    ref = hf([clean_prompt(t) for t in texts], padding="max_length", truncation=True,
             max_length=24, add_special_tokens=True, return_tensors="pt")
    assert torch.equal(ours[0], ref.input_ids) and torch.equal(ours[1], ref.attention_mask)
