"""``fcnx report DIR... -o report.html``: one self-contained HTML page from what fcnx wrote.

It looks in the given folders (recursively) for the files fcnx's commands write and
shows what it finds: the model card (``card.json``), training curves
(``history.csv``), quality against labels (``evaluation.json``), the parity table
(``parity.json``) with its disagreement pictures (``parity-maps/``, from ``fcnx parity
--maps``), predicted overlays (``*.overlay.jpg``) and the speed table and plots
(``bench.json``). Pictures and plots are embedded as ``data:`` URIs, so the page needs
no network and no other file. Jinja2 renders the template (``data/report.html.j2``);
matplotlib draws the plots (``pip install "fcnx[report]"``).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .backends.base import MissingExtra
from .card import ModelCard
from .data import FOLDER

TEMPLATE = "report.html.j2"
MAX_PICTURES = 6


def _walk(folders: list[Path]) -> list[Path]:
    """Everything below the folders, walked once: each folder in turn, shallowest first."""
    return [p for f in folders for p in sorted(f.rglob("*"), key=lambda p: (len(p.parts), str(p)))]


def _first(paths: list[Path], name: str) -> Path | None:
    return next((p for p in paths if p.name == name and p.is_file()), None)


def data_uri(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _figure_uri(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return data_uri(buffer.getvalue())


def _curves(history: Path) -> tuple[str, int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with history.open(newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric in zip(axes, ("loss", "miou")):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            if rows and key in rows[0]:
                ax.plot(epochs, [float(r[key]) for r in rows], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    uri = _figure_uri(fig)
    plt.close(fig)
    return uri, len(rows)


def _card_rows(card: ModelCard) -> list[tuple[str, str]]:
    size = f"{card.input_height or 'any'} x {card.input_width or 'any'} x {card.input_channels} {card.input_dtype}"
    rows = [
        ("architecture", f"{card.architecture} ({card.width})"),
        ("classes", ", ".join(card.classes)),
        ("input", size),
        ("output", card.output_kind),
        ("normalization", f"(x - {card.norm_mean:g}) / {card.norm_std:g}"),
    ]
    metrics = card.training.get("val_metrics") or {}
    if metrics:
        rows.append(
            ("validation", f"mIoU {metrics.get('miou', float('nan')):.4f} on {metrics.get('images')} images")
        )
    if card.training.get("data"):
        rows.append(("trained on", str(card.training["data"])))
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(card.versions.items()))))
    return rows


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.3f} %"


def _parity(path: Path) -> list[dict[str, Any]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    shown = []
    for r in rows if isinstance(rows, list) else rows.get("rows", []):
        change = r.get("miou_change")
        shown.append({
            "name": Path(str(r["artifact"])).name,
            "precision": r["precision"],
            "images": r["images"],
            "max_abs_prob": "-" if r.get("max_abs_prob") is None else f"{r['max_abs_prob']:.2e}",
            "mask_agreement": _percent(r.get("mask_agreement")),
            "boundary_agreement": _percent(r.get("boundary_agreement")),
            "miou_vs_keras": f"{r['miou_vs_keras']:.4f}" if r.get("miou_vs_keras") is not None else "-",
            "miou_change": "-" if change is None else f"{100 * change:+.3f} pt",
            "passed": bool(r.get("passed", not r.get("failures"))),
            "failures": "; ".join(r.get("failures", [])),
        })  # fmt: skip
    return shown


def _pictures(paths: list[Path]) -> list[tuple[str, str]]:
    kinds = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
    return [(p.name, data_uri(p.read_bytes(), kinds[p.suffix.lower()])) for p in paths[:MAX_PICTURES]]


def _maps(paths: list[Path]) -> list[tuple[str, list[tuple[str, str]]]]:
    root = next((p for p in paths if p.name == "parity-maps" and p.is_dir()), None)
    if root is None:
        return []
    return [(d.name, _pictures(sorted(d.glob("*.png")))) for d in sorted(root.iterdir()) if d.is_dir()]


def _bench(path: Path) -> dict[str, Any]:
    from .bench.report import COLUMNS, cell, describe_run, plot, rows_of

    report = json.loads(path.read_text(encoding="utf-8"))
    rows = rows_of(report)
    columns = [(k, t) for k, t in COLUMNS if k not in ("vs_raw", "mode") or any(getattr(r, k) for r in rows)]
    plots: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for written in plot(report, Path(tmp)):
            plots.append((written.stem, data_uri(written.read_bytes())))
    return {
        "header": [title for _, title in columns],
        "rows": [[cell(r, k) for k, _ in columns] for r in rows],
        "machine": describe_run(report),
        "plots": plots,
    }


def _deploy(path: Path) -> dict[str, Any]:
    """The deploy section: every candidate with its best setting, speed, quality and verdict
    (the winner starred), and the speeds as a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = json.loads(path.read_text(encoding="utf-8"))
    objective = record["rule"]["objective"]
    rows, bars = [], []
    for e in record["candidates"]:
        if e["status"] == "not asked":
            continue
        best, parity = e.get("best") or {}, e.get("parity") or {}
        speed = best.get("images_per_second") if objective == "throughput" else best.get("p99_ms")
        if speed is not None:
            bars.append((e["candidate"], float(speed), e.get("verdict") == "winner", bool(e.get("baseline"))))
        setting = best.get("setting") or {}
        change = parity.get("miou_change")
        rows.append({
            "candidate": e["candidate"], "winner": e.get("verdict") == "winner",
            "setting": ", ".join(f"{k} {v}" for k, v in setting.items() if v is not None) or "-",
            "speed": "-" if speed is None else f"{speed:.2f} {'img/s' if objective == 'throughput' else 'ms p99'}",
            "agreement": _percent(parity.get("mask_agreement")) if parity else "-",
            "change": "-" if change is None else f"{100 * change:+.3f} pt",
            "verdict": e.get("verdict") or f"{e['status']}: {e.get('reason', '')}",
            "ok": e.get("verdict") in ("winner", "within budget"), "rejected": e["status"] in ("rejected", "failed"),
        })  # fmt: skip
    plots = []
    if bars:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(bars) + 1))
        colours = ["#2a7" if w else "#999" if b else "#48c" for _, _, w, b in bars]
        ax.barh([name for name, *_ in bars], [v for _, v, *_ in bars], color=colours)
        ax.invert_yaxis()
        ax.set_xlabel("images/s at the best setting" if objective == "throughput" else "p99 ms at batch 1")
        ax.set_title("candidates (green: the winner, grey: Keras baselines)")
        fig.tight_layout()
        plots.append(("deploy-speed", _figure_uri(fig)))
        plt.close(fig)
    winner, machine = record["winner"], record["machine"]
    margin = (
        f", {winner['margin']:.2f}x the runner-up ({winner['runner_up']})" if winner.get("margin") else ""
    )
    return {
        "rule": record["rule"]["text"],
        "winner": f"{winner['candidate']}",
        "margin": margin,
        "machine": f"{machine.get('cpu')} ({machine.get('cores')} cores)",
        "rows": rows,
        "plots": plots,
    }


def build_report(folders: list[str | Path], out: str | Path, title: str = "") -> Path:
    """Render what the folders hold into ``out`` (atomically); returns its path."""
    try:
        import jinja2
        import matplotlib  # noqa: F401 (the plots need it; fail here, before any work)
    except ModuleNotFoundError as exc:
        raise MissingExtra(
            f'fcnx report needs {exc.name}, which is not installed: pip install "fcnx[report]"'
        ) from None
    from . import __version__

    roots = [Path(f) for f in folders]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise ValueError(f"{', '.join(missing)}: no such folder")
    paths = _walk(roots)
    card_path = _first(paths, "card.json")
    card = ModelCard.read(card_path) if card_path else None
    history, evaluation = _first(paths, "history.csv"), _first(paths, "evaluation.json")
    parity, bench = _first(paths, "parity.json"), _first(paths, "bench.json")
    deploy = _first(paths, "deploy.json")
    curves, epochs = _curves(history) if history else ("", 0)
    overlays = sorted(p for p in paths if p.name.endswith(".overlay.jpg"))
    if not any((card, history, evaluation, parity, bench, overlays, deploy)):
        raise ValueError(f"{', '.join(map(str, roots))}: none of the files fcnx writes is in there")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(FOLDER), autoescape=True, undefined=jinja2.StrictUndefined
    )
    html = environment.get_template(TEMPLATE).render(
        title=title or ", ".join(r.name or str(r) for r in roots),
        written=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        version=__version__,
        sources=[str(r) for r in roots],
        card=card,
        card_rows=_card_rows(card) if card else [],
        curves=curves,
        epochs=epochs,
        evaluation=json.loads(evaluation.read_text(encoding="utf-8")) if evaluation else None,
        parity=_parity(parity) if parity else [],
        maps=_maps(paths),
        overlays=_pictures(overlays),
        bench=_bench(bench) if bench else None,
        deploy=_deploy(deploy) if deploy else None,
    )
    atomic_write_text(out, html)
    return Path(out)
