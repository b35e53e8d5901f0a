"""docs/api.md is what scripts/apiref writes from the code now: the reference cannot drift."""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def _apiref() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("apiref", str(REPO / "scripts" / "apiref"))
    spec = importlib.util.spec_from_loader("apiref", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_docs_api_md_is_what_scripts_apiref_writes() -> None:
    current = (REPO / "docs" / "api.md").read_text()
    fresh = _apiref().render()
    diff = "".join(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), "docs/api.md", "scripts/apiref"))
    assert diff == "", f"docs/api.md is stale: run .venv/bin/python scripts/apiref\n{diff}"


def test_every_public_name_is_in_the_reference() -> None:
    apiref = _apiref()
    text = (REPO / "docs" / "api.md").read_text()
    for module_name, _ in apiref.MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            assert f"`{module_name}.{name}" in text, f"{module_name}.{name}"
