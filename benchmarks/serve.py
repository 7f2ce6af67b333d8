"""fcnx serve under load, against the same artifact in process: what does serving cost?

On the membrane FCN-2s's fastest CPU artifact (the DEPLOY/ folder ``benchmarks/deploy.py``
writes, else a fresh ``fcnx deploy``), with the 24 real slices at 512x512:

- in process: ``fcnx bench DEPLOY/`` on its backend at batch 1 and at its tuned batch
  (images/s with its infer requests in flight, latency one call at a time);
- served: ``fcnx serve DEPLOY/ --max-batch B`` (the engine at the deploy's tuned batch) in a
  subprocess on loopback, driven by
  ``fcnx bench --url`` over HTTP (binary tensors): LoadGen SingleStream, the concurrency
  sweep 1..16, LoadGen Offline, and LoadGen's Server peak search (p99 <= 2x SingleStream p90);
- the checks: served Offline >= 0.9x in-process throughput at the tuned batch, SingleStream p90 <=
  in-process batch-1 p90 + 5 ms, the sweep's throughput rising to the cores' limit.

Client and server share this machine's cores (the client's encoding and LoadGen's threads
are not free on 2 cores); the table says so. Rows in one run only, side by side.

    python benchmarks/serve.py                 # ~15-30 min on 2 cores (the Server search is long)
    python benchmarks/serve.py --no-server     # without LoadGen's Server search
    python benchmarks/serve.py --render        # the Markdown from the JSON
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from large_images import table  # noqa: E402
from report import suite_parser, write_report  # noqa: E402

SHARED = ROOT.parent / "shared"
SERVER_NOTES = ("peak QPS", "no peak", "p99 bound", "peak search started", "LoadGen")
NAME = "fcn2s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deploy_folder(work: Path, data: Path) -> Path:
    """The FCN-2s's DEPLOY/ folder: benchmarks/deploy.py's, else a fresh fcnx deploy."""
    for folder in (ROOT / "runs" / "deploy" / "fcn2s" / "deploy", work / "deploy"):
        if (folder / "deploy.json").is_file():
            return folder
    model = SHARED / "models" / "membrane-fcn2s"
    subprocess.run(["fcnx", "deploy", str(model), "--data", str(data), "-o", str(work / "deploy"), "--force",
                    "--cache", str(work / "cache")], check=True)  # fmt: skip
    return work / "deploy"


def in_process(deploy: Path, data: Path, batch: int, seconds: float, out: Path) -> list[dict]:
    from fcnx.runtime.bench.config import BenchConfig
    from fcnx.runtime.bench.run import run_bench

    backend = json.loads((deploy / "deploy.json").read_text())["winner"]["backend"]
    config = BenchConfig(models=(str(deploy),), backends=backend, batch=",".join(map(str, sorted({1, batch}))),
                         data=str(data), min_seconds=seconds, max_seconds=4 * seconds, out=str(out),
                         ceiling=False, plots=False)  # fmt: skip
    return [r for r in run_bench(config)["rows"] if r["status"] == "ok"]


def served(
    deploy: Path, data: Path, max_batch: int, seconds: float, out: Path, scenarios: str, *extra: str
) -> tuple[dict, dict]:
    http, grpc = free_port(), free_port()
    server = subprocess.Popen(["fcnx", "serve", str(deploy), "--name", NAME, "--max-batch", str(max_batch),
                               "--http-port", str(http), "--grpc-port", str(grpc)])  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/{NAME}", timeout=10) as r:
            metadata = json.loads(r.read())
        subprocess.run(["fcnx", "bench", "--url", f"http://127.0.0.1:{http}", "--model", NAME, "--data", str(data),
                        "--size", "512x512", "--scenarios", scenarios, "--concurrency", "1,2,4,8,16",
                        "--min-seconds", str(seconds), "--max-seconds", str(max(120.0, 6 * seconds)),
                        "--out", str(out), *extra], check=True)  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=120)
    report = json.loads((out / "bench.json").read_text())
    report["server_exit"] = code
    return report, metadata


def checks(inproc: list[dict], rows: list[dict], batch: int) -> dict[str, Any]:
    by_batch = {r["batch"]: r for r in inproc}
    mode = {r["mode"]: r for r in rows}
    offline, single = mode.get("LoadGen Offline"), mode.get("LoadGen SingleStream")
    sweep = [r for r in rows if r["mode"].startswith("concurrency")]
    out: dict[str, Any] = {"batch": batch}
    if offline and batch in by_batch:
        out["offline_vs_in_process"] = round(
            offline["images_per_second"] / by_batch[batch]["images_per_second"], 3
        )
    if single and 1 in by_batch:
        out["single_stream_p90_minus_in_process_ms"] = round(single["p90_ms"] - by_batch[1]["p90_ms"], 2)
    if sweep:
        out["sweep_peak_clients"] = max(sweep, key=lambda r: r["images_per_second"])["concurrency"]
    server = mode.get("LoadGen Server")
    if server:
        out["server_peak_qps"] = server["images_per_second"]
        out["server_valid"] = server["stable"]
    return out


def to_markdown(doc: dict) -> str:
    from fcnx.runtime.bench.config import BenchRow
    from fcnx.runtime.bench.report import SERVED_COLUMNS, cell

    m, r = doc["machine"], doc["rows"]
    lines = [
        f"Measured {doc['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB): the membrane FCN-2s's "
        f"DEPLOY/ winner ({r['winner']}, tuned batch {r['checks']['batch']}), 512x512 slices, `fcnx serve "
        f"--max-batch {r['max_batch']}` and its client on the same cores, HTTP with binary tensors.",
        "",
        "In process (`fcnx bench DEPLOY/`):",
        "",
        *table(["batch", "img/s", "p50 ms", "p90 ms", "p99 ms"],
               [[x["batch"], x["images_per_second"], x["p50_ms"], x["p90_ms"], x["p99_ms"]] for x in r["in_process"]]),
        "Served (`fcnx bench --url`; queue ms per image and compute ms per batch from the server's /metrics; "
        "valid: LoadGen's verdict):",
        "",
    ]  # fmt: skip
    titles = [t for _, t in SERVED_COLUMNS if t not in ("model", "client", "status")]
    keys = [k for k, t in SERVED_COLUMNS if t not in ("model", "client", "status")]
    served_rows = [BenchRow.from_dict(x) for x in r["served"]]
    lines += table(titles, [[cell(x, k) for k in keys] for x in served_rows])
    notes = {x.mode: x.notes for x in served_rows if x.mode == "LoadGen Server"}
    c = r["checks"]
    single = next((x for x in r["served"] if x["mode"] == "LoadGen SingleStream"), None)
    batch1 = next((x for x in r["in_process"] if x["batch"] == 1), None)
    p50 = f"{single['p50_ms'] - batch1['p50_ms']:+.1f} ms" if single and batch1 else "-"
    lines += [
        f"Offline served / in process at the tuned batch {c['batch']}: **{c.get('offline_vs_in_process', '-')}x** "
        "(target >= 0.9). SingleStream p90 minus in-process batch-1 p90: "
        f"**{c.get('single_stream_p90_minus_in_process_ms', '-')} ms** (target <= 5; p50: {p50}). Sweep peak at "
        f"{c.get('sweep_peak_clients', '-')} clients."
        + (f" LoadGen Server: {'; '.join(n for n in notes.get('LoadGen Server', []) if n.startswith(SERVER_NOTES))}"
           f" ({c['server_peak_qps']} samples/s completed at the peak; p99 within the bound there: "
           f"{'yes' if c['server_valid'] else 'no'})." if "server_peak_qps" in c else ""),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = suite_parser(__doc__, "serve")
    parser.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    parser.add_argument("--server", action=argparse.BooleanOptionalAction, default=True,
                        help="also LoadGen's Server peak search (long: >= 700 queries per step)")  # fmt: skip
    parser.add_argument("--server-only", action="store_true",
                        help="only LoadGen's Server search, added to the results JSON's other rows")  # fmt: skip
    args = parser.parse_args()
    results = args.results / "serve.json"
    if args.render:
        (args.results / "serve.md").write_text(to_markdown(json.loads(results.read_text())))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    images = args.data / "image"
    deploy = deploy_folder(args.work, args.data)
    winner = json.loads((deploy / "deploy.json").read_text())["winner"]
    tuned = int(winner.get("settings", {}).get("batch") or 1)
    if args.server_only:
        rows = json.loads(results.read_text())["rows"]
        rows["served"] = [x for x in rows["served"] if x["mode"] != "LoadGen Server"]
        server_search(rows, deploy, images, args, tuned)
        return 0
    inproc = in_process(deploy, images, tuned, args.seconds, args.work / "in-process")
    report, metadata = served(deploy, images, args.max_batch, args.seconds, args.work / "served",
                              "single-stream,concurrency,offline")  # fmt: skip
    rows = {
        "winner": f"{winner['candidate']} {winner['artifact']}",
        "platform": metadata.get("platform"),
        "in_process": [{k: x[k] for k in ("batch", "images_per_second", "p50_ms", "p90_ms", "p99_ms", "in_flight")}
                       for x in inproc],
        "served": [{k: v for k, v in x.items() if k != "latencies_ms"} for x in report["rows"]],
        "server_exit": report["server_exit"],
        "max_batch": args.max_batch,
        "checks": checks(inproc, report["rows"], tuned),
    }  # fmt: skip
    write_report(args.results, "serve", rows, to_markdown)  # kept if the long Server search is stopped
    if args.server:
        server_search(rows, deploy, images, args, tuned)
    return 0


def server_search(rows: dict, deploy: Path, images: Path, args: argparse.Namespace, tuned: int) -> None:
    """LoadGen's Server search in a server of its own, bounded by 2x the SingleStream p90 measured."""
    single = next(r for r in rows["served"] if r["mode"] == "LoadGen SingleStream")
    search, _ = served(deploy, images, args.max_batch, args.seconds, args.work / "served-server", "server",
                       "--p99-ms", str(2 * single["p90_ms"]))  # fmt: skip
    rows["served"] += [{k: v for k, v in x.items() if k != "latencies_ms"} for x in search["rows"]]
    rows["checks"] = checks(rows["in_process"], rows["served"], tuned)
    write_report(args.results, "serve", rows, to_markdown)


if __name__ == "__main__":
    sys.exit(main())
