"""The SensorThings query options (govedge.hub.odata): what a client types in a URL's query, what the hub makes of
it, what a filter selects from an entity, and that the part of a filter the store does in SQL selects exactly
the rows evaluate() selects, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from govedge.hub import odata
from govedge.hub.odata import Column, Expand, Query, QueryError
from govedge.hub.store import HubStore
from support.hubkit import postgres  # noqa: F401

UTC = timezone.utc


# -------------------------------------------------------------------------------------------------- parse()

def test_every_option_is_read_into_the_query():
    q = odata.parse({"$filter": "name eq 'Domplatz'", "$orderby": "phenomenonTime desc,id", "$select": "id, name",
                     "$expand": "Datastreams", "$top": "10", "$skip": "20", "$count": "true",
                     "$resultFormat": "dataArray", "foo": "not ours"})
    assert q.filter == odata.parse_filter("name eq 'Domplatz'")
    assert q.orderby == ((("phenomenonTime",), True), (("id",), False))
    assert q.select == ("id", "name")
    assert q.expand == (Expand(("Datastreams",), Query()),)
    assert (q.top, q.skip, q.count, q.result_format) == (10, 20, True, "dataArray")


def test_no_options_give_the_defaults():
    assert odata.parse({}) == Query() == Query(None, (), None, (), None, 0, False, None)
    assert odata.parse({"$count": "false", "$orderby": "Datastream/Thing/name asc"}).orderby == \
        ((("Datastream", "Thing", "name"), False),)


def test_nested_expand_reads_every_level_and_quoted_separators_stay_in_their_string():
    q = odata.parse({"$expand": "Datastreams($filter=name eq 'a;b,c)d''e';$expand=Observations($top=2;"
                                "$orderby=phenomenonTime desc;$expand=FeatureOfInterest($select=name));$count=true),"
                                "Locations,Datastream/Thing(select=id)"})
    ds, locations, thing = q.expand
    assert ds.path == ("Datastreams",)
    assert ds.query.filter == odata.parse_filter("name eq 'a;b,c)d''e'")
    assert odata.evaluate(ds.query.filter, {("name",): "a;b,c)d'e"}.__getitem__) is True
    assert ds.query.count is True
    (obs,) = ds.query.expand
    assert obs.path == ("Observations",) and obs.query.top == 2
    assert obs.query.orderby == ((("phenomenonTime",), True),)
    assert obs.query.expand == (Expand(("FeatureOfInterest",), Query(select=("name",))),)
    assert locations == Expand(("Locations",), Query())
    assert thing == Expand(("Datastream", "Thing"), Query(select=("id",)))  # 4.01: a nested option without '$'


@pytest.mark.parametrize("options, message", [
    ({"$fliter": "x eq 1"}, "unknown query option $fliter; the options are $filter, $select, $expand, $orderby, "
                            "$top, $skip, $count, $resultFormat"),
    ({"$top": "x"}, "$top: 'x' is not a whole number"),
    ({"$skip": "-1"}, "$skip: '-1' is not a whole number"),
    ({"$count": "yes"}, "$count: 'yes' is neither true nor false"),
    ({"$resultFormat": "csv"}, "$resultFormat: 'csv' is not a result format"),
    ({"$select": "id,,name"}, "$select: '' is not a property name"),
    ({"$orderby": "name sideways"}, "$orderby: 'name sideways' is not a property path"),
    ({"$expand": "Datastreams(top=1"}, "$expand: a '(' is not closed"),
    ({"$expand": "Datastreams)"}, "$expand: a ')' without its '('"),
    ({"$expand": "Datastreams($filter=name eq 'x)"}, "$expand: a quoted string is not closed"),
    ({"$expand": "Datastreams($top=x)"}, "$expand=Datastreams: $top: 'x' is not a whole number"),
    ({"$expand": "Datastreams($top=1;$top=2)"}, "$expand=Datastreams: $top given twice"),
    ({"$expand": "Datastreams($expand=Observations($fliter=a eq 1))"},
     "$expand=Datastreams: $expand=Observations: unknown query option $fliter"),
    ({"$expand": "Data streams"}, "$expand: 'Data streams' is not a navigation path"),
    ({"$filter": "name eq"}, "$filter: syntax error at position"),
    ({"$filter": "name eq 'x"}, "$filter: cannot read \"'x\" at position 9"),
    ({"$filter": "(a eq 1 "}, "$filter: the expression ends too early"),
    ({"$filter": ""}, "$filter: empty"),
    ({"$filter": "foo(name) eq 1"}, "$filter: unknown function 'foo'"),
    ({"$filter": "st_within(location)"}, "$filter: st_within takes 2 arguments, not 1"),
    ({"$filter": "substring(name) eq 'a'"}, "$filter: substring takes 2 to 3 arguments, not 1"),
    ({"$filter": "Observations/any(o: o/result gt 1)"}, "$filter: any/all over Observations is not supported"),
    ({"$filter": "matchesPattern(name, '(a+)+$')"}, "$filter: function 'matchesPattern' is not supported"),
    ({"$filter": "st_relate(location, geography'POINT(1 2)', 'T********')"},
     "$filter: function 'st_relate' is not supported"),
    ({"$filter": "st_within(location, geography'MULTIPOINT((1 2))')"},
     "$filter: geography'MULTIPOINT((1 2))' is not a POINT, LINESTRING or POLYGON"),
    ({"$filter": "st_within(location, geography'POLYGON((1 2, 3 4))')"},
     "$filter: geography'POLYGON((1 2, 3 4))' is not a valid POLYGON"),
    ({"$filter": "phenomenonTime add duration'P1Y' gt now()"}, "$filter: duration'P1Y': only days, hours"),
])
def test_each_kind_of_bad_option_is_refused_naming_the_option(options, message):
    with pytest.raises(QueryError) as e:
        odata.parse(options)
    assert str(e.value).startswith(message)
    assert e.value.code == "bad_query" and isinstance(e.value, ValueError)
    assert "\n" not in str(e.value)


def test_names_that_begin_with_a_keyword_are_names():
    entity = {("allowed",): 1, ("anything",): 2, ("trueValue",): True, ("nullable",): None, ("notes",): "n"}.__getitem__
    for text in ("allowed eq 1", "anything eq 2", "trueValue eq true", "nullable eq null", "notes eq 'n'",
                 "not(allowed eq 2)", "not (allowed eq 2)"):
        assert odata.matches(odata.parse_filter(text), entity), text


# ----------------------------------------------------------------------------------------------- evaluate()

DOMPLATZ = {"type": "Point", "coordinates": [7.6255, 51.9629]}
KOELN = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [6.9583, 50.9413]}}
# around Münster's old town, a pentagon; and the same with a hole round the Domplatz
MUENSTER = "POLYGON((7.55 51.90, 7.72 51.90, 7.74 51.97, 7.64 52.02, 7.53 51.98, 7.55 51.90))"
MUENSTER_HOLED = MUENSTER[:-1] + ", (7.62 51.96, 7.63 51.96, 7.63 51.97, 7.62 51.97, 7.62 51.96))"
SQUARE = "POLYGON((0 0, 2 0, 2 2, 0 2, 0 0))"
U_SHAPE = "POLYGON((0 0, 3 0, 3 3, 2 3, 2 1, 1 1, 1 3, 0 3, 0 0))"  # a notch from (1 1) up between x 1 and 2
HOLED = "POLYGON((0 0, 10 0, 10 10, 0 10, 0 0), (4 4, 6 4, 6 6, 4 6, 4 4))"

ENTITIES = [
    {  # an observation of the Domplatz' temperature, a decimal result
        "id": 1, "result": Decimal("21.41"), "phenomenonTime": datetime(2024, 3, 31, 22, 30, 5, 250000, tzinfo=UTC),
        "validTime": (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)), "resultTime": None,
        "location": DOMPLATZ, "parameters": {"sensor": "bme280"},
        "Datastream": {"name": "Temperatur Domplatz", "unit": "Cel", "Thing": {"name": "Domplatz",
                                                                               "properties": {"district": "Mitte"}}},
    },
    {  # a string result, in Köln
        "id": 2, "result": "open", "phenomenonTime": datetime(2025, 1, 1, 0, 0, tzinfo=UTC),
        "validTime": None, "resultTime": datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC), "location": KOELN,
        "parameters": {}, "Datastream": {"name": "Tür Rathaus", "unit": None,
                                         "Thing": {"name": "Rathaus Köln", "properties": {}}},
    },
    {  # a boolean result, a float count
        "id": 3, "result": True, "phenomenonTime": datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC),
        "validTime": (datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)), "resultTime": None,
        "location": {"type": "Point", "coordinates": [1, 1]}, "parameters": {"count": 0.1},
        "Datastream": {"name": "occupied", "unit": None, "Thing": {"name": "Parkplatz", "properties": {}}},
    },
]


JSON = {"parameters", "properties", "location"}  # JSON objects: a name not in them is null, not unknown


def resolver(entity: dict):
    def resolve(path):
        value, json = entity, False
        for name in path:
            if not isinstance(value, dict):
                raise KeyError(name)
            value = value.get(name) if json else value[name]
            json = json or name in JSON
        return value
    return resolve


# (filter, outcome for each of ENTITIES: True matches, False does not (its value is false or null))
FILTERS = [
    # comparison and null
    ("result eq 21.41", (True, False, False)),
    ("result ne 21.41", (False, True, True)),
    ("result gt 21.4 and result lt 21.42", (True, False, False)),
    ("result ge 21.41 and result le 21.41", (True, False, False)),
    ("result eq 'open'", (False, True, False)),
    ("result eq true", (False, False, True)),
    ("result gt 'a'", (False, True, False)),  # strings by code point; a number is never greater than a string
    ("resultTime eq null", (True, False, True)),
    ("resultTime ne null", (False, True, False)),
    ("resultTime gt 2020-01-01T00:00:00Z", (False, True, False)),  # null compared: false
    ("resultTime lt 2030-01-01T00:00:00Z", (False, True, False)),
    ("resultTime ne 2025-01-01T00:00:01Z", (True, False, True)),  # null ne a value: true
    ("Datastream/unit eq null", (False, True, True)),
    ("parameters/count eq 0.1", (False, False, True)),  # a float by the decimal it prints as
    ("parameters/count eq 0.10000000000000001", (False, False, False)),
    ("id in (1, 3)", (True, False, True)),
    ("Datastream/Thing/name in ('Rathaus Köln', 'Parkplatz')", (False, True, True)),
    # logic: three-valued
    ("not (resultTime gt 2020-01-01T00:00:00Z)", (True, False, True)),
    ("not (length(resultTime) eq 1)", (True, True, True)),  # length of a datetime: null; null eq 1: false
    ("length(resultTime) eq 1 or id eq 1", (True, False, False)),
    ("id eq 1 or id eq 2 and result eq 'open'", (True, True, False)),
    ("(id eq 1 or id eq 2) and result eq 'open'", (False, True, False)),
    ("not(id eq 1) and not (id eq 2)", (False, False, True)),
    # arithmetic
    ("id add 1 eq 2", (True, False, False)),
    ("id sub 3 eq -2", (True, False, False)),
    ("id mul 2 eq 6", (False, False, True)),
    ("7 div id eq 3", (False, True, False)),  # integers: 7 div 2 is 3
    ("-7 div id eq -3 and -7 mod id eq -1", (False, True, False)),  # toward zero, the dividend's sign
    ("result div 0 eq null", (True, True, True)),  # a string div 0: null too
    ("result mul 100 eq 2141", (True, False, False)),
    ("result div 2 eq 10.705", (True, False, False)),
    ("result mod 1 eq 0.41", (True, False, False)),
    ("-result lt -21", (True, False, False)),
    # strings
    ("substringof('Dom', Datastream/Thing/name)", (True, False, False)),
    ("contains(Datastream/name, 'Rat')", (False, True, False)),
    ("startswith(Datastream/Thing/name, 'Park')", (False, False, True)),
    ("endswith(Datastream/Thing/name, 'Köln')", (False, True, False)),
    ("length(Datastream/Thing/name) eq 8", (True, False, False)),
    ("length(Datastream/Thing/name) eq 12", (False, True, False)),  # code points, not UTF-8 bytes
    ("indexof(Datastream/name, 'Dom') eq 11", (True, False, False)),
    ("indexof(Datastream/name, 'zzz') eq -1", (True, True, True)),
    ("substring(Datastream/Thing/name, 1) eq 'omplatz'", (True, False, False)),
    ("substring(Datastream/Thing/name, 0, 3) eq 'Rat'", (False, True, False)),
    ("tolower(Datastream/Thing/name) eq 'parkplatz'", (False, False, True)),
    ("toupper(result) eq 'OPEN'", (False, True, False)),
    ("trim(concat(' ', Datastream/unit)) eq 'Cel'", (True, False, False)),
    ("concat(Datastream/Thing/name, '!') eq 'Domplatz!'", (True, False, False)),
    ("length(result) eq 4", (False, True, False)),  # of a number: null
    ("Datastream/Thing/properties/district eq 'Mitte'", (True, False, False)),
    # date and time
    ("year(phenomenonTime) eq 2024 and month(phenomenonTime) eq 3 and day(phenomenonTime) eq 31",
     (True, False, False)),
    ("hour(phenomenonTime) eq 22 and minute(phenomenonTime) eq 30 and second(phenomenonTime) eq 5",
     (True, False, False)),
    ("fractionalseconds(phenomenonTime) eq 0.25", (True, False, False)),
    ("date(phenomenonTime) eq 2025-01-01", (False, True, False)),
    ("time(phenomenonTime) eq 23:59:59", (False, False, True)),
    ("totaloffsetminutes(phenomenonTime) eq 0", (True, True, True)),
    ("totaloffsetminutes(2024-01-01T00:00:00+02:00) eq 120", (True, True, True)),
    ("phenomenonTime gt 2024-04-01T00:00:00+02:00", (True, True, False)),  # 2024-03-31T22:00Z
    ("phenomenonTime lt 2024-01-01T00:00:00Z", (False, False, True)),
    ("phenomenonTime eq 2025-01-01T00:00:00Z", (False, True, False)),
    ("phenomenonTime eq 2025-01-01T01:00:00+01:00", (False, True, False)),
    ("phenomenonTime lt now()", (True, True, True)),
    ("phenomenonTime gt mindatetime() and phenomenonTime lt maxdatetime()", (True, True, True)),
    ("phenomenonTime add duration'PT1S' eq 2024-01-01T00:00:00Z", (False, False, True)),
    ("phenomenonTime sub duration'P1D' lt 2025-01-01T00:00:00Z", (True, True, True)),
    ("totalseconds(resultTime sub phenomenonTime) eq 1", (False, True, False)),
    ("year(validTime) eq 2024", (True, False, False)),  # an interval's start
    # intervals as FROST-Server (half-open): validTime is [2024-01-01, 2024-02-01) and [2023-12-01, 2024-01-01)
    ("validTime gt 2023-12-31T00:00:00Z", (True, False, False)),  # starts after
    ("validTime ge 2024-01-01T00:00:00Z", (True, False, False)),
    ("validTime lt 2024-02-01T00:00:00Z", (True, False, True)),  # ends before (or at: half-open)
    ("validTime lt 2024-01-15T00:00:00Z", (False, False, True)),
    ("validTime le 2024-02-01T00:00:00Z", (True, False, True)),
    ("validTime eq 2024-01-01T00:00:00Z", (False, False, False)),
    ("validTime ne 2024-01-01T00:00:00Z", (False, True, False)),  # FROST: start and end both differ
    ("validTime ne 2024-01-15T00:00:00Z", (True, True, True)),
    ("2024-03-01T00:00:00Z gt validTime", (True, False, True)),  # an instant on the left: turned round
    ("validTime eq validTime", (True, True, True)),  # null eq null too
    ("validTime sub duration'P1D' lt 2024-01-31T00:00:00Z", (True, False, True)),
    # math
    ("round(result) eq 21 and floor(result) eq 21 and ceiling(result) eq 22", (True, False, False)),
    ("round(2.5) eq 3 and round(-2.5) eq -3 and floor(-0.5) eq -1", (True, True, True)),
    ("round(parameters/count) eq 0", (False, False, True)),
    # geometry: the Domplatz is in Münster, Köln is not; the hole cuts the Domplatz out
    (f"st_within(location, geography'{MUENSTER}')", (True, False, False)),
    (f"st_contains(geography'{MUENSTER}', location)", (True, False, False)),
    (f"st_intersects(location, geography'{MUENSTER}')", (True, False, False)),
    (f"geo.intersects(location, geography'{MUENSTER}')", (True, False, False)),
    (f"st_disjoint(location, geography'{MUENSTER}')", (False, True, True)),
    (f"st_within(location, geography'{MUENSTER_HOLED}')", (False, False, False)),
    (f"st_within(location, geography'{SQUARE}')", (False, False, True)),
    (f"st_touches(location, geography'{SQUARE}')", (False, False, False)),
    ("st_equals(location, geography'POINT(7.6255 51.9629)')", (True, False, False)),
    ("geo.distance(location, geography'POINT(7.6255 51.9629)') eq 0", (True, False, False)),
    ("geo.distance(location, geography'POINT(4 5)') eq 5", (False, False, True)),
    ("geo.distance(location, geography'SRID=4326;POINT(6.9583 50.9413)') lt 0.001", (False, True, False)),
    ("geo.distance(location, geography'LINESTRING(2 -1, 2 3)') eq 1", (False, False, True)),
    ("geo.length(parameters/sensor) eq null", (True, True, True)),  # of a string: null
    ("st_within(parameters/sensor, geography'POINT(1 1)') eq null", (True, True, True)),
]


@pytest.mark.parametrize("text, outcomes", FILTERS, ids=[f for f, _ in FILTERS])
def test_a_filter_selects_the_entities_it_says(text, outcomes):
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    tree = odata.parse_filter(text)
    assert tuple(odata.matches(tree, resolver(e), now) for e in ENTITIES) == outcomes


# geometry the literals alone decide, hand-checked
GEOMETRY = [
    (f"st_touches(geography'POINT(1 0)', geography'{SQUARE}')", True),  # on an edge
    (f"st_touches(geography'{SQUARE}', geography'POINT(2 2)')", True),  # a corner, the polygon first
    (f"st_touches(geography'POINT(1 1)', geography'{SQUARE}')", False),  # inside
    ("st_touches(geography'POINT(0 0)', geography'LINESTRING(0 0, 1 1)')", True),  # a line's end
    ("st_touches(geography'POINT(0.5 0.5)', geography'LINESTRING(0 0, 1 1)')", False),  # its inside
    (f"st_within(geography'POINT(1 0)', geography'{SQUARE}')", False),  # the boundary is not within
    (f"st_intersects(geography'POINT(1 0)', geography'{SQUARE}')", True),
    (f"st_intersects(geography'LINESTRING(-1 1, 3 1)', geography'{SQUARE}')", True),  # crosses, no corner inside
    (f"st_intersects(geography'LINESTRING(3 3, 4 4)', geography'{SQUARE}')", False),
    ("st_intersects(geography'LINESTRING(0 0, 2 2)', geography'LINESTRING(0 2, 2 0)')", True),
    ("st_intersects(geography'LINESTRING(0 0, 2 2)', geography'LINESTRING(0 1, 1 2)')", False),
    (f"st_intersects(geography'POLYGON((0.5 0.5, 1 0.5, 1 1, 0.5 0.5))', geography'{SQUARE}')", True),  # inside
    (f"st_intersects(geography'POLYGON((4.5 4.5, 5 4.5, 5 5, 4.5 4.5))', geography'{HOLED}')", False),  # in the hole
    (f"st_within(geography'LINESTRING(0.5 0.5, 1.5 1.5)', geography'{SQUARE}')", True),
    (f"st_within(geography'LINESTRING(0 0, 2 0)', geography'{SQUARE}')", False),  # along the boundary only
    (f"st_within(geography'LINESTRING(0.5 0.5, 3 3)', geography'{SQUARE}')", False),
    (f"st_within(geography'LINESTRING(0.5 2, 2.5 2)', geography'{U_SHAPE}')", False),  # both ends in, middle out
    (f"st_within(geography'LINESTRING(0.5 0.5, 2.5 0.5)', geography'{U_SHAPE}')", True),
    (f"st_intersects(geography'LINESTRING(0.5 2, 2.5 2)', geography'{U_SHAPE}')", True),
    (f"st_within(geography'POLYGON((1 1, 3 1, 3 3, 1 3, 1 1))', geography'{HOLED}')", True),
    (f"st_within(geography'POLYGON((1 1, 9 1, 9 9, 1 9, 1 1))', geography'{HOLED}')", False),  # holds the hole
    (f"st_contains(geography'{SQUARE}', geography'POLYGON((0 0, 1 0, 1 1, 0 0))')", True),  # sharing edges
    (f"st_within(geography'{SQUARE}', geography'{SQUARE}')", True),
    (f"st_equals(geography'{SQUARE}', geography'POLYGON((2 2, 0 2, 0 0, 2 0, 2 2))')", True),  # another start
    (f"st_equals(geography'{SQUARE}', geography'POLYGON((0 0, 0 2, 2 2, 2 0, 0 0))')", True),  # turned round
    (f"st_equals(geography'{SQUARE}', geography'POLYGON((0 0, 3 0, 2 2, 0 2, 0 0))')", False),
    ("st_equals(geography'LINESTRING(0 0, 1 1)', geography'LINESTRING(1 1, 0 0)')", True),
    ("geo.distance(geography'POINT(0 0)', geography'POINT(3 4)') eq 5", True),
    ("geo.distance(geography'POINT(0 0)', geography'LINESTRING(1 -1, 1 1)') eq 1", True),
    (f"geo.distance(geography'POINT(5 5)', geography'{SQUARE}') eq 4.242640687119285", True),  # 3 √2
    (f"geo.distance(geography'POINT(1 1)', geography'{SQUARE}') eq 0", True),
    (f"geo.distance(geography'LINESTRING(3 0, 3 2)', geography'{SQUARE}') eq 1", True),
    ("geo.length(geography'LINESTRING(0 0, 3 4, 3 10)') eq 11", True),
    (f"geo.length(geography'{SQUARE}') eq null", True),  # a LineString's
]


@pytest.mark.parametrize("text, outcome", GEOMETRY, ids=[f for f, _ in GEOMETRY])
def test_geometry_predicates_agree_with_the_hand_checked_answer(text, outcome):
    assert odata.matches(odata.parse_filter(text), resolver({})) is outcome


@pytest.mark.parametrize("text, message", [
    ("nme eq 'x'", "$filter: unknown property 'nme'"),
    ("Datastream/Thing/nme eq 'x'", "$filter: unknown property 'Datastream/Thing/nme'"),
    ("st_within(geography'LINESTRING(0 0, 1 1)', geography'LINESTRING(0 0, 2 2)')",
     "$filter: st_within of a LineString in a LineString is not supported"),
    (f"st_touches(geography'{SQUARE}', geography'{SQUARE}')", "$filter: st_touches of a Polygon and a Polygon"),
    ("st_within(parameters, geography'POINT(1 1)')", None),  # not a geometry: null, no error
])
def test_what_evaluate_cannot_answer_is_a_query_error_naming_the_filter(text, message):
    entity = {"parameters": {"type": "MultiPoint"} if message is None else {}}
    tree = odata.parse_filter(text)
    if message is None:
        with pytest.raises(QueryError, match=r"^\$filter: MultiPoint values are not supported"):
            odata.evaluate(tree, resolver(entity))
        return
    with pytest.raises(QueryError) as e:
        odata.evaluate(tree, resolver(ENTITIES[0]))
    assert str(e.value).startswith(message)
