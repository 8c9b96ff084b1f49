"""The hub's data dashboard (`govedge hub web`, /dashboard) in a real headless Chromium, against a real `govedge hub
web` process over a store of signed readings (tests/support/sta.py, with a year of hourly particulate matter of
one more station): the plan puts the stations where their longitude and latitude say, the plots hold exactly the
values the nodes signed in the chosen period, the calendar's days over the limit values are the report method's,
the verify view checks a proven reading link by link and names the missing epoch of an unproven one, a
hostile place stays text, nothing is fetched from elsewhere, nothing is wider than a phone.

GOVEDGE_SCREENSHOTS=docs/img makes the screenshots hub/README.md shows (dashboard-laptop.png, dashboard-phone.png,
dashboard-verify.png).
"""

from __future__ import annotations

import calendar
import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from govedge.core.registry import Registry
from support import wait_until
from support.browser import LAPTOP, PHONE
from support.sta import DEVICES, GATEWAY, PM_YEAR, YEAR_PLACE, YEAR_STATION, StaWorld, hub_web

pytestmark = pytest.mark.e2e  # a real server process and a browser

PLOTTED = "esp32-0001"  # the first station with a location: the page opens on it
DAY_S = 86400


def screenshot(page, name: str, element: str | None = None) -> None:
    folder = os.environ.get("GOVEDGE_SCREENSHOTS")
    if folder:
        if element:
            page.locator(element).screenshot(path=str(Path(folder) / name))
        else:
            page.screenshot(path=str(Path(folder) / name), full_page=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    world = StaWorld(tmp_path_factory.mktemp("dashboard"), pm_year=True)
    with hub_web(world) as (web, port):
        world.origin = f"http://127.0.0.1:{port}"
        yield world
    assert "Traceback" not in web.log


def day_of(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")


def shown_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def plots(page) -> dict:
    """Each plot's data as plotly holds it in the page: datastream -> (x, y, customdata)."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.plot')].map((d) =>
        [d.dataset.datastream, d.data ? [d.data[0].x, d.data[0].y, d.data[0].customdata] : null]))""")


def plotted(page) -> None:
    """Waits until every plot of the station is drawn (the page's CSP allows no string evaluated as script:
    waited for here, not with wait_for_function)."""
    wait_until(lambda: page.evaluate("() => { const p = [...document.querySelectorAll('.plot')]; "
                                     "return p.length > 0 && p.every((d) => d.data); }"), what="the plots drawn")


def choose_period(page, first: str, last: str) -> None:
    page.fill("#from", first)
    page.fill("#to", last)
    page.click("#period button[type=submit]")
    wait_until(lambda: page.inner_text("#period-note").startswith(f"{first}T00:00:00Z"), what="the period shown")
    plotted(page)


def expect_signed(world, device: str, first: str, last: str) -> dict:
    start = calendar.timegm(datetime.strptime(first, "%Y-%m-%d").timetuple())
    end = calendar.timegm(datetime.strptime(last, "%Y-%m-%d").timetuple()) + DAY_S
    out = {}
    for s, q in world.observations(device):
        if start <= s.at < end:
            x, y, ids = out.setdefault(f"{device}:{q}", ([], [], []))
            x.append(shown_time(s.at))
            y.append(float(Decimal(s.values[q])))
            ids.append(f"{device}:{s.seq}:{q}")
    return {ds: [list(v) for v in lists] for ds, lists in out.items()}


def click_point(page, datastream: str, n: int) -> str:
    """Clicks the n-th plotted point of a datastream; returns the observation id plotly gives it."""
    point = page.locator(f'[id="plot-{datastream}"] .scatterlayer .point').nth(n)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    return page.evaluate("([id, n]) => document.getElementById(id).data[0].customdata[n]", [f"plot-{datastream}", n])


def expected_errors(page, text: str) -> None:
    """Errors the test provoked on purpose (a 404 of a proof not there yet) are taken off the page's list."""
    found = [e for e in page.errors if text in e]
    assert found, page.errors
    page.errors[:] = [e for e in page.errors if text not in e]


def test_the_plan_places_every_located_station_by_longitude_and_latitude(served, browser):
    registry = Registry.load(served.folder / "registry.json")
    where = {d: (dev.location.longitude, dev.location.latitude) for d, dev in registry.devices.items() if dev.location}
    requests = []
    with browser.page(f"{served.origin}/dashboard", LAPTOP, wait_for="#plan .station") as page:
        page.on("request", lambda r: requests.append(r.url))
        page.reload()
        page.wait_for_selector("#plan .station")
        plotted(page)
        dots = page.evaluate("""() => [...document.querySelectorAll('#plan .station')].map((g) => {
            const r = g.querySelector('circle').getBoundingClientRect();
            return [g.dataset.id, r.x + r.width / 2, r.y + r.height / 2, g.dataset.x, g.dataset.y,
                    [...g.querySelectorAll('text')].map((t) => t.dataset.full ?? t.textContent)];
        })""")
        on_screen = {d[0]: (d[1], d[2]) for d in dots}
        assert set(on_screen) == set(where) == {"esp32-0001", "esp32-0002", YEAR_STATION}
        # east is right, north is up: the order on screen is the order of longitude, and of latitude reversed
        assert sorted(on_screen, key=lambda d: on_screen[d][0]) == sorted(where, key=lambda d: where[d][0])
        assert sorted(on_screen, key=lambda d: on_screen[d][1]) == sorted(where, key=lambda d: -where[d][1])
        # the scale bar: its kilometres per pixel are the plan's between two stations (equirectangular)
        bar = page.evaluate("""() => { const l = document.querySelector('#plan line.bar');
            return [l.x2.baseVal.value - l.x1.baseVal.value, document.getElementById('scale').textContent]; }""")
        number, unit = bar[1].split()
        bar_km = float(number) / (1 if unit == "km" else 1000)
        svg_at = {d[0]: (float(d[3]), float(d[4])) for d in dots}
        lat_c = (max(p[1] for p in where.values()) + min(p[1] for p in where.values())) / 2
        (lon1, lat1), (lon2, lat2) = where["esp32-0001"], where["esp32-0002"]
        km = 111.32 * math.hypot((lon1 - lon2) * math.cos(math.radians(lat_c)), lat1 - lat2)
        px = math.dist(svg_at["esp32-0001"], svg_at["esp32-0002"])
        assert bar_km / bar[0] == pytest.approx(km / px, rel=0.01)
        # labels: id and place; a place written as markup stays text, and nothing of it runs
        labels = {d[0]: d[5] for d in dots}
        assert labels[YEAR_STATION] == [YEAR_STATION, YEAR_PLACE]
        assert labels["esp32-0002"] == ["esp32-0002", "Roncalliplatz, Köln"]
        assert page.locator("img").count() == 0 and page.locator("b").count() == 0
        # every label inside the plan (a long one shortened, whole in its tooltip)
        assert page.evaluate("""() => { const box = document.getElementById('plan').viewBox.baseVal;
            return [...document.querySelectorAll('#plan text')].every((t) => { const b = t.getBBox();
                return b.x >= 0 && b.x + b.width <= box.width && b.y >= 0 && b.y + b.height <= box.height; }); }""")
        unlocated = page.locator("#unlocated button").all_inner_texts()
        assert unlocated == [d for d, (_s, locations) in DEVICES.items() if not locations] == ["esp32-0003"]
        # clicking a station selects it
        page.locator(f'#plan .station[data-id="{YEAR_STATION}"] circle').click()
        wait_until(lambda: page.inner_text("#station-title") == f"{YEAR_STATION} · {YEAR_PLACE}",
                   what="the station selected")
        assert page.locator("#plan .station.selected").get_attribute("data-id") == YEAR_STATION
        wait_until(lambda: page.evaluate("[...document.querySelectorAll('.plot')].map((d) => d.dataset.datastream)")
                   == [f"{YEAR_STATION}:pm10", f"{YEAR_STATION}:pm2_5"], what="the new station's plots")
    outside = [u for u in requests if not u.startswith(served.origin) and not u.startswith("data:")]
    assert outside == [] and any(u.endswith("/vendor/plotly.min.js") for u in requests)


def test_the_plots_hold_the_signed_values_of_the_chosen_period(served, browser):
    newest = max(s.at for s in served.signed if s.device == PLOTTED)
    with browser.page(f"{served.origin}/dashboard", LAPTOP, wait_for=".plot .main-svg") as page:
        plotted(page)
        last = day_of(newest)  # by default: the last day with data
        assert (page.input_value("#from"), page.input_value("#to")) == (last, last) == ("2026-03-02", "2026-03-02")
        expected = expect_signed(served, PLOTTED, last, last)
        assert set(expected) == {f"{PLOTTED}:{q}" for q in ("temp", "hum", "press", "pm2_5", "pm10")}
        assert plots(page) == expected
        units = page.evaluate("[...document.querySelectorAll('.plot')].map((d) => d.layout.yaxis.title.text)")
        assert sorted(units) == sorted(["°C", "%", "Pa", "µg/m³", "µg/m³"])

        choose_period(page, "2026-03-01", "2026-03-02")  # two days: 288 values each, across a page of the API
        assert plots(page) == expect_signed(served, PLOTTED, "2026-03-01", "2026-03-02")
        assert len(plots(page)[f"{PLOTTED}:pm10"][1]) == 288


def test_the_verify_view_checks_a_proven_reading_link_by_link_as_govedge_verify_does(served, browser, tmp_path):
    with browser.page(f"{served.origin}/dashboard", LAPTOP, wait_for=".plot .main-svg") as page:
        choose_period(page, "2026-03-01", "2026-03-01")  # the first batches: in the anchored epoch
        observation = click_point(page, f"{PLOTTED}:pm10", 40)
        wait_until(lambda: page.locator("#links > li").count() == 6, what="the links checked")
        assert page.inner_text("#verify-title") == f"Verify observation {observation}"
        device, seq, _q = observation.split(":")
        signed = next(s for s in served.signed if s.device == device and s.seq == int(seq))
        provenance = dict(zip(page.locator("#verify-reading dt").all_inner_texts(),
                              page.locator("#verify-reading dd").all_inner_texts()))
        assert (provenance["device"], provenance["sequence number"], provenance["gateway"], provenance["batch"],
                provenance["leaf"]) == (device, seq, GATEWAY, str(signed.batch), str(signed.leaf))
        assert provenance["result"] == f"{signed.values['pm10']} µg/m³"  # the digits as signed: 44.0, not 44
        links = page.evaluate("""() => [...document.querySelectorAll('#links > li')].map((li) =>
            [li.dataset.link, li.dataset.status, li.className, li.querySelector('.verdict').textContent])""")
        assert [link[0] for link in links] == ["reading", "device_signature", "batch_path", "epoch_path",
                                               "anchor_receipt", "chain"]
        assert [link[2] for link in links[:5]] == ["ok"] * 5  # green: every link up to the receipt holds
        assert [link[3] for link in links] == ["valid"] * 4 + ["valid offline", "not checked here"]
        key_id = Registry.load(served.folder / "registry.json").devices[device].active_key.key_id
        assert key_id in page.inner_text('#links li[data-link="device_signature"]')
        assert "block 812" in page.inner_text('#links li[data-link="anchor_receipt"]')
        bundle_url = f"{served.origin}/proofs/{device}/{seq}"
        command = page.inner_text("#verify-command")
        assert bundle_url in command and "govedge verify bundle.json --registry registry.json --rpc" in command
        screenshot(page, "dashboard-verify.png", "#verify")

    # the verdicts are govedge verify's on the same bundle and registry
    with urllib.request.urlopen(bundle_url, timeout=30) as r:
        (tmp_path / "bundle.json").write_bytes(r.read())
    run = subprocess.run([str(Path(sys.executable).with_name("govedge")), "verify", str(tmp_path / "bundle.json"),
                          "--registry", str(served.folder / "registry.json"), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert [[e["link"], e["status"]] for e in json.loads(run.stdout)["links"]] == [link[:2] for link in links]


def test_the_verify_view_names_the_missing_epoch_of_an_unproven_reading(served, browser):
    with browser.page(f"{served.origin}/dashboard", LAPTOP, wait_for=".plot .main-svg") as page:
        plotted(page)
        observation = click_point(page, f"{PLOTTED}:temp", 100)  # the last day: batches in no epoch yet
        device, seq, _q = observation.split(":")
        signed = next(s for s in served.signed if s.device == device and s.seq == int(seq))
        assert signed.batch >= served.proven_batches
        wait_until(lambda: "No proof yet" in page.inner_text("#verify-state"), what="the missing proof told")
        assert page.inner_text("#verify-state") == (
            f"No proof yet: batch {GATEWAY}/{signed.batch} is in no epoch the hub has yet: the gateway sends an "
            "epoch once the chain has confirmed its anchor")
        assert page.locator("#links > li").count() == 0
        expected_errors(page, "404")


def test_the_calendar_s_days_over_the_limit_values_are_the_report_method_s(served, browser):
    from govedge.core import report as method

    # the method's figures from the readings as they were signed, not from the store
    figures = method.Figures(method.year_period(PM_YEAR), 3600)
    for s in served.signed:
        if s.device == YEAR_STATION:
            for q, v in s.values.items():
                figures.add(q, s.at, Decimal(v))
    body = figures.body()
    with browser.page(f"{served.origin}/dashboard", LAPTOP, wait_for=".plot .main-svg") as page:
        page.locator(f'#plan .station[data-id="{YEAR_STATION}"] circle').click()
        wait_until(lambda: "hour's 1 reading slot," in page.inner_text("#calendar-method"), what="the hourly calendar")
        # the station reads once an hour: so its readings are spaced, and so the calendar's hours are counted
        assert (page.input_value("#interval"), page.input_value("#year")) == ("3600", str(PM_YEAR))
        for name in ("pm10", "pm2_5"):
            cells = page.evaluate(f"""() => [...document.querySelectorAll('#calendar-{name} .day[data-date]')].map(
                (d) => [d.dataset.date, d.className, d.dataset.mean ?? null, d.dataset.over])""")
            assert len(cells) == 365
            days = {method.day_text(day): (mean, hours) for day, mean, hours in body[name]["days"]}
            for date, cls, mean, over in cells:
                if date not in days:
                    assert cls == "day empty", date
                elif days[date][0] is None:
                    assert cls == "day short" and mean is None, date
                else:
                    assert Decimal(mean) == days[date][0], date
            assert sum(1 for c in cells if c[1] == "day empty") == 30  # November
            for a in body[name]["assessment"]:
                if "days_over" in a:
                    shown = sum(1 for c in cells if a["limit"] in c[3].split())
                    assert shown == a["days_over"] > 0, a
                    li = page.locator(f'#assessment-{name} li[data-limit="{a["limit"]}"]')
                    assert li.get_attribute("data-days-over") == str(a["days_over"])
        # PM10 over 50 in 2025 is over the limit value in force (red); over 45 only, the one from 2030 (orange)
        assert page.locator("#calendar-pm10 .day.over").count() == next(
            a["days_over"] for a in body["pm10"]["assessment"] if a["limit"] == "2008/50/EC:pm10:day")
        assert page.locator("#calendar-pm2_5 .day.over").count() == 0
        assert page.locator("#calendar-pm2_5 .day.over-later").count() > 0
        screenshot(page, "dashboard-laptop.png")


def test_at_phone_width_the_plan_and_plots_stack_and_nothing_is_wider_than_the_window(served, browser):
    with browser.page(f"{served.origin}/dashboard", PHONE, wait_for=".plot .main-svg") as page:
        page.locator(f'#plan .station[data-id="{YEAR_STATION}"] circle').click()
        wait_until(lambda: page.evaluate("[...document.querySelectorAll('.plot')].map((d) => d.dataset.datastream)")
                   == [f"{YEAR_STATION}:pm10", f"{YEAR_STATION}:pm2_5"], what="the year station's plots")
        plotted(page)
        # the calendar is the chosen station's (an answer for the station shown first comes too late to count)
        wait_until(lambda: page.locator("#calendars h3").all_inner_texts() == [f"PM10, {PM_YEAR}", f"PM2.5, {PM_YEAR}"]
                   and "hour's 1 reading slot," in page.inner_text("#calendar-method"), what="the station's calendar")
        page.wait_for_timeout(300)  # the plots follow their boxes' width
        assert page.overflows() <= 0
        boxes = page.evaluate("""() => ['#plan', '.beside', ...[...document.querySelectorAll('.plot')].map(
            (d) => `[id="${d.id}"]`)].map((s) => { const r = document.querySelector(s).getBoundingClientRect();
            return [r.left, r.top, r.right]; })""")
        assert all(b[2] <= PHONE["width"] for b in boxes)
        tops = [b[1] for b in boxes]
        assert tops == sorted(tops) and len(set(tops)) == len(tops)  # one column: each below the one before
        widths = page.evaluate("""() => [...document.querySelectorAll('.plot')].map((d) =>
            [d.getBoundingClientRect().width, d.querySelector('.main-svg').getBoundingClientRect().width])""")
        assert all(svg <= box + 1 for box, svg in widths)
        screenshot(page, "dashboard-phone.png")


def test_the_daily_means_endpoint_refuses_what_it_cannot_answer(served):
    def answer(query: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{served.origin}/api/daily?{query}", timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert answer("station=esp32-9999&year=2025") == (404, {
        "code": 404, "type": "error",
        "message": "station 'esp32-9999' is not a device of the registry (give a device id, e.g. esp32-0007)"})
    assert answer("station=esp32-0004&year=25")[0] == 400
    assert answer("station=esp32-0004&year=2025&interval=7")[0] == 400
    code, doc = answer(f"station={YEAR_STATION}&year={PM_YEAR}&interval=3600")
    assert code == 200 and set(doc["quantities"]) == {"pm10", "pm2_5"}


def test_the_verify_endpoint_answers_a_reading_it_has_not_with_404_and_the_dashboard_alone_allows_inline_styles(
        served):
    def answer(path: str) -> tuple[int, dict, dict]:
        try:
            with urllib.request.urlopen(f"{served.origin}{path}", timeout=30) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return exc.code, json.loads(body) if exc.headers.get("content-type") == "application/json" else body, \
                dict(exc.headers)

    assert answer("/api/verify/esp32-0001/x1")[:2] == (404, {"code": 404, "type": "error",
                                                            "message": "no reading number 'x1'"})
    assert answer("/api/verify/..%2F..%2Fetc/1")[0] == 404
    assert answer("/api/verify/esp32-9999/1")[:2] == (404, {"code": 404, "type": "error",
                                                           "message": "the hub has no reading esp32-9999 #1"})
    csp = {path: answer(path)[2]["content-security-policy"] for path in ("/dashboard", "/", "/dashboard.js")}
    assert csp["/dashboard"] == ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                 "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    assert "unsafe-inline" not in csp["/"] and "unsafe-inline" not in csp["/dashboard.js"]
    code, body, headers = answer("/vendor/plotly.min.js")
    assert code == 200 and headers["content-type"].startswith("text/javascript") and len(body) > 1_000_000
