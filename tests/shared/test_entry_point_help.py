"""Entry points do what their help says: ``geopol bench all --help`` and ``geopol serve --help``
print help and run nothing; ``bench all`` hands every benchmark the options it can and refuses
the rest by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.bench import cli as bench_cli

CLI = "import sys; from shared.cli import main; sys.exit(main(sys.argv[1:]))"


def geopol(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_bench_all_help_prints_help_and_runs_nothing(tmp_path: Path) -> None:
    done = geopol("bench", "all", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "geopol bench all" in done.stdout and "--reports" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no reports/bench.json written


def test_bench_all_refuses_an_option_of_one_benchmark_by_name(tmp_path: Path) -> None:
    done = geopol("bench", "all", "--rows", "5", cwd=tmp_path)
    assert done.returncode == 2 and "unrecognized arguments: --rows 5" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_all_hands_every_benchmark_the_reports_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str]]] = []

    def fake_module(name: str) -> SimpleNamespace:
        return SimpleNamespace(main=lambda argv: calls.append((name, argv)) or 0)

    monkeypatch.setattr(bench_cli.importlib, "import_module", fake_module)
    assert bench_cli.main(["all", "--reports", str(tmp_path)]) == 0
    assert calls == [
        (module, ["--reports", str(tmp_path)]) for module in bench_cli.BENCHES.values()
    ]


def test_serve_help_exits_0_and_a_stage_s_help_is_the_stage_s(tmp_path: Path) -> None:
    done = geopol("serve", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "geopol serve" in done.stdout and "ingest" in done.stdout
    stage = geopol("serve", "ingest", "--help", cwd=tmp_path)
    assert stage.returncode == 0 and "--config" in stage.stdout
    wrong = geopol("serve", "nosuch", cwd=tmp_path)
    assert wrong.returncode == 2 and "invalid choice: 'nosuch'" in wrong.stderr


def test_bench_transport_writes_throughput_and_cpu_cost_per_message(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    done = geopol(
        "bench",
        "transport",
        "--megabytes",
        "8",
        "--rounds",
        "1",
        "--reports",
        str(reports),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "cpu ratio" in done.stdout and str(reports / "bench.json") in done.stdout
    transport = json.loads((reports / "bench.json").read_text())["transport"]
    assert set(transport) == {"45KB", "4MB"}
    for row in transport.values():
        assert row["ours_gbps"] > 0 and row["raw_gbps"] > 0
        assert row["ours_cpu_ms"] > 0 and row["raw_cpu_ms"] > 0
        assert row["cpu_ratio"] == pytest.approx(row["raw_cpu_ms"] / row["ours_cpu_ms"], abs=2e-3)
    assert "cpu ratio" in (reports / "bench.md").read_text()
    assert (reports / "transport.png").stat().st_size > 0
