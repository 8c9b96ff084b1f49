"""The SensorThings API's query options: ``$filter``, ``$select``, ``$expand``, ``$orderby``, ``$top``,
``$skip``, ``$count``, ``$resultFormat`` (OGC SensorThings API 1.1 §9.3, on OData 4.01 URL conventions §5.1).

``parse(options)`` turns a request's query parameters into a ``Query``; ``evaluate``/``matches`` apply a
parsed ``$filter`` to one entity (its properties through a ``resolve(path)`` callback); ``pushdown`` hands
the part of a filter SQL can decide exactly to the store and leaves the rest to ``evaluate``;
``orderby_sql`` does the same for ``$orderby``. Every error is a ``QueryError`` whose text names the option
(the server answers HTTP 400 with it).

$filter is parsed by odata-query's OData grammar (``odata_query.grammar``), its function table widened by
SensorThings' own functions (``FUNCTIONS``). What evaluate() does:

- comparison ``eq ne gt ge lt le``, ``in (…)`` lists; logical ``and or not`` (three-valued: ``null and
  false`` is false, ``null or true`` is true, a filter whose value is null or false does not match);
  arithmetic ``add sub mul div mod`` and unary ``-`` (integers: ``div`` truncates toward zero and ``mod``
  has the sign of the dividend; division by zero gives null);
- null: a comparison with null is false, except ``eq null`` (true for null) and ``ne null``; ``ne`` is
  ``not eq`` (intervals aside: below), so ``null ne 5`` is true. A function with a null argument gives null;
- types: numbers (int, float, Decimal) compare by decimal value, a float as the decimal it prints as (its
  shortest repr: 21.41 stored as a double equals the literal 21.41); literals with a fraction or exponent
  are read exactly (Decimal). Strings compare by code point. Values of different types are not equal
  (``eq`` false, ``ne`` true, ordering false): ``result gt 5`` is false for a string result, not an error;
  a function given a value of the wrong type gives null;
- time: datetime literals (``2024-01-01T00:00:00Z``, ``…+02:00``; one without an offset is UTC) compare with
  timezone-aware datetimes; date literals with ``date()``, time literals with ``time()``; durations
  (``duration'P1DT2H'``: days, hours, minutes, seconds) add to and subtract from datetimes;
  a datetime minus a datetime is a duration;
- time intervals (start, end), half-open as phenomenonTime and validTime are, compared as FROST-Server
  compares them. Interval (s, e) against an instant t: ``eq`` s = t and e = t; ``ne`` s ≠ t and e ≠ t;
  ``gt`` s > t; ``ge`` s ≥ t; ``lt`` e ≤ t and s < t; ``le`` e ≤ t. Against an interval (s2, e2):
  ``eq`` s = s2 and e = e2; ``ne`` s ≠ s2 and e ≠ e2; ``gt`` s ≥ e2 and s > s2; ``ge`` s ≥ s2 and e ≥ e2;
  ``lt`` e ≤ s2 and s < s2; ``le`` s ≤ s2 and e ≤ e2. An instant on the left is compared with the
  operator turned round (t lt I is I gt t). ``year()`` and the other parts of an interval are its start's;
- functions: substringof (SensorThings: true if the first is in the second), contains, startswith,
  endswith, length, indexof, substring, tolower, toupper, trim, concat; year month day hour minute second
  fractionalseconds date time totaloffsetminutes totalseconds now mindatetime maxdatetime; round (half
  away from zero) floor ceiling;
- geometry, planar in the coordinates' units (degrees for WGS 84, as FROST-Server computes): GeoJSON values
  (Point, LineString, Polygon with holes, or a Feature of one) and ``geography'POINT(7 51)'``,
  ``'LINESTRING(…)'``, ``'POLYGON((…),(…))'`` literals (WKT, x y = lon lat; an ``SRID=4326;`` prefix is
  read and ignored). geo.distance (the least distance, 0 when they meet), geo.length (of a LineString),
  geo.intersects and st_intersects, st_disjoint for any two of them; st_within and st_contains for a
  point in anything and a line or polygon in a polygon; st_touches for a point and a line or polygon;
  st_equals (points equal; lines the same vertices, either way round; polygons the same rings from any
  start, either way round). A polygon's edge is its boundary: a point on it intersects and touches the
  polygon but is not within it. Coordinates are doubles: a point within rounding of an edge may fall
  either side of it.

Not supported (a QueryError "… not supported"): ``any``/``all`` lambdas, matchesPattern (a user's regular
expression is a denial of service away), hassubset, hassubsequence, st_overlaps, st_crosses, st_relate,
the Multi* geometries and GeometryCollection, st_within/st_contains/st_touches for the pairs not named
above, durations in years or months (not a fixed length). $orderby takes property paths, not expressions;
$select property names, not ``distinct:``.

What goes to SQL (pushdown; the rest stays for evaluate()): in the filter's top-level ``and``, the terms
(and ``and``/``or`` of them) of these forms: a column compared with a literal of its kind (a number of at
most 15 significant digits, a string, true/false, a datetime; ``eq null``/``ne null``), a result with a
number, a string or true/false; ``in`` lists of such literals; year() month() day() hour() minute()
second() of a time column, length() and indexof() of a text column, compared with a whole number;
contains() startswith() endswith() substringof() of a text column and a string; a boolean column alone.
Not: ``not``, arithmetic, the other functions, geometry, two columns compared, paths without a column.

Limits against hostile requests: a filter nests at most 200 levels (a chain of 199 ``or``: use ``in``),
$expand at most 20; $top and $skip are at most 2**63 - 1.

Parser notes: keywords must stand between spaces as OData says (``a eq 1 and(b eq 2)`` is a syntax error);
``not(…)`` is read as ``not (…)``; property names that begin with a keyword (``allowed``, ``trueValue``)
are names, not the keyword.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Callable, Mapping

from odata_query import ast, exceptions as odata_errors
from odata_query.grammar import ODATA_FUNCTIONS, ODataLexer, ODataParser

from govedge.core.errors import GovedgeError


class QueryError(GovedgeError, ValueError):
    """A query option the hub cannot follow: the text names the option and what is wrong with it."""

    code = "bad_query"


OPTIONS = ("$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count", "$resultFormat")
RESULT_FORMATS = ("dataArray",)  # the Data Array extension (SensorThings 1.1 §14.3)

# function name -> argument count, or (least, most): OData 4.01 §5.1.1.5-11 and SensorThings 1.1 §9.3.3.5.2
FUNCTIONS: dict[str, int | tuple[int, int]] = {
    **ODATA_FUNCTIONS,
    "substringof": 2,
    "st_equals": 2, "st_disjoint": 2, "st_touches": 2, "st_within": 2, "st_overlaps": 2, "st_crosses": 2,
    "st_intersects": 2, "st_contains": 2, "st_relate": 3,
    "geo.distance": 2, "geo.length": 1, "geo.intersects": 2,
}
NOT_SUPPORTED = {"matchesPattern", "hassubset", "hassubsequence", "st_overlaps", "st_crosses", "st_relate"}


# ---------------------------------------------------------------------------------------------- the options

@dataclass(frozen=True)
class Query:
    filter: object | None = None  # the parsed AST (odata_query.ast node), or None
    orderby: tuple[tuple[tuple[str, ...], bool], ...] = ()  # ((path, descending), ...)
    select: tuple[str, ...] | None = None
    expand: tuple["Expand", ...] = ()
    top: int | None = None
    skip: int = 0
    count: bool = False
    result_format: str | None = None


@dataclass(frozen=True)
class Expand:
    path: tuple[str, ...]  # ("Datastream", "Thing") for $expand=Datastream/Thing: the server walks it
    query: Query = field(default_factory=Query)  # its nested options


_WHOLE = re.compile(r"\d+")
_NAME = re.compile(r"[A-Za-z_@][\w@.]*")
_PATH = re.compile(r"[A-Za-z_@][\w@.]*(?:/[A-Za-z_@][\w@.]*)*")


# nesting: an attacker's 5000 levels would exhaust the stack of the code that walks them
MAX_DEPTH = 200  # of a filter's syntax tree (a chain of 199 'or' is 200 levels)
MAX_EXPAND_DEPTH = 20  # of $expand in $expand
MAX_WHOLE = 2**63 - 1  # $top and $skip go to SQL's LIMIT and OFFSET: a 64-bit integer


def parse(options: Mapping[str, str]) -> Query:
    """The request's query parameters as a Query; those not starting with '$' are not ours and ignored."""
    return _parse(options, 0)


def _parse(options: Mapping[str, str], depth: int) -> Query:
    unknown = [k for k in options if k.startswith("$") and k not in OPTIONS]
    if unknown:
        raise QueryError(f"unknown query option {unknown[0]}; the options are {', '.join(OPTIONS)}")
    kw = {}
    if (text := options.get("$filter")) is not None:
        kw["filter"] = parse_filter(text)
    if (text := options.get("$orderby")) is not None:
        kw["orderby"] = _orderby(text)
    if (text := options.get("$select")) is not None:
        kw["select"] = _select(text)
    if (text := options.get("$expand")) is not None:
        if depth >= MAX_EXPAND_DEPTH:
            raise QueryError(f"$expand: nested deeper than {MAX_EXPAND_DEPTH} levels")
        kw["expand"] = tuple(_expand_item(item, depth) for item in _split(text, ",", "$expand"))
    if (text := options.get("$top")) is not None:
        kw["top"] = _whole("$top", text)
    if (text := options.get("$skip")) is not None:
        kw["skip"] = _whole("$skip", text)
    if (text := options.get("$count")) is not None:
        if text not in ("true", "false"):
            raise QueryError(f"$count: {text!r} is neither true nor false")
        kw["count"] = text == "true"
    if (text := options.get("$resultFormat")) is not None:
        if text not in RESULT_FORMATS:
            raise QueryError(f"$resultFormat: {text!r} is not a result format; the one there is: dataArray")
        kw["result_format"] = text
    return Query(**kw)


def _whole(option: str, text: str) -> int:
    if not _WHOLE.fullmatch(text):
        raise QueryError(f"{option}: {text[:40]!r} is not a whole number")
    if len(text) > 19 or int(text) > MAX_WHOLE:
        raise QueryError(f"{option}: {text[:40]} is more than {MAX_WHOLE}")
    return int(text)


def _select(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    for n in names:
        if not _NAME.fullmatch(n):
            raise QueryError(f"$select: {n!r} is not a property name")
    return names


def _orderby(text: str) -> tuple[tuple[tuple[str, ...], bool], ...]:
    items = []
    for item in text.split(","):
        words = item.split()
        direction = [w.lower() for w in words[1:]]  # clients write ASC and DESC too (FROST-Server's)
        if not 1 <= len(words) <= 2 or not _PATH.fullmatch(words[0]) or direction not in ([], ["asc"], ["desc"]):
            raise QueryError(f"$orderby: {item.strip()!r} is not a property path optionally followed by asc or desc")
        items.append((tuple(words[0].split("/")), direction == ["desc"]))
    return tuple(items)


def _split(text: str, separator: str, option: str) -> list[str]:
    """``text`` split at ``separator`` where it stands outside parentheses and quoted strings ('it''s')."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(text):
        if c == "'":
            quoted = not quoted  # '' inside a string closes and opens again: the same outcome
        elif quoted:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise QueryError(f"{option}: a ')' without its '(' at position {i + 1}")
        elif c == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise QueryError(f"{option}: a quoted string is not closed")
    if depth:
        raise QueryError(f"{option}: a '(' is not closed")
    parts.append(text[start:])
    return parts


def _expand_item(item: str, depth: int) -> Expand:
    item = item.strip()
    head, paren, rest = item.partition("(")
    head = head.strip()
    if not _PATH.fullmatch(head):
        raise QueryError(f"$expand: {item!r} is not a navigation path (Datastreams, Datastream/Thing, …) "
                         "optionally followed by (options)")
    path = tuple(head.split("/"))
    if not paren:
        return Expand(path, Query())
    if not rest.endswith(")"):
        raise QueryError(f"$expand: {head}: text after its options' ')'")
    nested: dict[str, str] = {}
    for option in _split(rest[:-1], ";", f"$expand={head}"):
        key, eq, value = option.partition("=")
        key = key.strip()
        key = key if key.startswith("$") else "$" + key  # OData 4.01 lets nested options drop the '$'
        if not eq:
            raise QueryError(f"$expand={head}: {option.strip()!r} is not an option=value")
        if key in nested:
            raise QueryError(f"$expand={head}: {key} given twice")
        nested[key] = value
    try:
        return Expand(path, _parse(nested, depth + 1))
    except QueryError as e:
        raise QueryError(f"$expand={head}: {e}") from None


# ------------------------------------------------------------------------------------------------- $filter

class _Parser(ODataParser):
    """odata-query's grammar with SensorThings' function table (FUNCTIONS) instead of OData's."""

    @classmethod
    def _build(cls, definitions):
        pass  # sly builds a parser class's tables from its rules: ours are the base class's, built with it

    def _function_call(self, func: ast.Identifier, args: list):
        name = func.full_name()
        if name == "not" and len(args) == 1:  # not(a eq 1): the lexer wants a space after 'not'
            return ast.UnaryOp(ast.Not(), args[0])
        if name not in FUNCTIONS:
            raise QueryError(f"$filter: unknown function {name!r}")
        least, most = (FUNCTIONS[name],) * 2 if isinstance(FUNCTIONS[name], int) else FUNCTIONS[name]
        if not least <= len(args) <= most:
            count = least if least == most else f"{least} to {most}"
            raise QueryError(f"$filter: {name} takes {count} argument{'s' * (most != 1)}, not {len(args)}")
        return ast.Call(func, args)


_IDENTIFIER = re.compile(r"[_a-z](?:\.?\w){0,127}", re.I)  # the lexer's ODATA_IDENTIFIER
_KEYWORDS = {"BOOLEAN", "NULL", "ANY", "ALL"}  # tokens the lexer takes from the start of a longer name
_KEYWORD = re.compile(r"true|false|null|any|all", re.I)


def _tokens(text: str):
    """The lexer's tokens, a name that starts with a keyword (allowed, nullable, trueValue) one name."""
    skip_to = 0
    for token in ODataLexer().tokenize(text):
        if token.index < skip_to:
            continue
        if token.type in _KEYWORDS:
            name, keyword = _IDENTIFIER.match(text, token.index), _KEYWORD.match(text, token.index)
            if name and keyword and name.end() > keyword.end():
                *ns, last = name.group().split(".")
                token.type, token.value = "ODATA_IDENTIFIER", ast.Identifier(last, tuple(ns))
                skip_to = name.end()
        yield token


def parse_filter(text: str) -> object:
    """The filter's syntax tree (odata_query.ast); QueryError for what is not a filter the hub evaluates."""
    text = text.strip()  # the lexer takes no space before or after the expression
    if not text:
        raise QueryError("$filter: empty")
    try:
        tree = _Parser().parse(_tokens(text))  # sly keeps a parse's state in the parser: one per call, per thread
        if _depth(tree) > MAX_DEPTH:
            raise QueryError(f"$filter: nested deeper than {MAX_DEPTH} levels")
    except RecursionError:  # the parser's own path handling recurses: a/b/c/… thousands of names long
        raise QueryError(f"$filter: nested deeper than {MAX_DEPTH} levels") from None
    except odata_errors.TokenizingException as e:
        raise QueryError(f"$filter: cannot read {text[e.token.index:e.token.index + 20]!r} "
                         f"at position {e.token.index + 1}") from None
    except odata_errors.ParsingException as e:
        if e.eof or e.token is None:
            raise QueryError("$filter: the expression ends too early") from None
        raise QueryError(f"$filter: syntax error at position {e.token.index + 1}: "
                         f"{text[e.token.index:e.token.index + 20]!r}") from None
    _check(tree)
    return tree


def _depth(tree) -> int:
    """How deep the tree is, counted without recursion (evaluate() recurses: its depth is bounded first)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            stack += [(child, depth + 1) for child in _children(node)]
        if isinstance(node, ast.Attribute):
            stack.append((node.owner, depth + 1))
    return deepest


def _check(node) -> None:
    """What parses but the hub does not evaluate, refused before any entity is read."""
    if isinstance(node, ast.CollectionLambda):
        raise QueryError(f"$filter: any/all over {_path_text(node.owner)} is not supported")
    if isinstance(node, ast.Call) and node.func.full_name() in NOT_SUPPORTED:
        raise QueryError(f"$filter: function {node.func.full_name()!r} is not supported")
    if isinstance(node, ast.NamedParam):
        raise QueryError(f"$filter: named parameters ({node.name.name}=…) are not supported")
    if isinstance(node, (ast.GUID,)):
        raise QueryError("$filter: GUID literals are not supported")
    if isinstance(node, ast.Geography):
        _geometry_of_wkt(node.val)
    elif isinstance(node, (ast.DateTime, ast.Date, ast.Time, ast.Duration)):
        _literal(node)
    for child in _children(node):
        _check(child)


def _children(node) -> list:
    if isinstance(node, (ast.BinOp, ast.Compare, ast.BoolOp)):
        return [node.left, node.right]
    if isinstance(node, ast.UnaryOp):
        return [node.operand]
    if isinstance(node, ast.Call):
        return list(node.args)
    if isinstance(node, ast.List):
        return list(node.val)
    return []


def _path_text(node) -> str:
    return "/".join(_path(node) or ("?",))


def _path(node) -> tuple[str, ...] | None:
    """The property path a node names: name, properties/place, Datastream/Thing/name."""
    if isinstance(node, ast.Identifier):
        return (node.full_name(),)
    if isinstance(node, ast.Attribute):
        owner = _path(node.owner)
        return None if owner is None else (*owner, node.attr)
    return None


# ----------------------------------------------------------------------------------------------- literals

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_DATETIME = datetime.min.replace(tzinfo=UTC)
MAX_DATETIME = datetime.max.replace(tzinfo=UTC)
_DURATION = re.compile(r"([+-])?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", re.I)


def _duration(node: ast.Duration) -> timedelta:
    m = _DURATION.fullmatch(node.val)
    if not m:  # Edm.Duration is days to seconds (OData 4.01 ABNF durationValue): a year is no fixed length
        raise QueryError(f"$filter: duration'{node.val}': only days, hours, minutes and seconds are supported")
    sign, days, hours, minutes, seconds = m.groups()
    delta = timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                      seconds=float(Decimal(seconds or 0)))
    return -delta if sign == "-" else delta


def _literal(node):
    """A literal's Python value: numbers exact (int, Decimal), datetimes aware (UTC when none is given)."""
    try:
        if isinstance(node, ast.Null):
            return None
        if isinstance(node, ast.Boolean):
            return node.py_val
        if isinstance(node, ast.Integer):
            return int(node.val)
        if isinstance(node, ast.Float):
            return Decimal(node.val)
        if isinstance(node, ast.String):
            return node.val
        if isinstance(node, ast.DateTime):
            value = node.py_val
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(node, (ast.Date, ast.Time)):
            return node.py_val
        if isinstance(node, ast.Duration):
            return _duration(node)
        if isinstance(node, ast.Geography):
            return _geometry_of_wkt(node.val)
    except QueryError:
        raise
    except (ValueError, OverflowError) as e:
        raise QueryError(f"$filter: {getattr(node, 'val', node)!r} is not a valid literal ({e})") from None
    raise QueryError(f"$filter: {type(node).__name__} literals are not supported")


# ---------------------------------------------------------------------------------------------- evaluate

def matches(expr, resolve: Callable[[tuple[str, ...]], object], now: datetime | None = None) -> bool:
    """Whether the filter holds for the entity (null and false: it does not)."""
    return evaluate(expr, resolve, now) is True


def evaluate(expr, resolve: Callable[[tuple[str, ...]], object], now: datetime | None = None) -> object:
    """The filter's (or a term's) value for one entity; ``resolve(path)`` gives its properties and raises
    KeyError for a path it does not have."""
    return _Evaluation(resolve, now or datetime.now(UTC)).value(expr)


class _Evaluation:
    def __init__(self, resolve, now: datetime):
        self.resolve, self.now = resolve, now

    def value(self, node):
        if isinstance(node, ast._Literal):
            if isinstance(node, ast.List):
                return [self.value(v) for v in node.val]
            return _literal(node)
        if isinstance(node, (ast.Identifier, ast.Attribute)):
            path = _path(node)
            if path is None:
                raise QueryError(f"$filter: {node!r} is not a property path")
            try:
                return self.resolve(path)
            except KeyError:
                raise QueryError(f"$filter: unknown property {'/'.join(path)!r}") from None
        if isinstance(node, ast.Compare):
            left, right = self.value(node.left), self.value(node.right)
            if isinstance(node.comparator, ast.In):
                return any(compare(ast.Eq(), left, item) for item in right)
            return compare(node.comparator, left, right)
        if isinstance(node, ast.BoolOp):
            left = _truth(self.value(node.left))
            if isinstance(node.op, ast.And):
                return False if left is False else _and(left, _truth(self.value(node.right)))
            return True if left is True else _or(left, _truth(self.value(node.right)))
        if isinstance(node, ast.UnaryOp):
            operand = self.value(node.operand)
            if isinstance(node.op, ast.Not):
                operand = _truth(operand)
                return None if operand is None else not operand
            return _negate(operand)
        if isinstance(node, ast.BinOp):
            return arithmetic(node.op, self.value(node.left), self.value(node.right))
        if isinstance(node, ast.Call):
            name = node.func.full_name()
            if name in NOT_SUPPORTED:
                raise QueryError(f"$filter: function {name!r} is not supported")
            args = [self.value(a) for a in node.args]
            if name in ("now", "mindatetime", "maxdatetime"):
                return {"now": self.now, "mindatetime": MIN_DATETIME, "maxdatetime": MAX_DATETIME}[name]
            if any(a is None for a in args):
                return None
            return CALLS[name](*args)
        if isinstance(node, ast.CollectionLambda):
            raise QueryError(f"$filter: any/all over {_path_text(node.owner)} is not supported")
        raise QueryError(f"$filter: {type(node).__name__} is not supported")


def _truth(value):
    return value if isinstance(value, bool) else None  # a non-boolean operand of and/or/not counts as null


def _and(a, b):
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a, b):
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _kind(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float, Decimal)):
        return "number"
    if isinstance(v, datetime):
        return "datetime"
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, datetime) for x in v):
        return "interval"
    for kind, types in (("str", str), ("date", date), ("time", time), ("duration", timedelta), ("json", dict),
                        ("list", list)):
        if isinstance(v, types):
            return kind
    return type(v).__name__


def _decimal(v):
    """A number as its exact decimal: a float as the decimal it prints as."""
    return Decimal(repr(v)) if isinstance(v, float) else v


_FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq}
_ORDER = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
          ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}


def compare(op, a, b) -> bool:
    """``a op b`` with OData's null rule, numbers by decimal value, intervals as FROST-Server compares them."""
    op = type(op)
    if a is None or b is None:
        return {ast.Eq: a is b, ast.NotEq: a is not b}.get(op, False)
    ka, kb = _kind(a), _kind(b)
    if "interval" in (ka, kb):
        if ka != "interval":
            return compare(_FLIP[op](), b, a)
        if kb not in ("interval", "datetime"):
            return op is ast.NotEq
        return _interval(op, a, b)
    if ka != kb or ka == "list":
        return op is ast.NotEq
    if ka in ("json", "bool") and op not in (ast.Eq, ast.NotEq):
        return False
    if ka == "number":
        a, b = _decimal(a), _decimal(b)
        if any(isinstance(x, Decimal) and x.is_nan() for x in (a, b)):
            return op is ast.NotEq
    return _ORDER[op](a, b)


def _interval(op, a: tuple, b) -> bool:
    s, e = a
    if isinstance(b, datetime):
        rules = {ast.Eq: s == b and e == b, ast.NotEq: s != b and e != b, ast.Gt: s > b, ast.GtE: s >= b,
                 ast.Lt: e <= b and s < b, ast.LtE: e <= b}
    else:
        s2, e2 = b
        rules = {ast.Eq: s == s2 and e == e2, ast.NotEq: s != s2 and e != e2, ast.Gt: s >= e2 and s > s2,
                 ast.GtE: s >= s2 and e >= e2, ast.Lt: e <= s2 and s < s2, ast.LtE: s <= s2 and e <= e2}
    return rules[op]


def _negate(v):
    if _kind(v) == "number":
        return -_decimal(v)
    if isinstance(v, timedelta):
        return -v
    return None


def arithmetic(op, a, b):
    """``a op b`` (add sub mul div mod); null when either is null, the types do not fit, or b is 0 for div/mod."""
    if a is None or b is None:
        return None
    ka, kb, op = _kind(a), _kind(b), type(op)
    if ka == kb == "number":
        a, b = _decimal(a), _decimal(b)
        try:
            if op is ast.Add:
                return a + b
            if op is ast.Sub:
                return a - b
            if op is ast.Mult:
                return a * b
            if b == 0:
                return None
            if isinstance(a, int) and isinstance(b, int):  # integer division truncates toward zero (OData 4.01)
                q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
                return q if op is ast.Div else a - b * q
            a, b = Decimal(a), Decimal(b)
            return a / b if op is ast.Div else a % b  # Decimal's % has the dividend's sign
        except (InvalidOperation, ArithmeticError):
            return None
    if op in (ast.Add, ast.Sub) and kb == "duration":
        if ka in ("datetime", "duration"):
            return _shift(a, b, op)
        if ka == "interval":
            return (_shift(a[0], b, op), _shift(a[1], b, op))
    if op is ast.Sub and ka == kb == "datetime":
        return a - b
    return None


def _shift(a, delta: timedelta, op):
    try:
        return a + delta if op is ast.Add else a - delta
    except OverflowError:
        return None


# ------------------------------------------------------------------------------------------------ functions

def _text(f):
    """A string function: null unless every argument is a string."""
    return lambda *args: f(*args) if all(isinstance(a, str) for a in args) else None


def _substring(s, start, length=None):
    if not isinstance(s, str) or _kind(start) != "number" or (length is not None and _kind(length) != "number"):
        return None
    start = int(min(max(start, 0), len(s)))  # clamped before int(): 1e999999999 would be a huge int
    return s[start:] if length is None else s[start:start + int(min(max(length, 0), len(s)))]


def _part(f, *kinds):
    """A date/time function: an interval's part is its start's; null for a value of another type."""
    def call(v):
        if _kind(v) == "interval":
            v = v[0]
        return f(v) if _kind(v) in kinds else None
    return call


def _rounding(f):
    def call(v):
        if _kind(v) != "number":
            return None
        d = _decimal(v) if isinstance(v, float) else Decimal(v)
        if not d.is_finite() or d.adjusted() > 100:  # infinity, NaN; 1e999999999 would be a huge int
            return None
        return f(d)
    return call


CALLS: dict[str, Callable] = {
    # OData 4.01 §5.1.1.7 string functions; substringof is SensorThings 1.1's (§9.3.3.5.2)
    "substringof": _text(lambda a, b: a in b),
    "contains": _text(lambda a, b: b in a),
    "startswith": _text(lambda a, b: a.startswith(b)),
    "endswith": _text(lambda a, b: a.endswith(b)),
    "length": _text(len),
    "indexof": _text(lambda a, b: a.find(b)),
    "substring": _substring,
    "tolower": _text(str.lower),
    "toupper": _text(str.upper),
    "trim": _text(str.strip),
    "concat": _text(lambda a, b: a + b),
    # §5.1.1.8 date and time functions (now, mindatetime, maxdatetime: in _Evaluation)
    "year": _part(lambda v: v.year, "datetime", "date"),
    "month": _part(lambda v: v.month, "datetime", "date"),
    "day": _part(lambda v: v.day, "datetime", "date"),
    "hour": _part(lambda v: v.hour, "datetime", "time"),
    "minute": _part(lambda v: v.minute, "datetime", "time"),
    "second": _part(lambda v: v.second, "datetime", "time"),
    "fractionalseconds": _part(lambda v: Decimal(v.microsecond) / 10**6, "datetime", "time"),
    "date": _part(lambda v: v.date(), "datetime"),
    "time": _part(lambda v: v.time(), "datetime"),
    "totaloffsetminutes": _part(lambda v: int(v.utcoffset().total_seconds()) // 60, "datetime"),
    "totalseconds": lambda v: (Decimal(v // timedelta(microseconds=1)) / 10**6
                               if isinstance(v, timedelta) else None),
    # §5.1.1.9 arithmetic functions: round half away from zero
    "round": _rounding(lambda d: int(d.quantize(Decimal(1), rounding=ROUND_HALF_UP))),
    "floor": _rounding(math.floor),
    "ceiling": _rounding(math.ceil),
    # §5.1.1.10 geo functions and SensorThings 1.1's st_* (planar: see the module's text)
    "geo.distance": lambda a, b: _geo(a, b, _distance),
    "geo.length": lambda a: _length(_shape(a)) if _shape(a) else None,
    "geo.intersects": lambda a, b: _geo(a, b, _intersects),
    "st_intersects": lambda a, b: _geo(a, b, _intersects),
    "st_disjoint": lambda a, b: _geo(a, b, lambda p, q: not _intersects(p, q)),
    "st_within": lambda a, b: _geo(a, b, _within),
    "st_contains": lambda a, b: _geo(a, b, lambda p, q: _within(q, p)),
    "st_touches": lambda a, b: _geo(a, b, _touches),
    "st_equals": lambda a, b: _geo(a, b, _equals),
}


# ------------------------------------------------------------------------------------------------- geometry
# A shape is (kind, coordinates): ("Point", (x, y)), ("LineString", [(x, y), ...]), ("Polygon", [ring, ...])
# with each ring closed (its last vertex its first) and the first ring the outer one.

_WKT = re.compile(r"\s*(?:SRID=\d+;)?\s*(POINT|LINESTRING|POLYGON)\s*(\(.*\))\s*", re.I | re.S)
_WKT_TOKEN = re.compile(r"\s*(\(|\)|,|[-+0-9.eE]+(?:\s+[-+0-9.eE]+)+)")


def _geometry_of_wkt(text: str) -> dict:
    """A WKT literal as the GeoJSON geometry it names (lon lat order, as both write it)."""
    m = _WKT.fullmatch(text)
    if not m:
        raise QueryError(f"$filter: geography'{text[:40]}' is not a POINT, LINESTRING or POLYGON "
                         "(the Multi* geometries are not supported)")
    kind = {"POINT": "Point", "LINESTRING": "LineString", "POLYGON": "Polygon"}[m[1].upper()]
    tokens, body = [], m[2]
    pos = 0
    while pos < len(body):
        t = _WKT_TOKEN.match(body, pos)
        if not t:
            raise QueryError(f"$filter: geography'{text[:40]}': cannot read {body[pos:pos + 10]!r}")
        tokens.append(t[1])
        pos = t.end()
    try:
        nested, rest = _wkt_group(tokens, 0)
        if rest != len(tokens):
            raise ValueError("text after the coordinates")
        coordinates = {"Point": lambda n: _one(n), "LineString": lambda n: n,
                       "Polygon": lambda n: n}[kind](nested)
        geometry = {"type": kind, "coordinates": coordinates}
        _shape(geometry, strict=True)
    except (ValueError, IndexError, TypeError) as e:
        raise QueryError(f"$filter: geography'{text[:40]}' is not a valid {m[1].upper()} ({e})") from None
    return geometry


def _one(items: list):
    if len(items) != 1 or not isinstance(items[0], list) or isinstance(items[0][0], list):
        raise ValueError("a POINT has one coordinate pair")
    return items[0]


def _wkt_group(tokens: list[str], i: int) -> tuple[list, int]:
    if tokens[i] != "(":
        raise ValueError("'(' expected")
    items, i = [], i + 1
    while True:
        if tokens[i] == "(":
            item, i = _wkt_group(tokens, i)
        else:
            item, i = [float(x) for x in tokens[i].split()][:2], i + 1
        items.append(item)
        if tokens[i] == ")":
            return items, i + 1
        if tokens[i] != ",":
            raise ValueError("',' or ')' expected")
        i += 1


def _point(c) -> tuple[float, float]:
    if not isinstance(c, (list, tuple)) or len(c) < 2 or _kind(c[0]) != "number" or _kind(c[1]) != "number":
        raise ValueError(f"{c!r} is not a coordinate pair")
    return float(c[0]), float(c[1])


def _shape(value, strict: bool = False):
    """A GeoJSON geometry (or Feature of one) as a shape; None for anything else (or ValueError: ``strict``)."""
    try:
        if isinstance(value, dict) and value.get("type") == "Feature":
            value = value.get("geometry")
        kind = value.get("type") if isinstance(value, dict) else None
        c = value.get("coordinates") if kind else None
        if kind == "Point":
            return kind, _point(c)
        if kind == "LineString":
            line = [_point(p) for p in c]
            if len(line) < 2:
                raise ValueError("a LineString has two points or more")
            return kind, line
        if kind == "Polygon":
            rings = []
            for ring in c:
                ring = [_point(p) for p in ring]
                if ring[0] != ring[-1]:
                    ring.append(ring[0])
                if len(ring) < 4:
                    raise ValueError("a polygon's ring has three corners or more")
                rings.append(ring)
            if not rings:
                raise ValueError("a Polygon has a ring")
            return kind, rings
        if kind in ("MultiPoint", "MultiLineString", "MultiPolygon", "GeometryCollection"):
            raise QueryError(f"$filter: {kind} values are not supported")
        raise ValueError(f"{str(value)[:40]} is not a GeoJSON Point, LineString or Polygon")
    except QueryError:
        raise
    except (ValueError, TypeError, IndexError):
        if strict:
            raise
        return None


def _geo(a, b, predicate):
    p, q = _shape(a), _shape(b)
    return None if p is None or q is None else predicate(p, q)


def _vertices(s) -> list:
    kind, c = s
    return [c] if kind == "Point" else c if kind == "LineString" else [v for ring in c for v in ring[:-1]]


def _segments(s) -> list:
    kind, c = s
    if kind == "Point":
        return [(c, c)]
    lines = [c] if kind == "LineString" else c
    return [(line[i], line[i + 1]) for line in lines for i in range(len(line) - 1)]


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p, a, b) -> bool:
    return (_cross(a, b, p) == 0 and min(a[0], b[0]) <= p[0] <= max(a[0], b[0])
            and min(a[1], b[1]) <= p[1] <= max(a[1], b[1]))


def _segments_meet(a, b, c, d) -> bool:
    d1, d2, d3, d4 = _cross(c, d, a), _cross(c, d, b), _cross(a, b, c), _cross(a, b, d)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return _on_segment(a, c, d) or _on_segment(b, c, d) or _on_segment(c, a, b) or _on_segment(d, a, b)


def _locate(p, polygon) -> str:
    """'interior', 'boundary' or 'exterior' of a point and a polygon's rings (crossing number, holes out)."""
    inside = False
    for n, ring in enumerate(polygon):
        crossings = False
        for a, b in zip(ring, ring[1:]):
            if _on_segment(p, a, b):
                return "boundary"
            if (a[1] > p[1]) != (b[1] > p[1]) and p[0] < a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1]):
                crossings = not crossings
        if n == 0:
            inside = crossings
        elif crossings:
            inside = False
    return "interior" if inside else "exterior"


def _where(p, s) -> str:
    """Where a point lies against a shape: 'interior', 'boundary' or 'exterior' (OGC's DE-9IM words)."""
    kind, c = s
    if kind == "Point":
        return "interior" if p == c else "exterior"
    if kind == "Polygon":
        return _locate(p, c)
    if not any(_on_segment(p, a, b) for a, b in _segments(s)):
        return "exterior"
    return "boundary" if c[0] != c[-1] and p in (c[0], c[-1]) else "interior"


def _intersects(p, q) -> bool:
    if any(_segments_meet(a, b, c, d) for a, b in _segments(p) for c, d in _segments(q)):
        return True
    # no edges meet: one lies wholly inside the other, or they are apart
    return (q[0] == "Polygon" and any(_locate(v, q[1]) != "exterior" for v in _vertices(p))) or \
        (p[0] == "Polygon" and any(_locate(v, p[1]) != "exterior" for v in _vertices(q)))


def _pieces(p, q) -> list:
    """The midpoints of p's edges cut where q's edges meet them: each piece lies wholly on one side of q."""
    mids = []
    for a, b in _segments(p):
        dx, dy = b[0] - a[0], b[1] - a[1]
        cuts = {0.0, 1.0}
        for c, d in _segments(q):
            denom = dx * (d[1] - c[1]) - dy * (d[0] - c[0])
            if denom:
                t = ((c[0] - a[0]) * (d[1] - c[1]) - (c[1] - a[1]) * (d[0] - c[0])) / denom
                u = ((c[0] - a[0]) * dy - (c[1] - a[1]) * dx) / denom
                if 0 <= t <= 1 and 0 <= u <= 1:
                    cuts.add(t)
            elif _cross(a, b, c) == 0 and (dx or dy):  # collinear: the ends of the shared stretch
                for e in (c, d):
                    t = ((e[0] - a[0]) * dx + (e[1] - a[1]) * dy) / (dx * dx + dy * dy)
                    if 0 <= t <= 1:
                        cuts.add(t)
        ts = sorted(cuts)
        mids += [(a[0] + dx * (t + u) / 2, a[1] + dy * (t + u) / 2) for t, u in zip(ts, ts[1:])]
    return mids


def _within(p, q) -> bool:
    """p lies in q and their interiors meet (OGC st_within)."""
    if p[0] == "Point":
        return _where(p[1], q) == "interior"
    if q[0] == "Point" or (p[0] == "Polygon" and q[0] == "LineString"):
        return False  # a line or an area is never within a point, an area never within a line
    if q[0] != "Polygon":
        raise QueryError(f"$filter: st_within of a {p[0]} in a {q[0]} is not supported")
    places = [_locate(v, q[1]) for v in _vertices(p)] + [_locate(m, q[1]) for m in _pieces(p, q)]
    if "exterior" in places:
        return False
    if p[0] == "LineString":
        return "interior" in places  # a line along q's boundary only is not within it
    # a hole of q inside p makes p reach out of q although p's edges stay in q
    return not any(_locate(v, p[1]) == "interior" for ring in q[1][1:] for v in ring + _pieces(("LineString", ring), p))


def _touches(p, q) -> bool:
    if q[0] == "Point" and p[0] != "Point":
        p, q = q, p
    if p[0] != "Point":
        raise QueryError(f"$filter: st_touches of a {p[0]} and a {q[0]} is not supported (only of a point)")
    return _where(p[1], q) == "boundary"


def _ring_key(ring: list) -> list:
    """A ring's corners from its least one, in the direction of its lesser neighbour: the same for any start."""
    corners = ring[:-1]
    i = corners.index(min(corners))
    turned = corners[i:] + corners[:i]
    back = [turned[0]] + turned[1:][::-1]
    return min(turned, back)


def _equals(p, q) -> bool:
    if p[0] != q[0]:
        return False
    if p[0] == "Point":
        return p[1] == q[1]
    if p[0] == "LineString":
        return p[1] == q[1] or p[1] == q[1][::-1]
    return len(p[1]) == len(q[1]) and all(_ring_key(a) == _ring_key(b) for a, b in zip(p[1], q[1]))


def _point_segment(p, a, b) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = 0.0 if not (dx or dy) else max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy)))
    return math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy)


def _distance(p, q) -> float:
    if _intersects(p, q):
        return 0.0
    return min(min(_point_segment(v, a, b) for v in _vertices(p) for a, b in _segments(q)),
               min(_point_segment(v, a, b) for v in _vertices(q) for a, b in _segments(p)))


def _length(s):
    return sum(math.dist(a, b) for a, b in _segments(s)) if s[0] == "LineString" else None


# ------------------------------------------------------------------------------------------------- pushdown

@dataclass(frozen=True)
class Column:
    """Where a property path is in SQL: ``sql`` an expression over the query's tables, ``kind`` what it holds.

    kind "time": epoch seconds (double), the property a timezone-aware datetime; "number", "text", "bool";
    "result": an observation's result in the measurements table: ``sql`` names the numeric column
    (``m.value``, NULL for what is not a number) and the text column is the same table alias +
    ``.value_text`` (the value exactly as signed, NOT NULL). The result is then, as evaluate() must see it,
    a number when value is not NULL, true or false when value is NULL and value_text is 'true' or 'false',
    and the string value_text otherwise (a string "true" is stored as the boolean is): ``result_of``.
    """

    sql: str
    kind: str

    @property
    def text_sql(self) -> str:
        return self.sql.rsplit(".", 1)[0] + ".value_text" if "." in self.sql else "value_text"


KINDS = ("time", "number", "text", "bool", "result")
_INTEGER = re.compile(r"-?\d+")


def result_of(value: float | None, value_text: str):
    """An observation's result as evaluate() must see it, from its measurements row (Column's rule): a
    number exactly as signed (int or Decimal), true/false, or the string."""
    if value is not None:
        return int(value_text) if _INTEGER.fullmatch(value_text) else Decimal(value_text)
    if value_text in ("true", "false"):
        return value_text == "true"
    return value_text


_SQL_OP = {ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_PARTS = {"year": "Y", "month": "m", "day": "d", "hour": "H", "minute": "M", "second": "S"}
_STRING_TESTS = ("contains", "startswith", "endswith", "substringof")


def pushdown(expr, column: Callable[[tuple[str, ...]], Column | None], dialect: str
             ) -> tuple[str | None, list, object | None]:
    """The filter split into (SQL condition or None, its parameters, residual filter or None).

    The top-level conjunction's terms go to SQL when SQL selects a row exactly when evaluate() gives True
    (``and``/``or`` of such terms too); every other term stays in the residual, which the caller evaluates
    on the rows SQL selected. Parameters are positional, ``?`` in the text for both dialects; the text holds
    no other '?' and no '%' at all (SQLite's strftime formats are parameters too), so HubStore._exec's
    ? → %s for psycopg leaves it intact.

    Limits of the SQL meaning, outside which it differs from evaluate(): numbers compare as doubles, which
    is exact for literals of at most 15 significant digits (only those go to SQL) against stored values of
    at most 15 significant digits or a float's shortest text; times compare as epoch seconds (doubles),
    exact for stored times of microsecond precision (Python's datetimes have no finer one).
    """
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"dialect {dialect!r}: sqlite or postgresql")
    if expr is None:
        return None, [], None
    sql, params, residual = [], [], []
    for term in _conjuncts(expr):
        pushed = _Sql(column, dialect).condition(term)
        if pushed is None:
            residual.append(term)
        else:
            sql.append(pushed[0])
            params += pushed[1]
    rest = None
    for term in residual:
        rest = term if rest is None else ast.BoolOp(ast.And(), rest, term)
    return (" AND ".join(sql) if sql else None), params, rest


def _conjuncts(expr) -> list:
    if isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.And):
        return _conjuncts(expr.left) + _conjuncts(expr.right)
    return [expr]


def _number_literal(node):
    """A number literal (-5 too) of at most 15 significant digits, or None: those a double holds exactly
    apart (DBL_DIG), so that comparing doubles is comparing decimals."""
    negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
    if negative:
        node = node.operand
    if not isinstance(node, (ast.Integer, ast.Float)):
        return None
    value = Decimal(node.val)
    if not value.is_finite() or len(value.normalize().as_tuple().digits) > 15 or abs(value) > Decimal("1e300"):
        return None
    return -value if negative else value


class _Sql:
    def __init__(self, column, dialect: str):
        self.column, self.dialect = column, dialect

    def condition(self, node) -> tuple[str, list] | None:
        """(SQL, parameters) true exactly where evaluate(node) is True; None when there is none."""
        if isinstance(node, ast.BoolOp):
            left, right = self.condition(node.left), self.condition(node.right)
            if left is None or right is None:
                return None
            word = "AND" if isinstance(node.op, ast.And) else "OR"
            return f"({left[0]} {word} {right[0]})", left[1] + right[1]
        if isinstance(node, ast.Compare):
            if isinstance(node.comparator, ast.In):
                return self._in(node.left, node.right)
            if _is_literal(node.left) and not _is_literal(node.right):
                return self._compare(_FLIP[type(node.comparator)], node.right, node.left)
            return self._compare(type(node.comparator), node.left, node.right)
        if isinstance(node, ast.Call) and node.func.full_name() in _STRING_TESTS:
            return self._string_test(node)
        if isinstance(node, (ast.Identifier, ast.Attribute)):
            c = self._column(node)
            if c is not None and c.kind == "bool":
                return f"{c.sql} = ?", [True]
        return None

    def _column(self, node) -> Column | None:
        path = _path(node)
        c = None if path is None else self.column(path)
        if c is not None and c.kind not in KINDS:
            raise ValueError(f"column kind {c.kind!r} of {'/'.join(path)}: one of {', '.join(KINDS)}")
        return c

    def _collate(self, sql: str) -> str:
        # strings order by code point: SQLite's BINARY does, PostgreSQL's "C" collation does (UTF-8 bytes)
        return f'{sql} COLLATE "C"' if self.dialect == "postgresql" else sql

    def _compare(self, op, left, right) -> tuple[str, list] | None:
        if op not in _SQL_OP:
            return None
        if isinstance(left, ast.Call):
            return self._function_compare(op, left, right)
        c = self._column(left)
        if c is None:
            return None
        if isinstance(right, ast.Null):
            if c.kind == "result" or op not in (ast.Eq, ast.NotEq):
                return None
            return f"{c.sql} IS {'' if op is ast.Eq else 'NOT '}NULL", []
        if c.kind == "result":
            return self._result(op, c, right)
        value = self._value(c.kind, right)
        if value is None:
            return None
        if c.kind == "bool" and op not in (ast.Eq, ast.NotEq):
            return None
        sql = self._collate(c.sql) if c.kind == "text" and op not in (ast.Eq, ast.NotEq) else c.sql
        return self._op(op, sql, c.sql, [value])

    @staticmethod
    def _op(op, sql: str, null_sql: str, params: list) -> tuple[str, list]:
        if op is ast.NotEq:  # OData: null ne 5 is true; SQL's NULL <> 5 is not
            return f"({sql} <> ? OR {null_sql} IS NULL)", params
        return f"{sql} {_SQL_OP[op]} ?", params

    @staticmethod
    def _value(kind: str, node):
        """The parameter for a literal compared with a column of ``kind``; None when the types differ."""
        if kind == "number":
            value = _number_literal(node)
            return None if value is None else float(value)
        if kind == "text" and isinstance(node, ast.String):
            return node.val
        if kind == "bool" and isinstance(node, ast.Boolean):
            return node.py_val
        if kind == "time" and isinstance(node, ast.DateTime):
            value = _literal(node)
            return (value - EPOCH) / timedelta(seconds=1)
        return None

    def _result(self, op, c: Column, right) -> tuple[str, list] | None:
        text = c.text_sql
        number = _number_literal(right)
        if number is not None:
            return self._op(op, c.sql, c.sql, [float(number)])
        if isinstance(right, ast.String):
            is_string = f"{c.sql} IS NULL AND {text} NOT IN ('true', 'false')"
            if op is ast.NotEq:
                return f"NOT ({is_string} AND {text} = ?)", [right.val]
            sql = text if op is ast.Eq else self._collate(text)
            return f"({is_string} AND {sql} {_SQL_OP[op]} ?)", [right.val]
        if isinstance(right, ast.Boolean) and op in (ast.Eq, ast.NotEq):
            is_it = f"{c.sql} IS NULL AND {text} = '{'true' if right.py_val else 'false'}'"
            return (f"({is_it})", []) if op is ast.Eq else (f"NOT ({is_it})", [])
        return None

    def _function_compare(self, op, call: ast.Call, right) -> tuple[str, list] | None:
        """year(t) eq 2024, length(name) gt 3, indexof(name, 'x') eq 0: whole-number parts and positions."""
        name = call.func.full_name()
        number = _number_literal(right)
        if number is None or number != number.to_integral_value():  # year(t) eq 2024.5 is never true
            return None
        number = int(number)
        c = self._column(call.args[0]) if call.args else None
        if c is None:
            return None
        if name in _PARTS and c.kind == "time":
            if self.dialect == "sqlite":
                sql, params = f"CAST(strftime(?, {c.sql}, 'unixepoch') AS INTEGER)", [f"%{_PARTS[name]}"]
            else:
                sql, params = f"floor(extract({name} from to_timestamp({c.sql}) at time zone 'UTC'))", []
            return self._op(op, sql, c.sql, params + [number])
        if name == "length" and c.kind == "text":
            return self._op(op, f"length({c.sql})", c.sql, [number])
        if name == "indexof" and c.kind == "text" and isinstance(call.args[1], ast.String):
            return self._op(op, f"{self._position(c.sql)} - 1", c.sql, [call.args[1].val, number])
        return None

    def _position(self, sql: str) -> str:
        """The 1-based place of the parameter's first occurrence in ``sql`` (1 for ''), 0 where it is not."""
        return f"instr({sql}, ?)" if self.dialect == "sqlite" else f"position(? in {sql})"

    def _string_test(self, call: ast.Call) -> tuple[str, list] | None:
        name = call.func.full_name()
        subject, part = (call.args[1], call.args[0]) if name == "substringof" else call.args
        c = self._column(subject)
        if c is None or c.kind != "text" or not isinstance(part, ast.String):
            return None
        if name in ("contains", "substringof"):
            return f"{self._position(c.sql)} > 0", [part.val]
        if name == "startswith":
            return f"{self._position(c.sql)} = 1", [part.val]
        if not part.val:
            return f"{c.sql} IS NOT NULL", []
        tail = f"substr({c.sql}, -length(?))" if self.dialect == "sqlite" else f"right({c.sql}, length(?))"
        return f"{tail} = ?", [part.val, part.val]

    def _in(self, left, right) -> tuple[str, list] | None:
        c = self._column(left)
        if c is None or c.kind == "result" or not isinstance(right, ast.List) or not right.val:
            return None
        values = [self._value(c.kind, item) for item in right.val]
        if any(v is None for v in values):
            return None
        return f"{c.sql} IN ({', '.join('?' * len(values))})", values


def _is_literal(node) -> bool:
    return isinstance(node, ast._Literal) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                                              and isinstance(node.operand, ast._Literal))


def orderby_sql(orderby, column: Callable[[tuple[str, ...]], Column | None], dialect: str | None = None
                ) -> str | None:
    """``ORDER BY …`` for $orderby when every path has a column, else None (the caller sorts).

    Nulls come first in ascending order and last in descending (OData 4.01 URL conventions §5.1.5), in
    both databases (SQLite and PostgreSQL differ by default). ``dialect`` "postgresql" orders text by code
    point (COLLATE "C") as SQLite does (without it, by the database's language). A result orders as its
    numeric column: the non-numbers (strings, booleans: NULL there) first in ascending order, among
    themselves by their text, then the numbers.
    """
    terms = []
    for path, descending in orderby:
        c = column(tuple(path))
        if c is None:
            return None
        direction = "DESC" if descending else "ASC"
        nulls = "ASC" if descending else "DESC"
        sql = f'{c.sql} COLLATE "C"' if dialect == "postgresql" and c.kind == "text" else c.sql
        terms.append(f"({c.sql} IS NULL) {nulls}, {sql} {direction}")
        if c.kind == "result":
            text = f'{c.text_sql} COLLATE "C"' if dialect == "postgresql" else c.text_sql
            terms.append(f"{text} {direction}")
    return "ORDER BY " + ", ".join(terms) if terms else None
