"""Built-in downstream tasks (scaling.evaluate.tasks): reproducible, well formed, and each as documented."""

import json
import re

import pytest

from scaling.data.prepare import embedded_corpus
from scaling.evaluate.tasks import BUILDERS, TaskError, build_task, random_baseline, read_task, write_task

TEXT = embedded_corpus().val.decode("utf-8")


@pytest.fixture(scope="module")
def built():
    return {kind: build_task(kind, TEXT, 200, seed=0) for kind in BUILDERS}


def test_same_text_and_seed_give_the_same_file(built, tmp_path):
    for kind, examples in built.items():
        write_task(tmp_path / "a.jsonl", examples)
        write_task(tmp_path / "b.jsonl", build_task(kind, TEXT, 200, seed=0))
        assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes(), kind
        assert build_task(kind, TEXT, 200, seed=1) != examples, kind
        assert read_task(tmp_path / "a.jsonl") == examples


def test_every_example_is_the_held_out_text_and_four_distinct_choices(built):
    for kind, examples in built.items():
        assert len(examples) == 200 and random_baseline(examples) == 0.25
        golds = [ex["gold"] for ex in examples]
        assert set(golds) == {0, 1, 2, 3}, kind  # the right answer is not always in one place
        for ex in examples:
            assert len(set(ex["choices"])) == 4 and all(c.startswith(" ") for c in ex["choices"])
            assert ex["context"] + ex["choices"][ex["gold"]] in TEXT, (kind, ex)
            assert 0 < len(ex["context"]) <= 160


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
    for ex in built["last_word"]:
        assert all(c.strip() in ex["context"] for c in ex["choices"] if c != ex["choices"][ex["gold"]])


def test_too_little_text_is_a_clear_error():
    with pytest.raises(TaskError, match="only .* examples of the 50 asked; fix: lower downstream.examples"):
        build_task("last_word", TEXT[:2000], 50, seed=0)


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
