"""The extras in pyproject.toml: every ``fcnx[...]`` inside one names an extra that exists, and
``demo`` installs the whole product, OpenVINO and NNCF included (the demo shows the machine's
best CPU engine), through the existing extras rather than pins of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]
SELF = re.compile(r"^fcnx\[([^\]]+)\]$")


def _packages(extra: str) -> set[str]:
    """The distributions an extra installs, through the extras it names."""
    names: set[str] = set()
    for requirement in EXTRAS[extra]:
        inner = SELF.match(requirement)
        if inner:
            for name in inner.group(1).split(","):
                names |= _packages(name.strip())
        else:
            names.add(re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower())
    return names


def test_every_extra_an_extra_names_exists() -> None:
    named = {
        n.strip()
        for reqs in EXTRAS.values()
        for r in reqs
        if (m := SELF.match(r))
        for n in m.group(1).split(",")
    }
    assert named - set(EXTRAS) == set()


def test_the_demo_extra_installs_openvino_and_nncf_through_the_existing_extras() -> None:
    assert {"tensorflow", "tf2onnx", "onnxruntime", "jinja2", "openvino", "nncf"} <= _packages("demo")
    assert all(SELF.match(requirement) for requirement in EXTRAS["demo"])  # no pins of its own
