"""What of a URL, a DSN or a text may reach a log line, a status file, an error or a table.

One place for the rule, used by every part that names an endpoint in a message:

- ``url(u)``: a URL without its password and without the values of query parameters that
  carry secrets (``password``, ``token``, ``key``, ``apikey``, ``secret``, ``access_token``...).
- ``endpoint(u)``: an RPC endpoint: scheme, host and port only. Providers put API tokens in
  the path (``https://mainnet.example/v3/<token>``), so the path becomes ``/…``.
- ``dsn(d)``: a database DSN, in URL form (``postgresql://u:p@ss@host/db?password=...``)
  or in key=value form (``host=h password='x y'``).
- ``text(t, *known)``: free text (an exception's words) with every URL in it passed through
  ``url``, every ``password=...`` masked, and every secret part of the ``known`` URLs or
  DSNs (their password, path, query values) masked wherever it appears, even alone.

Nothing here raises: whatever comes in, a printable text comes out.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["MASK", "url", "endpoint", "dsn", "text", "secret_parts", "is_secret_name"]

MASK = "***"
PATH_MASK = "/…"

# parameter names whose values are secrets, compared in lower case with '-' as '_'
_SECRET_NAMES = {"password", "passwd", "pwd", "pass", "passphrase", "token", "key", "apikey", "api_key", "secret",
                 "access_token", "refresh_token", "id_token", "auth", "authorization", "sslpassword", "sslkey",
                 "credential", "credentials", "signature", "sig", "private_key", "client_secret", "session"}
_SECRET_ENDINGS = ("password", "passwd", "token", "secret", "key", "apikey", "credential", "credentials")

# scheme://userinfo@host[:port]: the userinfo runs to the last '@' before the host (a password may hold '@')
# (and may hold an unencoded '/': over-redacting a path with '@' in it is the safe mistake)
_AUTHORITY = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)"
                        r"(?:(?P<userinfo>[^?#]*)@(?=[A-Za-z0-9.\-_~%\[\]:]*(?:[/?#]|$)))?(?P<rest>.*)$", re.S)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{},;]+")
_KEY_VALUE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)(?P<eq>\s*=\s*)"
                        r"(?P<value>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s&,;]+)")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter or DSN key of this name carries a secret."""
    name = name.strip().lower().replace("-", "_")
    return name in _SECRET_NAMES or name.endswith(_SECRET_ENDINGS)


def _query(query: str) -> str:
    if not query:
        return ""
    parts = []
    for piece in query.split("&"):
        name, eq, _value = piece.partition("=")
        parts.append(f"{name}={MASK}" if eq and is_secret_name(unquote(name)) else piece)
    return "&".join(parts)


def url(u: str) -> str:
    """``u`` without its password and the values of secret query parameters; host, port, path kept."""
    u = str(u)
    m = _AUTHORITY.match(u)
    if not m:
        return _key_values(u)
    scheme, userinfo, rest = m["scheme"], m["userinfo"], m["rest"]
    if userinfo is not None:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:{MASK}@" if colon else f"{user}@"
    head, hashmark, fragment = rest.partition("#")
    head, qmark, query = head.partition("?")
    fragment = f"#{MASK}" if hashmark and fragment else hashmark
    return f"{scheme}{userinfo or ''}{head}{qmark}{_query(query)}{fragment}"


def endpoint(u: str) -> str:
    """An RPC endpoint as messages name it: scheme, host and port; the path (where providers put
    access tokens), the query and any userinfo are not shown."""
    u = str(u)
    m = _AUTHORITY.match(u)
    if not m:
        return MASK
    rest = m["rest"]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    host, tail = rest[:cut], rest[cut:]
    return f"{m['scheme']}{host}" + (PATH_MASK if tail.strip("/") else "")


def _key_values(d: str) -> str:
    def mask(m: re.Match) -> str:
        return f"{m['name']}{m['eq']}{MASK}" if is_secret_name(m["name"]) else m[0]

    return _KEY_VALUE.sub(mask, d)


def dsn(d: str) -> str:
    """A database DSN without its password: URL form (a password may hold '@'; ``?password=`` too)
    or libpq's key=value form."""
    d = str(d)
    return url(d) if _AUTHORITY.match(d) else _key_values(d)


def secret_parts(u: str, paths: bool = True) -> list[str]:
    """The pieces of a URL or DSN that must never be shown: its password, the values of its secret
    query parameters, and with ``paths`` (an endpoint) its long path segments; as written and decoded."""
    u = str(u)
    found: list[str] = []
    m = _AUTHORITY.match(u)
    if m:
        if m["userinfo"]:
            _user, _, password = m["userinfo"].partition(":")
            # a parser that splits at the first '@' (libpq) quotes the rest of the password as a host
            found += [password, *(password.split("@", i)[-1] for i in range(1, password.count("@") + 1))]
        rest = m["rest"].partition("#")[0]
        path_and_host, _, query = rest.partition("?")
        _host, slash, path = path_and_host.partition("/")
        if slash and paths:  # tokens are long; short segments ("v3", "rpc") would mask common words
            found += [segment for segment in path.split("/") if len(segment) >= 8]
        found += [value for name, value in _pairs(query) if value and is_secret_name(name)]
    else:
        found += [_unquoted(m["value"]) for m in _KEY_VALUE.finditer(u) if is_secret_name(m["name"])]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def _pairs(query: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(query, keep_blank_values=True)
    except ValueError:
        return []


def _unquoted(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def text(t: object, *known: str, paths: bool = True) -> str:
    """Free text with every URL in it redacted (``url``), every ``password=...`` masked, and every
    secret part of the ``known`` URLs and DSNs masked wherever it appears; with ``paths`` the known
    URLs are endpoints, whose paths are secret too (``paths=False`` for a DSN's database name)."""
    t = str(t)
    for u in known:
        if not u:
            continue
        u = str(u)
        if u in t:
            t = t.replace(u, endpoint(u) if paths and _AUTHORITY.match(u) else dsn(u))
        for secret in secret_parts(u, paths):
            for form in {secret, quote(secret, safe="")}:
                t = t.replace(form, MASK)
    t = _URL_IN_TEXT.sub(lambda m: url(m[0]), t)
    return _key_values(t)
