"""The rule: the fastest candidate whose quality stays within the user's budget.

A candidate is within budget when its artifact passed its own parity gate (the
precision's budget, ``export/parity.py``) and, on the judging images, its masks agree
with Keras's on at least ``min_agreement`` of the pixels and, where the images have
labels, its mIoU is at most ``max_miou_drop`` below Keras's. Its speed is its best
setting's: the most images/s (``throughput``) or the lowest p99 (``latency``). Speeds
equal to 3 significant digits are a tie, which the more exact precision wins (FP32,
then BF16/FP16, then INT8), then the registry's order. Keras rows are baselines, never
chosen. Nothing within budget: no winner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fcnx.export.parity import BUDGETS

from .candidates import PRECISION_ORDER

OBJECTIVES = ("throughput", "latency")
# --budget presets: the per-precision budgets parity already judges by
PRESETS = {name: (b.mask_agreement, b.miou_change) for name, b in BUDGETS.items() if name != "bf16"}


@dataclass(frozen=True)
class Budget:
    min_agreement: float = 0.99  # fraction of pixels
    max_miou_drop: float = 0.005  # fraction (0.5 pt)

    def describe(self) -> str:
        return f"mask agreement with Keras >= {self.min_agreement:.2%}, mIoU drop <= {self.max_miou_drop * 100:.2f} pt"


@dataclass
class Choice:
    winner: dict[str, Any] | None  # the winning candidate's entry (with its best row)
    runner_up: dict[str, Any] | None
    margin: float | None  # winner's speed / runner-up's (throughput), or runner-up's p99 / winner's
    ranked: list[dict[str, Any]] = field(default_factory=list)  # within budget, best first


def score(row: dict[str, Any], objective: str) -> float:
    """Larger is better: images/s, or minus the p99."""
    return float(row["images_per_second"]) if objective == "throughput" else -float(row["p99_ms"])


def _rounded(value: float) -> float:
    return float(f"{value:.3g}")


def quality_failures(entry: dict[str, Any], budget: Budget) -> list[str]:
    """Why a candidate's quality is outside the user's budget (empty: within)."""
    parity = entry.get("parity") or {}
    failures = []
    agreement = parity.get("mask_agreement")
    if agreement is None or not agreement >= budget.min_agreement:
        shown = "?" if agreement is None else f"{agreement:.4%}"
        failures.append(f"mask agreement {shown} < {budget.min_agreement:.2%}")
    change = parity.get("miou_change")
    if change is not None and -change > budget.max_miou_drop:
        failures.append(f"mIoU drop {-change * 100:.2f} pt > {budget.max_miou_drop * 100:.2f} pt")
    return failures


def best_row(entry: dict[str, Any], objective: str) -> dict[str, Any] | None:
    """The candidate's row the rule compares: its ``final`` one (timed beside the other
    candidates) when there is one, else its fastest."""
    measured = [r for r in entry.get("rows", []) if r.get("status") == "measured"]
    final = [r for r in measured if r.get("stage") == "final"]
    measured = final or measured
    return max(measured, key=lambda r: score(r, objective)) if measured else None


def choose(entries: list[dict[str, Any]], objective: str, budget: Budget, order: list[str]) -> Choice:
    """The winner among ``entries`` (one per candidate: ``status``, ``parity``, ``rows``);
    sets each entry's ``verdict`` ("within budget" or why not) and ``best``. ``order``:
    the candidates' registry order (the last tie-break)."""
    within = []
    for entry in entries:
        if entry.get("baseline"):
            entry["verdict"] = "baseline (never chosen)"
            entry["best"] = best_row(entry, objective)
            continue
        if entry["status"] != "passed":
            entry["verdict"] = f"{entry['status']}: {entry.get('reason') or 'not exported'}"
            continue
        failures = quality_failures(entry, budget)
        entry["best"] = best_row(entry, objective)
        if failures:
            entry["verdict"] = "over the budget: " + "; ".join(failures)
        elif entry["best"] is None:
            entry["verdict"] = "failed: no setting ran (" + "; ".join(
                r.get("reason", "?") for r in entry.get("rows", [])[:1]) + ")"  # fmt: skip
        else:
            entry["verdict"] = "within budget"
            within.append(entry)

    def rank(entry: dict[str, Any]) -> tuple[float, int, int]:
        return (-_rounded(score(entry["best"], objective)), PRECISION_ORDER.index(entry["precision"]),
                order.index(entry["candidate"]))  # fmt: skip

    ranked = sorted(within, key=rank)
    if not ranked:
        return Choice(None, None, None, [])
    winner, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    margin = None
    if runner is not None:
        w, r = score(winner["best"], objective), score(runner["best"], objective)
        margin = w / r if objective == "throughput" else r / w
    winner["verdict"] = "winner"
    return Choice(winner, runner, margin, ranked)
