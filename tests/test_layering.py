"""Only perplex/ui may import Streamlit: the analysis core stays usable without a UI."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "perplex"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_streamlit_outside_perplex_ui():
    offenders = [str(p.relative_to(CORE)) for p in CORE.rglob("*.py")
                 if "ui" not in p.relative_to(CORE).parts
                 and any(m.split(".")[0] == "streamlit" for m in imported_modules(p))]
    assert offenders == []
    assert any("streamlit" in imported_modules(p) for p in (CORE / "ui").rglob("*.py"))
