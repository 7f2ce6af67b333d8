"""Inputs that are not regular files never hang a run, SIGTERM ends a run promptly, and
flags whose cost is known up front are refused up front: a real FIFO, a real socket
file, real ``fcnx predict`` processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .runs import make_images, predict_command, run, start


def _special_files(folder: Path) -> None:
    os.mkfifo(folder / "b.png")  # opening it for reading blocks until a writer comes: none will
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(folder / "c.png"))  # the socket file stays after the socket closes


def test_a_fifo_and_a_socket_in_an_input_folder_are_skipped_with_the_reason(tmp_path: Path) -> None:
    inputs = make_images(tmp_path / "in", 3)
    _special_files(inputs)
    out = tmp_path / "out"
    result = run(predict_command(inputs, out), timeout=60)  # a hang fails here, by the timeout
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"total": 3, "written": 3, "skipped": 0, "failed": 0}
    skipped = " ".join(summary["skipped_inputs"])
    assert "b.png: not a regular file (a named pipe)" in skipped
    assert "c.png: not a regular file (a socket)" in skipped
    assert "not taken as inputs: 2" in result.stdout


def test_special_files_named_directly_or_in_a_list_never_block(tmp_path: Path) -> None:
    inputs = make_images(tmp_path / "in", 2)
    special = tmp_path / "special"
    special.mkdir()
    _special_files(special)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{inputs / '000.png'}\n{special / 'b.png'}\n{special / 'c.png'}\n")
    out = tmp_path / "out"
    command = predict_command(listing, out)
    command.insert(command.index(str(listing)) + 1, str(special / "b.png"))  # named on the command line
    result = run(command, timeout=60)
    assert result.returncode == 3, result.stderr  # the listed ones fail alone when read
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["reason"] for f in failures) == [
        "not a regular file (a named pipe)",
        "not a regular file (a socket)",
    ]
    assert (out / "in" / "000.png").is_file()  # list entries are named relative to their common folder
    summary = json.loads((out / "summary.json").read_text())
    assert any("a named pipe" in s for s in summary["skipped_inputs"])  # the one named directly


def test_only_special_files_is_one_error_line(tmp_path: Path) -> None:
    special = tmp_path / "special"
    special.mkdir()
    _special_files(special)
    result = run(predict_command(special / "b.png", tmp_path / "out"), timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no inputs to segment:") and "a named pipe" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_run_promptly_with_its_summary(sig: signal.Signals, tmp_path: Path) -> None:
    inputs = make_images(tmp_path / "in", 4000)  # seconds of work: still running when signalled
    out = tmp_path / "out"
    process = start(predict_command(inputs, out, "--batch", "1", "--workers", "1"))
    deadline = time.monotonic() + 60
    while not (out / ".fcnx-predict.outputs.jsonl").exists():  # planned: inside the run
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    time.sleep(0.3)
    process.send_signal(sig)
    signalled = time.monotonic()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running 15 s after {sig.name}")
    assert time.monotonic() - signalled < 15
    assert process.returncode == 128 + sig, process.stderr.read() if process.stderr else ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert not list(out.rglob(".*.tmp"))  # unwound like Ctrl-C: no temp left
    again = run(predict_command(inputs, out), timeout=300)  # and a rerun finishes it
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] >= 1


def test_a_batch_that_cannot_fit_is_refused_up_front(tmp_path: Path) -> None:
    inputs = make_images(tmp_path / "in", 3)
    out = tmp_path / "out"
    result = run([*predict_command(inputs, out, "--tile", "512x512"), "--batch", "100000"])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--batch 100000" in errors[0] and "or less" in errors[0]
    assert not out.exists()  # refused before anything was written


STUCK_READER = """
import sys, threading, time
import fcnx.runtime.images as images
real = images.read_file
def read_file(path):
    if str(path).endswith("stuck.png"):  # a read that never returns (a hung network mount)
        threading.Event().wait()
    return real(path)
images.read_file = read_file
from fcnx.runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_ends_a_run_whose_reader_is_stuck(tmp_path: Path) -> None:
    """A reader thread inside a read that never returns (what the FIFO was, what a hung
    network mount is) does not keep the process alive after SIGTERM."""
    inputs = make_images(tmp_path / "in", 2)
    (inputs / "stuck.png").write_bytes((inputs / "000.png").read_bytes())
    out = tmp_path / "out"
    command = predict_command(inputs, out, "--batch", "1")
    process = start([command[0], "-c", STUCK_READER, *command[3:]])
    deadline = time.monotonic() + 60
    while not (out / "000.png").exists():  # the run is working; the stuck read holds it from its end
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("still running 15 s after SIGTERM")
    assert process.returncode == 128 + signal.SIGTERM
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
