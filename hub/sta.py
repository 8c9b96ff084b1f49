"""The OGC SensorThings API 1.1 (Part 1: Sensing), read side, over the hub's store: what the hub verified, served
to the platforms cities run (FROST-Server's clients, GIS plug-ins, dashboards), with a proof behind every
observation.

The model (hub/README.md, "SensorThings API"):

- a **Thing** is a device of the registry (its id the device id); its **Locations** the newest of the
  registry's locations of it, its **HistoricalLocations** all of them (``since``); ids ``DEVICE:N``, N counting
  the device's locations from 0;
- a **Sensor** is a sensor type of the registry (``bme280``, ``sds011``) with its datasheet's facts; an
  **ObservedProperty** a quantity the nodes sign (``temp``, ``hum``, ``press``, ``pm2_5``, ``pm10``: the SenML
  names); a **Datastream** a device and one of its sensors' quantities (id ``DEVICE:QUANTITY``), its unit the
  SenML unit the node signs (UCUM);
- an **Observation** is one value of a stored reading (id ``DEVICE:SEQ:QUANTITY``): ``phenomenonTime`` the
  signed time of the reading (``bt``; the batch's time when the node had none), ``result`` the value exactly as
  signed (21.41 stays 21.41), and ``parameters`` its provenance: device, sequence number, gateway, batch and
  leaf, and the link to its proof bundle (``/proofs/DEVICE/SEQ``, the bundle of `govedge hub proof`);
- a **FeatureOfInterest** is where the device stood: one per registry location (id ``DEVICE:N``, as its
  Location), and ``DEVICE:unlocated`` for readings before its first location.

Everything but the Observations is built from the registry, in memory, again when the file changes. The
Observations are read from the store with what of ``$filter`` and ``$orderby`` SQL can do (govedge.hub.odata's
pushdown); the rest of a filter is evaluated here, row by row. Read-only: the store is opened read-only, and
nothing but GET (and HEAD, OPTIONS) is answered.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import re
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable, NamedTuple

import orjson

from govedge.core import redact, wire
from govedge.core.errors import GovedgeError, text_of
from govedge.core.registry import Device, Registry, parse_time

from . import odata

VERSION = "v1.1"
DEFAULT_TOP = 100  # server-driven paging: a list without $top has at most this many, and a nextLink
MAX_TOP = 10_000  # a larger $top is cut to this, with a nextLink
SCAN_CHUNK = 2_000  # rows read at a time when part of a filter is evaluated here
MAX_SCAN = 500_000  # at most this many rows looked at for one request's filter: a query narrows them first
OBSERVATION_TYPE = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
GEOJSON = "application/geo+json"

# the conformance classes served (SensorThings API 1.1, OGC 18-088, Annex A)
CONFORMANCE = (
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/data-array/data-array",
)


@dataclass(frozen=True)
class SensorType:
    id: str  # as the registry names it
    name: str
    description: str
    datasheet: str  # where the facts below come from
    properties: dict


@dataclass(frozen=True)
class Quantity:
    id: str  # the SenML name the nodes sign
    sensor: str  # the SensorType that measures it
    name: str
    definition: str
    description: str
    unit: str  # the SenML unit the nodes sign (UCUM)
    unit_name: str
    unit_symbol: str
    unit_definition: str


# the sensors' facts from their datasheets: Bosch Sensortec BME280 datasheet BST-BME280-DS002 (rev. 1.6),
# table 1 (operating ranges) and tables 2-4 (absolute accuracy); Nova Fitness SDS011 laser PM2.5 sensor
# specification V1.3, section 1 (measuring range, relative error)
SENSORS = {
    "bme280": SensorType(
        "bme280", "BME280", "Bosch Sensortec BME280 combined humidity, pressure and temperature sensor",
        "https://www.bosch-sensortec.com/media/boschsensortec/downloads/datasheets/bst-bme280-ds002.pdf",
        {"manufacturer": "Bosch Sensortec", "datasheet": "BST-BME280-DS002",
         "temperature": {"range": "-40..85 Cel", "accuracy": "±1.0 Cel (0..65 Cel)"},
         "humidity": {"range": "0..100 %RH", "accuracy": "±3 %RH (20..80 %RH, 25 Cel)"},
         "pressure": {"range": "300..1100 hPa", "accuracy": "±1.0 hPa (0..65 Cel)"}}),
    "sds011": SensorType(
        "sds011", "SDS011", "Nova Fitness SDS011 laser particulate matter sensor (light scattering)",
        "https://nova-fitness.com/",
        {"manufacturer": "Nova Fitness", "datasheet": "SDS011 laser PM2.5 sensor specification V1.3",
         "range": "0.0..999.9 ug/m3", "resolution": "0.3 ug/m3",
         "relative_error": "max. of ±15 % and ±10 ug/m3 (25 Cel, 50 %RH)",
         "method": "indicative (low-cost light scattering), not the reference method of EN 12341"}),
}

QUANTITIES = {q.id: q for q in (
    Quantity("temp", "bme280", "Air temperature", "http://qudt.org/vocab/quantitykind/Temperature",
             "temperature of the air at the station", "Cel", "degree Celsius", "°C",
             "http://qudt.org/vocab/unit/DEG_C"),
    Quantity("hum", "bme280", "Relative humidity", "http://qudt.org/vocab/quantitykind/RelativeHumidity",
             "relative humidity of the air at the station", "%RH", "percent relative humidity", "%",
             "http://qudt.org/vocab/unit/PERCENT"),
    Quantity("press", "bme280", "Air pressure", "http://qudt.org/vocab/quantitykind/Pressure",
             "barometric pressure at the station's height", "Pa", "pascal", "Pa", "http://qudt.org/vocab/unit/PA"),
    # the pollutants by the European Environment Agency's air quality vocabulary (PM2.5: 6001, PM10: 5)
    Quantity("pm2_5", "sds011", "PM2.5", "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/6001",
             "mass concentration of particulate matter up to 2.5 µm", "ug/m3", "microgram per cubic metre",
             "µg/m³", "http://qudt.org/vocab/unit/MicroGM-PER-M3"),
    Quantity("pm10", "sds011", "PM10", "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/5",
             "mass concentration of particulate matter up to 10 µm", "ug/m3", "microgram per cubic metre",
             "µg/m³", "http://qudt.org/vocab/unit/MicroGM-PER-M3"),
)}

# entity type -> its entity set, and its navigation properties: name -> (entity type, many)
SETS = {"Thing": "Things", "Location": "Locations", "HistoricalLocation": "HistoricalLocations",
        "Datastream": "Datastreams", "Sensor": "Sensors", "ObservedProperty": "ObservedProperties",
        "Observation": "Observations", "FeatureOfInterest": "FeaturesOfInterest"}
TYPES = {plural: single for single, plural in SETS.items()}
NAVIGATION = {
    "Thing": {"Locations": ("Location", True), "HistoricalLocations": ("HistoricalLocation", True),
              "Datastreams": ("Datastream", True)},
    "Location": {"Things": ("Thing", True), "HistoricalLocations": ("HistoricalLocation", True)},
    "HistoricalLocation": {"Thing": ("Thing", False), "Locations": ("Location", True)},
    "Datastream": {"Thing": ("Thing", False), "Sensor": ("Sensor", False),
                   "ObservedProperty": ("ObservedProperty", False), "Observations": ("Observation", True)},
    "Sensor": {"Datastreams": ("Datastream", True)},
    "ObservedProperty": {"Datastreams": ("Datastream", True)},
    "Observation": {"Datastream": ("Datastream", False), "FeatureOfInterest": ("FeatureOfInterest", False)},
    "FeatureOfInterest": {"Observations": ("Observation", True)},
}
PROPERTIES = {
    "Thing": ("id", "selfLink", "name", "description", "properties"),
    "Location": ("id", "selfLink", "name", "description", "encodingType", "location", "properties"),
    "HistoricalLocation": ("id", "selfLink", "time"),
    "Datastream": ("id", "selfLink", "name", "description", "unitOfMeasurement", "observationType",
                   "observedArea", "properties"),
    "Sensor": ("id", "selfLink", "name", "description", "encodingType", "metadata", "properties"),
    "ObservedProperty": ("id", "selfLink", "name", "definition", "description", "properties"),
    "Observation": ("id", "selfLink", "phenomenonTime", "resultTime", "result", "parameters"),
    "FeatureOfInterest": ("id", "selfLink", "name", "description", "encodingType", "feature", "properties"),
}
UNLOCATED = "unlocated"


class ApiError(GovedgeError):
    """A request the API answers with an error status: ``status`` and one line saying what is wrong."""

    code = "sta"

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what}")


# -- times and values ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, timezone.utc).strftime("%Y-%m-%dT")


def iso(t: float) -> str:
    """RFC 3339 in UTC: whole seconds as such, fractions to the millisecond. (A page of a day's observations
    formats thousands of times: the date once a day, the time of day by arithmetic.)"""
    if t != int(t):
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"
    day, second = divmod(int(t), 86400)
    return f"{_day(day)}{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def result_json(value: float | None, text: str, message: Callable[[], bytes]) -> object:
    """The result exactly as signed: a number as its signed digits, else what it is. A text that reads ``true`` or
    ``false`` is a boolean or a string: the signed message says which (``message()`` reads it)."""
    if value is not None:  # the store's digits (govedge.hub.store.value_text): a JSON number but for inf, nan
        return orjson.Fragment(text) if text[-1].isdigit() and _JSON_NUMBER.fullmatch(text) else value
    if text in ("true", "false"):
        return _signed_value(message(), text)
    return text


def _signed_value(message: bytes, text: str) -> object:
    try:
        reading = wire.decode_unverified(message)
    except wire.WireError:
        return text
    for m in reading.measurements:
        if isinstance(m.value, bool) and ("true" if m.value else "false") == text:
            return m.value
    return text


# -- the catalog: everything but the observations, from the registry -----------------------------------------

@dataclass
class Entity:
    """One entity of the catalog: its type, id, properties (as JSON, times as text) and, for $filter, the
    properties as values (times as datetimes)."""

    type: str
    id: str
    props: dict
    values: dict = field(default_factory=dict)

    def value(self, name: str):
        return self.values[name] if name in self.values else self.props[name]


def _geometry(loc) -> dict:
    coordinates = [loc.longitude, loc.latitude] + ([loc.height] if loc.height is not None else [])
    return {"type": "Point", "coordinates": coordinates}


class Catalog:
    """Things, Locations, HistoricalLocations, Sensors, ObservedProperties, Datastreams and FeaturesOfInterest
    of one reading of the registry."""

    def __init__(self, registry: Registry):
        self.devices: dict[str, Device] = dict(sorted(registry.devices.items()))
        self.sets: dict[str, dict[str, Entity]] = {t: {} for t in SETS}
        self.since: dict[str, list[float]] = {}  # device -> its locations' since, as times
        self.streams_of: dict[object, list[Entity]] = {}  # device, ("sensor", id), ("quantity", id) -> Datastreams
        for device_id, device in self.devices.items():
            sensors = ", ".join(SENSORS[s].name if s in SENSORS else s for s in device.sensors)
            self._add("Thing", device_id, {"name": device_id, "description": f"{device.board} node with {sensors}",
                                           "properties": {"board": device.board, "sensors": list(device.sensors),
                                                          **({"place": device.location.place}
                                                             if device.location and device.location.place else {})}})
            since = [parse_time(loc.since) for loc in device.locations]
            self.since[device_id] = since
            for n, loc in enumerate(device.locations):
                lid = f"{device_id}:{n}"
                until = device.locations[n + 1].since if n + 1 < len(device.locations) else None
                name = loc.place or f"{device_id} position {n}"
                props = {"since": loc.since, **({"until": until} if until else {}),
                         **({"place": loc.place} if loc.place else {})}
                self._add("Location", lid, {"name": name, "description": f"where {device_id} stands from "
                                            f"{loc.since}" + (f" until {until}" if until else ""),
                                            "encodingType": GEOJSON, "location": _geometry(loc), "properties": props})
                self._add("HistoricalLocation", lid, {"time": loc.since}, {"time": _when(since[n])})
                self._add("FeatureOfInterest", lid, {"name": name, "description": f"the surroundings of {device_id}"
                                                     f" from {loc.since}" + (f" until {until}" if until else ""),
                                                     "encodingType": GEOJSON, "feature": _geometry(loc),
                                                     "properties": {"device": device_id, **props}})
            self._add("FeatureOfInterest", f"{device_id}:{UNLOCATED}", {
                "name": f"{device_id}, before its location was given", "description": f"the surroundings of "
                f"{device_id}, where no location of it was in the registry", "encodingType": GEOJSON,
                "feature": None, "properties": {"device": device_id}})
            for sensor in device.sensors:
                for q in QUANTITIES.values():
                    if q.sensor != sensor:
                        continue
                    area = {"observedArea": _geometry(device.location)} if device.location else {}
                    self._add("Datastream", f"{device_id}:{q.id}", {
                        "name": f"{q.name} at {device_id}", "description": f"{q.description}, measured by "
                        f"{device_id}'s {SENSORS[sensor].name}",
                        "unitOfMeasurement": {"name": q.unit_name, "symbol": q.unit_symbol,
                                              "definition": q.unit_definition},
                        "observationType": OBSERVATION_TYPE, **area,
                        "properties": {"device": device_id, "quantity": q.id, "senmlUnit": q.unit}})
        used = {s for d in self.devices.values() for s in d.sensors}
        for s in SENSORS.values():
            if s.id in used:
                self._add("Sensor", s.id, {"name": s.name, "description": s.description,
                                           "encodingType": "application/pdf", "metadata": s.datasheet,
                                           "properties": s.properties})
        for q in QUANTITIES.values():
            if q.sensor in used:
                self._add("ObservedProperty", q.id, {"name": q.name, "definition": q.definition,
                                                     "description": q.description,
                                                     "properties": {"senmlName": q.id, "unit": q.unit}})

    def _add(self, type_: str, id_: str, props: dict, values: dict | None = None) -> None:
        entity = self.sets[type_][id_] = Entity(type_, id_, props, values or {})
        if type_ == "Datastream":  # a Thing's, a Sensor's and an ObservedProperty's, found without a pass over all
            device_id, quantity = id_.split(":")
            for key in (device_id, ("sensor", QUANTITIES[quantity].sensor), ("quantity", quantity)):
                self.streams_of.setdefault(key, []).append(entity)

    def get(self, type_: str, id_: str) -> Entity | None:
        return self.sets[type_].get(id_)

    def foi_at(self, device_id: str, at: float) -> str:
        """The FeatureOfInterest of a device's observation at ``at``: the location in force then."""
        n = bisect.bisect_right(self.since.get(device_id, []), at) - 1
        return f"{device_id}:{n}" if n >= 0 else f"{device_id}:{UNLOCATED}"

    def foi_window(self, foi_id: str) -> tuple[str, float | None, float | None]:
        """(device, from, until) of a FeatureOfInterest's observations."""
        device_id, _, n = foi_id.rpartition(":")
        since = self.since[device_id]
        if n == UNLOCATED:
            return device_id, None, since[0] if since else None
        i = int(n)
        return device_id, since[i], since[i + 1] if i + 1 < len(since) else None

    def related(self, entity: Entity, nav: str) -> list[Entity]:
        """The catalog entities ``nav`` of ``entity`` leads to (not for Observations)."""
        t, i = entity.type, entity.id
        device_id = i.split(":")[0]
        if t == "Thing":
            device = self.devices[i]
            if nav == "Locations":
                return [self.sets["Location"][f"{i}:{len(device.locations) - 1}"]] if device.locations else []
            if nav == "HistoricalLocations":
                return [self.sets["HistoricalLocation"][f"{i}:{n}"] for n in range(len(device.locations))]
            return self.streams_of.get(i, [])
        if t == "Location":
            current = len(self.devices[device_id].locations) - 1
            if nav == "Things":
                return [self.sets["Thing"][device_id]] if i == f"{device_id}:{current}" else []
            return [self.sets["HistoricalLocation"][i]]
        if t == "HistoricalLocation":
            return [self.sets["Thing"][device_id]] if nav == "Thing" else [self.sets["Location"][i]]
        if t == "Datastream":
            quantity = QUANTITIES[i.split(":")[1]]
            one = {"Thing": ("Thing", device_id), "Sensor": ("Sensor", quantity.sensor),
                   "ObservedProperty": ("ObservedProperty", quantity.id)}[nav]
            return [self.sets[one[0]][one[1]]]
        if t == "Sensor":
            return self.streams_of.get(("sensor", i), [])
        if t == "ObservedProperty":
            return self.streams_of.get(("quantity", i), [])
        raise ApiError(400, f"{nav} of a {t} is not in the catalog")


class CatalogCache:
    """The catalog of the registry file, made again when the file changes (its size or time)."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: tuple | None = None
        self.catalog: Catalog | None = None
        self.lock = threading.Lock()

    def get(self) -> Catalog:
        try:
            st = self.path.stat()
            seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            seen = None
        with self.lock:
            if self.catalog is None or seen != self.seen:
                self.catalog = Catalog(Registry.load(self.path, missing_ok=True))
                self.seen = seen
            return self.catalog


# -- the store, read-only --------------------------------------------------------------------------------------

class Reader:
    """Read-only connections to the hub's store, one per thread of the web server."""

    def __init__(self, url: str):
        self.url = url
        self.dialect = "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
        self.local = threading.local()

    def _connect(self):
        if self.dialect == "postgresql":
            import psycopg

            try:
                return psycopg.connect(self.url, autocommit=True, options="-c default_transaction_read_only=on")
            except psycopg.OperationalError as exc:
                raise ApiError(503, f"the store cannot be read: {redact.text(exc, self.url, paths=False)}") from None
        path = Path(self.url.removeprefix("sqlite://"))
        if not path.exists():
            raise ApiError(503, "the store has not been made yet: the hub makes it when it first runs")
        uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)

    def query(self, sql: str, args: list | tuple = ()) -> list[tuple]:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        for attempt in (0, 1):
            db = getattr(self.local, "db", None)
            if db is None:
                db = self.local.db = self._connect()
            try:
                return db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise ApiError(503, f"the store cannot be read: {text_of(exc)}") from None
            except Exception as exc:  # psycopg: a server restarted under an idle connection is tried once more
                self.local.db = None
                try:
                    db.close()
                except Exception:  # noqa: BLE001 - it is gone anyway
                    pass
                if attempt or type(exc).__module__.split(".")[0] != "psycopg":
                    raise ApiError(503, f"the store cannot be read: {redact.text(exc, self.url, paths=False)}") \
                        from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        db = getattr(self.local, "db", None)
        if db is not None:
            db.close()
            self.local.db = None


OBSERVATION_COLUMNS = ("m.device_id, m.seq, m.name, m.value, m.value_text, m.at, r.time, r.gateway_id, "
                       "r.batch_seq, r.leaf, r.flag")
# an observation's reading, looked up by its key (device, seq, at) for each measurement row: SQLite's plan. On
# PostgreSQL a plain join is planned as a hash of all the device's readings (the time range on m.at is not
# carried over to r.at): a year of a station for one day of it. A lateral subquery with LIMIT 1 is looked up
# row by row in the one partition of its time (9 ms instead of 30 for a day, and not growing with the years)
OBSERVATION_FROM = {
    "sqlite": "measurements m JOIN readings r ON r.device_id = m.device_id AND r.seq = m.seq AND r.at = m.at",
    "postgresql": "measurements m CROSS JOIN LATERAL (SELECT time, gateway_id, batch_seq, leaf, flag FROM readings "
                  "WHERE readings.device_id = m.device_id AND readings.seq = m.seq AND readings.at = m.at LIMIT 1) r",
}


class Row(NamedTuple):
    """An observation as the store gives it (OBSERVATION_COLUMNS)."""

    device_id: str
    seq: int
    name: str
    value: float | None
    value_text: str
    at: float
    time: float | None
    gateway_id: str
    batch_seq: int
    leaf: int
    flag: str | None

    @property
    def id(self) -> str:
        return f"{self.device_id}:{self.seq}:{self.name}"


def observation_column(path: tuple[str, ...]) -> odata.Column | None:
    """The SQL column of an Observation's property path, for $filter and $orderby; None: evaluated here."""
    return {
        ("phenomenonTime",): odata.Column("m.at", "time"),
        ("resultTime",): odata.Column("m.at", "time"),
        ("result",): odata.Column("m.value", "result"),
        ("parameters", "device"): odata.Column("m.device_id", "text"),
        ("parameters", "seq"): odata.Column("m.seq", "number"),
        ("parameters", "gateway"): odata.Column("r.gateway_id", "text"),
        ("parameters", "batch"): odata.Column("r.batch_seq", "number"),
        ("parameters", "leaf"): odata.Column("r.leaf", "number"),
        ("Datastream", "Thing", "id"): odata.Column("m.device_id", "text"),
        ("Datastream", "Thing", "name"): odata.Column("m.device_id", "text"),
        ("Datastream", "ObservedProperty", "id"): odata.Column("m.name", "text"),
    }.get(path)


# $orderby of Observations: what each path orders by, in SQL
OBSERVATION_ORDER = {
    ("phenomenonTime",): ("m.at",), ("resultTime",): ("m.at",), ("result",): ("m.value", "m.value_text"),
    ("id",): ("m.device_id", "m.seq", "m.name"), ("parameters", "device"): ("m.device_id",),
    ("parameters", "seq"): ("m.seq",), ("parameters", "gateway"): ("r.gateway_id",),
    ("parameters", "batch"): ("r.batch_seq",), ("parameters", "leaf"): ("r.leaf",),
}
# what makes every order total, for paging: a datastream's observations by time, then the rest
OBSERVATION_TIEBREAK = ("m.device_id", "m.name", "m.at", "m.seq")


@dataclass
class Scope:
    """The observations a path leads to: conditions on the store's columns."""

    device_id: str | None = None
    name: str | None = None
    since: float | None = None
    until: float | None = None
    only: tuple[str, int, str] | None = None  # one observation: (device, seq, quantity)

    def where(self, names: tuple[str, ...], condition: tuple[str, list] | None = None) -> tuple[list[str], list]:
        """The conditions and their parameters; ``condition``: the part of a $filter pushed to SQL, with them."""
        sql, args = [], []
        if self.only is not None:
            sql.append("m.device_id = ? AND m.seq = ? AND m.name = ?")
            args.extend(self.only)
        if self.device_id is not None:
            sql.append("m.device_id = ?")
            args.append(self.device_id)
        if self.name is not None:
            sql.append("m.name = ?")
            args.append(self.name)
        else:  # the quantities of the datastreams: a node's status record is no observation
            sql.append(f"m.name IN ({', '.join('?' for _ in names)})")
            args.extend(names)
        if self.since is not None:
            sql.append("m.at >= ?")
            args.append(self.since)
        if self.until is not None:
            sql.append("m.at < ?")
            args.append(self.until)
        if condition is not None and condition[0]:
            sql.append(f"({condition[0]})")
            args.extend(condition[1])
        return sql, args


# -- the API ---------------------------------------------------------------------------------------------------

@dataclass
class Target:
    """What a resource path names: an entity set (``many``), or one entity, and what is asked of it."""

    type: str
    many: bool
    entity: Entity | Row | None = None  # the one entity
    candidates: list[Entity] | None = None  # a catalog set (many)
    scope: Scope | None = None  # observations (many)
    property: str | None = None  # /name
    raw: bool = False  # /name/$value
    ref: bool = False  # /$ref
    link: str = ""  # the path's URL, for nextLink


class Api:
    """The SensorThings API of one hub: ``get(path, options, base)`` answers a GET with (status, JSON bytes)."""

    def __init__(self, registry: Path, store_url: str, proofs_base: str = "/proofs"):
        self.catalogs = CatalogCache(Path(registry))
        self.reader = Reader(store_url)
        self.proofs_base = proofs_base

    # -- entry --------------------------------------------------------------------------------------------

    def get(self, path: str, options: dict[str, str], base: str) -> tuple[int, bytes, str]:
        """(status, body, media type) for ``path`` under the API's root (``"Things('x')"``, ``""`` for the
        root); ``base``: the root's URL (``http://host:8090/v1.1``). Errors are JSON with code and message."""
        try:
            if path.strip("/") == "":
                return 200, orjson.dumps(self.root(base)), "application/json"
            catalog = self.catalogs.get()
            target = self.resolve(catalog, path.strip("/"), base)
            query = odata.parse(options)
            if target.raw:
                value = self.single(catalog, target, odata.Query(), base)[target.property]
                return 200, (value if isinstance(value, str) else orjson.dumps(value).decode()).encode(), \
                    "text/plain; charset=utf-8"
            if target.many:
                body = self.collection(catalog, target, query, base, options)
            else:
                body = self.single(catalog, target, query, base)
                if target.property is not None:
                    body = {target.property: body[target.property]} if target.property in body else {}
            return 200, orjson.dumps(body), "application/json"
        except odata.QueryError as exc:
            return _error(400, str(exc))
        except ApiError as exc:
            return _error(exc.status, str(exc))

    def root(self, base: str) -> dict:
        return {"value": [{"name": plural, "url": f"{base}/{plural}"} for plural in SETS.values()],
                "serverSettings": {"conformance": list(CONFORMANCE)}}

    # -- resource paths ----------------------------------------------------------------------------------------

    def resolve(self, catalog: Catalog, path: str, base: str) -> Target:
        segments = _segments(path)
        first, key = segments[0]
        if first not in TYPES:
            raise _not_found(f"entity set {first!r}: the sets are {', '.join(SETS.values())}")
        target = Target(TYPES[first], True, link=f"{base}/{first}")
        if target.type == "Observation":
            target.scope = Scope()
        else:
            target.candidates = list(catalog.sets[target.type].values())
        if key is not None:
            target = self._one(catalog, target, key, base)
        for name, key in segments[1:]:
            if target.ref or target.raw:
                raise _not_found(f"path after {'$ref' if target.ref else '$value'}")
            if name == "$ref" and key is None and target.many and target.property is None:
                target.ref = True
                continue
            if name == "$value" and key is None and target.property is not None:
                target.raw = True
                continue
            if target.many or target.property is not None:
                raise _not_found(f"{name!r} here: after a list only its entities' ids, in (), may follow")
            t = target.type
            if name in NAVIGATION[t]:
                target = self._navigate(catalog, target, name, base)
                if key is not None:
                    target = self._one(catalog, target, key, base)
            elif name in PROPERTIES[t] and name not in ("id", "selfLink") and key is None:
                target.property = name
            else:
                raise _not_found(f"property or navigation property {name!r} of a {t}")
        return target

    def _one(self, catalog: Catalog, target: Target, key: str, base: str) -> Target:
        t = target.type
        if t == "Observation":
            row = self._observation(key)
            if row is None or not self._in_scope(row, target.scope):
                raise _not_found(f"Observation {key!r}")
            return Target(t, False, entity=row, link=f"{base}/Observations('{key}')")
        entity = catalog.get(t, key)
        if entity is None or (target.candidates is not None and entity not in target.candidates):
            raise _not_found(f"{t} {key!r}")
        return Target(t, False, entity=entity, link=f"{base}/{SETS[t]}('{key}')")

    def _navigate(self, catalog: Catalog, target: Target, nav: str, base: str) -> Target:
        t, (to, many) = target.type, NAVIGATION[target.type][nav]
        link = f"{target.link}/{nav}"
        if t == "Observation":
            row: Row = target.entity
            key = f"{row.device_id}:{row.name}" if nav == "Datastream" else catalog.foi_at(row.device_id, row.at)
            entity = catalog.get(to, key)
            if entity is None:
                raise _not_found(f"{nav} of Observation {row.id!r}")
            return Target(to, False, entity=entity, link=link)
        entity: Entity = target.entity
        if to == "Observation":
            return Target(to, True, scope=self._scope_of(catalog, entity), link=link)
        related = catalog.related(entity, nav)
        if many:
            return Target(to, True, candidates=related, link=link)
        if not related:
            raise _not_found(f"{nav} of {t} {entity.id!r}")
        return Target(to, False, entity=related[0], link=link)

    def _scope_of(self, catalog: Catalog, entity: Entity) -> Scope:
        if entity.type == "Datastream":
            device_id, name = entity.id.split(":")
            return Scope(device_id=device_id, name=name)
        device_id, since, until = catalog.foi_window(entity.id)  # a FeatureOfInterest
        return Scope(device_id=device_id, since=since, until=until)

    @staticmethod
    def _in_scope(row: Row, scope: Scope | None) -> bool:
        if scope is None:
            return True
        return ((scope.device_id is None or row.device_id == scope.device_id)
                and (scope.name is None or row.name == scope.name)
                and (scope.since is None or row.at >= scope.since)
                and (scope.until is None or row.at < scope.until))

    def _observation(self, key: str) -> Row | None:
        device_id, _, rest = key.partition(":")
        seq, _, name = rest.partition(":")
        if not (device_id and re.fullmatch(r"[0-9]{1,20}", seq) and name in QUANTITIES):
            return None
        rows = self._rows(Scope(only=(device_id, int(seq), name)), None, OBSERVATION_TIEBREAK, 0, 1)
        return rows[0] if rows else None

    # -- observations from the store --------------------------------------------------------------------------

    def _rows(self, scope: Scope, where: tuple[str, list] | None, order: tuple[str, ...], skip: int,
              limit: int | None) -> list[Row]:
        sql, args = scope.where(tuple(QUANTITIES), where)
        text = f"SELECT {OBSERVATION_COLUMNS} FROM {OBSERVATION_FROM[self.reader.dialect]} " \
               f"WHERE {' AND '.join(sql)} " \
               f"ORDER BY {', '.join(order)}"
        if limit is not None:
            text += " LIMIT ? OFFSET ?"
            args.extend((limit, skip))
        elif skip:
            text += " LIMIT -1 OFFSET ?" if self.reader.dialect == "sqlite" else " OFFSET ?"
            args.append(skip)
        return list(map(Row._make, self.reader.query(text, args)))

    def _count(self, scope: Scope, where: tuple[str, list] | None) -> int:
        sql, args = scope.where(tuple(QUANTITIES), where)
        joined = any("r." in part for part in sql)  # the readings only when the filter names their columns
        source = OBSERVATION_FROM[self.reader.dialect] if joined else "measurements m"
        return self.reader.query(f"SELECT count(*) FROM {source} WHERE {' AND '.join(sql)}", args)[0][0]

    def _message(self, row: Row) -> bytes:
        found = self.reader.query("SELECT message FROM readings WHERE device_id = ? AND seq = ?",
                                  (row.device_id, row.seq))
        return bytes(found[0][0]) if found else b""

    def _order(self, query: odata.Query) -> tuple[str, ...]:
        order: list[str] = []
        for path, descending in query.orderby:
            columns = OBSERVATION_ORDER.get(path)
            if columns is None:
                raise odata.QueryError(f"$orderby: Observations are ordered by phenomenonTime, resultTime, result, "
                                       f"id or parameters/device, seq, gateway, batch, leaf; not by "
                                       f"{'/'.join(path)}")
            order.extend(f"{c} DESC" if descending else c for c in columns)
        named = {o.split()[0] for o in order}
        order.extend(c for c in OBSERVATION_TIEBREAK if c not in named)
        return tuple(order)

    def observations(self, catalog: Catalog, scope: Scope, query: odata.Query, skip: int, top: int
                     ) -> tuple[list[Row], bool, int | None]:
        """(the page's rows, whether more follow, the count when $count asks) of the observations in ``scope``."""
        order = self._order(query)
        sql, args, residual = (None, [], None) if query.filter is None else odata.pushdown(
            query.filter, observation_column, self.reader.dialect)
        where = (sql, args) if sql else None
        if residual is None:
            rows = self._rows(scope, where, order, skip, top + 1)
            count = self._count(scope, where) if query.count else None
            return rows[:top], len(rows) > top, count
        # part of the filter is evaluated here: the rows the SQL part leaves, a chunk at a time
        page: list[Row] = []
        matched, more, offset = 0, False, 0
        while True:
            if offset >= MAX_SCAN:
                raise ApiError(400, f"$filter: the part of it SQL cannot do would be evaluated on more than "
                                    f"{MAX_SCAN:,} observations; narrow it with phenomenonTime, a Datastream, "
                                    "result or parameters (hub/README.md, \"SensorThings API\")")
            chunk = self._rows(scope, where, order, offset, SCAN_CHUNK)
            offset += len(chunk)
            for row in chunk:
                if not odata.matches(residual, self._resolver(catalog, row)):
                    continue
                if skip <= matched < skip + top:
                    page.append(row)
                elif matched >= skip + top:
                    more = True
                    if not query.count:
                        return page, more, None
                matched += 1
            if len(chunk) < SCAN_CHUNK:
                return page, more, matched if query.count else None

    def _resolver(self, catalog: Catalog, row: Row) -> Callable[[tuple[str, ...]], object]:
        def resolve(path: tuple[str, ...]):
            head, rest = path[0], path[1:]
            if head in ("phenomenonTime", "resultTime"):
                value = _when(row.at)
            elif head == "result":  # as the SQL part of the filter sees it (govedge.hub.odata.Column)
                value = odata.result_of(row.value, row.value_text)
            elif head == "id":
                value = row.id
            elif head == "parameters":
                value = self._parameters(row, "")
            elif head in ("Datastream", "FeatureOfInterest"):
                key = f"{row.device_id}:{row.name}" if head == "Datastream" else catalog.foi_at(row.device_id,
                                                                                                  row.at)
                entity = catalog.get(head, key)
                if entity is None:
                    return None
                return _entity_resolver(catalog, entity)(rest) if rest else entity.id
            else:
                raise KeyError(head)
            return _dig(value, rest)

        return resolve

    def _parameters(self, row: Row, base: str) -> dict:
        p = {"device": row.device_id, "seq": row.seq, "gateway": row.gateway_id, "batch": row.batch_seq,
             "leaf": row.leaf, "timeSource": "node" if row.time is not None else "batch",
             "proof": f"{base}{self.proofs_base}/{row.device_id}/{row.seq}"}  # a device id needs no quoting
        if row.flag:
            p["flag"] = row.flag
        return p

    # -- JSON ------------------------------------------------------------------------------------------------

    def observation_json(self, catalog: Catalog, row: Row, query: odata.Query, base: str) -> dict:
        key = f"{row.device_id}:{row.seq}:{row.name}"
        link = f"{base}/Observations('{key}')"
        at = iso(row.at)
        doc = {"@iot.id": key, "@iot.selfLink": link, "phenomenonTime": at, "resultTime": at,
               "result": result_json(row.value, row.value_text, lambda: self._message(row)),
               "parameters": self._parameters(row, _origin(base)),
               "Datastream@iot.navigationLink": f"{link}/Datastream",
               "FeatureOfInterest@iot.navigationLink": f"{link}/FeatureOfInterest"}
        if query.select is None and not query.expand:
            return doc
        return self._shape(catalog, "Observation", doc, row, query, base)

    def entity_json(self, catalog: Catalog, entity: Entity, query: odata.Query, base: str) -> dict:
        link = f"{base}/{SETS[entity.type]}('{entity.id}')"
        doc = {"@iot.id": entity.id, "@iot.selfLink": link, **entity.props}
        for nav in NAVIGATION[entity.type]:
            doc[f"{nav}@iot.navigationLink"] = f"{link}/{nav}"
        return self._shape(catalog, entity.type, doc, entity, query, base)

    def _shape(self, catalog: Catalog, type_: str, doc: dict, entity, query: odata.Query, base: str) -> dict:
        """$expand then $select on one entity's document."""
        expands = _by_navigation(query.expand)
        for nav, inner in expands:
            self._expand(catalog, type_, doc, entity, nav, inner, base)
        if query.select is None:
            return doc
        keep = {}
        for name in query.select:
            if name == "id":
                keep["@iot.id"] = doc["@iot.id"]
            elif name == "selfLink":
                keep["@iot.selfLink"] = doc["@iot.selfLink"]
            elif name in NAVIGATION[type_]:
                for key in (f"{name}@iot.navigationLink", name, f"{name}@iot.nextLink", f"{name}@iot.count"):
                    if key in doc:
                        keep[key] = doc[key]
            elif name in PROPERTIES[type_]:
                if name in doc:
                    keep[name] = doc[name]
            else:
                raise odata.QueryError(f"$select: a {type_} has no property {name!r} (its properties: "
                                       f"{', '.join(PROPERTIES[type_])}; its navigation properties: "
                                       f"{', '.join(NAVIGATION[type_])})")
        for nav, _ in expands:  # what $expand added stays
            for key in (nav, f"{nav}@iot.nextLink", f"{nav}@iot.count"):
                if key in doc:
                    keep[key] = doc[key]
        return keep

    def _expand(self, catalog: Catalog, type_: str, doc: dict, entity, nav: str, query: odata.Query,
                base: str) -> None:
        if nav not in NAVIGATION[type_]:
            raise odata.QueryError(f"$expand: a {type_} has no navigation property {nav!r} (it has "
                                   f"{', '.join(NAVIGATION[type_])})")
        to, many = NAVIGATION[type_][nav]
        target = self._navigate(catalog, Target(type_, False, entity=entity, link=doc["@iot.selfLink"]), nav, base)
        if not many:
            one = target.entity
            doc[nav] = (self.observation_json(catalog, one, query, base) if to == "Observation"
                        else self.entity_json(catalog, one, query, base))
            return
        items, _, more, count, next_link = self._page_json(catalog, target, query, base, target.link)
        doc[nav] = items
        if count is not None:
            doc[f"{nav}@iot.count"] = count
        if more:
            doc[f"{nav}@iot.nextLink"] = next_link

    # -- lists -----------------------------------------------------------------------------------------------

    def _top(self, query: odata.Query) -> int:
        return DEFAULT_TOP if query.top is None else min(query.top, MAX_TOP)

    def _page(self, catalog: Catalog, target: Target, query: odata.Query, base: str):
        """(entities or rows of the page, more follow, count)."""
        top = self._top(query)
        if target.type == "Observation":
            return self.observations(catalog, target.scope, query, query.skip, top)
        chosen = target.candidates
        if query.filter is not None:
            chosen = [e for e in chosen if odata.matches(query.filter, _entity_resolver(catalog, e))]
        chosen = _sorted(catalog, chosen, query.orderby)
        page = chosen[query.skip:query.skip + top]
        return page, len(chosen) > query.skip + top, len(chosen) if query.count else None

    def _page_json(self, catalog: Catalog, target: Target, query: odata.Query, base: str, link: str):
        page, more, count = self._page(catalog, target, query, base)
        if target.type == "Observation":
            items = [self.observation_json(catalog, row, query, base) for row in page]
        else:
            items = [self.entity_json(catalog, e, query, base) for e in page]
        next_link = _next_link(link, query, self._top(query)) if more else None
        return items, page, more, count, next_link

    def collection(self, catalog: Catalog, target: Target, query: odata.Query, base: str,
                   options: dict[str, str]) -> dict:
        if query.result_format == "dataArray":
            return self.data_array(catalog, target, query, base, options)
        if target.ref:
            page, more, count = self._page(catalog, target, query, base)
            items = [{"@iot.selfLink": f"{base}/{SETS[target.type]}('{e.id}')"} for e in page]
        else:
            items, page, more, count, _ = self._page_json(catalog, target, query, base, target.link)
        doc: dict = {}
        if count is not None:
            doc["@iot.count"] = count
        if more:
            doc["@iot.nextLink"] = _next_link_options(target.link, options, query.skip + self._top(query),
                                                      self._top(query))
        doc["value"] = items
        return doc

    def single(self, catalog: Catalog, target: Target, query: odata.Query, base: str) -> dict:
        if target.type == "Observation":
            return self.observation_json(catalog, target.entity, query, base)
        return self.entity_json(catalog, target.entity, query, base)

    def data_array(self, catalog: Catalog, target: Target, query: odata.Query, base: str,
                   options: dict[str, str]) -> dict:
        """The Data Array extension (OGC 18-088, section 14.3): the page's observations grouped by Datastream,
        each as an array of its components (the $select, or id, phenomenonTime, result)."""
        if target.type != "Observation":
            raise odata.QueryError("$resultFormat=dataArray is for Observations")
        components = list(query.select or ("id", "phenomenonTime", "result"))
        for name in components:
            if name not in PROPERTIES["Observation"] or name == "selfLink":
                raise odata.QueryError(f"$select: an Observation's dataArray has no component {name!r}")
        page, more, count = self.observations(catalog, target.scope, query, query.skip, self._top(query))
        groups: dict[str, list] = {}
        for row in page:
            doc = self.observation_json(catalog, row, odata.Query(), base)
            values = [doc["@iot.id"] if c == "id" else doc[c] for c in components]
            groups.setdefault(f"{row.device_id}:{row.name}", []).append(values)
        doc: dict = {}
        if count is not None:
            doc["@iot.count"] = count
        if more:
            top = self._top(query)
            doc["@iot.nextLink"] = _next_link_options(target.link, options, query.skip + top, top)
        doc["value"] = [{"Datastream@iot.navigationLink": f"{base}/Datastreams('{ds}')", "components": components,
                         "dataArray@iot.count": len(rows), "dataArray": rows} for ds, rows in groups.items()]
        return doc


def _by_navigation(expands) -> list[tuple[str, odata.Query]]:
    """$expand's items by navigation property: ``A/B`` is ``A($expand=B)``, and ``A/B,A/C`` one ``A`` expanding
    both."""
    out: dict[str, odata.Query] = {}
    for e in expands:
        nav = e.path[0]
        nested = e.query if len(e.path) == 1 else odata.Query(expand=(odata.Expand(e.path[1:], e.query),))
        if nav not in out:
            out[nav] = nested
            continue
        own, more = (out[nav], nested) if len(e.path) > 1 else (nested, out[nav])
        out[nav] = dataclasses.replace(own, expand=own.expand + more.expand)
    return list(out.items())


def _entity_resolver(catalog: Catalog, entity: Entity) -> Callable[[tuple[str, ...]], object]:
    def resolve(path: tuple[str, ...]):
        head, rest = path[0], path[1:]
        if head == "id":
            return _dig(entity.id, rest)
        nav = NAVIGATION[entity.type].get(head)
        if nav is not None:
            if nav[1] or nav[0] == "Observation":
                raise odata.QueryError(f"$filter: {head} of a {entity.type} is a list; filter on a single "
                                       "entity's properties")
            related = catalog.related(entity, head)
            if not related:
                return None
            return _entity_resolver(catalog, related[0])(rest) if rest else related[0].id
        if head not in PROPERTIES[entity.type] or head == "selfLink":
            raise KeyError(head)
        if head not in entity.props and head not in entity.values:
            return None
        return _dig(entity.value(head), rest)

    return resolve


def _dig(value, rest: tuple[str, ...]):
    for key in rest:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _sort_key(value) -> tuple:
    """Orders values of mixed kinds: nulls first, then numbers, text, others as text."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float, Decimal)):
        return (1, value)
    if isinstance(value, datetime):
        return (1, value.timestamp())
    return (2, str(value))


def _sorted(catalog: Catalog, entities: list[Entity], orderby) -> list[Entity]:
    result = sorted(entities, key=lambda e: e.id)
    for path, descending in reversed(orderby):
        def key(e, path=path):
            try:
                return _sort_key(_entity_resolver(catalog, e)(path))
            except KeyError:
                raise odata.QueryError(f"$orderby: a {e.type} has no property {'/'.join(path)!r}") from None
        result.sort(key=key, reverse=descending)
    return result


def _segments(path: str) -> list[tuple[str, str | None]]:
    """``Things('a')/Datastreams`` -> [("Things", "a"), ("Datastreams", None)]; a key in quotes ('' for a quote)
    or a bare number."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(path):
        m = re.compile(r"([A-Za-z$][A-Za-z0-9_]*)").match(path, i)
        if m is None:
            raise _not_found(f"resource {path!r}: a path is an entity set, (id), navigation properties and "
                             "properties, separated by /")
        name, i = m.group(1), m.end()
        key = None
        if i < len(path) and path[i] == "(":
            q = re.compile(r"\('((?:[^']|'')*)'\)|\(([0-9]+)\)").match(path, i)
            if q is None:
                raise _not_found(f"entity id in {path[i:]!r}: ids are in quotes, e.g. Things('esp32-0001')")
            key = q.group(1).replace("''", "'") if q.group(1) is not None else q.group(2)
            i = q.end()
        out.append((name, key))
        if i < len(path):
            if path[i] != "/":
                raise _not_found(f"resource {path!r}")
            i += 1
    if not out:
        raise _not_found("resource ''")
    return out


@functools.lru_cache(maxsize=64)
def _origin(base: str) -> str:
    """``http://host:8090`` of ``http://host:8090/v1.1``."""
    parts = urllib.parse.urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def _next_link_options(link: str, options: dict[str, str], skip: int, top: int) -> str:
    kept = {k: v for k, v in options.items() if k not in ("$skip", "$top")}
    kept["$top"] = str(top)
    kept["$skip"] = str(skip)
    return f"{link}?{urllib.parse.urlencode(kept, safe='$(),/:')}"


def _next_link(link: str, query: odata.Query, top: int) -> str:
    """The next page of an expanded list: its own URL with the expansion's options as they would be given."""
    from odata_query.roundtrip import AstToODataVisitor

    options = {}
    if query.filter is not None:
        options["$filter"] = AstToODataVisitor().visit(query.filter)
    if query.orderby:
        options["$orderby"] = ",".join("/".join(p) + (" desc" if d else "") for p, d in query.orderby)
    if query.select is not None:
        options["$select"] = ",".join(query.select)
    return _next_link_options(link, {k: v for k, v in options.items() if v}, query.skip + top, top)


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return status, orjson.dumps({"code": status, "type": "error", "message": message}), "application/json"
