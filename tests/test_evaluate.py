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


def test_batching_and_truncation_match_one_full_window_forward_pass_per_request():
    """The scores (batched, only the continuation's positions through the output layer) equal those of each
    request's whole window of logits to 1e-5."""
    torch.manual_seed(0)
    shape = Shape(d_model=16, n_layers=2, n_heads=2, seq_len=12)
    model = GPT(shape).eval()
    rng = np.random.default_rng(0)
    requests = [(rng.integers(0, 256, rng.integers(1, 30)), rng.integers(0, 256, rng.integers(1, 8)))
                for _ in range(23)]
    batched = loglikelihoods(model, requests, seq_len=12, batch_size=5)
    for (ctx, cont), got in zip(requests, batched):
        window = torch.from_numpy(np.concatenate([ctx, cont])[-13:].astype(np.int64))
        with torch.no_grad():
            logp = torch.log_softmax(model(window[None, :-1])[0], -1).double()
        targets = window[1:]
        want = logp[torch.arange(len(targets)), targets][-len(cont):].sum().item()
        assert got == pytest.approx(want, abs=1e-5)


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
