"""Annotated hex of a signed reading, in the style of RFC 8949 appendix A.

For people: technicians looking at a captured message, auditors, and
docs/FORMAT.md, whose example is produced by this module from a real message.
Only the layout is shown here; whether the message is valid is wire.verify's
business.
"""

from __future__ import annotations

import datetime

from govedge.core.wire import (
    HEADER_ALG, HEADER_KID, SENML_BASE_TIME, SENML_BOOL_VALUE, SENML_NAME,
    SENML_STRING_VALUE, SENML_UNIT, SENML_VALUE, SEQUENCE, TAG_COSE_SIGN1,
)

_COSE_HEADER = {HEADER_ALG: "alg", HEADER_KID: "kid"}
_SENML = {
    SENML_BASE_TIME: "bt (base time)", SENML_NAME: "n (name)", SENML_UNIT: "u (unit)",
    SENML_VALUE: "v (value)", SENML_STRING_VALUE: "vs (string value)",
    SENML_BOOL_VALUE: "vb (boolean value)", SEQUENCE: "sequence number",
}
_CONTENT = {"kid": "device id, UTF-8", "signature": "r || s, 32 bytes each"}
_SIMPLE = {20: "false", 21: "true", 22: "null", 23: "undefined"}


def _time(seconds: int) -> str:
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return "  " + stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Walker:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.lines: list[tuple[int, str, str]] = []

    def head(self):
        start = self.pos
        ib = self.data[self.pos]
        self.pos += 1
        major, info = ib >> 5, ib & 0x1F
        if info < 24:
            arg = info
        elif info <= 27:
            n = 1 << (info - 24)
            arg = int.from_bytes(self.data[self.pos:self.pos + n], "big")
            self.pos += n
        else:
            raise ValueError(f"cannot annotate CBOR initial byte 0x{ib:02x}")
        return start, major, info, arg

    def emit(self, start: int, depth: int, text: str):
        self.lines.append((depth, self.data[start:self.pos].hex(), text))

    def item(self, depth: int, labels: dict | None = None, context: str = ""):
        start, major, info, arg = self.head()
        if major == 0:
            note = _time(arg) if context == "bt" else ""
            self.emit(start, depth, f"unsigned({arg})" + note)
            return arg
        if major == 1:
            note = "  ES256" if context == "alg" and arg == 6 else ""
            self.emit(start, depth, f"negative({-1 - arg})" + note)
            return -1 - arg
        if major in (2, 3):
            kind = "bytes" if major == 2 else "text"
            self.emit(start, depth, f"{kind}({arg})" + (f"  {context}" if context else ""))
            body = self.data[self.pos:self.pos + arg]
            self.pos += arg
            if major == 3:
                self.lines.append((depth + 1, body.hex(), f'"{body.decode(errors="replace")}"'))
            elif context in ("protected", "payload"):
                inner = _Walker(body)
                inner.item(depth + 1, labels=_COSE_HEADER if context == "protected" else _SENML,
                           context="header map" if context == "protected" else "SenML pack")
                self.lines.extend(inner.lines)
            else:
                self.lines.append((depth + 1, body.hex(), _CONTENT.get(context, context)))
            return body if major == 2 else body.decode(errors="replace")
        if major == 4:
            self.emit(start, depth, f"array({arg})" + (f"  {context}" if context else ""))
            names = {"COSE_Sign1": ["protected", "unprotected", "payload", "signature"]}.get(context)
            for i in range(arg):
                sub = names[i] if names else ("SenML record" if context == "SenML pack" else "")
                self.item(depth + 1, labels=labels, context=sub)
            return None
        if major == 5:
            self.emit(start, depth, f"map({arg})" + (f"  {context}" if context else ""))
            for _ in range(arg):
                before = len(self.lines)
                key = self.item(depth + 1, labels=labels)
                if labels and key in labels:
                    d, h, t = self.lines[before]
                    self.lines[before] = (d, h, f"{t}  {labels[key]}")
                sub = {HEADER_ALG: "alg", HEADER_KID: "kid"}.get(key, "") if labels is _COSE_HEADER else ""
                if labels is _SENML and key == SENML_BASE_TIME:
                    sub = "bt"
                self.item(depth + 1, labels=labels, context=sub)
            return None
        if major == 6:
            what = {TAG_COSE_SIGN1: "COSE_Sign1", 4: "decimal fraction [exponent, mantissa]"}.get(arg, "")
            self.emit(start, depth, f"tag({arg})" + (f"  {what}" if what else ""))
            self.item(depth + 1, labels=labels, context="COSE_Sign1" if arg == TAG_COSE_SIGN1 else "")
            return None
        self.emit(start, depth, _SIMPLE.get(info, {25: "float16", 26: "float32", 27: "float64"}.get(info, "simple")))
        return None


def annotate(message: bytes) -> str:
    """The message as annotated hex, one data item per line."""
    w = _Walker(bytes(message))
    w.item(0)
    width = max(2 * d + min(len(h), 64) for d, h, _ in w.lines) + 2
    out = []
    for depth, hexstr, text in w.lines:
        # long byte strings (the signature) wrap at 32 bytes a line
        chunks = [hexstr[i:i + 64] for i in range(0, len(hexstr), 64)] or [""]
        for i, chunk in enumerate(chunks):
            left = "  " * depth + chunk
            out.append(f"{left:<{width}}# {text}" if i == 0 else "  " * depth + chunk)
    return "\n".join(out)
