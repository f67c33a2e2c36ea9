"""The ingest benchmark on small inputs: report layout and row counts (never timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.ingest import bench
from services.ingest import gdelt_schema as gs
from services.ingest.gdelt_reader import read_export
from services.ingest.mapping import to_quadruples

SECTION_KEYS = {
    "rows_per_s",
    "pandas_rows_per_s",
    "ratio",
    "rows",
    "quadruples",
    "file_mb",
    "input",
    "repeats",
    "seconds",
    "stages_s",
    "threads",
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> list[bytes]:
    """Template rows from the seeded simulator (the fallback when there is no team data)."""
    return bench.simulated_rows(tmp_path_factory.mktemp("sim"))


def test_input_repeats_template_rows_with_fresh_consecutive_ids(template, tmp_path) -> None:
    rows = 2 * len(template) + 7
    path = bench.write_input(template, rows, tmp_path / "a.CSV")
    lines = path.read_bytes().splitlines()
    assert len(lines) == rows
    assert all(line.count(b"\t") == gs.V2_FIELDS - 1 for line in lines)
    ids = [int(line.split(b"\t", 1)[0]) for line in lines]
    assert ids == list(range(bench.FIRST_EVENT_ID, bench.FIRST_EVENT_ID + rows))
    assert lines[len(template)].split(b"\t", 1)[1] == template[0]
    assert bench.write_input(template, rows, tmp_path / "b.CSV").read_bytes() == path.read_bytes()


def test_measure_reports_the_layout_and_exact_row_counts(template, tmp_path) -> None:
    data = bench.write_input(template, len(template), tmp_path / "data.export.CSV")
    bench_input = bench.build_input(tmp_path, 300, data)
    result = bench.measure(bench_input, repeats=2, work_dir=tmp_path)
    assert set(result) == SECTION_KEYS  # main adds "command"
    expected = to_quadruples(read_export(bench_input.path).rows, bench.BENCH_MAPPING).quads
    assert (result["rows"], result["quadruples"], result["repeats"]) == (300, expected.height, 2)
    assert result["rows_per_s"] > 0 and result["pandas_rows_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["rows_per_s"] / result["pandas_rows_per_s"], rel=1e-2
    )
    assert set(result["stages_s"]) == {"sha256", "read", "map", "store"}


def test_build_input_without_data_falls_back_to_the_simulator(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GEOPOL_DATA_DIR", str(tmp_path / "no-team-data"))
    bench_input = bench.build_input(tmp_path, 50, None)
    assert bench_input.rows == 50 and "simulated" in bench_input.origin
    assert len(bench_input.path.read_bytes().splitlines()) == 50


def test_template_from_team_v2_exports(shared_data: Path) -> None:
    rows = bench.template_rows(shared_data / bench.TEAM_TEMPLATE)
    assert len(rows) == 5_777  # the three files of gdelt/v2 (SOURCE.md: 5,777 rows)


def test_template_without_v2_rows_is_refused(tmp_path) -> None:
    (tmp_path / "v1.CSV").write_text("\t".join(["1"] * gs.V1_DAILY_FIELDS) + "\n")
    with pytest.raises(ValueError, match="no GDELT 2.0 export rows"):
        bench.template_rows(tmp_path)


def test_main_writes_section_markdown_and_figure(template, tmp_path, monkeypatch, capsys):
    host = {"cpu": "test cpu", "cores": 2, "gpu": None}
    monkeypatch.setattr(bench.machine, "describe", lambda: host)
    data = bench.write_input(template, len(template), tmp_path / "data.export.CSV")
    reports = tmp_path / "reports"
    argv = ["--rows", "120", "--repeats", "1", "--data", str(data), "--reports", str(reports)]
    assert bench.main(argv) == 0
    written = json.loads((reports / "bench.json").read_text())
    assert written["machine"] == host
    assert set(written["ingest"]) == SECTION_KEYS | {"command"}
    assert written["ingest"]["rows"] == 120
    command = f"geopol bench ingest --rows 120 --repeats 1 --data {data}"
    assert written["ingest"]["command"] == command
    markdown = (reports / "bench.md").read_text()
    assert f"`{command}`" in markdown
    assert "![ingest](ingest.png)" in markdown
    assert (reports / "ingest.png").read_bytes()[:4] == b"\x89PNG"
    assert "rows/s" in capsys.readouterr().out
    assert bench.main(["--data", str(tmp_path / "absent"), "--reports", str(reports)]) == 2
    assert "--data not found" in capsys.readouterr().err
