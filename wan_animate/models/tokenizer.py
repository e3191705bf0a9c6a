"""umT5 tokenizer: prompt cleaning and fixed-length ids/mask, as the official pipeline makes them.

The official code (``wan/modules/tokenizers.py``) runs ``AutoTokenizer`` on the
``google/umt5-xxl`` folder of the checkpoint with ``padding='max_length', truncation=True,
max_length=512, add_special_tokens=True``. That fast tokenizer is the ``tokenizer.json`` of the
folder, so we drive the same file through the ``tokenizers`` library directly (no
``transformers`` dependency): its post-processor appends ``</s>``, truncation keeps
``max_length - 1`` tokens plus ``</s>``, padding appends ``<pad>`` (id 0) on the right.

:func:`write_tiny_tokenizer` writes a small tokenizer folder of the same format (a real Unigram
model), so tests and tiny checkpoints can tokenize English and Chinese prompts offline.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from wan_animate.errors import CheckpointError

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_LENGTH = 512  # the DiT's text_len

_WHITESPACE = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """The official "whitespace" cleaning of a prompt.

    ``ftfy.fix_text`` -> ``html.unescape`` twice -> strip -> every whitespace run becomes one
    space -> strip. (Python's ``\\s`` differs from the ``regex`` module's only on U+001C..U+001F,
    which ftfy and ``html.unescape`` never leave in the text.)
    """
    # Ported from Wan2.2 wan/modules/tokenizers.py::basic_clean, whitespace_clean
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


def _token_name(value: Any, default: str) -> str:
    """A special token as written in tokenizer_config.json / special_tokens_map.json."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else default


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); re-download the tokenizer folder") from e
    return data if isinstance(data, dict) else {}


class UMT5Tokenizer:
    """Tokenize prompts into fixed-length umT5 ids and attention masks.

    Args:
        folder: the ``google/umt5-xxl`` folder shipped in the checkpoint (or one written by
            :func:`write_tiny_tokenizer`); must hold ``tokenizer.json``.
        max_length: padded/truncated length L (512 officially).

    Attributes:
        pad_id, eos_id: ids of ``<pad>`` (0) and ``</s>`` (1) for umT5.
        vocab_size: ids in the tokenizer (added tokens included); every id is below it.
    """

    def __init__(self, folder: str | Path, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.max_length = int(max_length)
        if self.max_length < 1:
            raise ValueError(f"UMT5Tokenizer: max_length must be >= 1, got {max_length}")
        path = self.folder / TOKENIZER_FILE
        if not path.is_file():
            what = "folder is missing" if not self.folder.is_dir() else f"{TOKENIZER_FILE} is missing"
            raise CheckpointError(
                f"umT5 tokenizer folder {self.folder}: {what}. It ships with the checkpoint as "
                f"<ckpt_dir>/google/umt5-xxl/{TOKENIZER_FILE}; re-download the checkpoint")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise CheckpointError(f"cannot read {path}: {e}; re-download the tokenizer folder") from e

        config = {**_read_json(self.folder / "special_tokens_map.json"),
                  **_read_json(self.folder / "tokenizer_config.json")}
        pad_token = _token_name(config.get("pad_token"), "<pad>")
        eos_token = _token_name(config.get("eos_token"), "</s>")
        ids = {name: tok.token_to_id(name) for name in (pad_token, eos_token)}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise CheckpointError(f"{path}: special tokens {missing} are not in the vocabulary")
        self.pad_id: int = ids[pad_token]
        self.eos_id: int = ids[eos_token]
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)

        # What HF's fast tokenizer sets for padding='max_length', truncation=True.
        tok.enable_truncation(max_length=self.max_length, stride=0, strategy="longest_first",
                              direction="right")
        tok.enable_padding(direction="right", pad_id=self.pad_id, pad_type_id=0,
                           pad_token=pad_token, length=self.max_length)
        self._tok = tok

    def __call__(self, texts: str | Sequence[str], clean: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize one prompt or a batch.

        Args:
            texts: a prompt or a list of B prompts.
            clean: apply :func:`clean_prompt` first (the official pipeline does).

        Returns:
            ids int64 [B, L] (real tokens, ``</s>``, then ``pad_id``) and mask int64 [B, L]
            (1 on real tokens and ``</s>``, 0 on padding), L = ``max_length``.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in batch):
            raise TypeError("UMT5Tokenizer: prompts must be strings")
        if clean:
            batch = [clean_prompt(t) for t in batch]
        encodings = self._tok.encode_batch(batch, add_special_tokens=True)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64).view(len(batch), -1)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64).view(len(batch), -1)
        return ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Text of one row of ids (for logs and tests)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)


# ---------------------------------------------------------------------------------------------
# A tiny tokenizer in the google/umt5-xxl folder format (for tests and tiny checkpoints).

_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in umT5
_SPACE = "\u2581"  # SentencePiece's word-boundary symbol
_ASCII = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
          "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_CJK_FIRST = "视频中的人在做动作"  # the official default Animate prompt comes first
_WORDS = ("the a an and of in on with to is are person man woman girl boy people video "
          "dance dancing walk walking run running jump turn hand hands arm arms head face "
          "body camera background light moving motion smile look looking at standing "
          "sitting wearing shirt dress hair white black red blue green low quality blurry "
          "static still worst bad")
_CJK_MORE = ("一是不了我有他这个们来上大为和地到以说时要就出会可也你对生能而子那得于着下自之年过"
             "发后作里用道行所然家种事成方多经么去法学如都同现当没面起看定天分还进好小部其些主样理"
             "心她本前开但因只从想实日者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将"
             "两高间由问很最重并物手应向头文体相见被利什二等产或新己制身果加西月话合回特代内信表化"
             "老给世位次度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认条平系气题活更"
             "别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市直德资命山金指许统"
             "区保至队形社便空决治展马科司五基眼书非则听白却界达光放强即像难且权思王象完设式色路记"
             "南品住告类求据程北边死张该交规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风"
             "步改收根干造言持组每济车亲极林服快办议往元英士证近失转夫令准布始怎存未远叫台单影具罗"
             "字爱击流备兵连调深商算质团集百需价花党华城石级整府离况亚请技际约示复病息究线似官火断"
             "精满支视消越器容照须九增研写称企八功吗包片史委乎查轻易早曾除农找装广显吧阿李标谈吃图"
             "念六引历首医局突专费号尽另周较注语仅考落青随选列武红响虽推势参希古众构房半节土投某案"
             "黑维革划敌致陈律足态护七兴派孩验责营星够章音跟志底站严巴例防族供效续施留讲型料终答紧"
             "黄绝奇察母京段依批群项故按河米围江织害斗双境客纪采举杀攻父苏密低朝友诉止细愿千值仍男"
             "钱破网热助倒育属坐帝限船脸职速刻乐否刚威毛状率甚独球般普怕弹校苦创假久错承印晚兰试股"
             "拿脑预谁益阳若哪微尼继送急血惊伤素药适波夜省初喜卫源食险待述陆习置居劳财环排福纳欢雷"
             "画质糊静态丑陋残缺多余手指绘制差劣畸形毁容融合杂乱腿倒着走背景亮曝过细节模糊字幕风格"
             "作品整体灰最")


def _tiny_pieces(vocab_size: int) -> list[str]:
    """The tiny vocabulary, most useful pieces first, cut at ``vocab_size`` (no duplicates)."""
    ordered = [*_SPECIALS, _SPACE, *_ASCII, *_CJK_FIRST, *(_SPACE + w for w in _WORDS.split()),
               *_CJK_MORE]
    seen: set[str] = set()
    pieces = [p for p in ordered if not (p in seen or seen.add(p))]
    return pieces[:vocab_size]


def write_tiny_tokenizer(folder: str | Path, vocab_size: int) -> Path:
    """Write a small, real umT5-format tokenizer folder and return it.

    Files: ``tokenizer.json`` (a Unigram/SentencePiece model built with ``tokenizers``: NFKC,
    Metaspace ``▁`` pre-tokenizer, ``$A </s>`` post-processor), ``tokenizer_config.json`` and
    ``special_tokens_map.json``. Ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then ``▁``, ASCII,
    the default Chinese prompt, some English words and common Chinese characters, all ``<
    vocab_size``; characters outside the vocabulary become ``<unk>``. Deterministic.

    Args:
        folder: created if needed; existing files of the same names are overwritten.
        vocab_size: the T5 embedding rows (>= 4); the vocabulary is cut to fit.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if vocab_size < len(_SPECIALS) + 1:
        raise ValueError(f"write_tiny_tokenizer: vocab_size must be >= 4, got {vocab_size}")
    pieces = _tiny_pieces(vocab_size)
    # Specials score 0 like SentencePiece; the others get slowly decreasing log-probabilities,
    # so the Viterbi segmentation prefers few (long) pieces, then the earlier ones.
    vocab = [(p, 0.0 if p in _SPECIALS else -(1.0 + 0.01 * i)) for i, p in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=_SPECIALS.index("<unk>"), byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFKC(), normalizers.Strip(left=False, right=True),
        normalizers.Replace(Regex(" {2,}"), _SPACE)])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always")
    tok.add_special_tokens(list(_SPECIALS))
    eos = _SPECIALS[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, 1)])

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / TOKENIZER_FILE))
    special = {name: {"content": tok_, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False}
               for name, tok_ in (("pad_token", "<pad>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
    config = {
        "tokenizer_class": "T5Tokenizer",
        "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
        "extra_ids": 0, "additional_special_tokens": [],
        "model_max_length": DEFAULT_MAX_LENGTH, "legacy": False,
        "clean_up_tokenization_spaces": True, "sp_model_kwargs": {},
        "added_tokens_decoder": {str(i): {**special[k], "special": True}
                                 for i, k in enumerate(("pad_token", "eos_token", "unk_token"))},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False),
                                                  encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({**special, "additional_special_tokens": []}, indent=2), encoding="utf-8")
    return folder
