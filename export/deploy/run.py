"""``fcnx deploy MODEL --data DIR -o DEPLOY/``: the whole job (see ``__init__``).

1. split DIR (seeded) into calibration and judging images;
2. every candidate this machine can run, exported through its parity gate (cached);
3. every passing candidate's settings and the Keras baselines timed side by side
   through the Segmenter on the judging images (cached per machine);
4. the rule (rule.py) picks the fastest within the budget; nothing within it: exit 1,
   the table printed, nothing written;
5. DEPLOY/ written atomically with the winner, deploy.json and report.html.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fcnx.runtime.flags import opt

from .rule import OBJECTIVES, PRESETS, Budget


@dataclass(frozen=True)
class DeployConfig:
    model: str = opt("", "a .keras file or a run folder", cli=False)
    out: str = opt("", "the DEPLOY/ folder to write", cli=False)
    data: str = opt("", "the user's images (image/ and optional label/)", cli=False)
    objective: str = opt("throughput", "what 'fastest' means: images/s at the best batch, or p99 at batch 1",
                         choices=OBJECTIVES)  # fmt: skip
    min_agreement: float | None = opt(None, "mask agreement with Keras, in %%, at least (default: 99)")
    max_miou_drop: float | None = opt(
        None, "mIoU below Keras's against the labels, in points, at most (default: 0.5)"
    )
    budget: str | None = opt(None, "a preset for both: the fp32, fp16 or int8 parity budget",
                             choices=tuple(PRESETS))  # fmt: skip
    calib: str | None = opt(
        None,
        "calibration images of their own (default: a seeded half of --data, at most --calib-count)",
        metavar="DIR",
    )
    calib_count: int = opt(32, "INT8 calibration images, at most")
    seed: int = opt(0, "seed of the calibration/judging split")
    time_budget: float = opt(
        120.0,
        "timed seconds shared out between the candidates' settings (loading each and one warm-up call "
        "come on top; every row gets at least 2 calls)",
    )
    candidates: str | None = opt(
        None, "comma-separated, e.g. 'ort-cpu fp32,ov-cpu int8' (default: every one this machine runs)"
    )
    baselines: bool = opt(True, "time Keras FP32 and BF16 beside the candidates (never chosen)")
    cache: str | None = opt(None, "cache folder (default: ~/.cache/fcnx/deploy)", metavar="DIR")
    force: bool = opt(False, "replace an existing DEPLOY/")
    report: bool = opt(True, "write DEPLOY/report.html (needs fcnx[report])")

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.budget is not None and (self.min_agreement is not None or self.max_miou_drop is not None):
            raise ValueError(
                "--budget is a preset for --min-agreement and --max-miou-drop: give one or the others"
            )
        if self.min_agreement is not None and not 0 < self.min_agreement <= 100:
            raise ValueError(f"--min-agreement is a percentage in (0, 100], got {self.min_agreement}")
        if self.max_miou_drop is not None and self.max_miou_drop < 0:
            raise ValueError(f"--max-miou-drop is in points, >= 0, got {self.max_miou_drop}")
        if self.calib_count < 1 or self.time_budget <= 0:
            raise ValueError("--calib-count must be >= 1 and --time-budget > 0")

    def quality_budget(self) -> Budget:
        if self.budget is not None:
            agreement, drop = PRESETS[self.budget]
            return Budget(agreement, drop if drop is not None else 0.0)
        default = Budget()
        return Budget(
            default.min_agreement if self.min_agreement is None else self.min_agreement / 100,
            default.max_miou_drop if self.max_miou_drop is None else self.max_miou_drop / 100,
        )

    def command(self) -> str:
        """The command that makes this deploy again (deploy.json records it)."""
        words = ["fcnx", "deploy", self.model, "--data", self.data, "-o", self.out]
        for f in fields(self):
            if f.name in ("model", "out", "data", "force") or getattr(self, f.name) == f.default:
                continue
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            words += (
                [flag if value is True else f"--no-{flag[2:]}"]
                if isinstance(value, bool)
                else [flag, str(value)]
            )
        return shlex.join([*words, "--force"])


from . import rule as _rule  # noqa: E402

RULE_TEXT = " ".join((_rule.__doc__ or "").split("\n\n")[0].split())


class NothingWithinBudget(RuntimeError):
    def __init__(self, message: str, table: str) -> None:
        super().__init__(message)
        self.table = table


def deploy(config: DeployConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the deploy; returns deploy.json's record (and writes DEPLOY/)."""
    from fcnx.runtime.bench.machine import describe_machine
    from fcnx.runtime.card import sha256_file
    from fcnx.train.model_file import find_card, resolve_model_path

    from . import build, cache, candidates, folder, measure, rule, split

    started = time.perf_counter()
    out = Path(config.out)
    folder.check_target(out, config.force)
    keras = resolve_model_path(config.model)
    card = find_card(keras)
    if card is None:
        from fcnx.train.keras_backend import card_for
        from fcnx.train.model_file import load_keras_model

        card = card_for(load_keras_model(keras), None)
    keras_sha = sha256_file(keras)
    images = split.split_images(config.data, config.calib, config.calib_count, config.seed)
    store = cache.DeployCache(
        Path(config.cache) if config.cache else cache.default_root(), keras_sha, images.digest()
    )
    calib_dir, judge_dir = images.write(store.base / "split")
    log(
        f"{len(images.calib)} images calibrate INT8, {len(images.judge)} judge ({len(images.labels)} with labels)"
    )

    machine = describe_machine("nncf")
    offered = candidates.candidates(candidates.Machine.here())
    wanted = _wanted(config.candidates, offered)
    entries: list[dict[str, Any]] = []
    built: dict[str, build.Built] = {}
    order = sorted(offered, key=lambda c: c.kind == "engine")  # an engine is built from its ONNX
    for cand in order:
        entry: dict[str, Any] = {"candidate": cand.name, "backend": cand.backend, "precision": cand.precision}
        if cand.name not in wanted:
            entries.append({**entry, "status": "not asked", "reason": "left out by --candidates"})
            continue
        if not cand.available:
            entries.append({**entry, "status": "unavailable", "reason": cand.reason})
            continue
        artifact = build.artifact_of(cand)
        log(f"export {artifact} (for {cand.name}) ...")
        made = build.build(artifact, keras, calib_dir, judge_dir, config.calib_count, store, built)
        parity = {k: made.parity.get(k) for k in ("images", "max_abs_prob", "mask_agreement",
                  "boundary_agreement", "miou_truth_keras", "miou_truth_artifact", "miou_change", "failures")
                  if k in made.parity}  # fmt: skip
        entries.append({**entry, "artifact": artifact, "status": made.status, "reason": made.reason,
                        "parity": parity, "export_seconds": made.seconds, "file": str(made.path or "")})  # fmt: skip
        log(
            f"  {made.status}"
            + (" (cached)" if made.cached else "")
            + (f": {made.reason}" if made.reason else "")
        )
    entries.sort(key=lambda e: [c.name for c in offered].index(e["candidate"]))

    rows = [measure.Row(e["candidate"], e["backend"], e["file"], s)
            for e in entries if e["status"] == "passed"
            for s in measure.settings_for(e["backend"], config.objective)]  # fmt: skip
    if config.baselines:
        batch = 1 if config.objective == "latency" else measure.THROUGHPUT_BATCHES[-1]
        rows += [measure.Row(f"{b} {p}", b, str(keras), measure.Setting(batch), baseline=True)
                 for b, p in candidates.BASELINES]  # fmt: skip
        entries += [{"candidate": f"{b} {p}", "backend": b, "precision": p, "status": "baseline", "baseline": True}
                    for b, p in candidates.BASELINES]  # fmt: skip
    rows_key = {"objective": config.objective, "time_budget": config.time_budget,
                "rows": [{**r.key(), "artifact": r.artifact} for r in rows]}  # fmt: skip
    measured = store.measurement(machine, rows_key) if rows else []
    if measured is None:
        pictures = measure.speed_images(images.judge, card.input_channels, card.intensity)
        measured = measure.measure(rows, pictures, config.objective, config.time_budget, log)
        store.keep_measurement(machine, rows_key, measured)
    else:
        log(f"{len(rows)} rows timed before on this machine (cached)")
    for entry in entries:
        entry["rows"] = [m for m in measured if m["candidate"] == entry["candidate"]]

    quality = config.quality_budget()
    choice = rule.choose(entries, config.objective, quality, [c.name for c in offered] + [
        f"{b} {p}" for b, p in candidates.BASELINES])  # fmt: skip
    table = format_table(entries, config.objective)
    log(table)
    if choice.winner is None:
        raise NothingWithinBudget(f"{config.model}: no candidate is within the budget ({quality.describe()}); "
                                  f"nothing written", table)  # fmt: skip
    winner = choice.winner
    best = winner["best"]
    record = {
        "format": "fcnx-deploy",
        "version": 1,
        "command": config.command(),
        "model": {"keras": str(keras), "keras_sha256": keras_sha, "card": card.to_dict()},
        "machine": machine,
        "data": {"folder": str(config.data), **images.record()},
        "rule": {"objective": config.objective, "budget": asdict(quality), "text": RULE_TEXT},
        "candidates": entries,
        "winner": {
            "candidate": winner["candidate"],
            "backend": winner["backend"],
            "precision": winner["precision"],
            "artifact": "model" + Path(winner["file"]).suffix,
            "settings": best["setting"],
            "images_per_second": best.get("images_per_second"),
            "p99_ms": best.get("p99_ms"),
            "runner_up": choice.runner_up["candidate"] if choice.runner_up else None,
            "margin": round(choice.margin, 3) if choice.margin else None,
        },
        "requires": {"gpu": machine["gpus"][0] if winner["backend"] == "trt" and machine["gpus"] else None},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report = _reporter(record, keras, judge_dir, winner) if config.report else None
    folder.write_folder(out, Path(winner["file"]), record, write_report, config.force)
    margin = (
        f", {choice.margin:.2f}x the runner-up, {choice.runner_up['candidate']}" if choice.runner_up else ""
    )
    log(
        f"\nwrote {out}: {winner['candidate']} at {measure_label(best['setting'])}, "
        f"{_speed(best, config.objective)}{margin if choice.margin else ''}"
    )
    return record


def _wanted(names: str | None, offered: list[Any]) -> set[str]:
    every = {c.name for c in offered}
    if names is None:
        return every
    asked = {n.strip() for n in names.split(",") if n.strip()}
    unknown = asked - every
    if unknown:
        raise ValueError(
            f"--candidates: unknown {', '.join(sorted(unknown))}; from {', '.join(sorted(every))}"
        )
    return asked


def _speed(row: dict[str, Any] | None, objective: str) -> str:
    if not row or row.get("status") != "measured":
        return "-"
    return (
        f"{row['images_per_second']:.2f} img/s"
        if objective == "throughput"
        else f"p99 {row['p99_ms']:.1f} ms"
    )


def format_table(entries: list[dict[str, Any]], objective: str) -> str:
    """The candidates for the terminal: speed at the best setting, quality, verdict."""
    lines = [f"{'candidate':<18} {'best setting':<22} {'speed':>14} {'agreement':>10} {'mIoU Δ':>9}  verdict"]
    for e in entries:
        if e["status"] == "not asked":
            continue
        best = e.get("best")
        parity = e.get("parity") or {}
        agreement = parity.get("mask_agreement")
        change = parity.get("miou_change")
        setting = measure_label(best["setting"]) if best else "-"
        mark = "*" if e.get("verdict") == "winner" else " "
        lines.append(
            f"{mark}{e['candidate']:<17} {setting:<22} {_speed(best, objective):>14} "
            f"{'-' if agreement is None else f'{agreement:.3%}':>10} "
            f"{'-' if change is None else f'{change * 100:+.2f} pt':>9}  {e.get('verdict') or e.get('reason', '')}"
        )
    return "\n".join(lines)


def measure_label(setting: dict[str, Any]) -> str:
    from .measure import Setting

    return Setting(**setting).label()


def _reporter(
    record: dict[str, Any], keras: Path, judge: Path, winner: dict[str, Any]
) -> Callable[[Path], None]:
    """DEPLOY/report.html: the candidates, the speed chart, the model card, every candidate's
    parity row, and the winner's disagreement pictures on the first judging images."""

    def write(staging: Path) -> None:
        from fcnx.export.parity_check import check_against_keras
        from fcnx.runtime.card import ModelCard
        from fcnx.runtime.html_report import build_report
        from fcnx.train.model_file import load_keras_model

        parity = [{"artifact": e["candidate"], "precision": e["precision"], **e["parity"],
                   "passed": e["status"] == "passed" and not e["parity"].get("failures")}
                  for e in record["candidates"] if e.get("parity")]  # fmt: skip
        report_dir = staging / ".report"
        report_dir.mkdir()
        try:
            (report_dir / "parity.json").write_text(json.dumps(parity))
            (report_dir / "deploy.json").write_text(json.dumps(record))
            (report_dir / "card.json").write_text(json.dumps(record["model"]["card"]))
            if Path(winner["file"]).suffix in (".onnx", ".xml"):  # what the CPU can compare
                card = ModelCard.from_dict(record["model"]["card"])
                check_against_keras(load_keras_model(keras), [winner["file"]], card, data=judge, random_images=0,
                                    display_names=[winner["candidate"]], maps=report_dir / "parity-maps")  # fmt: skip
            build_report(
                [report_dir], staging / "report.html", title=f"fcnx deploy: {winner['candidate']} won"
            )
        finally:
            shutil.rmtree(report_dir, ignore_errors=True)

    return write
