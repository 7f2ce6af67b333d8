"""MkDocs hook: reference tables read from the code at build time, so they cannot drift.

- ``<!-- card-fields -->`` becomes a table of ``ModelCard``'s fields (name, type, default
  and the comment beside each in runtime/card.py);
- ``<!-- parity-budgets -->`` becomes the parity budgets, one row per precision, from
  ``fcnx.export.parity.BUDGETS`` (what ``fcnx parity``, every export and ``fcnx deploy`` judge by).
"""

from __future__ import annotations

import ast
import html
import io
import tokenize
from pathlib import Path
from typing import Any

CARD = Path(__file__).resolve().parents[2] / "runtime" / "card.py"
CARD_MARKER = "<!-- card-fields -->"
BUDGETS_MARKER = "<!-- parity-budgets -->"
PRECISION_NAMES = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16 (OpenVINO)", "int8": "INT8"}


def _comments(source: str) -> dict[int, str]:
    """Line number -> the comment at the end of that line."""
    return {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }


def _default(node: ast.expr | None) -> str:
    if node is None:
        return ""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "field":
        for keyword in node.keywords:
            if keyword.arg == "default_factory":
                return {"dict": "{}", "list": "[]", "tuple": "()"}.get(ast.unparse(keyword.value), "")
    return ast.unparse(node)


def card_fields() -> str:
    source = CARD.read_text(encoding="utf-8")
    comments = _comments(source)
    (card,) = (
        node for node in ast.parse(source).body if isinstance(node, ast.ClassDef) and node.name == "ModelCard"
    )
    rows = ["| field | type | default | what |", "|---|---|---|---|"]
    for node in card.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            what = html.escape(comments.get(node.lineno, ""), quote=False).replace("|", "&#124;")
            kind = html.escape(ast.unparse(node.annotation)).replace("|", "&#124;")
            default = _default(node.value)
            shown = f"`{default}`" if default else "required"
            rows.append(f"| `{node.target.id}` | <code>{kind}</code> | {shown} | {what} |")
    return "\n".join(rows)


def parity_budgets() -> str:
    from fcnx.export.parity import BUDGETS

    rows = [
        "| compare | max abs prob error | mask agreement | mIoU change vs ground truth |",
        "|---|---|---|---|",
    ]
    for precision, budget in BUDGETS.items():
        prob = f"≤ {budget.max_abs_prob:.0e}".replace("e-0", "e-") if budget.max_abs_prob is not None else "-"
        miou = f"≤ {budget.miou_change * 100:g} pt" if budget.miou_change is not None else "-"
        name = PRECISION_NAMES.get(precision, precision)
        rows.append(f"| {name} vs Keras | {prob} | ≥ {budget.mask_agreement * 100:g} % | {miou} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if CARD_MARKER in markdown:
        markdown = markdown.replace(CARD_MARKER, card_fields())
    if BUDGETS_MARKER in markdown:
        markdown = markdown.replace(BUDGETS_MARKER, parity_budgets())
    return markdown
