"""Tokenizers: text (UTF-8 bytes) ↔ token ids, losslessly.

- ``bytes`` (the default): a token is one byte, vocabulary 256. Any byte
  string round-trips.
- ``bpe``: byte-level byte-pair encoding (Sennrich et al. 2016; the byte-level
  variant of GPT-2, Radford et al. 2019) trained offline on a study's training
  text with Hugging Face ``tokenizers``. It starts from the 256 byte symbols and
  merges the most frequent adjacent pair until the vocabulary has
  ``vocab_size`` tokens (fewer if the corpus runs out of pairs), so any UTF-8
  text round-trips; validation text is never used to train it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the library is imported where a BPE is made or read: byte-level studies never load it
    from tokenizers import Tokenizer


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds ids below ``vocab_size``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"vocab_size {vocab_size} does not fit in 32 bits")


class ByteTokenizer:
    vocab_size = 256

    def encode(self, text: bytes) -> np.ndarray:
        return np.frombuffer(text, dtype=np.uint8).copy()

    def decode(self, ids) -> bytes:
        return np.asarray(ids, dtype=np.uint8).tobytes()


class BPETokenizer:
    """A trained byte-level BPE; ``save``/``load`` use the ``tokenizers`` JSON format."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: bytes, vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[], show_progress=False,
        )
        tok.train_from_iterator(_lines(_utf8(text)), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: bytes) -> np.ndarray:
        """Token ids of ``text``, encoded line by line (in parallel) and concatenated."""
        encodings = self.tokenizer.encode_batch(_lines(_utf8(text)))
        ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64)
        return ids.astype(token_dtype(self.vocab_size))

    def decode(self, ids) -> bytes:
        return self.tokenizer.decode([int(i) for i in ids]).encode("utf-8")

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))


def _utf8(text: bytes) -> str:
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"the BPE tokenizer needs UTF-8 text; byte {e.start} is not valid UTF-8 ({e.reason}); "
            f"fix: convert the files to UTF-8, or use `tokenizer: bytes`"
        ) from None


def _lines(text: str) -> list[str]:
    """``text`` cut after each newline, so that joining the pieces gives it back."""
    return text.splitlines(keepends=True)
