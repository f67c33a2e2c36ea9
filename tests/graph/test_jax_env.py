"""Invariant 3 for the graph stage: memory settings before jax, and never torch.

Each check runs in a fresh interpreter: this test process may already hold jax (other tests).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.graph import jax_env

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAPH_DIR = REPO_ROOT / "services" / "graph"
JAX_MODULES = ("snapshots", "model", "trainer")


def run_python(code: str) -> dict:
    """Run ``code`` in a new interpreter at the repo root; it prints one JSON object."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_configure_sets_the_variables_before_jax_is_imported() -> None:
    out = run_python(
        "import json, os, sys\n"
        "from services.graph import jax_env\n"
        "before = 'jax' in sys.modules\n"
        "jax_env.configure(0.3)\n"
        "seen = {k: os.environ.get(k) for k in ('XLA_PYTHON_CLIENT_PREALLOCATE',\n"
        "        'XLA_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_MEM_FRACTION')}\n"
        "import jax\n"
        "print(json.dumps({'jax_before': before, 'env': seen, 'jax_after': 'jax' in sys.modules}))"
    )
    assert out["jax_before"] is False and out["jax_after"] is True
    assert out["env"] == {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "XLA_CLIENT_MEM_FRACTION": "0.3",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3",
    }


def test_configure_after_jax_was_imported_raises() -> None:
    out = run_python(
        "import json\n"
        "import jax\n"
        "from services.graph import jax_env\n"
        "try:\n"
        "    jax_env.configure(0.3)\n"
        "    result = None\n"
        "except RuntimeError as exc:\n"
        "    result = str(exc)\n"
        "print(json.dumps({'error': result}))"
    )
    assert out["error"] is not None and "after jax was imported" in out["error"]


def test_the_package_and_its_cli_import_neither_jax_nor_torch() -> None:
    out = run_python(
        "import json, sys\n"
        "import services.graph, services.graph.train, services.graph.artifact\n"
        "import services.graph.config, services.graph.jax_env\n"
        "print(json.dumps({m: m in sys.modules for m in ('jax', 'jaxlib', 'torch')}))"
    )
    assert out == {"jax": False, "jaxlib": False, "torch": False}


def test_the_graph_modules_never_import_torch() -> None:
    imports = "\n".join(f"import services.graph.{name}" for name in JAX_MODULES)
    out = run_python(
        "import json, sys\n"
        "from services.graph import jax_env\n"
        "jax_env.configure(0.5)\n"
        f"{imports}\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'jax': 'jax' in sys.modules}))"
    )
    assert out == {"torch": False, "jax": True}
    pattern = re.compile(r"^\s*(import|from)\s+torch\b", re.MULTILINE)
    offenders = [p.name for p in GRAPH_DIR.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_must_be_a_share(fraction: float) -> None:
    with pytest.raises(ValueError, match="memory fraction must be in"):
        jax_env.configure(fraction)
