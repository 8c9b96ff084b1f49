"""An input the process dies on is refused after its second death, never a good one after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from govedge.core.crashguard import POISON, SUSPECT, CrashGuard

GOOD, BAD, OTHER = b"good reading", b"deadly reading", b"another reading"


def die_while_handling(path, payloads, alone=False):
    """A real process that notes the inputs and is killed (SIGKILL) while it handles them."""
    script = textwrap.dedent(f"""
        import os, signal
        from govedge.core.crashguard import CrashGuard
        guard = CrashGuard({str(path)!r})
        with guard.handling({payloads!r}, alone={alone!r}):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL


def test_nothing_is_suspect_after_a_clean_run(tmp_path):
    guard = CrashGuard(tmp_path / "handling")
    with guard.handling([GOOD, BAD]):
        pass
    guard.close()
    assert CrashGuard(tmp_path / "handling").verdict(GOOD) is None


def test_a_death_makes_the_group_suspect_and_two_deaths_alone_make_poison(tmp_path):
    path = tmp_path / "handling"
    die_while_handling(path, [GOOD, BAD, OTHER])
    guard = CrashGuard(path)
    assert [guard.verdict(p) for p in (GOOD, BAD, OTHER, b"new")] == [SUSPECT, SUSPECT, SUSPECT, None]
    with guard.handling([GOOD], alone=True):
        pass
    guard.handled([GOOD])  # committed without a death: cleared
    guard.close()
    die_while_handling(path, [BAD], alone=True)
    assert CrashGuard(path).verdict(BAD) == SUSPECT  # one death alone may be a kill -9 at a bad moment
    die_while_handling(path, [BAD], alone=True)
    guard = CrashGuard(path)
    assert [guard.verdict(p) for p in (GOOD, BAD, OTHER)] == [None, POISON, SUSPECT]
    assert "died 3 times" in guard.poison_note(BAD) and "2 times with it alone" in guard.poison_note(BAD)


def test_a_kill_while_a_good_message_is_handled_alone_in_its_group_only_makes_it_suspect(tmp_path):
    # low traffic: a group of one; a kill -9 at that moment must not condemn the message
    path = tmp_path / "handling"
    die_while_handling(path, [GOOD])
    assert CrashGuard(path).verdict(GOOD) == SUSPECT


def test_an_exception_is_no_death(tmp_path):
    guard = CrashGuard(tmp_path / "handling")
    try:
        with guard.handling([BAD]):
            raise ValueError("the handler refused it itself")
    except ValueError:
        pass
    assert os.path.getsize(tmp_path / "handling") == 0
    assert CrashGuard(tmp_path / "handling").verdict(BAD) is None
