"""CurveZMQ on every socket that leaves the machine (DESIGN.md invariant 6).

A tcp endpoint whose host is not loopback (127.0.0.1, ::1, localhost) gets CurveZMQ, pyzmq's
built-in encryption and authentication; loopback, ipc (an owner-only file in the run
directory) and inproc endpoints stay plain, unless ``security.curve: always`` puts Curve on
every tcp endpoint (a test or a cautious single host).

Keys are ZeroMQ certificate files as ``zmq.auth`` writes and reads them, all in
``security.keys_dir`` (``geopol keys NAME`` makes a pair):

- ``NAME.key_secret``: this process's own key pair (NAME is its stage, or ``watch``);
- ``SERVER.key``: the public key of each stage this one connects to;
- ``authorized/*.key``: the public keys of the clients a binding stage lets in (the allow-list,
  read once at start by a ZAP authenticator thread, one per ZeroMQ context).

The binding side of a socket is the Curve server, the connecting side the Curve client. Which
server a connecting socket talks to is its ``server_key``, or else the stage that binds the same
tcp port in the same config file. A socket that needs Curve and lacks a key is refused before
anything is bound or connected, with one line naming the endpoint and the missing file.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from shared.config import KEY_NAME_PATTERN, Config, ConfigError, SocketConfig

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
ZAP_DOMAIN = "geopol"


class CurveKeyError(ConfigError):
    """A socket needs CurveZMQ and a key file it needs is missing or unreadable."""


@dataclass(frozen=True)
class Curve:
    """How one process secures its sockets: where its keys are and whose they are.

    ``identity`` names this process's own key pair; ``servers`` maps a tcp port to the key
    name of the stage that binds it (see :meth:`of`).
    """

    keys_dir: Path
    authorized_dir: Path
    identity: str
    always: bool = False
    servers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Config, identity: str) -> Curve:
        """The security settings of ``config`` for the process named ``identity``."""
        return cls(
            keys_dir=config.keys_dir,
            authorized_dir=config.authorized_keys_dir,
            identity=identity,
            always=config.security.curve == "always",
            servers=_binders_by_port(config),
        )

    def needed(self, cfg: SocketConfig) -> bool:
        """Whether this socket must use Curve: tcp off loopback, or any tcp under ``always``."""
        return cfg.endpoint.startswith("tcp://") and (self.always or not cfg.is_loopback)

    def public_key_file(self, name: str) -> Path:
        return self.keys_dir / f"{name}{PUBLIC_SUFFIX}"

    def secret_key_file(self, name: str) -> Path:
        return self.keys_dir / f"{name}{SECRET_SUFFIX}"

    def server_of(self, cfg: SocketConfig) -> str | None:
        """The key name of the stage a connecting socket talks to, if the config says."""
        return cfg.server_key or self.servers.get(_port(cfg.endpoint))


def check(cfg: SocketConfig, curve: Curve | None) -> None:
    """Raise :class:`CurveKeyError` unless ``cfg`` can be opened as ``curve`` says."""
    _keys(cfg, curve)


def secure(ctx: zmq.Context, sock: zmq.Socket, cfg: SocketConfig, curve: Curve | None) -> bool:
    """Put Curve on ``sock`` before it binds or connects, where ``cfg`` needs it.

    Returns whether it did. A binding socket becomes a Curve server with this process's secret
    key, and the context's authenticator lets in only the allow-listed public keys; a
    connecting one becomes a client with its own key pair and the server's public key.
    """
    keys = _keys(cfg, curve)
    if keys is None:
        return False
    public, secret, server = keys
    sock.curve_publickey, sock.curve_secretkey = public, secret
    if cfg.bind:
        assert curve is not None
        _start_authenticator(ctx, curve.authorized_dir)
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.curve_server = True
    else:
        assert server is not None
        sock.curve_serverkey = server
    return True


def _keys(cfg: SocketConfig, curve: Curve | None) -> tuple[bytes, bytes, bytes | None] | None:
    """(own public, own secret, server public or None) for a socket that needs Curve, else None."""
    if curve is None:
        if cfg.endpoint.startswith("tcp://") and not cfg.is_loopback:
            raise CurveKeyError(
                f"{cfg.endpoint}: not loopback, and no security settings were given to open it "
                "with CurveZMQ"
            )
        return None
    if not curve.needed(cfg):
        return None
    if not zmq.has("curve"):
        raise CurveKeyError(f"{cfg.endpoint}: needs CurveZMQ, which this libzmq was built without")
    if not re.match(KEY_NAME_PATTERN, curve.identity):
        raise CurveKeyError(
            f"{cfg.endpoint}: {curve.identity!r} is not a key name (letters, digits, _ . -)"
        )
    own = curve.secret_key_file(curve.identity)
    public, secret = _load(cfg, own, f"run `geopol keys {curve.identity}`")
    if secret is None:
        raise CurveKeyError(f"{cfg.endpoint}: {own}: holds no secret key")
    if cfg.bind:
        if not curve.authorized_dir.is_dir():
            raise CurveKeyError(
                f"{cfg.endpoint}: {curve.authorized_dir}: missing; put the public keys of "
                "the clients allowed in there"
            )
        return public, secret, None
    name = curve.server_of(cfg)
    if name is None:
        raise CurveKeyError(
            f"{cfg.endpoint}: no stage of this config binds port {_port(cfg.endpoint)}; set "
            "server_key on the socket to the name of the server's public key file"
        )
    server, _ = _load(cfg, curve.public_key_file(name), f"copy the server's {name}.key here")
    return public, secret, server


def _load(cfg: SocketConfig, path: Path, hint: str) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise CurveKeyError(f"{cfg.endpoint}: needs CurveZMQ key file {path}, missing ({hint})")
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"{cfg.endpoint}: {path}: not a key file ({exc})") from None


def _port(endpoint: str) -> str:
    return endpoint.rpartition(":")[2]


def _binders_by_port(config: Config) -> dict[str, str]:
    """tcp port -> the stage binding it (``stages.NAME.*`` or a section such as ``calibrate``);
    a port bound by two stages (on two hosts) is left out: its clients name ``server_key``."""
    found: dict[str, set[str]] = {}
    for key, cfg in config.all_sockets():
        if cfg.bind and cfg.endpoint.startswith("tcp://"):
            parts = key.split(".")
            owner = parts[1] if parts[0] == "stages" else parts[0]
            found.setdefault(_port(cfg.endpoint), set()).add(owner)
    return {port: next(iter(owners)) for port, owners in found.items() if len(owners) == 1}


# -- the ZAP authenticator: one thread per context, started by its first Curve server ---------
_lock = threading.Lock()
_authenticators: dict[int, tuple[zmq.Context, ThreadAuthenticator, Path]] = {}


def _start_authenticator(ctx: zmq.Context, authorized_dir: Path) -> None:
    with _lock:
        running = _authenticators.get(id(ctx))
        if running is not None:
            if running[2] != authorized_dir:
                raise CurveKeyError(
                    f"{authorized_dir}: a second allow-list in one process (already {running[2]})"
                )
            return
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain=ZAP_DOMAIN, location=str(authorized_dir))
        _authenticators[id(ctx)] = (ctx, auth, authorized_dir)


def stop_authenticator(ctx: zmq.Context) -> None:
    """Stop the context's authenticator, if it has one (before the context is terminated)."""
    with _lock:
        running = _authenticators.pop(id(ctx), None)
    if running is not None:
        running[1].stop()
