from __future__ import annotations

import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from govedge.tools.field import firmware
from support import MPY_PRELUDE, READINGS, SignedReading, hex_lines, mpy_literal
from support.browser import browser  # noqa: F401 - one Chromium for the whole session (a fixture)
from support.deploy import CliProcess

# a background job of a non-interactive shell starts with Ctrl-C ignored, and an ignored signal stays ignored
# in the processes a test starts: the tests of what Ctrl-C does need it handled (a handler is not inherited)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# deterministic and database-less: the same examples on every run and machine
settings.register_profile(
    "govedge",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("govedge")

# what a test uses decides its markers: a developer's fast loop leaves these out
# (pytest -m "not e2e and not chain and not postgres"); make test runs everything
MARKER_OF_FIXTURE = {
    "broker": "e2e",  # a real Mosquitto
    "deployment": "e2e",  # govedge gateway run and a hub subscriber
    "wired": "e2e",  # a MicroPython node on a pseudo-terminal, the gateway's serial ingest at the other end
    "running": "e2e",  # the gateway service in a thread of the test, with real brokers (support.rig)
    "cabinet": "e2e",  # firmware nodes, gateway and brokers as processes, for the faults of a cabinet
    "browser": "e2e",  # headless Chromium (support.browser)
    "anvil": "chain",
    "postgres": "postgres",
}


def pytest_collection_modifyitems(items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in MARKER_OF_FIXTURE.items():
            if fixture in used:
                item.add_marker(marker)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.id:  # a store parametrized over both databases
            item.add_marker("postgres")


@pytest.fixture(scope="session")
def mpy_dir(tmp_path_factory) -> Path:
    """The firmware compiled by mpy-cross, alone in a directory: what a board's flash holds."""
    dest = tmp_path_factory.mktemp("mpy")
    firmware.compile_all(dest)
    return dest


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    """The firmware as a board gets it: .mpy files and main.py, umqtt.simple included."""
    dest = tmp_path_factory.mktemp("build")
    firmware.build(dest)
    return dest


@pytest.fixture(scope="session")
def micropython(mpy_dir):
    """Run a script under the MicroPython unix port with only the .mpy directory on its path."""

    def run(script: str, stdin: bytes | None = None, heap_kib: int | None = None) -> str:
        proc = firmware.run_micropython(script, path=[mpy_dir], heap_kib=heap_kib, stdin=stdin)
        if proc.returncode != 0:
            # the unix port prints uncaught tracebacks on stdout, warnings on stderr
            pytest.fail(
                "MicroPython exited with status %d\n--- stdout (tail) ---\n%s\n--- stderr ---\n%s"
                % (
                    proc.returncode,
                    proc.stdout.decode("utf-8", "replace")[-3000:],
                    proc.stderr.decode("utf-8", "replace")[-3000:],
                ),
                pytrace=False,
            )
        return proc.stdout.decode()

    return run


@pytest.fixture(scope="session")
def firmware_readings(micropython) -> dict[str, SignedReading]:
    """The READINGS, each signed in one MicroPython process from the .mpy firmware."""
    names = list(READINGS)
    cases = [
        [READINGS[n]["d"], READINGS[n]["device_id"], READINGS[n]["seq"], READINGS[n]["time"],
         READINGS[n]["measurements"]]
        for n in names
    ]
    script = MPY_PRELUDE + (
        "import reading, p256\n"
        "for d, dev, seq, t, ms in %s:\n"
        "    out(reading.signed_reading(d, dev, seq, t, ms))\n"
        "    out(p256.public_key(d))\n"
    ) % mpy_literal(cases)
    lines = hex_lines(micropython(script))
    assert len(lines) == 2 * len(names)
    return {
        n: SignedReading(message=lines[2 * i], public_key=lines[2 * i + 1], **READINGS[n])
        for i, n in enumerate(names)
    }


@pytest.fixture(autouse=True)
def no_secret_in_what_services_write():
    """After every test: no `govedge gateway run` or `hub run` it started wrote a password, a secret
    part of a URL or DSN, or a private key of its configuration to its log or status file."""
    CliProcess.started.clear()
    yield
    leaked = [line for process in CliProcess.started for line in process.leaked()]
    CliProcess.started.clear()
    assert not leaked, "secrets of a service's configuration in what it wrote:\n" + "\n".join(leaked)
