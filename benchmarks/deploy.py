"""fcnx deploy on the trained membrane models and the 24 real slices: does the choice hold?

For the FCN-2s and the FCN-8s of ``../shared/models``:

- a first ``fcnx deploy`` with the defaults (a fresh cache; its wall seconds) and a
  repeated one (the cache; its wall seconds): every candidate's row and the winner;
- ``fcnx predict DEPLOY/`` end to end over the judging images (repeated to a steady
  run): its images/s against the winner's measured images/s (>= 0.95x) and against the
  winner artifact's raw backend images/s at the same batch (>= 0.9x);
- the rule checked by an independent ``fcnx bench`` of every exported candidate (its
  artifact on its backend, batch 1 and 8, 512² tensors) in the same run: no candidate
  within budget is more than 5 % faster than the winner there.

    python benchmarks/deploy.py              # ~30 min on 2 cores
    python benchmarks/deploy.py --archs fcn8s
    python benchmarks/deploy.py --render     # the Markdown from the JSON
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from large_images import table  # noqa: E402
from report import suite_parser, write_report  # noqa: E402

SHARED = ROOT.parent / "shared"
ARCHS = ("fcn2s", "fcn8s")
REPEAT = 8  # the judging images repeated this often for a steady predict run
BENCH_SECONDS = 6.0


def run(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started, done.stdout


def deploy_arch(arch: str, data: Path, work: Path) -> dict[str, Any]:
    model, out, cache = SHARED / "models" / f"membrane-{arch}", work / arch / "deploy", work / arch / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    command = [
        "fcnx",
        "deploy",
        str(model),
        "--data",
        str(data),
        "-o",
        str(out),
        "--force",
        "--cache",
        str(cache),
    ]
    first, stdout = run(command)
    print(stdout, flush=True)
    again, _ = run(command)
    record = json.loads((out / "deploy.json").read_text())
    winner = record["winner"]

    judging = work / arch / "judging"
    shutil.rmtree(judging, ignore_errors=True)
    judging.mkdir(parents=True)
    for i in range(REPEAT):
        for name in record["data"]["judging"]:
            (judging / f"{i}-{Path(name).name}").symlink_to(Path(name).resolve())
    predicted = work / arch / "predicted"
    run(["fcnx", "predict", str(out), str(judging), "-o", str(predicted), "--overwrite", "--no-progress"])
    summary = json.loads((predicted / "summary.json").read_text())

    artifacts = {e["candidate"]: e for e in record["candidates"] if e["status"] == "passed"}
    bench = independent_bench(artifacts, work / arch / "bench", winner)
    within = [e["candidate"] for e in record["candidates"] if e.get("verdict") in ("winner", "within budget")]
    best_bench = {
        c: max((r["images_per_second"] for r in bench if r["candidate"] == c), default=0.0) for c in within
    }
    fastest = max(best_bench, key=best_bench.__getitem__) if best_bench else None
    raw = next((r["images_per_second"] for r in bench if r["candidate"] == winner["candidate"]
                and r["batch"] == winner["settings"]["batch"]), None)  # fmt: skip
    return {
        "arch": arch, "first_seconds": round(first, 1), "repeat_seconds": round(again, 1),
        "winner": winner, "candidates": record["candidates"], "judging_images": len(record["data"]["judging"]),
        "predict": {"images": summary["counts"]["written"], "seconds": summary["seconds"],
                    "images_per_second": summary["images_per_second"], "batch": summary["batch"]},
        "raw_images_per_second": raw,
        "bench": bench, "bench_fastest_within_budget": fastest,
        "bench_fastest_vs_winner": (best_bench[fastest] / best_bench[winner["candidate"]]
                                    if fastest and best_bench.get(winner["candidate"]) else None),
    }  # fmt: skip


def carry_through(arch: str, work: Path, rounds: int = 3) -> dict[str, Any]:
    """``fcnx predict DEPLOY/`` end to end against the winner timed the way deploy times it
    (the Segmenter in this process, same backend, settings and images), interleaved round
    by round so a busy machine slows both alike; the best round of each."""
    from fcnx.runtime.backends.registry import load
    from fcnx.runtime.images import list_images, read_image
    from fcnx.runtime.predict.segmenter import Segmenter

    out, judging, predicted = work / arch / "deploy", work / arch / "judging", work / arch / "predicted"
    files = list_images(judging)
    predict_rates, segmenter_rates = [], []
    for _ in range(rounds):
        run(["fcnx", "predict", str(out), str(judging), "-o", str(predicted), "--overwrite", "--no-progress"])
        predict_rates.append(json.loads((predicted / "summary.json").read_text())["images_per_second"])
        with load(out) as backend:
            images = [read_image(p, backend.card.input_channels) for p in files]
            segmenter = Segmenter(backend)
            segmenter.predict(images[:4])  # warm-up
            started = time.perf_counter()
            segmenter.predict(images)
            segmenter_rates.append(len(images) / (time.perf_counter() - started))
    return {"rounds": rounds, "images": len(files), "predict_images_per_second": max(predict_rates),
            "segmenter_images_per_second": max(segmenter_rates),
            "ratio": max(predict_rates) / max(segmenter_rates)}  # fmt: skip


def independent_bench(artifacts: dict[str, dict[str, Any]], out: Path, winner: dict[str, Any]) -> list[dict]:
    """``fcnx bench`` of each passing candidate's artifact on its own backend, side by side."""
    from fcnx.runtime.bench.config import BenchConfig
    from fcnx.runtime.bench.run import run_bench

    models = sorted({e["file"] for e in artifacts.values()})
    backends = sorted({e["backend"] for e in artifacts.values()})
    batches = sorted({1, 8, int(winner["settings"]["batch"])})
    config = BenchConfig(models=tuple(models), backends=",".join(backends), batch=",".join(map(str, batches)),
                         min_seconds=BENCH_SECONDS, max_seconds=3 * BENCH_SECONDS, out=str(out), ceiling=False,
                         plots=False)  # fmt: skip
    report = run_bench(config)
    by_file = {(e["file"], e["backend"]): name for name, e in artifacts.items()}
    rows = []
    for r in report["rows"]:
        name = by_file.get((r["model"], r["backend"]))
        if name and r["status"] == "ok":
            rows.append({"candidate": name, "batch": r["batch"], "images_per_second": r["images_per_second"]})
    return rows


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    flags = ", ".join(k for k, v in m["cpu_flags"].items() if v) or "none of AVX-512/VNNI/BF16/AMX"
    lines = [f"Measured {doc['date']} on {m['cpu']} ({m['cores']} cores; {flags}), the membrane models of "
             "`../shared/models` on the 24 real slices (a seeded half calibrates INT8, the other half judges "
             "quality and speed), `fcnx deploy` with its defaults (throughput; budget: 99 % mask agreement with "
             "Keras, 0.5 pt mIoU). Speeds are images/s through the Segmenter at the candidate's best batch; "
             "Keras rows are baselines." + (f" {doc['note']}" if doc.get("note") else ""), ""]  # fmt: skip
    for r in doc["rows"]:
        lines += [f"**{r['arch']}**: winner **{r['winner']['candidate']}** "
                  f"({', '.join(f'{k} {v}' for k, v in r['winner']['settings'].items() if v is not None)}), "
                  f"{r['winner']['margin'] or 0:.2f}x the runner-up ({r['winner']['runner_up']}); first deploy "
                  f"{r['first_seconds']:.0f} s, repeated {r['repeat_seconds']:.0f} s.", ""]  # fmt: skip
        rows = []
        for e in r["candidates"]:
            if e["status"] == "not asked":
                continue
            best, parity = e.get("best") or {}, e.get("parity") or {}
            change = parity.get("miou_change")
            rows.append([("**" + e["candidate"] + "**") if e.get("verdict") == "winner" else e["candidate"],
                         ", ".join(f"{k} {v}" for k, v in (best.get("setting") or {}).items() if v is not None),
                         best.get("images_per_second"),
                         None if parity.get("mask_agreement") is None else f"{parity['mask_agreement']:.3%}",
                         None if change is None else f"{100 * change:+.2f}",
                         e.get("verdict") or e.get("reason")])  # fmt: skip
        lines += table(
            ["candidate", "best setting", "images/s", "mask = Keras", "mIoU Δ pt", "verdict"], rows
        )
        p, w = r["predict"], r["winner"]
        raw = r["raw_images_per_second"]
        lines += [f"`fcnx predict DEPLOY/` over {p['images']} images ({r['judging_images']} judging images "
                  f"x {REPEAT}): {p['images_per_second']:.2f} images/s end to end (batch {p['batch']}) = "
                  f"{p['images_per_second'] / w['images_per_second']:.2f}x the winner's measured "
                  f"{w['images_per_second']:.2f}"
                  + (f", {p['images_per_second'] / raw:.2f}x its raw backend {raw:.2f} images/s (fcnx bench, same "
                     "batch)" if raw else "") + ".", ""]  # fmt: skip
        fastest, ratio = r["bench_fastest_within_budget"], r["bench_fastest_vs_winner"]
        carry = r.get("carry_through")
        if carry:
            lines += [f"Interleaved, {carry['rounds']} rounds (best of each; the check that survives a busy machine): "
                      f"`fcnx predict DEPLOY/` {carry['predict_images_per_second']:.2f} images/s end to end over "
                      f"{carry['images']} images against the winner timed as deploy times it "
                      f"{carry['segmenter_images_per_second']:.2f}: **{carry['ratio']:.2f}x**.", ""]  # fmt: skip
        versus = f", {ratio:.2f}x the winner" if ratio else ""
        lines += [f"Independent `fcnx bench` of every exported candidate (512² tensors, batch 1/8): the fastest "
                  f"within budget is {fastest}{versus}.", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = suite_parser(__doc__, "deploy")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--carry-through", action="store_true",
                        help="only the interleaved predict-vs-winner check of the deploys already made")  # fmt: skip
    args = parser.parse_args()
    results = args.results / "deploy.json"
    if args.render:
        (args.results / "deploy.md").write_text(to_markdown(json.loads(results.read_text())))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = [r for r in (json.loads(results.read_text())["rows"] if results.is_file() else [])
            if r["arch"] not in args.archs]  # fmt: skip
    if args.carry_through:
        done = json.loads(results.read_text())["rows"]
        for row in done:
            if row["arch"] in args.archs:
                row["carry_through"] = carry_through(row["arch"], args.work)
        write_report(args.results, "deploy", done, to_markdown)
        return 0
    for arch in args.archs:
        rows.append(deploy_arch(arch, args.data, args.work))
        rows.sort(key=lambda r: ARCHS.index(r["arch"]))
        write_report(args.results, "deploy", rows, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
