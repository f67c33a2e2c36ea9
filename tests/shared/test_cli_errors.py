"""Issue 11, item 7: a ``geopol`` command given bad input prints one line, ``geopol CMD:
<file/key/value>: <reason>``, and exits non-zero; Ctrl-C is one line and exit 130; ``--debug`` or
``GEOPOL_DEBUG=1`` shows the traceback. Each case is one the issue found printing a traceback,
run as a process as a person would run it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from shared.cli import run
from shared.config import DEFAULT_CONFIG, ENV_OVERRIDES
from shared.event_store import EventStore
from shared.sim_truth import TRUTH_DIR

REPO = Path(__file__).resolve().parents[2]
GEOPOL = [sys.executable, "-m", "shared.cli"]
MAKE_LINE = re.compile(r"make(\[\d+\])?: \*\*\* ")
"""make's own report of a failed recipe, after the command's line (``make[1]:`` when make
itself runs under make, as CI's ``make test`` does)."""


@dataclass(frozen=True)
class World:
    """Inputs for every case, made once: configs, a file that is no GDELT export, a benchmark
    folder without valid.txt, and an event store of 15-minute steps."""

    root: Path
    good: Path  # loads; its run dir holds nothing
    bad_key: Path  # a misspelt key under stages.ingest
    hourly: Path  # step_minutes 60, its run dir a store of 15-minute steps
    not_gdelt: Path
    no_valid: Path


def _config(path: Path, run_dir: Path, **changes: object) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["paths"]["run_dir"] = str(run_dir)
    raw["logging"]["level"] = "error"  # the stages' own log events are not what is tested
    raw["ingest"]["source"] = str(run_dir / "simulate")
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        target = raw
        for part in section.split(".") if section else []:
            target = target[part]
        target[name] = value
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("cli_errors")
    hourly_run = root / "hourly_run"
    (hourly_run / "simulate").mkdir(parents=True)  # serve ingest refuses a missing source first
    EventStore(hourly_run / "store" / "SIM", step_minutes=15, min_free_bytes=0)
    no_valid = root / "no_valid"
    no_valid.mkdir()
    (no_valid / "train.txt").write_text("0\t0\t1\t0\n")
    (no_valid / "test.txt").write_text("0\t0\t1\t1\n")
    not_gdelt = root / "people.csv"
    not_gdelt.write_text("name,age\nada,36\n")
    return World(
        root=root,
        good=_config(root / "good.yaml", root / "run"),
        bad_key=_config(root / "bad_key.yaml", root / "run", **{"stages.ingest.metrics_prot": 1}),
        hourly=_config(root / "hourly.yaml", hourly_run, **{"ingest.mapping.step_minutes": 60}),
        not_gdelt=not_gdelt,
        no_valid=no_valid,
    )


def _env(**extra: str) -> dict[str, str]:
    """This environment without the overrides of the configs' own paths."""
    return {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES} | extra


def _run(args: list[str], world: World, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd=world.root, env=_env(**env)
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr of a command that failed."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not MAKE_LINE.match(line)]
    assert done.returncode != 0, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


# id -> (argv after `geopol`, what the line must name); {good}, {bad_key}, ... are World fields
CASES = {
    "ingest-not-gdelt": (
        ["ingest", "--config", "{good}", "--source", "{not_gdelt}"],
        ["geopol ingest: ", "{not_gdelt}", "not a GDELT event export"],
    ),
    "eval-baselines-target": (  # what `make eval-baselines` runs
        ["eval", "--baselines-only", "--data", "{no_valid}", "--config", "{good}"],
        ["geopol eval: ", "{no_valid}", "missing valid.txt"],
    ),
    "eval-baselines": (
        ["eval-baselines", "--data", "{no_valid}", "--reports", "{root}/reports"],
        ["geopol eval-baselines: ", "{no_valid}", "missing valid.txt"],
    ),
    "bench-graph": (
        ["bench", "graph", "--data", "{no_valid}", "--reports", "{root}/reports"],
        ["geopol bench graph: ", "{no_valid}", "missing valid.txt"],
    ),
    **{
        f"bad-key-{'-'.join(command)}": (
            [*command, "--config", "{bad_key}"],
            [f"geopol {' '.join(command)}: ", "{bad_key}", "'stages.ingest.metrics_prot'"],
        )
        for command in (["dataset", "from-store"], ["pipeline", "up"], ["status"])
    },
    "bad-key-serve-ingest": (
        ["serve", "ingest", "--config", "{bad_key}"],
        ["geopol serve ingest: ", "{bad_key}", "'stages.ingest.metrics_prot'", "unknown key"],
    ),
    "pipeline-up-bogus": (
        ["pipeline", "up", "bogus", "--config", "{good}"],
        ["geopol pipeline up: ", "no stage 'bogus'"],
    ),
    **{
        f"step-size-{'-'.join(command)}": (
            [*command, "--config", "{hourly}"],
            [
                f"geopol {' '.join(command)}: ",
                "{root}/hourly_run/store/SIM/store.json",
                "step_minutes=15",
                "step_minutes=60",
            ],
        )
        for command in (["dataset", "from-store"], ["serve", "ingest"])
    },
}


def _fill(texts: list[str], world: World) -> list[str]:
    fields = {name: str(getattr(world, name)) for name in World.__dataclass_fields__}
    return [text.format(**fields) for text in texts]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_what_is_wrong(world: World, case: str) -> None:
    argv, named = CASES[case]
    line = _one_line(_run([*GEOPOL, *_fill(argv, world)], world))
    for text in _fill(named, world):
        assert text in line, line
    assert line.startswith(_fill(named, world)[0])


def test_ingest_refuses_the_same_file_again_while_it_is_quarantined(world: World) -> None:
    config = _config(world.root / "again.yaml", world.root / "again_run")
    argv = ["ingest", "--config", str(config), "--source", str(world.not_gdelt)]
    first, again = (_one_line(_run([*GEOPOL, *argv], world)) for _ in range(2))
    assert again == first and "not a GDELT event export" in again


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_restart_of_a_stage_the_config_lacks(world: World) -> None:
    make = ["make", "-s", "-C", str(REPO), "restart", "STAGE=bogus", f"CONFIG={world.good}"]
    done = _run([*make, f"GEOPOL={' '.join(GEOPOL)}"], world)
    line = _one_line(done)
    assert line.startswith("geopol pipeline restart: ") and "no stage 'bogus'" in line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(world: World, how: str) -> None:
    argv = [*GEOPOL, "status", "--config", str(world.bad_key)]
    done = _run([*argv, "--debug"], world) if how == "flag" else _run(argv, world, GEOPOL_DEBUG="1")
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert "ConfigError" in done.stderr and "stages.ingest.metrics_prot" in done.stderr


def test_ctrl_c_stops_a_one_shot_command_with_one_line_and_130(world: World) -> None:
    """`geopol simulate` of many slots, interrupted once it writes its first export. (Stages
    under `geopol serve` and `geopol watch` treat Ctrl-C as a graceful stop and exit 0.)"""
    out = world.root / "sim_interrupted"
    proc = subprocess.Popen(
        [*GEOPOL, "simulate", "--config", str(world.good), "--steps", "100000", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=world.root,
        env=_env(),
    )
    deadline = time.monotonic() + 60
    # Wait for the first slot's truth file, written after its export: by then the one-time set-up
    # inside polars' native code (its first numpy conversion) is over. An interrupt that lands
    # inside native code surfaces as a Rust panic, whose report Rust prints itself; the CLI still
    # exits 130 for it, but the one-line promise can only hold in Python code.
    while not any((out / TRUTH_DIR).glob("*.parquet")) and proc.poll() is None:
        assert time.monotonic() < deadline, "simulate wrote no export"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert _one_line(done) == "geopol simulate: interrupted"
    assert done.returncode == 130


def test_a_bug_is_one_line_too_and_points_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(argv: list[str]) -> int:
        return {}["missing"]

    assert run("x", broken, [], debug=False) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "geopol x: internal error, KeyError: 'missing' (run again with --debug for the traceback)\n"
    )
    with pytest.raises(KeyError):
        run("x", broken, [], debug=True)


class PanicException(BaseException):
    """Stands in for pyo3's exception of that name: what a Ctrl-C becomes when it lands while
    polars' native code is calling back into Python."""


def test_an_interrupt_inside_native_code_still_exits_130(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted_in_rust(argv: list[str]) -> int:
        raise PanicException("Failed to access NumPy array API capsule: KeyboardInterrupt()")

    assert run("x", interrupted_in_rust, [], debug=False) == 130
    assert capsys.readouterr().err == "geopol x: interrupted\n"


def test_other_panics_and_exits_pass_through() -> None:
    def panics(argv: list[str]) -> int:
        raise PanicException("index out of bounds")

    def exits(argv: list[str]) -> int:
        raise SystemExit(3)

    with pytest.raises(PanicException):
        run("x", panics, [], debug=False)
    with pytest.raises(SystemExit):
        run("x", exits, [], debug=False)
