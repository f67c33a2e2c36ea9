"""Config errors name the file, the key and the value; the shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import CONFIG_DIR, ConfigError, load_config

MINIMAL = "name: t\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path, env={})
    assert config.name == path.stem


def test_unknown_key_names_file_key_and_value(tmp_path):
    path = write(tmp_path, MINIMAL + "logging:\n  colour: blue\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = str(info.value)
    assert str(path) in msg and "logging.colour" in msg and "'blue'" in msg and "unknown" in msg


def test_wrong_type_names_file_key_and_value(tmp_path):
    path = write(tmp_path, MINIMAL + "stages:\n  graph:\n    metrics_port: nine\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    msg = str(info.value)
    assert str(path) in msg and "stages.graph.metrics_port" in msg and "'nine'" in msg


def test_string_for_int_is_a_wrong_type_not_coerced(tmp_path):
    path = write(tmp_path, MINIMAL + "protocol:\n  max_frames: '12'\n")
    with pytest.raises(ConfigError, match=r"protocol\.max_frames.*'12'"):
        load_config(path, env={})


def test_missing_required_field(tmp_path):
    path = write(tmp_path, "logging:\n  level: info\n")
    with pytest.raises(ConfigError, match=r"key 'name': required, missing"):
        load_config(path, env={})


def test_bad_enum_value(tmp_path):
    path = write(tmp_path, MINIMAL + "logging:\n  level: loud\n")
    with pytest.raises(ConfigError, match=r"logging\.level.*'loud'"):
        load_config(path, env={})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_syntax_error_is_named(tmp_path):
    path = write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"conf\.yaml: not valid YAML"):
        load_config(path, env={})


def test_every_shipped_socket_is_on_loopback():
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        for key, socket in load_config(path, env={}).all_sockets():
            assert socket.is_loopback, f"{path.name}: {key} {socket.endpoint}"


def test_a_socket_off_loopback_loads_and_is_marked_for_curve(tmp_path):
    path = write(
        tmp_path,
        MINIMAL + "stages:\n  g:\n    sockets:\n      out: "
        "{pattern: push, endpoint: 'tcp://0.0.0.0:5555', bind: true}\n",
    )
    socket = load_config(path, env={}).stage("g").sockets["out"]
    assert not socket.is_loopback  # shared.curve opens it with CurveZMQ, or refuses it


def test_keys_live_under_the_run_dir_unless_named(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), env={"GEOPOL_RUN_DIR": "r"})
    assert config.keys_dir == Path("r/keys")
    assert config.authorized_keys_dir == Path("r/keys/authorized")
    named = write(tmp_path, MINIMAL + "security:\n  keys_dir: '${run_dir}/k'\n")
    assert load_config(named, env={"GEOPOL_RUN_DIR": "r"}).keys_dir == Path("r/k")


def test_environment_overrides_paths(tmp_path):
    path = write(tmp_path, MINIMAL + "paths:\n  data_dir: /nowhere\n")
    config = load_config(path, env={"GEOPOL_DATA_DIR": str(tmp_path), "GEOPOL_RUN_DIR": "r"})
    assert config.paths.data_dir == tmp_path and config.paths.run_dir == Path("r")
    assert load_config(path, env={}).paths.data_dir == Path("/nowhere")


def test_unknown_stage_lookup_lists_the_known_ones():
    config = load_config(CONFIG_DIR / "default.yaml", env={})
    with pytest.raises(ConfigError, match=r"no stage 'grpah'.*'graph'"):
        config.stage("grpah")


def _ipc_config(tmp_path: Path, endpoint: str, run_dir: str = "run") -> Path:
    return write(
        tmp_path,
        f"{MINIMAL}paths: {{run_dir: {run_dir!r}}}\nstages:\n  g:\n    sockets:\n      out: "
        f"{{pattern: push, endpoint: {endpoint!r}, bind: true}}\n",
    )


@pytest.mark.parametrize("endpoint", ["ipc://@geopol", "ipc://*", "ipc://"])
def test_ipc_endpoint_must_be_a_file_path(tmp_path, endpoint):
    with pytest.raises(ConfigError, match=r"stages\.g\.sockets\.out.*is not a file path"):
        load_config(_ipc_config(tmp_path, endpoint, str(tmp_path / "run")), env={})


def test_ipc_socket_file_must_lie_inside_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    outside = _ipc_config(tmp_path, f"ipc://{tmp_path}/graph.sock", str(run_dir))
    with pytest.raises(ConfigError) as info:
        load_config(outside, env={})
    msg = str(info.value)
    assert "stages.g.sockets.out.endpoint" in msg and f"ipc://{tmp_path}/graph.sock" in msg
    assert "outside the run directory" in msg and str(run_dir) in msg
    escape = _ipc_config(tmp_path, f"ipc://{run_dir}/../graph.sock", str(run_dir))
    with pytest.raises(ConfigError, match="outside the run directory"):
        load_config(escape, env={})
    inside = load_config(_ipc_config(tmp_path, f"ipc://{run_dir}/g/out.sock", str(run_dir)), env={})
    assert inside.stage("g").sockets["out"].ipc_path == run_dir / "g" / "out.sock"


def test_relative_ipc_paths_resolve_like_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _ipc_config(tmp_path, "ipc://var/graph.sock", "var")
    assert load_config(path, env={}).stage("g").sockets["out"].endpoint == "ipc://var/graph.sock"
    with pytest.raises(ConfigError, match="outside the run directory"):
        load_config(path, env={"GEOPOL_RUN_DIR": str(tmp_path / "elsewhere")})


def test_ipc_check_covers_sockets_outside_stages(tmp_path):
    path = write(
        tmp_path,
        f"{MINIMAL}paths: {{run_dir: {str(tmp_path / 'run')!r}}}\ncalibrate:\n  publish: "
        "{pattern: pub, endpoint: 'ipc:///tmp/forecasts.sock', bind: true}\n",
    )
    with pytest.raises(ConfigError, match=r"calibrate\.publish\.endpoint.*outside the run"):
        load_config(path, env={})
