"""Multiple-choice downstream tasks: the JSONL format, and the built-in tasks made from held-out text.

A task is a JSONL file, one example per line::

    {"context": "And Moses spake unto all", "choices": [" Israel", " Egypt", " Aaron"], "gold": 0}

The model is scored on each choice as a continuation of the context
(:mod:`scaling.evaluate.scoring`); ``gold`` is the index of the right one. Choices carry
their own leading space, as in lm-evaluation-harness. Users bring their own
tasks in this format (HellaSwag, ARC, PIQA … converted to JSONL); nothing
downloads.

The built-in tasks are made from a dataset's **validation** text, which no run
trains on (for the embedded corpus, whole books: see :mod:`scaling.data.prepare`), with
a seeded generator, so the same text and seed give the same file byte for
byte. Words are runs of ASCII letters; a context is the text before the
target, cut at a word boundary to the longest that fits the model's window
with every choice (at most :data:`CONTEXT_CHARS` characters): the scored model
sees all of it, and an example's choices all see the same context (which is
what lets :mod:`scaling.evaluate.scoring` pack them into one sequence). Every
task has 4 choices (random baseline 25%); the gold position is uniform.
From easy to hard for a small byte-level model:

- ``spelling``: the next word (5+ letters) against three misspellings of it
  (two adjacent inner letters swapped, one vowel changed, one inner letter
  doubled) that are not words of the text. Needs spelling, not meaning.
- ``word_order``: the next three words in their order against three other
  orders of the same words. Needs local syntax.
- ``next_word``: the next word against three words of similar frequency in the
  text (the neighbours of its frequency rank, in their usual spelling, and
  capitalized when it is), so that word frequency alone cannot pick it. Needs
  the context.
- ``last_word``: the last word of a sentence (8+ words) against three other
  words of the same sentence that are in the context (after LAMBADA, Paperno et
  al. 2016), so copying a word of the context picks a wrong one. Needs the
  sentence's sense. Its context fits the window with every word it may draw.
  (The right word is not required to occur in the context too: in a 64-byte
  window it rarely does, and too few examples would be left.)
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.io import atomic_path

CONTEXT_CHARS = 160
N_CHOICES = 4
WORD = re.compile(r"[A-Za-z]+")
VOWELS = "aeiou"


class TaskError(ValueError):
    """A task file that cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Window:
    """What the scored models see: ``seq_len`` input tokens of the dataset's tokenizer (``encode``: bytes → ids), so
    that a context and a choice are scored whole when their tokens number at most ``seq_len + 1``."""

    seq_len: int
    encode: Callable[[bytes], Sequence[int]]

    def tokens(self, text: str) -> int:
        return len(self.encode(text.encode("utf-8")))

    def room(self, choices: list[str]) -> int:
        """The most tokens a context may have to be scored whole with each of ``choices``."""
        return self.seq_len + 1 - max(self.tokens(c) for c in choices)


# -- the format ---------------------------------------------------------------------------------------------------
def read_task(path: str | Path) -> list[dict]:
    """The examples of a JSONL task file, checked: a non-empty context, 2+ distinct choices, a valid gold."""
    path = Path(path)
    examples = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {i}"
        try:
            ex = json.loads(line)
        except ValueError as e:
            raise TaskError(f"{where}: not JSON ({e}); fix: one JSON object per line") from None
        if not isinstance(ex, dict) or not {"context", "choices", "gold"} <= set(ex):
            raise TaskError(f"{where}: needs the keys context, choices and gold")
        ctx, choices, gold = ex["context"], ex["choices"], ex["gold"]
        if not isinstance(ctx, str) or not ctx:
            raise TaskError(f"{where}: context must be a non-empty string (the model needs a token to start from)")
        if (not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices)
                or len(set(choices)) != len(choices)):
            raise TaskError(f"{where}: choices must be a list of 2 or more distinct non-empty strings")
        if not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise TaskError(f"{where}: gold must be the index (0 … {len(choices) - 1}) of the right choice")
        examples.append({"context": ctx, "choices": choices, "gold": gold})
    if not examples:
        raise TaskError(f"{path}: no examples; fix: one JSON object per line")
    return examples


def write_task(path: str | Path, examples: list[dict]) -> None:
    """Write examples as JSONL, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples), encoding="utf-8")


def random_baseline(examples: list[dict]) -> float:
    """The expected accuracy of guessing uniformly: the mean of 1 / (number of choices)."""
    return float(np.mean([1.0 / len(ex["choices"]) for ex in examples]))


# -- building the built-in tasks ------------------------------------------------------------------------------------
def _context(text: str, end: int, choices: list[str], window: Window) -> str | None:
    """The text before ``end``, at most CONTEXT_CHARS long, starting at a word boundary, no trailing space, and the
    longest such that fits ``window`` with each of ``choices`` (words, without their leading space); None if no word
    does."""
    start = max(0, end - CONTEXT_CHARS)
    if start > 0:
        start = text.find(" ", start, end) + 1 or start
    room = window.room([" " + c for c in choices])
    while window.tokens(text[start:end].rstrip()) > room:
        start = text.find(" ", start, end) + 1
        if start == 0:
            return None
    return text[start:end].rstrip() or None


def _after_space(text: str, start: int) -> bool:
    """Whether a target at ``start`` follows a space and 40+ characters of context (its choices begin with a space)."""
    return start >= 40 and text[start - 1] == " "


def _example(rng: np.random.Generator, context: str, right: str, wrong: list[str]) -> dict:
    """An example with the right choice at a uniformly random position among N_CHOICES."""
    gold = int(rng.integers(N_CHOICES))
    choices = list(wrong[: N_CHOICES - 1])
    choices.insert(gold, right)
    return {"context": context, "choices": [" " + c for c in choices], "gold": gold}


def _misspellings(word: str, rng: np.random.Generator, vocabulary: set[str]) -> list[str] | None:
    """Three distinct misspellings of ``word`` (swap, vowel change, doubled letter) that are not words."""
    inner = range(1, len(word) - 2)
    i = int(rng.choice(inner))
    swap = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    vowels = [j for j in range(1, len(word)) if word[j] in VOWELS]
    if not vowels:
        return None
    j = int(rng.choice(vowels))
    vowel = word[:j] + str(rng.choice([v for v in VOWELS if v != word[j]])) + word[j + 1:]
    k = int(rng.integers(1, len(word) - 1))
    double = word[: k + 1] + word[k:]
    out = [swap, vowel, double]
    if len(set(out) | {word}) != 4 or any(w.lower() in vocabulary for w in out):
        return None
    return out


def build_spelling(text: str, rng: np.random.Generator, window: Window) -> Iterator[dict]:
    words = list(WORD.finditer(text))
    vocabulary = {m.group().lower() for m in words}
    for idx in rng.permutation(len(words)):
        m = words[idx]
        if len(m.group()) < 5 or not _after_space(text, m.start()):
            continue
        wrong = _misspellings(m.group(), rng, vocabulary)
        if wrong and (ctx := _context(text, m.start(), [m.group(), *wrong], window)):
            yield _example(rng, ctx, m.group(), wrong)


def build_word_order(text: str, rng: np.random.Generator, window: Window) -> Iterator[dict]:
    words = list(WORD.finditer(text))
    for idx in rng.permutation(len(words) - 3):
        three = words[idx : idx + 3]
        span = text[three[0].start() : three[-1].end()]
        if not _after_space(text, three[0].start()) or not re.fullmatch(r"[A-Za-z]+ [A-Za-z]+ [A-Za-z]+", span):
            continue
        tokens = span.split(" ")
        orders = {" ".join(tokens[i] for i in p) for p in ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))}
        orders.discard(span)
        if len(orders) < N_CHOICES - 1:
            continue
        wrong = [str(w) for w in rng.choice(sorted(orders), N_CHOICES - 1, replace=False)]
        if ctx := _context(text, three[0].start(), [span, *wrong], window):
            yield _example(rng, ctx, span, wrong)


def build_next_word(text: str, rng: np.random.Generator, window: Window, near: int = 10) -> Iterator[dict]:
    words = list(WORD.finditer(text))
    counts = Counter(m.group().lower() for m in words)
    ranked = [w for w, _ in counts.most_common()]
    rank = {w: i for i, w in enumerate(ranked)}
    surface = {}  # each word's most common spelling in the text ("Jehovah", not "jehovah")
    for form, _ in Counter(m.group() for m in words).most_common():
        surface.setdefault(form.lower(), form)
    for idx in rng.permutation(len(words)):
        m = words[idx]
        word = m.group()
        if len(word) < 3 or not _after_space(text, m.start()) or counts[word.lower()] < 2:
            continue
        r = rank[word.lower()]
        near_rank = [w for w in ranked[max(0, r - near) : r + near + 1] if w != word.lower()]
        wrong = [surface[w] for w in rng.choice(near_rank, N_CHOICES - 1, replace=False)]
        if word[0].isupper():
            wrong = [w[0].upper() + w[1:] for w in wrong]
        if ctx := _context(text, m.start(), [word, *wrong], window):
            yield _example(rng, ctx, word, wrong)


def build_last_word(text: str, rng: np.random.Generator, window: Window) -> Iterator[dict]:
    sentences = list(re.finditer(r"[A-Z][^.?!]*[.?!]", text))
    for idx in rng.permutation(len(sentences)):
        s = sentences[idx]
        words = list(WORD.finditer(text, s.start(), s.end()))
        if len(words) < 8:
            continue
        last = words[-1]
        if not _after_space(text, last.start()):
            continue
        candidates = {w.group() for w in words[:-1] if len(w.group()) >= 3} - {last.group()}
        # a context that fits every candidate fits the three drawn from them
        ctx = _context(text, last.start(), [last.group(), *candidates], window)
        others = sorted(candidates & set(WORD.findall(ctx or "")))
        if len(others) < N_CHOICES - 1:
            continue
        wrong = [str(w) for w in rng.choice(others, N_CHOICES - 1, replace=False)]
        yield _example(rng, ctx, last.group(), wrong)


BUILDERS = {
    "spelling": build_spelling,
    "word_order": build_word_order,
    "next_word": build_next_word,
    "last_word": build_last_word,
}


def build_task(kind: str, text: str, n: int, seed: int, window: Window) -> list[dict]:
    """``n`` examples of the built-in task ``kind`` from ``text``, each fitting ``window``; the same (text, n, seed,
    window) give the same examples.

    Each kind draws from its own random stream (seeded by ``seed`` and the kind's
    place in :data:`BUILDERS`), so adding a task leaves the others unchanged.
    """
    if kind not in BUILDERS:
        raise TaskError(f"unknown built-in task {kind!r}; use one of {sorted(BUILDERS)}")
    rng = np.random.default_rng([seed, list(BUILDERS).index(kind)])
    examples = list(itertools.islice(BUILDERS[kind](text, rng, window), n))
    if len(examples) < n:
        raise TaskError(f"the text yields only {len(examples)} {kind} examples of the {n} asked; "
                        f"fix: lower downstream.examples, give the dataset more validation text, or raise training.seq_len "
                        f"(a context must fit the models' window with every choice)")
    return examples
