"""The example notebooks: committed executed, public API only, and they still run end to end.

They run on data that ships with HyperSpy (``hs.data``) or with the package
(``hyperspy_partialscan.specimens``), so a user who installed the package can run
them; ``DATA`` at the top points them at the user's own file instead.
"""

import ast
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
#: the modules of the package a notebook may import (its public API)
PUBLIC_MODULES = {"hyperspy_partialscan", "hyperspy_partialscan.metrics", "hyperspy_partialscan.specimens"}

nbformat = pytest.importorskip("nbformat")


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _python(source):
    """The cell's source without IPython magics (``%matplotlib inline``)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def private_uses(source):
    """Internal modules and ``_``-prefixed names used by a piece of code (empty when it uses only public API)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
            names = []
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
            names = [a.name for a in node.names]
            if node.module == "hyperspy_partialscan":  # its __all__, or a public module ("import metrics")
                modules += [f"hyperspy_partialscan.{n}" for n in names if n not in _package_all()]
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_") and not (node.attr.startswith("__") and node.attr.endswith("__")):
                found.append(node.attr)
            continue
        else:
            continue
        for m in modules:
            if m.split(".")[0] == "hyperspy_partialscan" and m not in PUBLIC_MODULES:
                found.append(m)
            if any(part.startswith("_") for part in m.split(".")):
                found.append(m)
        found += [n for n in names if n.startswith("_")]
    return found


def _package_all():
    import hyperspy_partialscan

    return set(hyperspy_partialscan.__all__)


def test_private_uses_detects_internals():
    assert private_uses("import hyperspy_partialscan as ps\nps.denoise(s)") == []
    assert private_uses("from hyperspy_partialscan.metrics import psnr") == []
    assert private_uses("from hyperspy_partialscan.training import blur_target") == ["hyperspy_partialscan.training"]
    assert private_uses("from hyperspy_partialscan.denoising import degrade") == ["hyperspy_partialscan.denoising"]
    assert private_uses("import hyperspy_partialscan.inpainting") == ["hyperspy_partialscan.inpainting"]
    assert private_uses("from hyperspy_partialscan import inpainting") == ["hyperspy_partialscan.inpainting"]
    assert private_uses("t = s._deepcopy_with_new_data(d)") == ["_deepcopy_with_new_data"]
    assert private_uses("from hyperspy_partialscan.metrics import _x") == ["_x"]
    assert private_uses("from hyperspy_partialscan.models import load_model") == ["hyperspy_partialscan.models"]
    assert private_uses("from hyperspy_partialscan import denoise, metrics") == []
    assert private_uses("x = s.__class__") == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_committed_executed_with_public_api(notebook):
    nb = nbformat.read(notebook, as_version=4)
    cells = _code_cells(nb)
    assert cells[0].source.startswith("DATA = None"), "the first code cell sets DATA (None: built-in data)"
    not_run = [i for i, c in enumerate(cells) if not c.get("execution_count")]
    assert not not_run, f"code cells {not_run} are committed without being executed"
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "commit the notebook executed top to bottom in one run"
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert [o for o in outputs if "image/png" in o.get("data", {})], "no figure committed"
    for i, c in enumerate(cells):
        bad = private_uses(_python(c.source))
        assert not bad, f"code cell {i} uses internal names: {', '.join(bad)}"
        assert "shared/data" not in c.source and "HYPERSPY_PARTIALSCAN_DATA" not in c.source


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    # the inline backend, as in Jupyter: figures become image/png outputs (headless)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the kernel imports this checkout's package, whatever is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(notebook, as_version=4)  # a copy in memory: the committed file is not touched
    for c in _code_cells(nb):
        c.outputs, c.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    cells = _code_cells(nb)
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # every code cell ran and the figures were drawn
    assert all(c.get("execution_count") for c in cells)
    images = [o for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook produced no figure"
