"""The hub's status page (`govedge hub web`) in a real headless Chromium, against a real hub process and a real
gateway process that sends it batches and heartbeats: the gateways' and devices' rows are what `govedge hub
status` builds from the store, the page refreshes itself, a gateway that stops is shown silent, the page is
usable at a phone's width and nothing goes wrong in the browser's console.

GOVEDGE_SCREENSHOTS=docs/img makes the screenshots docs/ shows (laptop and phone width).
"""

from __future__ import annotations

import os
from pathlib import Path

from govedge.core import topics
from govedge.hub import config as hubconfig
from govedge.hub.status import status
from govedge.tools.dev.broker import Mosquitto, free_port
from support import wait_until
from support.browser import LAPTOP, PHONE
from support.deploy import GATEWAY_ID, CliProcess, GatewayProcess
from support.hubkit import World, hub_beside, publish


def screenshot(page, name: str) -> None:
    folder = os.environ.get("GOVEDGE_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_the_hub_page_shows_gateways_and_devices_as_the_store_holds_them(browser, tmp_path):  # noqa: F811
    world = World(tmp_path / "world", devices=3)
    local = Mosquitto(tmp_path / "local").start()
    hub_broker = Mosquitto(tmp_path / "hub-broker", persistence=True).start()
    gw = GatewayProcess(tmp_path / "gateway", world.folder / "registry.json", local.port, hub_broker.port,
                        extra='[verify]\nclock_synchronized = "yes"\n',
                        hub=f'[hub]\nhost = "127.0.0.1"\nport = {hub_broker.port}\nrate_per_s = 0\nheartbeat_s = 1\n')
    hub = hub_beside(tmp_path / "hubside", world.folder / "registry.json", GATEWAY_ID, gw.public_key, hub_broker.port)
    cfg = hubconfig.load(hub.config)
    port = free_port()
    page_server = CliProcess(["hub", "web", "--config", str(hub.config), "--host", "127.0.0.1", "--port", str(port),
                              "--refresh", "0.5"], tmp_path / "web.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        hub.start()
        hub.wait_subscribed()
        gw.start()
        gw.wait_for_log("ingest: subscribed")
        quiet = world.devices[2]  # in the registry, never sends
        publish(local.port, [(topics.reading(d), world.message(d)) for d in world.devices[:2] for _ in range(3)])
        wait_until(lambda: [d["last_seq"] for d in status(cfg)["devices"] if d["device_id"] != quiet] == [2, 2],
                   what="every reading at the hub", detail=lambda: hub.log[-1500:])
        page_server.start()
        wait_until(lambda: "the status page on" in page_server.log, what="the page served",
                   detail=lambda: page_server.log)

        with browser.page(url, LAPTOP, wait_for="#gateways") as page:
            doc = status(cfg)
            gateways = page.cells("gateways")
            assert [g["gateway"] for g in gateways] == [g["gateway_id"] for g in doc["gateways"]] == [GATEWAY_ID]
            ours = doc["gateways"][0]
            assert gateways[0]["unconfirmed batches"] == str(ours["unconfirmed_batches"])
            assert gateways[0]["devices"] == str(ours["devices_total"]) == "2"
            assert gateways[0]["problems"] == "" and page.inner_text("#state") == "OK"
            devices = {d["device"]: d for d in page.cells("devices")}
            assert set(devices) == {d["device_id"] for d in doc["devices"]} == set(world.devices)
            for d in doc["devices"]:
                assert devices[d["device_id"]]["last seq"] == ("—" if d["last_seq"] is None else str(d["last_seq"]))
            assert devices[quiet]["state"] == "never seen"
            screenshot(page, "hub-status-laptop.png")

            publish(local.port, [(topics.reading(world.devices[0]), world.message(world.devices[0]))])
            wait_until(lambda: {d["device"]: d for d in page.cells("devices")}[world.devices[0]]["last seq"] == "3",
                       what="the page refreshed with the new reading")

        with browser.page(url, PHONE, wait_for="#gateways") as page:
            assert page.overflows() <= 0
            screenshot(page, "hub-status-phone.png")
            gw.stop()  # three heartbeats of 1 s without a word: silent
            wait_until(lambda: "silent for" in page.cells("gateways")[0]["problems"], timeout=30,
                       what="the page told the stopped gateway")
            assert page.inner_text("#state").endswith(("PROBLEM", "PROBLEMS"))
            assert page.locator("#gateways tbody tr.problem").count() == 1
            assert f"gateway {GATEWAY_ID}: silent for" in page.inner_text("#problems")
    finally:
        page_server.stop()
        gw.stop()
        hub.stop()
        local.stop()
        hub_broker.stop()
    assert "Traceback" not in page_server.log
