"""The stage processes under supervisord: its config, made from ours, and a client for its API.

``geopol pipeline`` writes ``RUN_DIR/supervisor/supervisord.conf`` from the pipeline config each
time it runs (one ``[program:STAGE]`` per stage, the command ``python -m MODULE --config FILE``),
starts one supervisord per run dir when none answers on ``RUN_DIR/supervisor/supervisor.sock``
(owner-only), and drives it over that socket with supervisord's XML-RPC API: start, stop,
state, exit status. supervisord owns what a pid file cannot do: it is the stages' parent, so it
knows each one's real state and exit status, never signals a recycled pid, restarts a stage that
crashes after it started (a non-zero exit or a signal; exit 0 is a deliberate stop), sends
SIGTERM and SIGKILL only after ``stopwaitsecs``, and appends each stage's stdout and stderr to
``RUN_DIR/log/STAGE.log`` (rotated at 50 MB). Its own log is ``RUN_DIR/log/supervisord.log``.

``supervisorctl -c RUN_DIR/supervisor/supervisord.conf status`` works too; ``geopol pipeline``
is the interface the Makefile and the docs use.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.states import ProcessStates
from supervisor.xmlrpc import Faults, SupervisorTransport

from shared.config import Config

START_SECS = 5
"""supervisord retries a stage that dies sooner than this after its start only ``startretries``
times, with a growing delay (``geopol pipeline`` stops it at the first death and reports it); one
that crashes later it restarts at once."""
ALIVE = frozenset({ProcessStates.STARTING, ProcessStates.RUNNING})
STOPPABLE = ALIVE | {ProcessStates.BACKOFF}
_UNIX_PATH_MAX = 107  # sun_path, less its terminating NUL
_PID_SUFFIX = len(".4194304")
"""supervisord binds ``SOCKET.PID`` first and links it to SOCKET, so the path it binds is longer
than the socket's by a dot and a pid (up to Linux's largest pid_max)."""


class PipelineError(RuntimeError):
    """The supervisor cannot be started or reached; the message names the file."""


@dataclass(frozen=True)
class Files:
    """Where the supervisor of one run dir keeps its config, socket, pid and logs."""

    run_dir: Path

    @classmethod
    def of(cls, config: Config) -> Files:
        return cls(config.paths.run_dir.resolve())

    @property
    def folder(self) -> Path:
        return self.run_dir / "supervisor"

    @property
    def conf(self) -> Path:
        return self.folder / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.folder / "supervisor.sock"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "log"

    def stage_log(self, stage: str) -> Path:
        return self.log_dir / f"{stage}.log"


def render(files: Files, commands: Mapping[str, list[str]], cwd: Path, stop_s: float) -> str:
    """supervisord.conf text: the daemon's own files under the run dir, one program per stage."""

    def value(text: object) -> str:
        return str(text).replace("%", "%%")  # supervisord expands %(name)s in values

    lines = [
        "; written by `geopol pipeline` from the pipeline config; edits are overwritten",
        "[unix_http_server]",
        f"file = {value(files.socket)}",
        "chmod = 0700",
        "",
        "[supervisord]",
        f"logfile = {value(files.log_dir / 'supervisord.log')}",
        f"pidfile = {value(files.folder / 'supervisord.pid')}",
        f"childlogdir = {value(files.log_dir)}",
        f"directory = {value(cwd)}",
        "identifier = geopol",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl = unix://{value(files.socket)}",
    ]
    for stage, argv in commands.items():
        lines += [
            "",
            f"[program:{stage}]",
            f"command = {value(shlex.join(argv))}",
            f"directory = {value(cwd)}",  # a config's relative paths are relative to it
            "autostart = false",
            "autorestart = unexpected",
            "exitcodes = 0",
            f"startsecs = {START_SECS}",
            "startretries = 3",
            "stopsignal = TERM",
            f"stopwaitsecs = {stop_s:g}",
            "stopasgroup = true",  # the retrainer's geopol step stops with it
            "killasgroup = true",
            f"stdout_logfile = {value(files.stage_log(stage))}",
            "stdout_logfile_maxbytes = 50MB",
            "stdout_logfile_backups = 5",
            "redirect_stderr = true",
            'environment = PYTHONUNBUFFERED="1"',
        ]
    return "\n".join(lines) + "\n"


class Supervisor:
    """A client of one run dir's supervisord."""

    def __init__(self, files: Files, proxy: Any) -> None:
        self.files = files
        self._rpc = proxy.supervisor

    # -- reaching it -----------------------------------------------------------------------
    @classmethod
    def connect(cls, files: Files) -> Supervisor | None:
        """The running supervisor of this run dir, or None when none answers on its socket."""
        if not files.socket.exists():
            return None
        transport = SupervisorTransport(None, None, f"unix://{files.socket}")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            proxy.supervisor.getState()
        except OSError:  # a socket file left by a supervisord that was killed
            return None
        return cls(files, proxy)

    @classmethod
    def ensure(cls, files: Files, conf_text: str) -> Supervisor:
        """Write the config and return the run dir's supervisor, started if none runs; a running
        one takes the new config for every stage that is not running (the others keep theirs
        until they are restarted)."""
        room = _UNIX_PATH_MAX - _PID_SUFFIX
        if len(str(files.socket)) > room:
            raise PipelineError(
                f"{files.socket}: longer than supervisord's unix socket path may be ({room} "
                "characters); use a shorter paths.run_dir (or GEOPOL_RUN_DIR)"
            )
        files.folder.mkdir(parents=True, exist_ok=True)
        files.log_dir.mkdir(parents=True, exist_ok=True)
        tmp = files.conf.with_suffix(".tmp")
        tmp.write_text(conf_text)
        tmp.replace(files.conf)
        found = cls.connect(files)
        if found is not None:
            found.sync()
            return found
        return cls._start(files)

    @classmethod
    def _start(cls, files: Files) -> Supervisor:
        out = files.folder / "supervisord.out"  # what it says before it daemonizes
        with open(out, "w") as fh:
            subprocess.run(
                [sys.executable, "-m", "supervisor.supervisord", "-c", str(files.conf)],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = cls.connect(files)  # also when a concurrent `up` started it first
            if found is not None:
                return found
            time.sleep(0.1)
        said = [
            line
            for line in out.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith("For help, use")  # its usage hint, not why
        ]
        reason = said[-1] if said else f"see {files.log_dir / 'supervisord.log'}"
        raise PipelineError(f"{files.conf}: supervisord did not start: {reason}")

    def sync(self) -> None:
        """Apply a rewritten config, as ``supervisorctl update`` would, to stages not running."""
        added, changed, removed = self._rpc.reloadConfig()[0]
        for name in removed + changed:
            if self.info(name)["state"] in STOPPABLE:
                continue  # running: it takes the new config when it is restarted
            self._rpc.removeProcessGroup(name)
            if name in changed:
                self._rpc.addProcessGroup(name)
        for name in added:
            self._rpc.addProcessGroup(name)

    # -- the stages ------------------------------------------------------------------------
    def info(self, stage: str) -> dict[str, Any]:
        """supervisord's record of the stage: ``state``, ``statename``, ``pid``, ``exitstatus``."""
        return self._rpc.getProcessInfo(stage)

    def names(self) -> list[str]:
        return [p["name"] for p in self._rpc.getAllProcessInfo()]

    def start(self, stage: str) -> int:
        """Start the stage without waiting for it; its pid."""
        if self.info(stage)["state"] == ProcessStates.BACKOFF:  # between supervisord's retries
            self.stop(stage)
        self._rpc.startProcess(stage, False)
        return int(self.info(stage)["pid"])

    def stop(self, stage: str) -> dict[str, Any] | None:
        """SIGTERM, and SIGKILL after ``stopwaitsecs``; waits until it is gone. The stage's
        record afterwards, or None when it was not running."""
        try:
            self._rpc.stopProcess(stage, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == Faults.NOT_RUNNING:
                return None
            raise
        return self.info(stage)

    def log_size(self) -> int:
        """Where supervisord's log ends now (for :meth:`exit_reason`)."""
        path = self.files.log_dir / "supervisord.log"
        return path.stat().st_size if path.exists() else 0

    def exit_reason(self, stage: str, since: int = 0, event: str = "exited") -> str | None:
        """How the stage's last process since byte ``since`` of supervisord's log ended
        (``exit status 2``, ``terminated by SIGKILL``), by itself (``exited``) or when stopped
        (``stopped``): supervisord keeps no exit status for a process that died before
        ``startsecs``, but logs it."""
        try:
            tail = self._rpc.readLog(since, 0)
        except xmlrpc.client.Fault:  # rotated since: read what there is
            tail = self._rpc.readLog(-65536, 0)
        found = re.findall(
            rf"{event}: {re.escape(stage)} \((exit status \d+|terminated by \w+)", tail
        )
        return found[-1] if found else None

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop supervisord itself (and any stage still running) and wait until it is gone."""
        self._rpc.shutdown()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and Supervisor.connect(self.files) is not None:
            time.sleep(0.1)
