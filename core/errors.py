"""Every error the product raises, on one base: ``GovedgeError(code, reason)``.

``code`` is a short machine word (it names counters, quarantine and rejected rows,
exit paths); ``reason`` is the one line a technician or an auditor reads. The
classes themselves live next to the code that raises them (WireError in wire,
AnchorError in receipt, ...), each a subclass of GovedgeError, and most also of
the built-in exception a caller would expect (ValueError for bad input,
RuntimeError for a tool that failed), so ``except ValueError`` keeps working.

Exceptions nobody foresaw are turned into text here too: ``one_line`` and
``text_of`` clip whatever an exception or an input says to one printable line of
bounded length (an exception's text may quote a 64 KiB topic or a NUL byte), and
``internal_error`` is the (code, reason) pair of a message whose handling raised.
"""

from __future__ import annotations

from typing import NamedTuple

INTERNAL_ERROR = "internal_error"
# SQLite's primary result codes that are about the file: no permission, read-only, damaged, cannot be opened,
# not a database
SQLITE_PERM, SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_NOTADB = 3, 8, 11, 14, 26


class GovedgeError(Exception):
    """An error of the product: ``code`` for machines, ``reason`` for people.

    Raised as ``GovedgeError(code, reason)``, or as ``Sub(reason)`` for a subclass whose
    class attribute ``code`` names its one kind. ``str(err)`` is the reason unless the
    raiser passes a fuller ``message`` (e.g. the reason after the link it concerns).
    """

    code = "error"

    def __init__(self, *args: str, message: str | None = None):
        if len(args) == 2:
            self.code, reason = args
        elif len(args) == 1:
            (reason,) = args
        else:
            raise TypeError(f"{type(self).__name__} takes (code, reason) or (reason), not {len(args)} arguments")
        super().__init__(reason if message is None else message)
        self.reason = reason


class DatabaseFileError(GovedgeError, RuntimeError):
    """A store's SQLite file that is damaged, not a database at all, or not this user's to write; the text
    names the file and what to do."""

    code = "database_file"


def raise_for_file(exc: BaseException, path) -> None:
    """Raises DatabaseFileError naming ``path`` if ``exc`` is SQLite's word on the file itself (damaged, not a
    database, read-only or not to be opened by this user); otherwise returns (the caller raises ``exc`` on)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        raise DatabaseFileError(f"{path}: {text_of(exc)} (the file is damaged or not a SQLite database: stop the "
                                "service, restore the file from a backup or move it aside to start an empty one)"
                                ) from None
    if code in (SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN):
        raise DatabaseFileError(f"{path}: {text_of(exc)} (run the command as the user the file and its folder "
                                "belong to, e.g. with sudo -u govedge, or as root)") from None


class Refusal(NamedTuple):
    """Why an input is not taken (the gateway's quarantine, the hub's rejected rows): its code
    and a reason a technician can act on."""

    code: str
    reason: str


def one_line(text, limit: int) -> str:
    """A text for a reason column or a log line: one line of printable characters (PostgreSQL's
    text holds no NUL; an exception's text may quote anything), at most ``limit`` characters."""
    text = " ".join(str(text)[:4 * limit].split())
    text = "".join(c if c.isprintable() else "?" for c in text[:limit + 1])
    return text if len(text) <= limit else text[:limit - 3] + "..."


def text_of(exc: BaseException, limit: int = 200) -> str:
    """An exception's text, clipped to one line; never raises (its __str__ might)."""
    try:
        return one_line(exc, limit)
    except Exception:  # noqa: BLE001 - even the text of the exception may fail
        return "(its text cannot be shown)"


def internal_error(exc: BaseException, what: str = "") -> tuple[str, str]:
    """The (code, reason) of an input whose handling raised what nobody foresaw: the
    exception's class and its clipped text, after ``what`` (e.g. "could not be stored: ")."""
    return INTERNAL_ERROR, f"{what}{type(exc).__name__}: {text_of(exc)}"
