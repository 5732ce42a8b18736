"""Log-likelihood scoring of multiple-choice tasks (scaling.evaluate.scoring)."""

import json
import math

import numpy as np
import pytest
import torch

from scaling.evaluate.scoring import evaluate_run, load_model, loglikelihoods, score_task
from scaling.train.model import GPT, Shape
from scaling.data.tokenizer import ByteTokenizer
from scaling.train.loop import save_model


class Bigram(torch.nn.Module):
    """A model whose next-byte distribution depends only on the current byte: p(b | a) = softmax(table[a])[b]."""

    def __init__(self, probs: dict[tuple[str, str], float]):
        super().__init__()
        table = torch.full((256, 256), 1e-9, dtype=torch.float64)
        for (a, b), p in probs.items():
            table[ord(a), ord(b)] = p
        table[:, :] = table / table.sum(-1, keepdim=True)
        self.logits = torch.log(table).float()

    def forward(self, idx, positions=None, mask=None):
        return self.logits[idx]


def enc(text: str) -> np.ndarray:
    return ByteTokenizer().encode(text.encode())


def test_loglikelihood_of_a_known_model():
    model = Bigram({("a", "b"): 0.9, ("a", "c"): 0.1, ("b", "b"): 0.5, ("b", "x"): 0.5, ("c", "x"): 1.0})
    ll = loglikelihoods(model, [(enc("xa"), enc("b")), (enc("xa"), enc("c")), (enc("a"), enc("bb")),
                                (enc("a"), enc("cx"))], seq_len=8, batch_size=3)
    assert ll == pytest.approx([math.log(0.9), math.log(0.1), math.log(0.9 * 0.5), math.log(0.1 * 1.0)], abs=1e-4)


def test_raw_and_length_normalized_accuracy_differ_as_defined():
    # after "a" a space is certain, then "b" (0.7) or "c" (0.3); after "c", "c" again with 0.9.
    model = Bigram({("a", " "): 1.0, (" ", "b"): 0.7, (" ", "c"): 0.3, ("c", "c"): 0.9, ("c", "d"): 0.1})
    ex = {"context": "a", "choices": [" b", " c" + "c" * 40], "gold": 1}
    raw_b, raw_c = math.log(0.7), math.log(0.3) + 40 * math.log(0.9)
    assert raw_c < raw_b and raw_c / 42 > raw_b / 2  # raw picks " b", per byte the long choice wins
    s = score_task(model, ByteTokenizer(), [ex], seq_len=64)
    assert (s["acc"], s["acc_norm"], s["random_baseline_accuracy"]) == (0.0, 1.0, 0.5)


def window_score(model: GPT, ctx: np.ndarray, cont: np.ndarray, seq_len: int) -> float:
    """Σ log p(cont | ctx) from the whole logits of the request's own window (the last seq_len + 1 tokens)."""
    window = torch.from_numpy(np.concatenate([ctx, cont])[-(seq_len + 1):].astype(np.int64))
    with torch.no_grad():
        logp = torch.log_softmax(model(window[None, :-1])[0], -1).double()
    return logp[torch.arange(len(window) - 1), window[1:]][-len(cont):].sum().item()


@pytest.mark.parametrize("batch_size", [1, 3, 5, 64])
def test_packed_scores_equal_one_window_forward_pass_per_request(batch_size):
    """Examples of 2–9 choices of mixed lengths, with contexts that fit the window (all choices packed on one
    context) and contexts that are cut (choices of equal length packed), some contexts repeated across examples;
    batches that split an example's choices. Each score equals that of the request's own window to 1e-5, and the
    packing does less work than the windows."""
    torch.manual_seed(0)
    seq_len = 12
    model = GPT(Shape(d_model=16, n_layers=2, n_heads=2, seq_len=seq_len)).eval()
    rng = np.random.default_rng(0)
    requests = []
    for i in range(30):
        ctx = requests[-1][0] if i % 7 == 6 else rng.integers(0, 256, rng.integers(1, 30))
        requests += [(ctx, rng.integers(0, 256, rng.integers(1, 6))) for _ in range(rng.integers(2, 10))]
    shapes = []  # of each batch of packed sequences
    hook = model.tok.register_forward_hook(lambda module, args, out: shapes.append(args[0].shape))
    packed = loglikelihoods(model, requests, seq_len=seq_len, batch_size=batch_size)
    hook.remove()
    want = [window_score(model, ctx, cont, seq_len) for ctx, cont in requests]
    assert packed == pytest.approx(want, abs=1e-5)
    assert max(T for _, T in shapes) <= 2 * seq_len  # a packed sequence is at most 2 · seq_len tokens
    rows, tokens = sum(B for B, _ in shapes), sum(B * T for B, T in shapes)
    windows = sum(min(len(ctx) + len(cont) - 1, seq_len) for ctx, cont in requests)
    if batch_size == 1:
        assert rows == len(requests) and tokens == windows
    else:
        assert rows < len(requests) and tokens < windows


def test_empty_context_or_overlong_choice_is_refused():
    model = Bigram({})
    with pytest.raises(ValueError, match="context must be non-empty"):
        loglikelihoods(model, [(enc(""), enc("a"))], seq_len=8)
    with pytest.raises(ValueError, match="continuation 1 … 8"):
        loglikelihoods(model, [(enc("a"), enc("123456789"))], seq_len=8)


def test_evaluate_run_writes_tasks_and_set_averages(tmp_path):
    torch.manual_seed(0)
    shape = Shape(d_model=16, n_layers=1, n_heads=2, seq_len=16)
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir(), data.mkdir()
    model = GPT(shape)
    save_model(run / "model.pt", shape, model)
    (run / "metrics.json").write_text(json.dumps({"run_id": "r", "status": "ok"}))
    (data / "meta.json").write_text(json.dumps({"tokenizer": "bytes", "vocab_size": 256}))
    tasks = {}
    for name, n in (("two", 2), ("four", 4)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"context": f"ctx {i}", "choices": [f" {c}{i}" for c in "abcd"[:n]],
                                            "gold": i % n}) + "\n" for i in range(10)))
        tasks[name] = {"path": str(path), "metric": "acc"}
    out = evaluate_run(run, data, tasks, {"both": ["two", "four"]})
    assert json.loads((run / "downstream.json").read_text()) == out
    assert out["tasks"]["two"]["random_baseline_accuracy"] == 0.5
    assert out["tasks"]["four"]["accuracy"] == out["tasks"]["four"]["accuracy_raw"]
    both = out["task_sets"]["both"]
    assert both["random_baseline_accuracy"] == pytest.approx(0.375)
    assert both["accuracy"] == pytest.approx((out["tasks"]["two"]["accuracy"] + out["tasks"]["four"]["accuracy"]) / 2)
    loaded = load_model(run / "model.pt").state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in model.state_dict().items())
    (run / "metrics.json").write_text(json.dumps({"run_id": "r", "status": "diverged"}))
    assert evaluate_run(run, data, tasks, {})["tasks"] == {}


def test_a_corrupt_metrics_json_is_named_with_the_fix(tmp_path):
    from scaling.cli import main

    run = tmp_path / "bible" / "xs" / "M20_lr0.01_s0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"run_id": ')  # cut short
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--run", str(run), "--data", str(tmp_path), "--tasks", "{}"])
    error = exit_.value.code
    assert error.startswith(f"error: {run / 'metrics.json'}: unreadable") and "\n" not in error
    assert f"fix: delete {run} and rerun snakemake to retrain the run" in error
    assert not (run / "downstream.json").exists()
