"""``geopol keys NAME``: make a CurveZMQ key pair for one stage or client (see shared.curve)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import zmq.auth

from shared.atomic import fsync_dir
from shared.config import DEFAULT_CONFIG, KEY_NAME_PATTERN, load_config
from shared.curve import PUBLIC_SUFFIX, SECRET_SUFFIX

HOW_TO_DISTRIBUTE = """\
Every process with a tcp endpoint off loopback uses CurveZMQ and needs a key pair in the keys
folder (security.keys_dir, default RUN_DIR/keys), named after its stage (ingest, graph, llm,
calibrate) or, for `geopol watch`, `watch` (or its --key NAME). This writes NAME.key (public,
mode 0644) and NAME.key_secret (secret, mode 0600; it never leaves this machine).

Then hand out the public key NAME.key (never the secret), over a channel you trust:
  - to each machine running a stage that NAME connects to (a server of NAME): into that
    machine's allow-list folder (security.authorized_dir, default KEYS/authorized). A binding
    stage lets in only the public keys found there, read when it starts: restart it after.
  - to each machine running a stage that connects to NAME (a client of NAME): into that
    machine's keys folder, as NAME.key. A connecting socket finds its server's key by the
    socket's server_key, or else by the stage that binds the same port in the config.

Example, ingest on host A binds tcp://*:5701 and graph on host B connects to it:
  A$ geopol keys ingest        B$ geopol keys graph
  copy A:var/keys/ingest.key to B:var/keys/ingest.key
  copy B:var/keys/graph.key  to A:var/keys/authorized/graph.key

--force replaces an existing pair: every machine holding the old public key needs the new one.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geopol keys",
        description="Make a CurveZMQ key pair for a stage or client in the keys folder.",
        epilog=HOW_TO_DISTRIBUTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="the stage or client the pair is for (ingest, graph, watch)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config")
    parser.add_argument(
        "--dir", type=Path, help="the keys folder (default: the config's security.keys_dir)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing key pair")
    return parser


def create_pair(keys_dir: Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` into ``keys_dir``; returns (public, secret).

    Raises FileExistsError for an existing pair unless ``force``. The pair is written in a
    private temp folder and renamed into place, so the secret is never readable by others and a
    crash never leaves half a new file. An allow-list folder ``authorized/`` is made beside it.
    """
    public = keys_dir / f"{name}{PUBLIC_SUFFIX}"
    secret = keys_dir / f"{name}{SECRET_SUFFIX}"
    existing = [p for p in (public, secret) if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]}: exists; --force replaces the pair")
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (keys_dir / "authorized").mkdir(mode=0o700, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=keys_dir, prefix=f".{name}."))  # mode 0700
    try:
        made_public, made_secret = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
        os.chmod(made_secret, 0o600)
        os.chmod(made_public, 0o644)
        os.replace(made_secret, secret)
        os.replace(made_public, public)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(keys_dir)
    return public, secret


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not re.match(KEY_NAME_PATTERN, args.name):
        print(
            f"geopol keys: {args.name!r}: not a key name (letters, digits, _ . -)", file=sys.stderr
        )
        return 2
    keys_dir = args.dir
    if keys_dir is None:
        keys_dir = load_config(args.config).keys_dir
    try:
        public, secret = create_pair(keys_dir, args.name, args.force)
    except FileExistsError as exc:
        print(f"geopol keys: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"geopol keys: {keys_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"public key {public} (hand it out: `geopol keys --help` says where)")
    print(f"secret key {secret} (mode 0600; keep it on this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
