"""The eval notebooks execute (on small settings) and fail loudly if a cell fails."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

DATA = ROOT.parent / "shared" / "data"


@pytest.mark.parametrize("name", ["retrieval_quality.ipynb", "intent_accuracy.ipynb"])
def test_notebook_runs(name: str, tmp_path: Path) -> None:
    if not DATA.exists():
        pytest.skip(f"reference data not found at {DATA}")
    nb = nbformat.read(ROOT / "evals" / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "notebooks are committed with outputs stripped"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "evals")}}).execute()
