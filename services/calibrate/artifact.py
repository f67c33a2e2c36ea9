"""The calibrator artifact: fitted calibrations per protocol, with a manifest (invariant 4).

Layout::

    manifest.json      kind, format, dataset, the llm and graph artifacts the scores came from,
                       per protocol K and the chosen calibrator, the fitting tables' hashes,
                       and the sha256 of calibration.json
    calibration.json   every calibrator's parameters (plain JSON: no pickle)

Loading checks the manifest, the file hash and that every protocol's parameters parse, and
refuses with a message naming the folder and the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.calibrate.fit import ProtocolCalibration
from shared.atomic import atomic_write_text
from shared.manifest import file_sha256, manifest_id, read_kind, read_listed

KIND = "calibrator"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARAMS = "calibration.json"


class CalibratorArtifactError(ValueError):
    """A calibrator folder that cannot be used; the message names the folder and the field."""


@dataclass(frozen=True)
class CalibratorArtifact:
    directory: Path
    manifest: dict[str, Any]
    protocols: dict[str, ProtocolCalibration]

    @property
    def artifact_id(self) -> str:
        return manifest_id(self.manifest)

    def protocol(self, name: str) -> ProtocolCalibration:
        if name not in self.protocols:
            raise CalibratorArtifactError(
                f"calibrator {self.directory}: no {name!r} calibration (it has "
                f"{sorted(self.protocols)}; fit one from a {name} score table)"
            )
        return self.protocols[name]


def _lineage(fits: dict[str, ProtocolCalibration], key: str) -> str | None:
    values = {fit.source.get(key) for fit in fits.values()}
    if len(values) > 1:
        raise CalibratorArtifactError(
            f"the score tables come from different {key}s: {sorted(map(str, values))}"
        )
    return values.pop() if values else None


def save(
    directory: Path, fits: dict[str, ProtocolCalibration], tables: dict[str, Path]
) -> CalibratorArtifact:
    """Write ``fits`` (protocol -> calibration) fitted on ``tables`` (protocol -> table file)."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({p: fit.params() for p, fit in fits.items()}, indent=1, sort_keys=True)
    atomic_write_text(directory / PARAMS, payload)
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "dataset": _lineage(fits, "dataset"),
        "llm_artifact": _lineage(fits, "llm_artifact"),
        "graph_artifact": _lineage(fits, "graph_artifact"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocols": {
            p: {"K": fit.k, "chosen": fit.chosen, "n": fit.n, "cv_nll": fit.cv_nll}
            for p, fit in fits.items()
        },
        "tables": {
            p: {"file": path.name, "sha256": file_sha256(path)} for p, path in tables.items()
        },
        "files": {PARAMS: {"sha256": hashlib.sha256(payload.encode()).hexdigest()}},
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    return CalibratorArtifact(directory, manifest, dict(fits))


def load(directory: Path) -> CalibratorArtifact:
    """Read and check a calibrator folder written by :func:`save`."""
    what = f"calibrator {directory}"
    manifest = read_kind(directory / MANIFEST, KIND, FORMAT_VERSION, what, CalibratorArtifactError)
    payload = read_listed(directory, manifest, PARAMS, what, CalibratorArtifactError)
    try:
        params = json.loads(payload)
        protocols = {p: ProtocolCalibration.from_params(v) for p, v in params.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CalibratorArtifactError(f"{what}: {PARAMS} does not parse ({exc})") from exc
    listed = set(manifest.get("protocols", {}))
    if listed != set(protocols):
        raise CalibratorArtifactError(
            f"{what}: manifest lists protocols {sorted(listed)}, {PARAMS} holds {sorted(protocols)}"
        )
    return CalibratorArtifact(directory, manifest, protocols)
