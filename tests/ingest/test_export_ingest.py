"""From simulated GDELT 2.0 files to the event store, as `make run` does it."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml

from services.ingest.cli import main as ingest_main
from services.ingest.export_ingest import ingest_paths
from services.ingest.gdelt_schema import V2_COLUMNS
from services.ingest.mapping import MappingConfig
from services.ingest.simulator import WorldParams, simulate
from shared.event_store import QUAD_SCHEMA, EventStore
from shared.manifest import file_sha256

SIM_SETTINGS = {"relation_level": "root", "time_field": "dateadded", "step_minutes": 15}
SIM_MAPPING = MappingConfig(**SIM_SETTINGS)
START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(out, WorldParams(seed=3, events_per_step=40), steps=6, start=START)
    return out


def test_simulated_day_lands_one_step_per_file_and_reingest_adds_nothing(sim_dir, tmp_path):
    store = EventStore(tmp_path / "store", step_minutes=15, min_free_bytes=0)
    stats = ingest_paths([sim_dir], store, SIM_MAPPING, tmp_path / "q", progress=False)
    assert len(stats) == 6
    first_step = int(START.timestamp()) // (15 * 60)
    assert store.steps() == list(range(first_step, first_step + 6))
    rows = store.scan()
    assert rows.height == sum(s.kept for s in stats) > 6 * 20
    truth = pl.read_parquet(sorted((sim_dir / "truth").glob("*.parquet"))[0])
    facts = rows.filter(pl.col("t") == first_step)
    keys = {
        (store.entities.key(s), store.relations.key(r), store.entities.key(o))
        for s, r, o in facts.select("subject", "relation", "object").iter_rows()
    }
    truth_keys = set(
        truth.filter(pl.col("prob") > 0).select("subject", "relation", "object").iter_rows()
    )
    assert keys <= truth_keys  # every realised fact was possible under the world's truth
    assert store.relations.label("04") == "CONSULT"
    assert ingest_paths([sim_dir], store, SIM_MAPPING, tmp_path / "q", progress=False) == []
    assert store.scan().height == rows.height


def test_bad_rows_are_quarantined_with_reason_and_the_rest_kept(sim_dir, tmp_path):
    export = sorted(sim_dir.glob("*.export.CSV"))[0]
    lines = export.read_text().splitlines()
    broken = lines[:5] + ["only\ttwo"] + lines[5:]
    bad_file = tmp_path / "src" / export.name
    bad_file.parent.mkdir()
    bad_file.write_text("\n".join(broken) + "\n")
    store = EventStore(tmp_path / "store", step_minutes=15, min_free_bytes=0)
    (stats,) = ingest_paths([bad_file], store, SIM_MAPPING, tmp_path / "q", progress=False)
    (record,) = [json.loads(x) for x in (tmp_path / "q" / f"{export.name}.jsonl").open()]
    assert record["line"] == 6 and record["raw"] == "only\ttwo" and record["reason"]
    assert stats.read_stats["rows_read"] == len(broken)
    assert stats.rows_in + sum(
        v for k, v in stats.read_stats.items() if k.startswith("filtered_")
    ) == len(lines)


def test_bad_number_in_a_column_the_mapping_skips_is_still_quarantined(sim_dir, tmp_path):
    export = sorted(sim_dir.glob("*.export.CSV"))[0]
    lines = export.read_text().splitlines()
    fields = lines[2].split("\t")
    fields[V2_COLUMNS.index("ActionGeo_Lat")] = "north"
    lines[2] = "\t".join(fields)
    bad_file = tmp_path / "src" / export.name
    bad_file.parent.mkdir()
    bad_file.write_text("\n".join(lines) + "\n")
    store = EventStore(tmp_path / "store", step_minutes=15, min_free_bytes=0)
    (stats,) = ingest_paths([bad_file], store, SIM_MAPPING, tmp_path / "q", progress=False)
    (record,) = [json.loads(x) for x in (tmp_path / "q" / f"{export.name}.jsonl").open()]
    assert (record["line"], record["reason"]) == (3, "bad_number")
    assert "ActionGeo_Lat" in record["detail"]
    assert stats.read_stats["quarantined_bad_number"] == 1
    assert stats.source_sha256 == file_sha256(bad_file)  # the hashed bytes are the parsed ones


def test_cli_ingests_the_configured_source(sim_dir, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    run_dir = tmp_path / "run"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "c",
                "paths": {"run_dir": str(run_dir)},
                "ingest": {
                    "dataset": "T",
                    "source": str(sim_dir),
                    "min_free_mb": 0,
                    "mapping": {"time_field": "dateadded", "step_minutes": 15},
                },
            }
        )
    )
    assert ingest_main(["--config", str(config), "--no-progress"]) == 0
    assert "ingested 6 new file(s)" in capsys.readouterr().out
    assert (tmp_path / "run" / "store" / "T" / "ingested.jsonl").exists()
    assert ingest_main(["--config", str(config), "--source", str(tmp_path / "absent")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_quarantines_an_unreadable_file_and_ingests_the_rest(sim_dir, tmp_path, capsys):
    source = tmp_path / "src"
    shutil.copytree(sim_dir, source)
    (source / "20240102000000.export.CSV.zip").write_bytes(b"PK\x03\x04 cut short")
    config = tmp_path / "c.yaml"
    settings = {"dataset": "T", "min_free_mb": 0, "mapping": SIM_SETTINGS}
    config.write_text(
        yaml.safe_dump(
            {"name": "c", "paths": {"run_dir": str(tmp_path / "run")}, "ingest": settings}
        )
    )
    assert ingest_main(["--config", str(config), "--source", str(source), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ingested 6 new file(s)" in out and "1 unreadable file(s) quarantined" in out
    record = tmp_path / "run" / "quarantine" / "T" / "files" / "20240102000000.export.CSV.zip.json"
    assert json.loads(record.read_text())["error"] == "BadZipFile"


def test_the_same_files_always_give_the_same_ids(sim_dir, tmp_path):
    vocabularies = []
    for name in ("a", "b"):
        store = EventStore(tmp_path / name, step_minutes=15, min_free_bytes=0)
        ingest_paths([sim_dir], store, SIM_MAPPING, tmp_path / "q", progress=False)
        vocabularies.append((store.entities.keys(), store.relations.keys()))
    assert vocabularies[0] == vocabularies[1]


def test_one_sided_events_get_the_no_actor_entity_when_allowed(tmp_path):
    export = tmp_path / "src" / "20240101000000.export.CSV"
    sim = tmp_path / "sim"
    simulate(sim, WorldParams(seed=4, events_per_step=20), steps=1, start=START)
    lines = next(sim.glob("*.export.CSV")).read_text().splitlines()
    fields = lines[0].split("\t")
    fields[15] = ""  # Actor2Code
    export.parent.mkdir()
    export.write_text("\n".join(["\t".join(fields), *lines[1:]]) + "\n")
    one_sided = MappingConfig(
        relation_level="root", time_field="dateadded", step_minutes=15, require_both_actors=False
    )
    store = EventStore(tmp_path / "store", step_minutes=15, min_free_bytes=0)
    (stats,) = ingest_paths([export], store, one_sided, tmp_path / "q", progress=False)
    assert stats.kept == len(lines)
    assert store.entities.label("-") == "no second actor"
    strict = EventStore(tmp_path / "strict", step_minutes=15, min_free_bytes=0)
    (stats,) = ingest_paths([export], strict, SIM_MAPPING, tmp_path / "q2", progress=False)
    assert stats.kept == len(lines) - 1 and stats.read_stats["filtered_missing_actor"] == 1


def test_store_exports_as_a_benchmark_with_its_own_ids(sim_dir, tmp_path):
    from services.ingest.store_export import export_store
    from shared.tkg_dataset import load_tkg

    store = EventStore(tmp_path / "store", step_minutes=15, min_free_bytes=0)
    ingest_paths([sim_dir], store, SIM_MAPPING, tmp_path / "q", progress=False)
    counts = export_store(store, tmp_path / "SIM", valid_frac=0.2, test_frac=0.2)
    data = load_tkg(tmp_path / "SIM")
    assert data.num_entities == store.num_entities and data.entity_names == store.entities.keys()
    assert {k: len(v) for k, v in data.splits.items()} == counts
    assert data.splits["train"][:, 3].max() < data.splits["valid"][:, 3].min()
    assert data.splits["valid"][:, 3].max() < data.splits["test"][:, 3].min()
    distinct = store.scan().select("subject", "relation", "object", "t").unique().height
    assert sum(counts.values()) == distinct


def test_store_export_writes_display_labels_and_the_store_calendar(sim_dir, tmp_path):
    from services.ingest.mapping import step_start
    from services.ingest.store_export import export_store
    from shared.calendar import calendar_of, step_date
    from shared.tkg_dataset import display_names, load_tkg

    store = EventStore(tmp_path / "store", step_minutes=15, min_free_bytes=0)
    ingest_paths([sim_dir], store, SIM_MAPPING, tmp_path / "q", progress=False)
    unlabelled = "XYZ"  # an entity without a label is shown as its key
    last = store.steps()[-1]
    row = {"event_id": None, "subject": unlabelled, "relation": "04", "object": "GBR", "t": last}
    row |= {"goldstein": None, "num_mentions": None, "quad_class": None}
    store.append(pl.DataFrame([row], schema=QUAD_SCHEMA), source="extra", source_sha256="0" * 64)
    export_store(store, tmp_path / "SIM", valid_frac=0.2, test_frac=0.2)
    data = load_tkg(tmp_path / "SIM")
    names = display_names(data)
    keys = store.entities.keys()
    assert names["entities"] == [store.entities.label(key) or key for key in keys]
    assert names["entities"][keys.index("GBR")] == "United Kingdom"
    assert names["entities"][keys.index(unlabelled)] == unlabelled
    assert names["relations"][store.relations.keys().index("04")] == "CONSULT"
    calendar = calendar_of(data.name, data.directory, data.time_unit)
    assert calendar == {"origin_utc": "1970-01-01T00:00:00+00:00", "step_seconds": 900}
    for t in store.steps():
        assert step_date(calendar, t) == step_start(t, store.step_minutes)
    assert step_date(calendar, store.steps()[0]) == START
