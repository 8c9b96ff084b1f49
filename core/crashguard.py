"""No crash-loop on one input: what a service is handling is noted before it handles it.

The gateway and the hub catch whatever one message or batch raises and refuse
that input alone. What cannot be caught (a crash inside a C library, the
kernel's out-of-memory killer, a recursion that overflows the C stack) ends
the process; systemd starts it again and the broker hands the same,
unacknowledged input over again. Without a guard that is a crash-loop.

So before a group of inputs is handled, their SHA-256 digests are written to a
small journal file, and the journal is emptied once they are committed. A
process that finds the journal not empty when it starts died while handling
one of them: they become *suspects*. A suspect is handled alone, with only
itself in the journal; a process that dies ``ALONE_DEATHS`` (2) times with a
suspect alone in the journal has found the input that kills it, which becomes
*poison* and is refused from then on with the code ``internal_error``
(quarantined or rejected, and acknowledged). An input must thus end the
process three times, once in its group and twice alone, to be refused: one
power cut or ``kill -9`` while a good message is handled, even alone, never
condemns it, and a poisonous input costs three restarts, not a loop.

The journal is written with ``pwrite`` into an open file, without fsync: a
process's death leaves the page cache as it was; a power cut may lose the
journal, but a power cut is no sign of a poisonous input.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger("govedge.core.crashguard")

SUSPECT = "suspect"
POISON = "poison"
MAX_ENTRIES = 10_000  # suspects and poison kept; the oldest go first
ALONE_DEATHS = 2  # deaths with the input alone in hand that make it poison
DIGEST = 32


def digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


class CrashGuard:
    """The journal of one service process (``path``) and its suspects and poison (``path`` + ``.json``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.list_path = self.path.with_name(self.path.name + ".json")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = self._load_list()  # hex digest -> {"state", "since", "deaths"}
        self.unnoted = False  # the last note failed for want of room
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        left = os.pread(self.fd, 1 + MAX_ENTRIES * DIGEST, 0)
        if left:
            self._died_while_handling(left)
        self.clear()

    # -- what a start finds ---------------------------------------------------------

    def _load_list(self) -> dict[str, dict]:
        try:
            doc = json.loads(self.list_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.error("crash guard: %s is not valid JSON; starting with no suspects", self.list_path)
            return {}
        return {k: v for k, v in doc.items() if isinstance(v, dict) and v.get("state") in (SUSPECT, POISON)}

    def _died_while_handling(self, journal: bytes) -> None:
        alone = journal[:1] == b"1"
        digests = [journal[i:i + DIGEST] for i in range(1, len(journal) - DIGEST + 1, DIGEST)]
        now = time.time()
        for d in digests:
            key = d.hex()
            entry = self.entries.setdefault(key, {"state": SUSPECT, "since": now, "deaths": 0, "alone": 0})
            entry["deaths"] += 1
            if alone:
                entry["alone"] = entry.get("alone", 0) + 1
                if entry["alone"] >= ALONE_DEATHS:
                    entry["state"] = POISON
        if alone and digests and self.entries[digests[0].hex()]["state"] == POISON:
            log.error("crash guard: the process died %d times while handling input %s, %d times with it alone; "
                      "it is refused from now on (internal_error)", self.entries[digests[0].hex()]["deaths"],
                      digests[0].hex()[:16], ALONE_DEATHS)
        elif alone and digests:
            log.error("crash guard: the process died while handling suspect input %s alone; once more and it "
                      "is refused", digests[0].hex()[:16])
        elif digests:
            log.error("crash guard: the process died while handling %d inputs; each is handled alone when it "
                      "comes again", len(digests))
        self._save_list()

    def _save_list(self) -> None:
        if len(self.entries) > MAX_ENTRIES:
            for key in sorted(self.entries, key=lambda k: self.entries[k]["since"])[:len(self.entries) - MAX_ENTRIES]:
                del self.entries[key]
        tmp = self.list_path.with_name(self.list_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.entries, sort_keys=True))
            os.replace(tmp, self.list_path)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            tmp.unlink(missing_ok=True)  # kept in memory; the next change writes it again
            log.error("crash guard: %s not written (%s); written with the next change", self.list_path,
                      exc.strerror)

    # -- while handling --------------------------------------------------------------

    def verdict(self, payload: bytes) -> str | None:
        """POISON (refuse it), SUSPECT (handle it alone) or None (handle it as usual)."""
        if not self.entries:
            return None  # the usual case costs nothing: no digest is computed
        entry = self.entries.get(digest(payload).hex())
        return None if entry is None else entry["state"]

    def note(self, digests: bytes, alone: bool = False) -> None:
        """The inputs in hand now (their SHA-256 digests, concatenated), replacing what was noted."""
        try:
            os.pwrite(self.fd, (b"1" if alone else b"0") + digests, 0)
            os.ftruncate(self.fd, 1 + len(digests))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # a full disk is no poison: these go unguarded rather than stop the service (nor is anything
            # committed, or acknowledged, until there is room again)
            os.ftruncate(self.fd, 0)
            if not self.unnoted:
                log.error("crash guard: %s not written (%s): inputs are handled without the guard until "
                          "there is room", self.path, exc.strerror)
            self.unnoted = True
            return
        self.unnoted = False

    @contextmanager
    def handling(self, payloads: Iterable[bytes], alone: bool = False) -> Iterator[None]:
        """Notes the inputs for the time the block runs. ``alone``: a suspect, by itself."""
        self.note(b"".join(digest(p) for p in payloads), alone)
        try:
            yield
        finally:
            self.clear()  # an exception is no death: the caller refused the input itself

    def handled(self, payloads: Iterable[bytes]) -> None:
        """Suspects among these were handled (committed) without a death: they are suspects no more."""
        if not self.entries:
            return
        gone = [k for k in (digest(p).hex() for p in payloads) if self.entries.get(k, {}).get("state") == SUSPECT]
        for key in gone:
            del self.entries[key]
        if gone:
            self._save_list()

    def poison_note(self, payload: bytes) -> str:
        """Words for the refusal of a poisonous input."""
        entry = self.entries.get(digest(payload).hex(), {})
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.get("since", time.time())))
        return (f"the service process died {entry.get('deaths', 0)} times while handling this input (first at "
                f"{since}), {entry.get('alone', 0)} times with it alone; refused so that it cannot stop the "
                "service again")

    def clear(self) -> None:
        """Nothing in hand any more."""
        os.ftruncate(self.fd, 0)

    def close(self) -> None:
        self.clear()
        os.close(self.fd)
