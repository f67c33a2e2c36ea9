"""Write measurements into ``reports/bench.json`` (machine-readable) and ``reports/bench.md``.

Each benchmark owns one top-level section; writing a section keeps the others, so benchmarks
can run separately and the report still holds the latest figure of each. Writes are atomic so an
interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.atomic import atomic_write_text

REPORTS_DIR = Path("reports")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_section(
    section: str,
    values: dict[str, Any],
    markdown: str,
    reports_dir: Path = REPORTS_DIR,
) -> Path:
    """Store one section in bench.json and its markdown block in bench.md; returns the json path.

    ``markdown`` must name the command that reproduces the figures (REPORTS.md asks for it).
    """
    reports_dir.mkdir(parents=True, exist_ok=True)
    json_path = reports_dir / "bench.json"
    report = load(json_path)
    report[section] = values
    atomic_write_text(json_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    blocks_path = reports_dir / ".bench-md.json"
    blocks = load(blocks_path)
    blocks[section] = markdown
    atomic_write_text(blocks_path, json.dumps(blocks, indent=2) + "\n")
    body = "\n\n".join(blocks[k] for k in sorted(blocks))
    atomic_write_text(reports_dir / "bench.md", f"# Geopol benchmarks\n\n{body}\n")
    return json_path
