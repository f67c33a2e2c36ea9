"""``geopol simulate``: a seeded, offline GDELT 2.0 feed from a stochastic world, with exact truth.

``world`` holds the process (pure numpy), ``export_writer`` the GDELT rows and files, ``truth`` the
ground-truth files and ``cli`` the command and :func:`simulate`, the programmatic entry point.
"""

from services.ingest.simulator.cli import SimulationSummary, main, simulate
from services.ingest.simulator.world import WorldParams

__all__ = ["SimulationSummary", "WorldParams", "main", "simulate"]
