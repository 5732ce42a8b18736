"""How much compute the planner (``scaling plan``) needs, replayed on published data where every run is measured.

    python benchmarks/plan.py                       # both testbeds (2.5 minutes on 2 shared cores)
    python benchmarks/plan.py --testbed gadre       # one of them (gadre: 47 s; chinchilla: 2 minutes)
    python benchmarks/plan.py --smoke               # the Gadre testbed at the paper's budget only (11 s)

- Gadre et al. (2024): per training set, a study starts from the two smallest sizes at M = 20 and plans itself
  (scaling.testbeds.replay) toward the Figure 1 targets (the 1.4B over-trained and 6.9B runs, C4 validation loss),
  with candidates every other run at M ≥ 20, within a multiple of the paper's fit budget (the compute of its five
  fit runs). Its final fit uses only the runs it trained. Printed: compute used, mean |relative error| over the
  six targets (the paper's procedure: 1.48%), the coverage and median half-width of their 95% intervals
  (calibrated where the runs allow, else the planner's expected ones: scaling.testbeds.replay.predict_targets);
  the paper's own design and random designs of the same budget, fitted the same way, beside it.
- The Chinchilla points (Epoch AI, when ../shared is beside the repository): a study starts from the two smallest
  IsoFLOP budgets (6e18, 1e19) and predicts the loss of a compute-optimal (D = 20·N) model at 1e24 FLOPs;
  the uniform grid adds Hoffmann et al.'s next IsoFLOP budgets in order, the planner its own runs. Printed: each
  design's compute and the 95% half-width at 1e24, and the compute after which the half-width stays below a width
  (10%, the stated one, and 8%, 12%, 15% beside it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.testbeds import gadre
from scaling.testbeds.replay import (chinchilla_setup, compute_to_stay_below, gadre_setup, predict_targets,
                                     random_design, replay, rounds)

CHINCHILLA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "chinchilla" / "points.csv"
PAPER_ERROR = 0.0148  # mean |relative error| of the paper's procedure on the six targets (tests/test_gadre.py)
FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)  # budgets, in multiples of the paper's
RANDOM_SEEDS = range(5)
WIDTH = 0.10  # Chinchilla: the 95% half-width at 1e24 FLOPs to reach (the stated one)
OTHER_WIDTHS = (0.08, 0.12, 0.15)  # printed beside it, so that the comparison does not hang on one width


def gadre_rows(factors, seeds) -> list[dict]:
    setups = list(gadre_setup(gadre.load_runs()))
    paper_flops = {d: float(p["flops"].sum()) for d, _, _, _, p in setups}
    caches = {d: {} for d in paper_flops}  # per training set: fits (and fold fits) repeat across designs

    def row(name, designs):
        preds = pd.concat([predict_targets(known, t, cache=caches[d]) for d, known, t in designs])
        used = sum(k["flops"].sum() for _, k, _ in designs) / sum(paper_flops.values())
        return {"design": name, "compute / paper's": f"{used:.2f}",
                "mean abs. error (6 targets)": f"{preds['rel_error'].abs().mean():.2%}",
                "max abs. error": f"{preds['rel_error'].abs().max():.2%}",
                "95% coverage": f"{int(preds['covered'].sum())}/{len(preds)}",
                "median half-width (95%)": f"{preds['half_width'].median():.2%}",
                "calibrated": f"{int(preds['calibrated'].sum())}/{len(preds)}",
                "_error": preds["rel_error"].abs().mean()}
    rows = [row("paper's five runs (hand-picked)", [(d, p, t) for d, _, _, t, p in setups])]
    for f in factors:
        rows.append(row(f"planned, {f:g}× the paper's budget",
                        [(d, replay("overtraining", pool, start, t, f * paper_flops[d], cache=caches[d]), t)
                         for d, pool, start, t, _ in setups]))
    for s in seeds:
        rows.append(row(f"random, 1× the paper's budget, seed {s}",
                        [(d, random_design(pool, start, paper_flops[d], s), t) for d, pool, start, t, _ in setups]))
    return rows


def chinchilla_rows(limits) -> list[dict]:
    points, start, grid, target = chinchilla_setup(pd.read_csv(CHINCHILLA))
    planned = rounds(replay("chinchilla", points, start, target, float(grid[-1]["flops"].sum())))
    rows = []
    for name, designs in (("uniform: IsoFLOP budgets in order", grid), ("planned", planned)):
        widths = [float(predict_targets(d, target, "chinchilla")["half_width"].iloc[0]) for d in designs]
        row = {"design": name, "steps": len(designs),
               "compute → 95% half-width at 1e24": ", ".join(f"{d['flops'].sum():.2g} → {w:.1%}"
                                                              for d, w in zip(designs, widths))}
        for limit in limits:
            c = compute_to_stay_below(designs, widths, limit)
            row[f"compute to stay below {limit:.0%}"] = f"{c:.3g}" if np.isfinite(c) else "not reached"
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    table = pd.DataFrame(rows).drop(columns=["_error"], errors="ignore")
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the Gadre testbed at the paper's budget only")
    parser.add_argument("--testbed", choices=("gadre", "chinchilla"), help="only this testbed (default: both)")
    args = parser.parse_args()
    if args.testbed != "chinchilla":
        rows = gadre_rows((1.0,) if args.smoke else FACTORS, RANDOM_SEEDS[:1] if args.smoke else RANDOM_SEEDS)
        print(markdown(rows))
        planned = [r for r in rows if r["design"].startswith("planned")]
        matched = [r["compute / paper's"] for r in planned if r["_error"] <= PAPER_ERROR]
        print(f"\ncompute to match the paper's {PAPER_ERROR:.2%}: "
              + (f"{matched[0]}× the paper's" if matched else "not reached within the budgets tried"))
    if args.testbed != "gadre" and not args.smoke:
        if CHINCHILLA.exists():
            print("\n" + markdown(chinchilla_rows((WIDTH, *OTHER_WIDTHS))))
        elif args.testbed == "chinchilla":
            raise SystemExit(f"the Chinchilla points are not at {CHINCHILLA}")
        else:
            print(f"\n(the Chinchilla points are not at {CHINCHILLA}: that testbed is skipped)")


if __name__ == "__main__":
    main()
