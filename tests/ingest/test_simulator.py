"""Tests for ``geopol simulate``: GDELT-exact rows, deterministic bytes, exact truth, learnable world."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from services.ingest.gdelt_reader import source_files
from services.ingest.simulator import WorldParams, simulate
from services.ingest.simulator.cli import main, parse_start
from services.ingest.simulator.export_writer import COLUMNS, COUNTRIES
from services.ingest.simulator.truth import read_truth
from services.ingest.simulator.world import ROLE_WEIGHTS
from shared import atomic

SEED = 7
DAY = 96


@dataclass(frozen=True)
class Run:
    """A generated run and its export rows, parsed once per module."""

    out: Path
    seconds: float
    rows: list[tuple[int, str, list[str]]]  # (slot index, file stem, 61 fields)
    manifest: dict

    def events(self) -> list[tuple[int, str, str, str]]:
        """(t, subject, object, root) per event."""
        return [(t, f[5], f[15], f[28]) for t, _, f in self.rows]


def _read_rows(out: Path) -> list[tuple[int, str, list[str]]]:
    """Every export row with its slot index and file stem, in file order."""
    rows = []
    for t, path in enumerate(sorted(out.glob("*.export.CSV"))):
        text = path.read_bytes().decode("utf-8")
        assert "\r" not in text and (not text or text.endswith("\n"))
        stem = path.name.split(".")[0]
        rows += [(t, stem, line.split("\t")) for line in text.splitlines()]
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One default-size day (96 slots, 60 actors) generated once for the module."""
    out = tmp_path_factory.mktemp("sim")
    summary = simulate(out, WorldParams(seed=SEED), DAY)
    manifest = json.loads((out / "world.json").read_text(encoding="utf-8"))
    return Run(out=out, seconds=summary.seconds, rows=_read_rows(out), manifest=manifest)


@pytest.fixture(scope="module")
def cameo_codes() -> dict[str, float]:
    """The packaged CAMEO event table: code -> Goldstein value."""
    table = resources.files("services.ingest").joinpath("cameo", "event_codes.tsv")
    with table.open(encoding="utf-8") as handle:
        return {r["code"]: float(r["goldstein"]) for r in csv.DictReader(handle, delimiter="\t")}


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` keyed by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- determinism and files ----------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        simulate(tmp_path / name, WorldParams(seed=seed), 12, zipped=True)
    first, second, other = (_digests(tmp_path / n) for n in "abc")
    assert len(first) == 12 * 2 + 1  # exports, truth files, world.json
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[k] != other[k] for k in first if k.endswith(".zip"))


def test_zip_holds_exactly_the_plain_csv(tmp_path: Path) -> None:
    simulate(tmp_path / "plain", WorldParams(seed=1), 3)
    simulate(tmp_path / "zip", WorldParams(seed=1), 3, zipped=True)
    for plain in sorted((tmp_path / "plain").glob("*.export.CSV")):
        with zipfile.ZipFile(tmp_path / "zip" / f"{plain.name}.zip") as archive:
            assert archive.namelist() == [plain.name]
            assert archive.read(plain.name) == plain.read_bytes()


def test_files_are_consecutive_15_minute_slots_from_start(tmp_path: Path) -> None:
    start = datetime.fromisoformat("2023-06-30T23:30:00+00:00")
    simulate(tmp_path, WorldParams(seed=2), 4, start=start)
    names = sorted(p.name for p in tmp_path.glob("*.export.CSV"))
    assert names == [
        f"{s}.export.CSV"
        for s in ("20230630233000", "20230630234500", "20230701000000", "20230701001500")
    ]
    assert sorted(p.name for p in (tmp_path / "truth").iterdir()) == [
        n.replace(".export.CSV", ".parquet") for n in names
    ]


def test_every_file_appears_whole_by_a_rename_in_its_own_folder(
    tmp_path: Path, monkeypatch
) -> None:
    """Issue 9, item 3: ingest watches this folder, so no file may be visible half-written."""
    renames: list[tuple[Path, Path, int, bool]] = []
    real_replace = atomic.os.replace

    def spying_replace(src: str, dst: Path) -> None:
        temp = Path(src)
        listed = temp in source_files(temp.parent)  # would ingest pick the temp file up?
        renames.append((temp, Path(dst), temp.stat().st_size, listed))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spying_replace)
    simulate(tmp_path, WorldParams(seed=2), 2, zipped=True)
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert {dst for _, dst, _, _ in renames} == written  # exports, truth files and world.json
    for temp, dst, size, listed in renames:
        assert temp.parent == dst.parent and dst.stat().st_size == size and not listed


# -- GDELT row format ---------------------------------------------------------------------------


def test_every_row_has_61_fields_and_dateadded_is_its_slot(run: Run) -> None:
    assert len(run.rows) > DAY * 30
    for _, stem, fields in run.rows:
        assert len(fields) == 61
        assert fields[COLUMNS.index("DATEADDED")] == stem


def test_dates_follow_gdelt_conventions(run: Run) -> None:
    lags = Counter()
    for _, stem, f in run.rows:
        slot_day = datetime.strptime(stem[:8], "%Y%m%d")
        day = datetime.strptime(f[1], "%Y%m%d")
        lags[(slot_day - day).days] += 1
        assert f[2] == f[1][:6] and f[3] == f[1][:4]
        assert f[4] == f"{day.year + ((day.month - 1) * 30 + day.day) / 365:.4f}"
    assert set(lags) <= {0, 1, 2}
    assert lags[0] > 0.8 * sum(lags.values()) and lags[1] > 0  # mostly the slot's day


def test_event_codes_are_real_cameo_with_consistent_quadclass_and_goldstein(
    run: Run, cameo_codes: dict[str, float]
) -> None:
    quad = {r: 1 if r <= 5 else 2 if r <= 8 else 3 if r <= 14 else 4 for r in range(1, 21)}
    roots = set()
    for _, _, f in run.rows:
        code, base, root = f[26], f[27], f[28]
        assert code in cameo_codes and len(code) in (3, 4)
        assert base == code[:3] and base in cameo_codes
        assert root == code[:2] and root in cameo_codes
        assert f[29] == str(quad[int(root)])
        assert float(f[30]) == cameo_codes[code]
        roots.add(root)
    assert len(roots) >= 15  # cooperation through conflict is all represented


def test_global_event_ids_unique_and_strictly_increasing(run: Run) -> None:
    ids = [int(f[0]) for _, _, f in run.rows]
    assert all(b > a for a, b in pairwise(ids))


def test_actor_and_geo_fields_are_consistent(run: Run) -> None:
    for _, _, f in run.rows:
        for code, name, country, role, geo in ((5, 6, 7, 12, 35), (15, 16, 17, 22, 43)):
            assert f[code] == f[country] + f[role]
            assert f[name] == COUNTRIES[f[country]].actor_name
            assert f[geo] in ("0", "1")
            if f[geo] == "1":
                assert f[geo + 2] == COUNTRIES[f[country]].fips
        assert f[51] == "1" and f[53] in {COUNTRIES[f[7]].fips, COUNTRIES[f[17]].fips}
        assert f[5] != f[15]
        assert int(f[31]) >= int(f[33]) >= int(f[32]) >= 1  # mentions >= articles >= sources


def test_columns_match_gdelt_codebook(shared_data: Path) -> None:
    lookup = shared_data / "gdelt/lookups/GDELT_2.0_Events_Column_Labels_Header_Row_Sep2016.csv"
    with lookup.open(encoding="utf-8") as handle:
        names = [row["tableId"] for row in csv.DictReader(handle)]
    assert list(COLUMNS) == names


def test_field_types_match_gdelt_codebook(shared_data: Path, run: Run) -> None:
    lookup = shared_data / "gdelt/lookups/GDELT_2.0_Events_Column_Labels_Header_Row_Sep2016.csv"
    with lookup.open(encoding="utf-8") as handle:
        types = [row["dataType"] for row in csv.DictReader(handle)]
    pattern = {
        "INTEGER": re.compile(r"-?\d*"),
        "FLOAT": re.compile(r"(-?\d+(\.\d+)?)?"),
        "STRING": re.compile(r"[^\t\n\r]*"),
    }
    for _, _, fields in run.rows[:2000]:
        for value, kind in zip(fields, types, strict=True):
            assert pattern[kind].fullmatch(value), (kind, value)


def test_country_and_role_facts_are_real(shared_data: Path) -> None:
    fips_of_iso3 = {}
    for line in (shared_data / "gdelt/lookups/countryInfo.txt").read_text("utf-8").splitlines():
        if not line.startswith(("#", "ISO\t")):
            cells = line.split("\t")
            fips_of_iso3[cells[1]] = cells[3]
    package = resources.files("services.ingest").joinpath("cameo")
    countries = {
        r["code"]
        for r in csv.DictReader(
            package.joinpath("countries.tsv").open(encoding="utf-8"), delimiter="\t"
        )
    }
    roles = {
        r["code"]
        for r in csv.DictReader(
            package.joinpath("actor_types.tsv").open(encoding="utf-8"), delimiter="\t"
        )
    }
    for code, geo in COUNTRIES.items():
        assert code in countries
        assert fips_of_iso3[code] == geo.fips
    assert set(ROLE_WEIGHTS) - {""} <= roles


# -- ground truth -------------------------------------------------------------------------------


def _truth_with_events(run: Run) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(truth, events joined with the truth probability of their realised object)."""
    truth = read_truth(run.out)
    t, s, o, r = zip(*run.events(), strict=True)
    events = pl.DataFrame(
        {"t": t, "subject": s, "relation": r, "object": o}, schema_overrides={"t": pl.Int64}
    )
    return truth, events.join(truth, on=["t", "subject", "relation", "object"], how="left")


def test_truth_is_a_distribution_for_every_observed_query(run: Run) -> None:
    truth, joined = _truth_with_events(run)
    assert truth.schema == {
        "t": pl.Int64,
        "subject": pl.String,
        "relation": pl.String,
        "object": pl.String,
        "prob": pl.Float64,
    }
    assert truth["prob"].min() > 0.0
    sums = truth.group_by(["t", "subject", "relation"]).agg(pl.col("prob").sum())["prob"]
    assert np.allclose(sums.to_numpy(), 1.0, atol=1e-9)
    assert truth.filter(pl.col("subject") == pl.col("object")).height == 0
    assert joined["prob"].null_count() == 0  # every realised event is covered with p > 0
    queries = truth.select("t", "subject", "relation").unique().height
    assert queries == joined.select("t", "subject", "relation").unique().height


def test_truth_beats_uniform_and_is_calibrated(run: Run) -> None:
    truth, joined = _truth_with_events(run)
    stats = truth.group_by(["t", "subject", "relation"]).agg(
        pl.len().alias("n"), (pl.col("prob") ** 2).sum().alias("p2")
    )
    joined = joined.join(stats, on=["t", "subject", "relation"])
    truth_ll = np.log(joined["prob"].to_numpy()).mean()
    uniform_ll = -np.log(joined["n"].to_numpy()).mean()
    assert truth_ll > uniform_ll + 1.0
    # If objects really are drawn from the truth, E[p(realised)] = E[sum_o p(o)^2].
    realised = joined["prob"].to_numpy()
    gap = realised.mean() - joined["p2"].to_numpy().mean()
    assert abs(gap) < 5 * realised.std() / np.sqrt(realised.size)


def test_truth_of_the_events_own_relation_explains_it_better(run: Run) -> None:
    """The relation matters: conflict events go to tense partners, cooperation to friends."""
    truth, joined = _truth_with_events(run)
    conflict = pl.col("relation").cast(pl.Int64) >= 9
    other = truth.select(
        "t",
        "subject",
        "object",
        pl.col("prob").alias("other_prob"),
        conflict.alias("other_conflict"),
    )
    pairs = (
        joined.with_columns(conflict.alias("conflict"))
        .join(other, on=["t", "subject", "object"])
        .filter(pl.col("conflict") != pl.col("other_conflict"))
    )
    assert pairs.height > 100
    log_ratio = np.log(pairs["prob"].to_numpy() / pairs["other_prob"].to_numpy())
    assert log_ratio.mean() > 1.0


# -- learnable structure ------------------------------------------------------------------------


def _slots_by_dyad(events: list[tuple[int, str, str, str]]) -> dict[tuple[str, str], set[int]]:
    """Slots in which each ordered dyad had at least one event."""
    slots: dict[tuple[str, str], set[int]] = defaultdict(set)
    for t, s, o, _ in events:
        slots[(s, o)].add(t)
    return slots


def _window_hit(slots: set[int], t: int, k: int) -> bool:
    """Whether any slot in ``slots`` lies in ``(t, t + k]``."""
    return any(t < u <= t + k for u in slots)


def test_reciprocity_raises_reverse_events(run: Run) -> None:
    events = run.events()
    slots = _slots_by_dyad(events)
    k, horizon = 2, DAY - 2
    after, base = [], []
    for t, s, o, _ in events:
        reverse = slots.get((o, s), set())
        if len(reverse) <= 8 and t < horizon:  # rare dyads: reciprocity dominates their rate
            after.append(_window_hit(reverse, t, k))
            base.append(np.mean([_window_hit(reverse, w, k) for w in range(horizon)]))
    assert len(after) > 200
    assert np.mean(after) > 2 * np.mean(base)


def test_dyads_recur_far_more_than_independent_sampling(run: Run) -> None:
    events = run.events()
    distinct = len({(s, o) for _, s, o, _ in events})
    objects = np.random.default_rng(0).permutation([o for _, _, o, _ in events])
    shuffled = len({(s, o) for (_, s, _, _), o in zip(events, objects, strict=True)})
    assert distinct < 0.5 * shuffled


def test_recent_dyads_are_excited(run: Run) -> None:
    events = run.events()
    slots = _slots_by_dyad(events)
    k, horizon = 2, DAY - 2
    after, base = [], []
    for t, s, o, _ in events:
        own = slots[(s, o)]
        if len(own) <= 8 and t < horizon:
            after.append(_window_hit(own - {t}, t, k))
            base.append(np.mean([_window_hit(own, w, k) for w in range(horizon)]))
    assert np.mean(after) > 2 * np.mean(base)


def test_tension_makes_conflict_persist_on_a_dyad(run: Run) -> None:
    last: dict[frozenset[str], tuple[int, bool]] = {}
    pairs = []
    for t, s, o, root in run.events():
        key, conflict = frozenset((s, o)), int(root) >= 9
        if key in last and last[key][0] < t:
            pairs.append((last[key][1], conflict))
        last[key] = (t, conflict)
    follows = np.array(pairs)
    after_conflict = follows[follows[:, 0], 1].mean()
    after_cooperation = follows[~follows[:, 0], 1].mean()
    assert after_conflict > 0.5
    assert after_cooperation < 0.2


def test_activity_is_heavy_tailed(run: Run) -> None:
    counts = np.sort(np.array(list(Counter(s for _, s, _, _ in run.events()).values())))[::-1]
    top_tenth = counts[: max(1, counts.size // 10)].sum()
    assert top_tenth > 0.25 * counts.sum()  # about 0.15 if activity were uniform


def test_new_actors_are_born_and_appear_only_after_birth(run: Run) -> None:
    born = {a["code"]: a["birth_step"] for a in run.manifest["actors"]}
    assert sum(1 for step in born.values() if step == 0) == WorldParams().n_actors
    newcomers = {code: step for code, step in born.items() if step > 0}
    assert len(newcomers) >= 3
    seen = set()
    for t, s, o, _ in run.events():
        for code in (s, o):
            assert born[code] <= t
            if code in newcomers:
                seen.add(code)
    assert seen


def test_events_per_slot_match_the_demo_size(run: Run) -> None:
    per_slot = np.bincount([t for t, _, _ in run.rows], minlength=DAY)
    assert 50 < per_slot.mean() < 110 and per_slot.min() >= 15


def test_a_default_day_generates_in_seconds(run: Run) -> None:
    assert run.seconds < 20.0


def test_manifest_records_seed_params_and_layout(run: Run) -> None:
    m = run.manifest
    assert m["seed"] == SEED and m["params"]["seed"] == SEED and m["steps"] == DAY
    assert m["params"]["events_per_step"] == WorldParams().events_per_step
    assert m["start"] == "2024-01-01T00:00:00Z" and m["truth"]["relation_level"] == "EventRootCode"
    codes = {a["code"] for a in m["actors"]}
    assert all(f[5] in codes and f[15] in codes for _, _, f in run.rows)


# -- parameters and CLI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"self_excitation": 0.2, "reciprocity": 0.2},
        {"n_actors": 1},
        {"decay": 1.0},
        {"affinity_share": 1.0},
        {"events_per_step": 0.0},
        {"partners_per_actor": 0},
    ],
)
def test_params_reject_ill_defined_worlds(bad: dict) -> None:
    with pytest.raises(ValueError):
        WorldParams(**bad)


def test_parse_start_accepts_slots_and_rejects_off_slot_times() -> None:
    assert parse_start("20240101001500") == parse_start("2024-01-01T00:15:00Z")
    assert parse_start("2024-01-01T01:15:00+01:00").hour == 0
    with pytest.raises(Exception, match="15-minute"):
        parse_start("2024-01-01T00:07:00")


def test_cli_writes_a_run_and_refuses_to_mix_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--out",
        str(tmp_path),
        "--steps",
        "3",
        "--actors",
        "12",
        "--events-per-step",
        "20",
        "--seed",
        "5",
        "--start",
        "2024-02-29T23:45:00Z",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert (tmp_path / "20240301000000.export.CSV").is_file()
    assert (tmp_path / "world.json").is_file()
    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    before = _digests(tmp_path)
    assert main([*argv, "--overwrite"]) == 0
    assert _digests(tmp_path) == before


def test_cli_help_documents_outputs_and_rejects_bad_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    assert shown.value.code == 0
    text = capsys.readouterr().out
    assert "geopol simulate" in text and "truth/" in text and "--zip" in text
    for bad in (
        ["--start", "2024-01-01T00:10:00"],
        ["--steps", "0"],
        ["--actors", "1"],
        ["--actors", "100000"],
        ["--birth-rate", "-1"],
    ):
        with pytest.raises(SystemExit) as refused:
            main(bad)
        assert refused.value.code == 2


def test_slot_arithmetic_crosses_days_and_years(tmp_path: Path) -> None:
    start = datetime.fromisoformat("2024-12-31T23:45:00+00:00")
    simulate(tmp_path, WorldParams(seed=9, n_actors=10, events_per_step=10.0), 2, start=start)
    rows = _read_rows(tmp_path)
    assert {stem for _, stem, _ in rows} <= {"20241231234500", "20250101000000"}
    assert all(
        (datetime.strptime(stem, "%Y%m%d%H%M%S") - timedelta(days=2)).strftime("%Y%m%d") <= f[1]
        for _, stem, f in rows
    )
