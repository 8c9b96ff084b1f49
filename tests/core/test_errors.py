"""One base for every error the product raises (core/errors.py), and the one way an
exception's text becomes a bounded line."""

import importlib
import inspect
import pkgutil

import pytest

from govedge.core.errors import GovedgeError, internal_error, one_line, text_of

PACKAGES = ("govedge.core", "govedge.anchor", "govedge.gateway", "govedge.hub", "govedge.tools")
ON_BOARD = "govedge.tools.dev.sim."  # run beside firmware/ on a simulated board, not imported here


def product_modules():
    for name in PACKAGES:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            if not info.name.startswith(ON_BOARD):
                yield importlib.import_module(info.name)


def test_every_public_error_class_is_a_govedge_error():
    found, stray = [], []
    for module in product_modules():
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or name.startswith("_"):
                continue
            if issubclass(cls, BaseException):
                found.append(f"{module.__name__}.{name}")
                if not issubclass(cls, GovedgeError):
                    stray.append(f"{module.__name__}.{name}")
    assert len(found) >= 20, found
    assert not stray, f"error classes outside GovedgeError: {stray}"


def test_codes_and_reasons():
    from govedge.core.wire import WireError
    from govedge.core.proof import ProofError
    from govedge.tools.field.provision import ProvisionError

    err = WireError("bad_signature", "the signature does not verify")
    assert (err.code, err.reason, str(err)) == ("bad_signature", "the signature does not verify",
                                                "the signature does not verify")
    assert isinstance(err, ValueError)
    err = ProvisionError("no pin map for board 'x'")
    assert (err.code, err.reason) == ("provision", "no pin map for board 'x'")
    err = ProofError("batch_path", "the path does not lead to the root")
    assert (err.code, err.link, str(err)) == ("proof_failed", "batch_path",
                                              "batch_path: the path does not lead to the root")
    with pytest.raises(TypeError):
        GovedgeError()


def test_one_line_is_bounded_and_printable():
    assert one_line("a\n b\t\x00c", 100) == "a b ?c"
    assert one_line("x" * 1000, 20) == "x" * 17 + "..."
    assert len(one_line("y " * 100_000, 400)) == 400


def test_text_of_never_raises():
    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    assert text_of(Broken()) == "(its text cannot be shown)"
    assert internal_error(KeyError("k" * 500)) == ("internal_error", "KeyError: '" + "k" * 196 + "...")
