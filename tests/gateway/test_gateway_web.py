"""The gateway's status page (`govedge gateway web`) in a real headless Chromium: it renders what the status
document says and the store holds, per node; it refreshes itself; it shows a stopped service as NOT RUNNING;
it is usable at a phone's width; nothing goes wrong in the browser's console; and it serves its own files only.

GOVEDGE_SCREENSHOTS=docs/img makes the screenshots docs/ shows (laptop and phone width).
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path

from govedge.core import topics
from govedge.core.registry import Registry
from govedge.gateway import health
from govedge.gateway.clocksync import GatewayClock
from govedge.tools.dev.broker import free_port
from support import wait_until
from support.browser import LAPTOP, PHONE
from support.deploy import GATEWAY_ID, CliProcess
from support.hubkit import publish
from support.nodes import VirtualNode
from support.rig import running  # noqa: F401 - the fixture

NODE = "esp32-0601"


def web(config: Path, log: Path, *flags: str) -> tuple[CliProcess, str]:
    port = free_port()
    proc = CliProcess(["gateway", "web", "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                       "--refresh", "0.5", *flags], log).start()
    url = f"http://127.0.0.1:{port}/"

    def up():
        assert proc.proc.poll() is None, proc.log
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(up, what="the status page served", detail=lambda: proc.log)
    return proc, url


def screenshot(page, name: str) -> None:
    folder = os.environ.get("GOVEDGE_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_the_page_shows_what_the_store_holds_per_node_and_refreshes(running, browser, build_dir, tmp_path):  # noqa: F811
    r = running(clock=GatewayClock("yes"))
    config = tmp_path / "gw" / "gateway.toml"
    chatty, mute = r.world.devices
    node = VirtualNode(tmp_path / NODE, build_dir, r.world.folder / "registry.json", NODE, r.local.port,
                       status_every=2)
    r.sub.registry = Registry.load(r.world.folder / "registry.json")
    node.sim(vsupply_mv=3287)
    node.start()
    try:
        publish(r.local.port, [(topics.reading(chatty), r.world.message(chatty)),
                               (topics.reading(chatty), b"not a signed reading")])
        wait_until(lambda: any(n["device_id"] == NODE and (n["status_seq"] or 0) >= 2
                               for n in health.status(r.gw.cfg)["nodes"]),
                   what="the node's status records", detail=lambda: node.log[-2000:])
    finally:
        node.kill()
    wait_until(lambda: health.status(r.gw.cfg)["quarantine"]["kept"] == 1, what="the garbage quarantined")
    proc, url = web(config, tmp_path / "web.log")
    try:
        with browser.page(url, LAPTOP, wait_for="#nodes") as page:
            doc = health.status(r.gw.cfg)
            rows = {row["device"]: row for row in page.cells("nodes")}
            assert set(rows) == {n["device_id"] for n in doc["nodes"]} == {NODE, chatty, mute}
            for n in doc["nodes"]:
                row = rows[n["device_id"]]
                assert row["last seq"] == ("—" if n["last_seq"] is None else str(n["last_seq"]))
                assert row["quarantined"] == str(n["quarantined"])
                assert row["buffered"] == ("—" if n["buffer_pending"] is None else str(n["buffer_pending"]))
            assert rows[NODE]["supply"] == "3.29 V" and rows[NODE]["health"] == "ok"
            assert rows[chatty]["quarantined"] == "1" and rows[mute]["last seen"] == "never"
            assert page.inner_text("#state") == "OK"
            assert f"gateway {GATEWAY_ID}" in page.inner_text("#title")
            assert "not a signed reading" not in page.content()  # a quarantined message's bytes are not shown
            screenshot(page, "gateway-status-laptop.png")

            before = int(rows[chatty]["last seq"])
            publish(r.local.port, [(topics.reading(chatty), r.world.message(chatty)) for _ in range(3)])
            wait_until(lambda: {row["device"]: row for row in page.cells("nodes")}[chatty]["last seq"]
                       == str(before + 3), what="the page refreshed with the new readings")

        with browser.page(url, PHONE, wait_for="#nodes") as page:
            assert page.overflows() <= 0  # nothing to scroll sideways on a phone
            cell = page.locator("#nodes tbody tr").first.locator("td").nth(2)
            assert cell.evaluate("td => getComputedStyle(td, '::before').content") == '"last seq"'  # cards
            screenshot(page, "gateway-status-phone.png")

            r.gw.stop()  # stopped cleanly: no live state left
            r.thread.join(20)
            wait_until(lambda: page.inner_text("#state") == "NOT RUNNING", what="the page saw the service stop")
            assert "not running: no live state" in page.inner_text("#content")
    finally:
        proc.stop()


def test_the_page_serves_its_own_files_only_and_says_when_the_store_cannot_be_read(running, browser, tmp_path):  # noqa: F811
    r = running()
    proc, url = web(tmp_path / "gw" / "gateway.toml", tmp_path / "web.log")
    try:
        with urllib.request.urlopen(url + "api/status") as response:
            headers = response.headers
            assert response.status == 200 and response.headers["content-type"] == "application/json"
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"
        for path in ("../gateway.toml", "%2e%2e/gateway.toml", "gateway.py", "shared/../web.py"):
            try:
                urllib.request.urlopen(url + path)
            except urllib.error.HTTPError as exc:
                assert exc.code == 404, path
            else:
                raise AssertionError(f"{path} was served")

        with browser.page(url, LAPTOP, wait_for="#nodes, #content > *") as page:
            db = r.gw.db_path
            r.close()  # the service stopped; then its store goes away under the page
            for p in db.parent.glob("gateway.db*"):
                p.unlink()
            wait_until(lambda: not page.is_hidden("#trouble"), what="the page told the store cannot be read")
            assert "does not exist" in page.inner_text("#trouble")
            page.errors.clear()  # the failed fetch (HTTP 500) is the console's error this test asked for
    finally:
        proc.stop()
    assert "Traceback" not in proc.log
