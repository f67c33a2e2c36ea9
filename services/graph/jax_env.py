"""Memory budget of the graph process, set before JAX exists (DESIGN.md, invariant 3).

XLA reads its allocator settings once, when the first backend starts, so they must be in the
environment before ``import jax``. Entry points call :func:`configure` first and import the JAX
modules of this package (``snapshots``, ``model``, ``trainer``) only afterwards; the package
``__init__`` and the CLI module ``train`` import no JAX, so importing them is always safe.

This module imports nothing but the standard library.
"""

from __future__ import annotations

import os
import sys

#: Frameworks whose presence means it is too late (jax) or the wrong process (torch).
_TOO_LATE = ("jax", "jaxlib")
_FOREIGN = ("torch",)


def configure(fraction: float) -> dict[str, str]:
    """Cap this process at ``fraction`` of accelerator memory, allocated on demand.

    Sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (no up-front grab of 75% of the device) and the
    memory fraction under both its current name (``XLA_CLIENT_MEM_FRACTION``) and the deprecated
    one (``XLA_PYTHON_CLIENT_MEM_FRACTION``) that older jaxlib releases read. Returns the values
    set. Raises ``RuntimeError`` when jax is already imported (the settings would be
    silently ignored) or torch is (no process imports both frameworks).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"memory fraction must be in (0, 1], got {fraction}")
    loaded = [name for name in _TOO_LATE if name in sys.modules]
    if loaded:
        raise RuntimeError(
            f"jax_env.configure({fraction}) called after {loaded[0]} was imported: XLA has "
            "already read its memory settings. Call it before importing any JAX module."
        )
    foreign = [name for name in _FOREIGN if name in sys.modules]
    if foreign:
        raise RuntimeError(
            f"{foreign[0]} is imported in this process; the graph stage runs JAX only "
            "(DESIGN.md invariant 3: no process imports both frameworks)"
        )
    values = {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "XLA_CLIENT_MEM_FRACTION": f"{fraction:g}",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{fraction:g}",
    }
    os.environ.update(values)
    return values
