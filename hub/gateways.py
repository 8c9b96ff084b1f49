"""The hub's list of gateways and the public keys their batches are signed with.

One JSON file, like the device registry (docs/NODE.md, "The registry"):

    {"format": "govedge-gateways/1",
     "gateways": {"gw-koeln-01": {"keys": [{"public_key": "04...", "status": "active",
                                            "added": "2026-11-29T09:00:00Z"}]}}}

A gateway keeps every key it ever had; a replaced key is marked retired, so the
batches it signed before the rotation stay verifiable: batches created before
the key was retired and numbered below the first batch the hub stores under the
newer key (the boundary, learnt by the hub; or ``valid_below_seq`` in the file).
`govedge hub revoke-gateway` marks the active key revoked: no batch created from
``revoked_since`` on is accepted (docs/SECURITY.md, "Key lifecycle").
`govedge hub add-gateway` writes it.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from govedge.core.wire import DEVICE_ID, WireError, public_key_from_sec1
from govedge.core.errors import GovedgeError
from govedge.core.registry import STATUSES, TIME_FORMAT, KeyRule, key_id, parse_time

FORMAT = "govedge-gateways/1"


class GatewayListError(GovedgeError, ValueError):
    code = "gateway_list"


class Gateways:
    def __init__(self, doc: dict | None = None, path: Path | None = None):
        self.doc = doc or {"format": FORMAT, "gateways": {}}
        self.path = path
        self._keys: dict[str, list[ec.EllipticCurvePublicKey]] = {}
        self._active: dict[str, list[ec.EllipticCurvePublicKey]] = {}
        self._others: dict[str, list[tuple[ec.EllipticCurvePublicKey, KeyRule]]] = {}
        for gateway_id, entry in self.doc["gateways"].items():
            try:
                self._index(gateway_id, entry)
            except (KeyError, TypeError, ValueError, WireError) as exc:
                raise GatewayListError(f"{path}: gateway {gateway_id!r} has a bad key entry: {exc}") from None

    def _index(self, gateway_id: str, entry: dict) -> None:
        keys, active, others = [], [], []
        for k in entry["keys"]:
            public = public_key_from_sec1(bytes.fromhex(k["public_key"]))
            status = k.get("status", "active")
            if status not in STATUSES:
                raise ValueError(f"status {status!r}")
            keys.append(public)
            if status == "active":
                active.append(public)
            else:
                until = k.get("revoked_since") if status == "revoked" else k.get("retired")
                others.append((public, KeyRule(key_id(k["public_key"]), status,
                                               None if until is None else parse_time(until), k.get("valid_below_seq"))))
        self._keys[gateway_id], self._active[gateway_id] = keys, active
        self._others[gateway_id] = others[::-1]  # newest first

    def active(self, gateway_id: str) -> list[ec.EllipticCurvePublicKey]:
        """The gateway's active key (a lookup for batch.verify): what nearly every batch is signed with."""
        return self._active.get(gateway_id, [])

    def others(self, gateway_id: str) -> list[tuple[ec.EllipticCurvePublicKey, KeyRule]]:
        """The gateway's retired and revoked keys, newest first, each with what it may still sign."""
        return self._others.get(gateway_id, [])

    def revoke(self, gateway_id: str, since: str | None = None) -> str:
        """Marks the gateway's active key revoked: no batch created from ``since`` (default now) on is accepted.
        Returns the key's id."""
        entry = self.doc["gateways"].get(gateway_id)
        key = next((k for k in (entry or {}).get("keys", []) if k["status"] == "active"), None)
        if key is None:
            raise GatewayListError(f"gateway {gateway_id!r} has no active key to revoke")
        now = datetime.datetime.now(datetime.timezone.utc).strftime(TIME_FORMAT)
        if since is not None:
            try:
                parse_time(since)
            except ValueError:
                raise GatewayListError(f"--since {since!r} is not a UTC time like 2026-11-29T06:00:00Z") from None
        key["status"], key["revoked"], key["revoked_since"] = "revoked", now, since or now
        self._index(gateway_id, entry)
        return key_id(key["public_key"])

    @classmethod
    def load(cls, path: str | os.PathLike, missing_ok: bool = False) -> "Gateways":
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            if missing_ok:
                return cls(path=path)
            raise GatewayListError(f"{path} not found: add gateways with `govedge hub add-gateway`") from None
        except ValueError as exc:
            raise GatewayListError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("gateways"), dict):
            raise GatewayListError(f"{path} is not a gateway list (format {FORMAT!r} expected)")
        return cls(doc, path)

    def __call__(self, gateway_id: str) -> list[ec.EllipticCurvePublicKey]:
        return self._keys.get(gateway_id, [])

    def __contains__(self, gateway_id: str) -> bool:
        return gateway_id in self._keys

    def add(self, gateway_id: str, public_key: ec.EllipticCurvePublicKey) -> str:
        """Adds the gateway, or a new key of a known one (its older keys are retired). Returns what happened."""
        if not DEVICE_ID.match(gateway_id):
            raise GatewayListError(f"gateway id {gateway_id!r} is not valid: letters, digits, '.', '_', '-'")
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise GatewayListError(f"the key of {gateway_id} is not a P-256 key")
        sec1 = public_key.public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.UncompressedPoint).hex()
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = self.doc["gateways"].setdefault(gateway_id, {"keys": []})
        if any(k["public_key"] == sec1 for k in entry["keys"]):
            return "unchanged"
        for k in entry["keys"]:
            if k["status"] == "active":
                k["status"], k["retired"] = "retired", now
        entry["keys"].append({"public_key": sec1, "status": "active", "added": now})
        self._index(gateway_id, entry)
        return "key added" if len(entry["keys"]) > 1 else "added"

    def save(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".gateways-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.doc, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)  # public keys only; the hub workers run as a user of their own (hub install)
        os.replace(tmp, self.path)


def load_public_key(path: str | os.PathLike) -> ec.EllipticCurvePublicKey:
    """A gateway's public key from a PEM file (its public key, or its private key file on the gateway)."""
    data = Path(path).read_bytes()
    try:
        return serialization.load_pem_public_key(data)
    except ValueError:
        pass
    try:
        return serialization.load_pem_private_key(data, password=None).public_key()
    except (ValueError, TypeError) as exc:
        raise GatewayListError(f"{path} holds no PEM public or private key: {exc}") from None
