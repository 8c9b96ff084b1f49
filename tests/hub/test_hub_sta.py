"""The SensorThings API 1.1 (govedge.hub.sta) as a client sees it: a real `govedge hub web` process over a store
of signed readings, SQLite and PostgreSQL, asked over HTTP. One test per requirement of the conformance classes
served (OGC 18-088: the data model, resource paths to entities, the request-data query options, the data array
extension), with the expected answers computed from the readings as they were signed (tests/support/sta.py),
and a SensorThings client library written by others (FROST's Python client) reading through it."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

import pytest

from govedge.hub import config as hubconfig
from govedge.hub.proofs import bundle_for
from support.deploy import CliProcess
from support.hubkit import postgres  # noqa: F401 - a fixture
from support.sta import DEVICES, GATEWAY, PER_DEVICE, STEP, T0, UNTIMED, StaWorld, hub_web

pytestmark = pytest.mark.e2e  # a real server process

SETS = ("Things", "Locations", "HistoricalLocations", "Datastreams", "Sensors", "ObservedProperties",
        "Observations", "FeaturesOfInterest")


class Served:
    def __init__(self, world: StaWorld, server: CliProcess, port: int):
        self.world, self.server = world, server
        self.origin = f"http://127.0.0.1:{port}"
        self.root = f"{self.origin}/v1.1"

    def raw(self, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes, dict]:
        url = path if path.startswith("http") else f"{self.root}/{path}" if path else self.root
        request = urllib.request.Request(url, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def get(self, path: str, status: int = 200) -> dict:
        code, body, _ = self.raw(path)
        assert code == status, f"{path}: {code} {body[:400]!r}"
        return json.loads(body)

    def all(self, path: str) -> list[dict]:
        """Every entity of a list, following its nextLinks."""
        doc = self.get(path)
        items = list(doc["value"])
        while "@iot.nextLink" in doc:
            doc = self.get(doc["@iot.nextLink"])
            items.extend(doc["value"])
        return items


def q(path: str, **options) -> str:
    """A path with its query options, encoded as a client would."""
    return path + ("?" + urllib.parse.urlencode({f"${k}": v for k, v in options.items()}) if options else "")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    world = StaWorld(tmp_path_factory.mktemp(f"sta-{request.param}"), url)
    with hub_web(world) as (web, port):
        yield Served(world, web, port)


def obs_id(device: str, seq: int, quantity: str) -> str:
    return f"{device}:{seq}:{quantity}"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the service root and resource paths (req/resource-path/resource-path-to-entities) ------------------------

def test_the_service_root_lists_every_entity_set_and_the_conformance_classes(served):
    doc = served.get("")
    assert [(e["name"], e["url"]) for e in doc["value"]] == [(s, f"{served.root}/{s}") for s in SETS]
    conformance = doc["serverSettings"]["conformance"]
    for c in ("datamodel", "resource-path/resource-path-to-entities", "request-data", "data-array/data-array"):
        assert f"http://www.opengis.net/spec/iot_sensing/1.1/req/{c}" in conformance
    for entry in doc["value"]:
        assert "value" in served.get(entry["url"])


def test_every_entity_set_lists_entities_with_id_selflink_and_navigation_links(served):
    for s in SETS:
        page = served.get(s)["value"]
        assert page, s
        for e in page:
            assert e["@iot.selfLink"] == f"{served.root}/{s}('{e['@iot.id']}')"
            for key, link in e.items():
                if key.endswith("@iot.navigationLink"):
                    assert link == f"{e['@iot.selfLink']}/{key.split('@')[0]}"


def test_an_entity_by_its_id_is_the_entity_of_the_list_and_its_selflink_dereferences(served):
    for s in SETS:
        listed = served.get(q(s, top=3))["value"]
        for e in listed:
            assert served.get(e["@iot.selfLink"]) == e


def test_the_things_are_the_registry_s_devices_and_their_datastreams_their_sensors_quantities(served):
    things = served.all("Things")
    assert [t["@iot.id"] for t in things] == sorted(DEVICES)
    for t in things:
        sensors, _ = DEVICES[t["@iot.id"]]
        assert t["name"] == t["@iot.id"] and t["properties"]["sensors"] == sensors
        quantities = {"bme280": {"temp", "hum", "press"}, "sds011": {"pm2_5", "pm10"}}
        expected = set().union(*(quantities[s] for s in sensors))
        streams = served.all(f"Things('{t['@iot.id']}')/Datastreams")
        assert {d["properties"]["quantity"] for d in streams} == expected
        assert {d["@iot.id"] for d in streams} == {f"{t['@iot.id']}:{x}" for x in expected}


def test_a_missing_entity_set_id_or_property_is_404_with_a_message(served):
    for path in ("Things('nobody')", "Datastreams('esp32-0001:wind')", "Observations('esp32-0001:99999:temp')",
                 "Things('esp32-0001')/Sensors", "Thingz", "Things('esp32-0001')/colour",
                 "Observations('esp32-0002:0:pm10')", "Things('esp32-0003')/Locations('esp32-0003:0')"):
        code, body, _ = served.raw(path)
        assert code == 404, path
        doc = json.loads(body)
        assert doc["code"] == 404 and doc["message"]


def test_a_property_and_its_raw_value(served):
    assert served.get("Things('esp32-0002')/name") == {"name": "esp32-0002"}
    code, body, headers = served.raw("Things('esp32-0002')/name/$value")
    assert (code, body) == (200, b"esp32-0002") and headers["content-type"].startswith("text/plain")
    first = served.world.observations("esp32-0001", "temp")[0][0]
    assert served.get(f"Observations('{obs_id('esp32-0001', first.seq, 'temp')}')/result") == {
        "result": float(first.values["temp"])}


def test_navigation_across_entities(served):
    ds = served.get("Datastreams('esp32-0001:pm10')")
    assert served.get(ds["Thing@iot.navigationLink"])["@iot.id"] == "esp32-0001"
    assert served.get(ds["Sensor@iot.navigationLink"])["name"] == "SDS011"
    assert served.get(ds["ObservedProperty@iot.navigationLink"])["definition"].endswith("/pollutant/5")
    assert served.get("Datastreams('esp32-0001:pm10')/Thing/Locations")["value"][0]["@iot.id"] == "esp32-0001:1"
    o = served.get(q("Datastreams('esp32-0002:temp')/Observations", top=1))["value"][0]
    assert served.get(o["Datastream@iot.navigationLink"])["@iot.id"] == "esp32-0002:temp"
    assert served.get(o["FeatureOfInterest@iot.navigationLink"])["@iot.id"] == "esp32-0002:0"
    assert served.get("Sensors('sds011')/Datastreams")["value"][0]["@iot.id"] == "esp32-0001:pm10"
    assert {d["@iot.id"] for d in served.all("ObservedProperties('temp')/Datastreams")} == {
        f"{d}:temp" for d in DEVICES}


def test_ref_lists_the_related_entities_self_links(served):
    doc = served.get("Things('esp32-0001')/Datastreams/$ref")
    assert sorted(e["@iot.selfLink"] for e in doc["value"]) == sorted(
        f"{served.root}/Datastreams('esp32-0001:{x}')" for x in ("temp", "hum", "press", "pm2_5", "pm10"))
    assert all(set(e) == {"@iot.selfLink"} for e in doc["value"])


def test_every_navigation_link_dereferences(served):
    for s in SETS:
        for e in served.get(q(s, top=2))["value"]:
            for key, link in e.items():
                if key.endswith("@iot.navigationLink"):
                    code, body, _ = served.raw(link)
                    assert code in (200, 404), (link, code)
                    if code == 404:  # a single entity that is not there: a Location's Thing of the past
                        assert key.split("@")[0] in ("Things",) or json.loads(body)["message"]


# -- the data model (req/datamodel) ------------------------------------------------------------------------

def test_entities_have_their_mandatory_properties(served):
    mandatory = {
        "Things": ("name", "description"), "Locations": ("name", "description", "encodingType", "location"),
        "HistoricalLocations": ("time",),
        "Datastreams": ("name", "description", "unitOfMeasurement", "observationType"),
        "Sensors": ("name", "description", "encodingType", "metadata"),
        "ObservedProperties": ("name", "definition", "description"),
        "Observations": ("phenomenonTime", "result", "resultTime"),
        "FeaturesOfInterest": ("name", "description", "encodingType", "feature"),
    }
    for s, names in mandatory.items():
        for e in served.get(q(s, top=5))["value"]:
            assert all(n in e for n in names), (s, e)
    ds = served.get("Datastreams('esp32-0001:temp')")
    assert ds["unitOfMeasurement"] == {"name": "degree Celsius", "symbol": "°C",
                                       "definition": "http://qudt.org/vocab/unit/DEG_C"}
    loc = served.get("Locations('esp32-0001:0')")
    assert loc["encodingType"] == "application/geo+json"
    assert loc["location"] == {"type": "Point", "coordinates": [7.625519, 51.962944, 62]}
    assert served.get("HistoricalLocations('esp32-0001:1')")["time"] == "2026-03-02T00:00:00Z"


def test_observations_are_the_signed_values_exactly_with_their_provenance(served):
    signed = {(s.device, s.seq): s for s in served.world.signed}
    rows = served.all(q("Datastreams('esp32-0001:temp')/Observations", orderby="phenomenonTime", top=200))
    assert len(rows) == PER_DEVICE
    for o in rows:
        device, seq, quantity = o["@iot.id"].split(":")
        s = signed[(device, int(seq))]
        assert Decimal(str(o["result"])) == s.values[quantity]
        assert o["phenomenonTime"] == o["resultTime"] == iso(s.at)
        p = o["parameters"]
        assert (p["device"], p["seq"], p["gateway"], p["batch"], p["leaf"]) == (device, s.seq, GATEWAY, s.batch,
                                                                                 s.leaf)
        assert p["proof"] == f"{served.origin}/proofs/{device}/{s.seq}" and p["timeSource"] == "node"
    # the digits as signed: 20.00 stays 20.00 (the body is read as text, not as a float)
    code, body, _ = served.raw(f"Observations('esp32-0001:0:temp')")
    assert b'"result":18.00' in body
    # a reading the node could not time: its batch's time, said so
    untimed = served.get(f"Observations('esp32-0003:0:temp')")
    assert untimed["parameters"]["timeSource"] == "batch"
    assert untimed["phenomenonTime"] == iso(signed[("esp32-0003", 0)].at)


def test_an_observation_s_proof_link_gives_the_bundle_of_govedge_hub_proof(served):
    cfg = hubconfig.load(served.world.config)
    proven = next(s for s in served.world.signed if s.batch < served.world.proven_batches)
    o = served.get(f"Observations('{obs_id(proven.device, proven.seq, 'temp')}')")
    assert served.get(o["parameters"]["proof"]) == json.loads(json.dumps(bundle_for(cfg, proven.device,
                                                                                   proven.seq)))
    later = next(s for s in served.world.signed if s.batch >= served.world.proven_batches)
    doc = served.get(f"{served.origin}/proofs/{later.device}/{later.seq}", status=404)
    assert "in no epoch" in doc["message"]
    assert "no reading" in served.get(f"{served.origin}/proofs/esp32-0001/999999", status=404)["message"]


def test_features_of_interest_follow_the_location_history(served):
    before = served.all(q("FeaturesOfInterest('esp32-0001:0')/Observations", top=1000))
    after = served.all(q("FeaturesOfInterest('esp32-0001:1')/Observations", top=1000))
    moved = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()
    assert len(before) == 5 * sum(1 for s in served.world.signed if s.device == "esp32-0001" and s.at < moved)
    assert len(after) == 5 * sum(1 for s in served.world.signed if s.device == "esp32-0001" and s.at >= moved)
    assert served.get("FeaturesOfInterest('esp32-0003:unlocated')")["feature"] is None


# -- request data (req/request-data) ----------------------------------------------------------------------

def test_top_skip_and_count(served):
    total = len(served.world.observations("esp32-0002", "hum"))
    path = "Datastreams('esp32-0002:hum')/Observations"
    doc = served.get(q(path, top=7, skip=3, count="true", orderby="phenomenonTime"))
    assert doc["@iot.count"] == total and len(doc["value"]) == 7
    seqs = [int(o["@iot.id"].split(":")[1]) for o in doc["value"]]
    assert seqs == list(range(3, 10))
    assert served.get(q(path, top=0, count="true")) == {"@iot.count": total, "@iot.nextLink": served.get(
        q(path, top=0, count="true"))["@iot.nextLink"], "value": []}
    assert "@iot.count" not in served.get(q(path, top=1))


def test_server_driven_paging_gives_every_entity_once_in_order(served):
    path = q("Datastreams('esp32-0001:pm2_5')/Observations", orderby="phenomenonTime desc", top=50)
    rows = served.all(path)
    assert [int(o["@iot.id"].split(":")[1]) for o in rows] == list(range(PER_DEVICE - 1, -1, -1))
    first = served.get("Observations")  # no $top: the server's page size, and a link to the next
    assert len(first["value"]) == 100 and "$skip=100" in first["@iot.nextLink"]


def test_orderby_several_keys_and_directions(served):
    rows = served.get(q("Observations", filter="parameters/seq lt 3 and Datastream/ObservedProperty/id eq 'temp'",
                        orderby="result desc,phenomenonTime", top=100))["value"]
    expected = sorted(((s.values["temp"], s.at, s.device) for s, _ in served.world.observations(quantity="temp")
                       if s.seq < 3), key=lambda x: (-x[0], x[1]))
    assert [(Decimal(str(o["result"])), o["parameters"]["device"]) for o in rows] == [(v, d) for v, _, d in expected]
    things = served.get(q("Things", orderby="name desc"))["value"]
    assert [t["name"] for t in things] == sorted(DEVICES, reverse=True)


def test_select_keeps_the_named_properties(served):
    doc = served.get(q("Things", select="id,name"))
    assert all(set(t) == {"@iot.id", "name"} for t in doc["value"])
    o = served.get(q("Observations('esp32-0001:4:pm10')", select="result,phenomenonTime"))
    assert set(o) == {"result", "phenomenonTime"}
    ds = served.get(q("Datastreams('esp32-0001:temp')", select="unitOfMeasurement,Thing"))
    assert set(ds) == {"unitOfMeasurement", "Thing@iot.navigationLink"}


def test_expand_inline_nested_and_by_path(served):
    t = served.get(q("Things('esp32-0001')", expand="Datastreams($select=id;$orderby=id),Locations"))
    assert [d["@iot.id"] for d in t["Datastreams"]] == sorted(f"esp32-0001:{x}" for x in
                                                              ("temp", "hum", "press", "pm2_5", "pm10"))
    assert [loc["@iot.id"] for loc in t["Locations"]] == ["esp32-0001:1"]
    latest = served.get(q("Things", expand="Datastreams($filter=properties/quantity eq 'temp';"
                                           "$expand=Observations($orderby=phenomenonTime desc;$top=1))"))
    for thing in latest["value"]:
        (ds,) = thing["Datastreams"]
        (o,) = ds["Observations"]
        assert o["@iot.id"] == f"{thing['@iot.id']}:{PER_DEVICE - 1}:temp"
        assert "Observations@iot.nextLink" in ds
    path_form = served.get(q("Observations('esp32-0002:1:hum')", expand="Datastream/ObservedProperty,"
                                                                        "Datastream/Thing"))
    assert path_form["Datastream"]["ObservedProperty"]["@iot.id"] == "hum"
    assert path_form["Datastream"]["Thing"]["@iot.id"] == "esp32-0002"


def test_expanded_lists_page_with_their_own_next_link_and_count(served):
    ds = served.get(q("Datastreams('esp32-0002:press')", expand="Observations($top=5;$count=true;"
                                                                "$orderby=phenomenonTime)"))
    assert ds["Observations@iot.count"] == PER_DEVICE and len(ds["Observations"]) == 5
    following = served.get(ds["Observations@iot.nextLink"])["value"]
    assert [o["@iot.id"] for o in following] == [f"esp32-0002:{n}:press" for n in range(5, 10)]


FILTERS = {
    # $filter -> the observations of esp32-0001:temp it keeps, by the signed value and time
    "result gt 22": lambda s: s.values["temp"] > 22,
    "result ge 20.5 and result lt 21": lambda s: Decimal("20.5") <= s.values["temp"] < 21,
    "not (result le 20) or parameters/seq eq 3": lambda s: not s.values["temp"] <= 20 or s.seq == 3,
    "result add 1 gt 23": lambda s: s.values["temp"] + 1 > 23,
    "result mul 2 le 37": lambda s: s.values["temp"] * 2 <= 37,
    f"phenomenonTime ge {iso(T0 + 86400)}": lambda s: s.at >= T0 + 86400,
    f"phenomenonTime lt {iso(T0 + 3 * STEP)} or phenomenonTime gt {iso(T0 + (PER_DEVICE - 2) * STEP)}":
        lambda s: s.at < T0 + 3 * STEP or s.at > T0 + (PER_DEVICE - 2) * STEP,
    "hour(phenomenonTime) eq 13": lambda s: datetime.fromtimestamp(s.at, timezone.utc).hour == 13,
    "day(phenomenonTime) eq 2 and minute(phenomenonTime) eq 30":
        lambda s: datetime.fromtimestamp(s.at, timezone.utc).day == 2 and
        datetime.fromtimestamp(s.at, timezone.utc).minute == 30,
    "year(phenomenonTime) eq 2026 and month(phenomenonTime) eq 3": lambda s: True,
    "Datastream/Thing/name eq 'esp32-0001'": lambda s: True,
    "startswith(Datastream/name, 'Air temperature')": lambda s: True,
    "substringof('Domplatz', FeatureOfInterest/name)": lambda s: s.at < datetime(2026, 3, 2,
                                                                                 tzinfo=timezone.utc).timestamp(),
    # OData rounds half away from zero
    "round(result) eq 19": lambda s: s.values["temp"].quantize(Decimal(1), ROUND_HALF_UP) == 19,
}


@pytest.mark.parametrize("text", list(FILTERS))
def test_filter_keeps_what_the_expression_says(served, text):
    expected = [s.seq for s, _ in served.world.observations("esp32-0001", "temp") if FILTERS[text](s)]
    rows = served.all(q("Datastreams('esp32-0001:temp')/Observations", filter=text, orderby="phenomenonTime",
                        top=1000))
    assert [int(o["@iot.id"].split(":")[1]) for o in rows] == expected
    count = served.get(q("Datastreams('esp32-0001:temp')/Observations", filter=text, count="true", top=1))
    assert count["@iot.count"] == len(expected)


def test_filter_over_the_catalog_with_strings_and_geography(served):
    def ids(path, text):
        return [e["@iot.id"] for e in served.all(q(path, filter=text))]

    assert ids("Things", "startswith(name, 'esp32-000') and not endswith(name, '1')") == ["esp32-0002",
                                                                                          "esp32-0003"]
    assert ids("Things", "substringof('SDS011', description) eq false and length(name) eq 10") == [
        "esp32-0002", "esp32-0003"]
    muenster = "geography'POLYGON((7.5 51.9, 7.7 51.9, 7.7 52.0, 7.5 52.0, 7.5 51.9))'"
    assert ids("Locations", f"st_within(location, {muenster})") == ["esp32-0001:0", "esp32-0001:1"]
    assert ids("Locations", "geo.distance(location, geography'POINT(6.9583 50.9413)') lt 0.01") == ["esp32-0002:0"]
    assert ids("Datastreams", "ObservedProperty/name eq 'PM10'") == ["esp32-0001:pm10"]
    assert ids("Datastreams", "unitOfMeasurement/symbol eq 'µg/m³'") == ["esp32-0001:pm10", "esp32-0001:pm2_5"]
    assert ids("HistoricalLocations", "time ge 2026-02-01T00:00:00Z") == ["esp32-0001:1"]


def test_a_bad_query_is_400_naming_the_option(served):
    for options, word in ((dict(filter="result gt"), "$filter"), (dict(filter="nofunction(result) eq 1"), "$filter"),
                          (dict(top="many"), "$top"), (dict(skip="-1"), "$skip"), (dict(orderby="colour"), "$orderby"),
                          (dict(select="colour"), "$select"), (dict(expand="Colours"), "$expand"),
                          (dict(count="perhaps"), "$count"), (dict(fliter="x"), "$fliter")):
        code, body, _ = served.raw(q("Datastreams('esp32-0001:temp')/Observations", **options))
        assert code == 400, options
        assert word in json.loads(body)["message"], (options, body)


def test_the_data_array_extension(served):
    doc = served.get(q("Datastreams('esp32-0002:temp')/Observations", resultFormat="dataArray",
                       select="id,phenomenonTime,result", orderby="phenomenonTime", top=4))
    (group,) = doc["value"]
    assert group["Datastream@iot.navigationLink"] == f"{served.root}/Datastreams('esp32-0002:temp')"
    assert group["components"] == ["id", "phenomenonTime", "result"] and group["dataArray@iot.count"] == 4
    signed = [s for s, _ in served.world.observations("esp32-0002", "temp")][:4]
    assert group["dataArray"] == [[f"esp32-0002:{s.seq}:temp", iso(s.at), float(s.values["temp"])] for s in signed]


# -- read-only to the world, readable from any origin --------------------------------------------------------

def test_nothing_but_reading_is_answered(served):
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        code, body, headers = served.raw("Things", method=method)
        assert code == 405 and "read-only" in json.loads(body)["message"] and "GET" in headers["allow"]


def test_cors_lets_a_page_of_another_origin_read(served):
    code, _, headers = served.raw("Things", headers={"Origin": "https://dashboard.example"})
    assert code == 200 and headers["access-control-allow-origin"] == "*"
    code, _, headers = served.raw("Things", method="OPTIONS", headers={
        "Origin": "https://dashboard.example", "Access-Control-Request-Method": "GET"})
    assert code == 200 and "GET" in headers["access-control-allow-methods"]
    code, _, headers = served.raw(f"{served.origin}/proofs/esp32-0001/0", headers={"Origin": "https://x.example"})
    assert headers["access-control-allow-origin"] == "*"


# -- a client library written by others --------------------------------------------------------------------

def test_frost_s_python_client_reads_things_datastreams_and_observations_with_filters_and_paging(served):
    import frost_sta_client as fsc

    service = fsc.SensorThingsService(served.root)
    things = service.things().query().list()
    assert sorted(t.id for t in things) == sorted(DEVICES)
    streams = service.datastreams().query().filter("properties/quantity eq 'pm10'").list()
    assert [d.id for d in streams] == ["esp32-0001:pm10"]
    (ds,) = streams
    assert ds.unit_of_measurement.symbol == "µg/m³"
    observations = service.observations().query().filter(
        "Datastream/Thing/name eq 'esp32-0002' and Datastream/ObservedProperty/id eq 'press'").orderby(
        "phenomenonTime", "ASC").top(40).list()  # the client writes the direction in capitals
    seen = [o.id for o in observations]  # iterating the list follows the nextLinks
    assert seen == [f"esp32-0002:{n}:press" for n in range(PER_DEVICE)]
    first = service.observations().find("esp32-0002:0:press")
    assert first.result == 100500 and first.parameters["device"] == "esp32-0002"
    assert UNTIMED > 0  # esp32-0003's untimed readings are read as any other


def test_a_filter_sql_cannot_narrow_is_refused_before_it_scans_the_whole_store(served, monkeypatch):
    from govedge.hub import sta

    monkeypatch.setattr(sta, "MAX_SCAN", 1000)  # the store here holds a few thousand observations
    api = sta.Api(served.world.folder / "registry.json", served.world.store_url)
    wide = {"$filter": "substringof('Nowhere', FeatureOfInterest/name)"}  # matches none: the page never fills
    code, body, _ = api.get("Observations", wide, served.root)
    assert code == 400 and "narrow it with phenomenonTime" in json.loads(body)["message"]
    code, body, _ = api.get("Datastreams('esp32-0001:temp')/Observations", wide, served.root)  # narrowed first
    assert code == 200
