"""Built-in downstream tasks (scaling.evaluate.tasks): reproducible, well formed, and each as documented."""

import json
import re

import pytest

from scaling.data.prepare import embedded_corpus
from scaling.data.tokenizer import ByteTokenizer
from scaling.evaluate.tasks import (BUILDERS, CONTEXT_CHARS, TaskError, Window, build_task, random_baseline, read_task,
                                    write_task)

TEXT = embedded_corpus().val.decode("utf-8")
WINDOW = Window(64, ByteTokenizer().encode)  # a 64-byte window, as the smoke study's


@pytest.fixture(scope="module")
def built():
    return {kind: build_task(kind, TEXT, 200, seed=0, window=WINDOW) for kind in BUILDERS}


def test_same_text_and_seed_give_the_same_file(built, tmp_path):
    for kind, examples in built.items():
        write_task(tmp_path / "a.jsonl", examples)
        write_task(tmp_path / "b.jsonl", build_task(kind, TEXT, 200, seed=0, window=WINDOW))
        assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes(), kind
        assert build_task(kind, TEXT, 200, seed=1, window=WINDOW) != examples, kind
        assert read_task(tmp_path / "a.jsonl") == examples


def test_every_example_is_the_held_out_text_and_four_distinct_choices(built):
    for kind, examples in built.items():
        assert len(examples) == 200 and random_baseline(examples) == 0.25
        golds = [ex["gold"] for ex in examples]
        assert set(golds) == {0, 1, 2, 3}, kind  # the right answer is not always in one place
        for ex in examples:
            assert len(set(ex["choices"])) == 4 and all(c.startswith(" ") for c in ex["choices"])
            assert ex["context"] + ex["choices"][ex["gold"]] in TEXT, (kind, ex)
            assert 0 < len(ex["context"]) <= CONTEXT_CHARS, (kind, ex)
            assert len(ex["context"].encode()) + max(len(c.encode()) for c in ex["choices"]) <= 65, (kind, ex)


def test_a_context_is_the_longest_that_fits_the_window_in_the_tokenizers_tokens():
    words = Window(12, lambda b: b.split())  # a tokenizer whose tokens are words: 13 per window and choice
    for kind in BUILDERS:
        for ex in build_task(kind, TEXT, 50, seed=0, window=words):
            ctx, longest = ex["context"], max(len(c.split()) for c in ex["choices"])
            assert len(ctx.split()) + longest <= 13, (kind, ex)
            start = TEXT.index(ex["context"] + ex["choices"][ex["gold"]])
            before = TEXT[:start].rstrip().rsplit(" ", 1)[-1]  # the word the cut left out
            assert len(ctx.split()) + longest == 13 or len(before + " " + ctx) > CONTEXT_CHARS, (kind, ex)


def test_distractors_are_built_as_documented(built):
    vocabulary = {w.lower() for w in re.findall(r"[A-Za-z]+", TEXT)}
    for ex in built["spelling"]:
        right = ex["choices"][ex["gold"]].strip()
        for c in ex["choices"]:
            if c.strip() != right:
                assert c.strip().lower() not in vocabulary and abs(len(c.strip()) - len(right)) <= 1
    for ex in built["word_order"]:
        words = sorted(ex["choices"][ex["gold"]].split())
        assert all(sorted(c.split()) == words for c in ex["choices"])
    for ex in built["next_word"]:
        assert all(c.strip().lower() in vocabulary for c in ex["choices"])
    for ex in built["last_word"]:  # the wrong three in the context the model sees
        wrong = [c for c in ex["choices"] if c != ex["choices"][ex["gold"]]]
        assert all(re.search(rf"\b{c.strip()}\b", ex["context"]) for c in wrong)


def test_too_little_text_is_a_clear_error():
    with pytest.raises(TaskError, match="only .* examples of the 50 asked; fix: lower downstream.examples"):
        build_task("last_word", TEXT[:2000], 50, seed=0, window=WINDOW)


@pytest.mark.parametrize("line, message", [
    ("not json", "not JSON"),
    (json.dumps({"context": "a", "choices": [" b"]}), "needs the keys"),
    (json.dumps({"context": "", "choices": [" b", " c"], "gold": 0}), "context must be a non-empty"),
    (json.dumps({"context": "a", "choices": [" b", " b"], "gold": 0}), "choices must be .* distinct"),
    (json.dumps({"context": "a", "choices": [" b", " c"], "gold": 2}), "gold must be the index"),
])
def test_bad_task_lines_are_named(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"context": "a", "choices": [" b", " c"], "gold": 1}) + "\n" + line + "\n")
    with pytest.raises(TaskError, match=f"line 2: {message}"):
        read_task(path)
