"""fcnx demo on tiny settings, and the report it writes: every artifact there, the deploy's
candidates judged and timed beside Keras, its winner run by predict; the HTML parses, every picture is an
embedded data: URI that decodes, the tables have their rows, nothing refers to the network;
and no TensorFlow start-up noise on stderr."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fcnx.runtime.cli import TF_NOISE, main


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "fcnx-demo"
    args = ["demo", str(root), "--epochs", "2", "--steps-per-epoch", "3", "--images", "8", "--size", "64",
            "--deploy-seconds", "2", "--mosaic", "300"]  # fmt: skip
    assert main(args) == 0
    return root


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for key in ("href", "src"):
            if values.get(key) and tag not in ("img",):
                self.links.append(values[key] or "")
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None


def test_the_demo_writes_every_artifact_with_judged_parity(demo: Path) -> None:
    for name in ("run/best.keras", "run/card.json", "evaluation.json", "deploy/deploy.json", "deploy/report.html",
                 "parity.json", "report.html"):  # fmt: skip
        assert (demo / name).is_file(), name
    record = json.loads((demo / "deploy" / "deploy.json").read_text())
    judged = {e["candidate"]: e for e in record["candidates"]}
    assert judged["ort-cpu fp32"]["status"] == "passed" and judged["ort-cpu fp32"]["parity"]["images"] == 4
    assert judged["keras fp32"]["best"]["images_per_second"] > 0  # the baseline, timed beside them
    assert [e["candidate"] for e in record["candidates"] if e.get("verdict") == "winner"] == [
        record["winner"]["candidate"]]  # fmt: skip
    parity = json.loads((demo / "parity.json").read_text())
    assert (
        len(parity) == 1 and parity[0]["passed"] and parity[0]["images"] == 4
    )  # the winner, on the judging half
    assert len(list((demo / "predictions").glob("*.png"))) == 8
    assert len(list((demo / "predictions-mosaic").glob("mosaic-300*.png"))) == 1


def test_the_report_is_one_self_contained_page(demo: Path) -> None:
    text = (demo / "report.html").read_text()
    page = _Page()
    page.feed(text)
    assert len(page.images) >= 5
    for src in page.images:
        kind, _, payload = src.partition(";base64,")
        assert kind in ("data:image/png", "data:image/jpeg"), src[:40]
        Image.open(io.BytesIO(base64.b64decode(payload))).verify()
    assert not page.links and not re.search(r"https?://", text)  # nothing to fetch
    parity = json.loads((demo / "parity.json").read_text())
    tables = {table[0][0]: table for table in page.tables if table and table[0]}
    assert len(tables["artifact"]) == 1 + len(parity)  # header + one row per compared artifact
    assert any(row[:2] == ["architecture", "fcn8s (slim)"] for table in page.tables for row in table)
    record = json.loads((demo / "deploy" / "deploy.json").read_text())
    shown = [e for e in record["candidates"] if e["status"] != "not asked"]
    assert len(tables["candidate"]) == 1 + len(shown)
    assert [row[0] for row in tables["candidate"][1:] if row[0].startswith("★")] == [
        "★ " + record["winner"]["candidate"]]  # fmt: skip


def test_fcnx_report_without_anything_to_show_is_one_line(tmp_path: Path, capsys: Any) -> None:
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 1
    assert "none of the files fcnx writes is in there" in capsys.readouterr().err


def test_a_tensorflow_command_prints_no_start_up_noise(tiny_run: Path, synthetic_data: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "fcnx.runtime.cli", "evaluate", str(tiny_run), str(synthetic_data)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if TF_NOISE.search(line)]
    assert noise == [] and "mIoU" in done.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed here")
def test_the_report_renders_in_a_headless_browser(demo: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,2400", (demo / "report.html").as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file() and Image.open(shot).size == (1200, 2400)
