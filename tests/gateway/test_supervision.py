"""Supervised parts: an exception nobody foresaw in the uplink, the anchor stage, a paho callback or a
housekeeping pass is logged and counted, the part comes back by itself, status tells the truth while it
is down, and data flows again afterwards.

The gateway is the real service object running in a thread of the test, with real brokers (local and
hub) and a hub-side subscriber that verifies every batch. Each test makes one part raise once: that stands
in for the bug nobody has found yet. Pauses between restarts are shortened.
"""

from __future__ import annotations

import socket
import threading

from govedge.gateway import health
from govedge.gateway import quota as gwquota
from govedge.gateway import store as gwstore
from govedge.gateway import uplink as gwuplink
from govedge.gateway.supervise import Backoff
from support import wait_until
from support.rig import running  # noqa: F401 - the fixture


def fail_once(monkeypatch, cls, name: str, thread: str | None = None):
    """Makes ``cls.name`` raise once (in the named thread, when given); returns an event set when it did."""
    original = getattr(cls, name)
    raised = threading.Event()

    def failing(*args, **kwargs):
        if not raised.is_set() and (thread is None or threading.current_thread().name == thread):
            raised.set()
            raise RuntimeError(f"injected fault in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, name, failing)
    return raised


def test_an_exception_in_the_uplink_restarts_it_and_status_says_so_while_it_is_down(running, monkeypatch):
    r = running()
    r.send(2)
    wait_until(lambda: r.hub_count() >= 4, what="the first readings at the hub")
    raised = fail_once(monkeypatch, gwuplink.HubUplink, "_publish")
    r.send(2)
    wait_until(raised.is_set, what="the injected fault")
    wait_until(lambda: r.hub_count() >= 8, what="the readings sent after the fault at the hub")
    assert r.gw.counters["part_faults_uplink"] == 1
    assert r.metric("govedge_part_faults_total", part="uplink") == 1
    told = [(state, ok) for part, state, ok in r.states if part == "uplink"]
    failed = [i for i, (state, ok) in enumerate(told) if state.startswith("failed (RuntimeError: injected fault")]
    assert failed and not told[failed[0]][1] and "restarting in 0.5 s" in told[failed[0]][0]
    assert any(state.startswith("connected") and ok for state, ok in told[failed[0] + 1:])
    # while it was down, status and metrics told the truth; now it is back
    line, connected = r.while_failed["uplink"]
    assert "PROBLEM: failed (RuntimeError: injected fault in _publish); restarting in 0.5 s" in line
    assert connected == 0
    assert r.live("uplink").startswith("connected")
    assert r.metric("govedge_uplink_connected") == 1
    assert r.thread.is_alive() and r.gw.uplink.is_alive()
    assert not r.sub.errors


def test_an_exception_in_the_anchor_stage_restarts_it_and_epochs_are_anchored_afterwards(running, monkeypatch):
    r = running(anchor=True)
    raised = fail_once(monkeypatch, gwstore.Store, "epochs_to_anchor", thread="anchor")
    r.gw.anchorer.wake.set()
    wait_until(raised.is_set, what="the injected fault")
    wait_until(lambda: "anchor" in r.while_failed, what="the fault told")
    assert r.metric("govedge_part_faults_total", part="anchor") == 1
    assert any(p == "anchor" and s.startswith("failed (RuntimeError") and not ok for p, s, ok in r.states)
    assert "PROBLEM: failed (RuntimeError: injected fault in epochs_to_anchor)" in r.while_failed["anchor"][0]
    r.send(2)
    wait_until(lambda: r.hub_count() >= 4, what="readings at the hub")
    wait_until(lambda: r.gw.counters["epochs_anchored"] >= 1, what="an epoch anchored after the restart", timeout=30)
    assert r.live("anchor").startswith(("every epoch is anchored", "anchoring on"))
    assert r.gw.anchorer.is_alive()


def test_an_exception_in_a_paho_callback_never_ends_pahos_network_thread(running, monkeypatch):
    r = running()
    r.send(1)
    wait_until(lambda: r.hub_count() >= 2, what="the first readings at the hub")
    original = health.LiveState.set
    failing = threading.Event()

    def full_disk(self, part, state, ok):
        if failing.is_set() and part in ("ingest", "uplink"):
            raise OSError(28, "No space left on device")
        return original(self, part, state, ok)

    monkeypatch.setattr(health.LiveState, "set", full_disk)
    r.gw.live.set = full_disk.__get__(r.gw.live)  # the recorder of the fixture stands aside
    failing.set()
    # both clients lose their broker's connection and paho's own threads get it back: their callbacks tell
    # the state and raise (a disconnect() asked for from here would end paho's loop instead)
    for client in (r.gw.ingest.client, r.gw.uplink.client):
        client.socket().shutdown(socket.SHUT_RDWR)
    wait_until(lambda: r.gw.counters["part_faults_ingest_callback"] >= 1, what="the ingest callback's fault counted")
    wait_until(lambda: r.gw.counters["part_faults_uplink_callback"] >= 1, what="the uplink callback's fault counted")
    wait_until(lambda: r.gw.uplink.connected.is_set(), what="uplink connected again")
    assert r.metric("govedge_part_faults_total", part="ingest_callback") >= 1
    failing.clear()
    r.send(2)  # both network threads still run: the readings reach the hub
    wait_until(lambda: r.hub_count() >= 6, what="readings after the callbacks' faults at the hub")
    assert r.gw.ingest.client._thread.is_alive() and r.gw.uplink.client._thread.is_alive()


def test_an_exception_in_housekeeping_is_counted_and_the_gateway_goes_on(running, monkeypatch):
    r = running()
    raised = fail_once(monkeypatch, gwquota.Quota, "keep_within_quota")
    wait_until(raised.is_set, what="the injected fault")
    wait_until(lambda: "housekeeping" in r.while_failed, what="the fault told")
    assert r.metric("govedge_part_faults_total", part="housekeeping") == 1
    assert "PROBLEM: the last pass failed (RuntimeError: injected" in r.while_failed["housekeeping"][0]
    wait_until(lambda: r.live("housekeeping") == "passes run again", what="the next pass")
    r.send(2)
    wait_until(lambda: r.hub_count() >= 4, what="readings at the hub")
    assert r.thread.is_alive()


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_good_running():
    b = Backoff(first=1, cap=60, reset_after=60)
    assert [b.next(0) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.next(61) == 1
    assert b.next(1) == 2
