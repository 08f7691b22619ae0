"""CLIP's byte-pair-encoding tokenizer, as OpenAI's and open_clip's ``SimpleTokenizer`` does it.

``ClipTokenizer(...)(["a photo of a cat"])`` gives the ``[N, 77]`` int64 ids a
CLIP text encoder takes: ``<|startoftext|>`` (49406), the text's tokens,
``<|endoftext|>`` (49407), zero padding; text too long is cut and still ends
with ``<|endoftext|>``. Zero padding suits every export: OpenAI's and open_clip's
text towers pool at ``argmax(ids)`` (the end token has the largest id), and
Hugging Face's at the first end token or its ``argmax``.

Text is cleaned as open_clip's default (``clean="lower"``): ``ftfy.fix_text``,
HTML entities unescaped twice, whitespace runs collapsed, lower-cased. Of
ftfy's fixes, the deterministic ones are applied here (Latin ligatures,
full-width forms, curly quotes, control characters, NFC normalisation); its
guesses at mis-decoded text ("mojibake") are not, so ids differ from the
reference only for broken text. The reference needs the ``ftfy`` and ``regex``
packages; this needs neither: the pre-tokenising pattern
``'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`` is applied with
``unicodedata`` categories).

The vocabulary comes from the model's folder where it has one: Hugging Face's
``tokenizer.json``, or ``vocab.json`` + ``merges.txt``, or OpenAI's
``bpe_simple_vocab_16e6.txt.gz``; otherwise OpenAI's vocabulary that ships with
vidinfer (MIT, see ``data/CLIP_VOCAB_LICENSE.txt``), the one OpenAI's and most
OpenCLIP models were trained with.
"""

from __future__ import annotations

import gzip
import html
import json
import unicodedata
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from vidinfer.errors import ModelError

CONTEXT_LENGTH = 77
START, END = "<|startoftext|>", "<|endoftext|>"
#: the vocabulary that ships with vidinfer
BUNDLED_VOCAB = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
#: merges in CLIP's vocabulary: 49152 tokens less 256 bytes and the 2 special tokens
N_MERGES = 49152 - 256 - 2
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


@lru_cache(maxsize=1)
def _ftfy_table() -> dict[int, str | None]:
    """ftfy's character fixes: Latin ligatures, full/half-width forms, curly quotes, control characters."""
    table: dict[int, str | None] = {ord(k): v for k, v in {
        "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
        "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
        "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
    }.items()}
    table[0x3000] = " "
    for code in range(0xFF01, 0xFFF0):
        normal = unicodedata.normalize("NFKC", chr(code))
        if normal != chr(code):
            table[code] = normal
    table.update({code: "'" for code in (0x02BC, *range(0x2018, 0x201C))})
    table.update({code: '"' for code in range(0x201C, 0x2020)})
    controls = (*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF,
                *range(0xFFF9, 0xFFFD))
    table.update(dict.fromkeys(controls))
    return table


def clean(text: str) -> str:
    """open_clip's ``clean="lower"``: ftfy's character fixes, HTML unescaped twice, whitespace collapsed, lower."""
    text = unicodedata.normalize("NFC", text.translate(_ftfy_table()))
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


def _kind(char: str) -> str:
    """``L`` letter, ``N`` number, ``S`` whitespace, ``O`` anything else (the pattern's classes)."""
    if char.isspace():
        return "S"
    category = unicodedata.category(char)[0]
    return category if category in ("L", "N") else "O"


def pieces(text: str) -> Iterator[str]:
    """The pre-tokenising pattern's matches, in order (special tokens first, then contractions...)."""
    i, n = 0, len(text)
    while i < n:
        special = next((s for s in (START, END) if text.startswith(s, i)), None)
        if special is None and text[i] == "'":
            special = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if special is not None:
            yield special
            i += len(special)
            continue
        kind = _kind(text[i])
        if kind == "S":
            i += 1
            continue
        j = i + 1
        if kind != "N":  # letters and "other" come in runs; numbers one digit at a time
            while j < n and _kind(text[j]) == kind:
                j += 1
        yield text[i:j]
        i = j


class ClipTokenizer:
    """BPE over a vocabulary (token -> id) and its ranked merges."""

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]], source: str = "") -> None:
        missing = [t for t in (START, END) if t not in encoder]
        if missing:
            raise ModelError(f"the CLIP vocabulary {source} has no {' or '.join(missing)} token",
                             code="invalid_model_file")
        self.encoder = encoder
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.start_id, self.end_id = encoder[START], encoder[END]
        self.source = source
        self._bytes = bytes_to_unicode()
        self._cache: dict[str, list[int]] = {}

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def from_bpe_file(cls, path: Path) -> ClipTokenizer:
        """OpenAI's ``bpe_simple_vocab_16e6.txt.gz``: the merges; the vocabulary follows from them."""
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:N_MERGES + 1]
        merges = [_pair(line) for line in lines]
        base = list(bytes_to_unicode().values())
        vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [START, END]
        return cls({token: i for i, token in enumerate(vocab)}, merges, str(path))

    @classmethod
    def from_hf_files(cls, vocab_json: Path, merges_txt: Path) -> ClipTokenizer:
        """Hugging Face's slow-tokenizer files: ``vocab.json`` and ``merges.txt``."""
        encoder = json.loads(vocab_json.read_text(encoding="utf-8"))
        lines = merges_txt.read_text(encoding="utf-8").strip().split("\n")
        merges = [_pair(line) for line in lines if line and not line.startswith("#version")][:N_MERGES]
        return cls(encoder, merges, str(vocab_json.parent))

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> ClipTokenizer:
        """Hugging Face's fast-tokenizer file ``tokenizer.json`` (a BPE model)."""
        model = json.loads(path.read_text(encoding="utf-8")).get("model", {})
        if model.get("type") != "BPE" or "vocab" not in model or "merges" not in model:
            raise ModelError(f"{path} is not a BPE tokenizer", code="invalid_model_file")
        merges = [tuple(m) if isinstance(m, list) else _pair(m) for m in model["merges"]]
        return cls(dict(model["vocab"]), merges, str(path))

    @classmethod
    def for_folder(cls, *folders: Path) -> ClipTokenizer:
        """The tokenizer files in the first of ``folders`` that has some, else the vocabulary shipped here."""
        for where in folders:
            if (where / "tokenizer.json").is_file():
                return cls.from_tokenizer_json(where / "tokenizer.json")
            if (where / "vocab.json").is_file() and (where / "merges.txt").is_file():
                return cls.from_hf_files(where / "vocab.json", where / "merges.txt")
            if (where / "bpe_simple_vocab_16e6.txt.gz").is_file():
                return cls.from_bpe_file(where / "bpe_simple_vocab_16e6.txt.gz")
        return cls.bundled()

    @classmethod
    def bundled(cls) -> ClipTokenizer:
        return _bundled()

    # -- tokenising -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` alone (no start or end token)."""
        ids: list[int] = []
        for piece in pieces(clean(text)):
            if piece in (START, END):
                ids.append(self.encoder[piece])
                continue
            ids.extend(self._bpe("".join(self._bytes[b] for b in piece.encode("utf-8"))))
        return ids

    def __call__(self, texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
        """``[len(texts), context_length]`` int64 ids: start, tokens, end, zeros."""
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in zip(out, texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.end_id
            row[:len(ids)] = ids
        return out

    def _bpe(self, token: str) -> list[int]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        try:
            ids = [self.encoder[part] for part in word]
        except KeyError as exc:
            raise ModelError(f"the CLIP vocabulary {self.source} lacks the token {exc.args[0]!r}",
                             code="invalid_model_file") from exc
        if len(self._cache) < 100_000:
            self._cache[token] = ids
        return ids


def _pair(line: str) -> tuple[str, str]:
    first, second = line.split()
    return first, second


@lru_cache(maxsize=1)
def _bundled() -> ClipTokenizer:
    return ClipTokenizer.from_bpe_file(BUNDLED_VOCAB)
