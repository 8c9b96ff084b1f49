"""""The node firmware end to end: the real firmware under the MicroPython unix
port, umqtt.simple from the package registry, a real Mosquitto, every message
verified with the host verifier. The collector stands in for the gateway: it
acknowledges each message on the device's ack topic once it has recorded it."""

from __future__ import annotations

import json
import os
import random
import socket
import time

import pytest

from govedge.tools.field import firmware
from govedge.tools.dev.broker import Mosquitto
from support.nodes import Collector, VirtualNode


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(tmp_path / "broker", persistence=True) as b:
        yield b


@pytest.fixture
def registry_path(tmp_path):
    return tmp_path / "registry.json"


@pytest.fixture
def collector(broker, registry_path):
    c = Collector(broker.port, registry_path)
    yield c
    c.close()


@pytest.fixture
def make_node(tmp_path, build_dir, registry_path, broker):
    made = []

    def make(device_id="esp32-0001", **kw):
        node = VirtualNode(tmp_path / device_id, build_dir, registry_path, device_id, broker.port, **kw)
        made.append(node)
        return node

    yield make
    for node in made:
        node.kill()


def _seqs(readings):
    return [r.seq for r in readings]


def test_node_signs_and_publishes_status_records_that_verify(make_node, collector):
    node = make_node(sensors=(), status_every=1).start()
    got = collector.wait_for(5, kind="status")
    node.kill()
    first = got[0]
    assert first.device_id == "esp32-0001"
    assert first.value("health") == "ok"
    assert first.value("time_set") is True
    assert isinstance(first.value("heap_free"), int)
    assert first.time is not None and abs(first.time - time.time()) < 60
    seqs = _seqs(got)
    assert seqs == sorted(set(seqs))
    assert "mqtt: connected to 127.0.0.1" in node.log


def test_broker_outage_loses_nothing_and_repeats_only_what_it_caught_unacknowledged(make_node, collector, broker):
    node = make_node(sensors=(), status_every=1).start()
    collector.wait_for(3, kind="status")
    broker.stop()
    node.wait_for_log(r"uplink: .*next try in")
    time.sleep(3)  # readings go on into the offline buffer
    broker.start()
    node.wait_for_log(r"uplink: buffer sent", timeout=60)
    time.sleep(1)
    node.kill()
    stored = _stored_seqs(node)
    seqs = _seqs(collector.wait_for(len(stored) - 1, kind="status"))
    firsts = sorted(set(seqs))
    # the node sends oldest first, so everything it stored before the newest message
    # that arrived has arrived too; what the power cut caught unsent waits in flash
    assert [s for s in stored if s <= firsts[-1]] == firsts
    assert _first_arrivals(seqs) == firsts, "messages arrived out of order"
    # a message whose ack the outage swallowed goes again (the gateway acknowledges it as a
    # duplicate); nothing else does
    assert len(seqs) - len(firsts) <= 2, seqs
    assert len(seqs) > 10


def _first_arrivals(seqs):
    firsts, seen = [], set()
    for s in seqs:
        if s not in seen:
            seen.add(s)
            firsts.append(s)
    return firsts


def _pending_reported(collector, device="esp32-0001"):
    """buffer_pending of each status record, in arrival order."""
    return [r.value("buffer_pending") for r in collector.verified("status") if r.device_id == device]


def _wait(what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("not within %s s" % timeout)


def test_a_message_the_broker_took_but_the_gateway_never_acknowledged_stays_and_goes_again(make_node, collector):
    # the broker's PUBACK is transport, not custody: without the gateway's ack nothing leaves the buffer
    collector.acking = False
    node = make_node(sensors=(), status_every=1, ack_timeout_s=1).start()
    node.wait_for_log(r"uplink: no acknowledgement from the gateway for 1 s; \d+ messages go again")
    _wait(lambda: collector.received("status").count(0) >= 2)
    assert max(_pending_reported(collector)) >= 3, "the node forgot messages the gateway never acknowledged"
    assert "first message delivered" not in node.log
    collector.acking = True
    node.wait_for_log(r"uplink: first message delivered \(#\d+\)")
    node.wait_for_log(r"uplink: buffer sent")
    n = len(collector.received("status"))
    time.sleep(2)
    node.kill()
    tail = collector.received("status")[n:]
    assert len(tail) >= 5 and len(tail) == len(set(tail)), tail
    assert max(_pending_reported(collector)[-3:]) <= 1


def test_a_message_a_broker_lost_between_acknowledged_ones_goes_again(make_node, collector):
    # acks name each number: the gateway's acks of 4 and later must not let the node forget 3
    collector.lose = {3}
    node = make_node(sensors=(), status_every=1, ack_timeout_s=1).start()
    node.wait_for_log(r"uplink: no acknowledgement from the gateway for 1 s")
    _wait(lambda: 3 in collector.received("status"))
    node.kill()
    seqs = collector.received("status")
    assert sorted(set(seqs)) == list(range(max(seqs) + 1))
    assert seqs.index(3) > seqs.index(4)  # it came late, after the ones acknowledged around it


def test_acknowledged_messages_leave_the_buffer_and_never_go_again(make_node, collector):
    node = make_node(sensors=(), status_every=1, ack_timeout_s=1).start()
    collector.wait_for(15, kind="status")
    node.kill()
    seqs = collector.received("status")
    assert seqs == sorted(set(seqs)), "an acknowledged message went again"
    acked = [seq for device, seq in collector.acks]
    assert acked == seqs
    # each status record reports what waits for the gateway before itself: at most the last one
    assert max(_pending_reported(collector)) <= 1
    assert "no acknowledgement" not in node.log
    assert [line for line in node.lines if "first message delivered" in line][0].endswith("(#0)")


def test_messages_a_broker_lost_after_its_puback_arrive_after_all(tmp_path, build_dir, registry_path):
    # the gateway's Pi loses power: Mosquitto without its store (never written since the last
    # autosave) comes back empty, the messages it PUBACKed while the gateway was away are gone
    with Mosquitto(tmp_path / "volatile-broker", persistence=False) as broker:
        gateway = Collector(broker.port, registry_path, client_id="gateway")
        node = VirtualNode(tmp_path / "esp32-0001", build_dir, registry_path, "esp32-0001", broker.port,
                           sensors=(), status_every=1)
        try:
            node.start()
            gateway.wait_for(3, kind="status")
            gateway.close()
            first = gateway.received("status")  # the gateway stops; the broker queues for it, in memory
            time.sleep(2)
            assert "next try in" not in node.log  # the broker took (PUBACKed) every message
            broker.stop()
            broker.start()
            gateway = Collector(broker.port, registry_path, client_id="gateway-after")
            node.wait_for_log(r"uplink: buffer sent", timeout=60)
            time.sleep(0.5)
        finally:
            node.kill()
            gateway.close()
    after = gateway.received("status")  # the ones sent again and the new
    arrived = sorted(set(first) | set(after))
    assert arrived == list(range(arrived[-1] + 1)), "messages the broker lost after its PUBACK never came again"
    assert max(after) > max(first) + 5


def test_a_lost_ack_makes_the_node_send_again_and_the_duplicate_is_acknowledged(make_node, collector):
    collector.acking = False
    node = make_node(sensors=(), status_every=1).start()
    collector.wait_for(3, kind="status")
    node.sim(link_down=True)
    node.wait_for_log(r"uplink: radio link down")
    # the gateway commits and acknowledges while the node is away: a clean session loses the ack
    got = collector.received("status")
    collector.ack("esp32-0001", got)
    collector.acking = True
    time.sleep(0.5)
    node.sim(link_down=False)
    node.wait_for_log(r"uplink: buffer sent", timeout=60)
    n = len(collector.received("status"))
    time.sleep(1.5)
    node.kill()
    seqs = collector.received("status")
    assert all(seqs.count(s) == 2 for s in got), seqs  # each went again, once
    assert [seq for device, seq in collector.acks].count(max(got)) >= 2  # acknowledged as the duplicate it is
    assert sorted(set(seqs)) == list(range(max(seqs) + 1))
    tail = seqs[n:]
    assert tail and len(tail) == len(set(tail)) and min(tail) > max(got)


def test_cpython_node_keeps_what_the_gateway_did_not_acknowledge(make_node, collector):
    collector.acking = False
    node = make_node("rpi-0001", sensors=(), status_every=1, interpreter="cpython", ack_timeout_s=1).start()
    node.wait_for_log(r"uplink: no acknowledgement from the gateway")
    _wait(lambda: collector.received("status", "rpi-0001").count(0) >= 2)
    collector.acking = True
    node.wait_for_log(r"uplink: first message delivered \(#\d+\)")
    node.wait_for_log(r"uplink: buffer sent")
    n = len(collector.received("status", "rpi-0001"))
    time.sleep(2)
    node.kill()
    seqs = collector.received("status", "rpi-0001")
    assert sorted(set(seqs)) == list(range(max(seqs) + 1))
    tail = seqs[n:]
    assert len(tail) >= 5 and tail == sorted(set(tail)), tail
    assert max(_pending_reported(collector, "rpi-0001")[-3:]) <= 1


def _stored_seqs(node):
    """Sequence numbers of every message in the node's flash buffer."""
    script = (
        "import buffer\n"
        "b = buffer.Buffer('buffer.dat', %d, %d)\n"
        "import struct\n"
        "f = open('buffer.dat', 'rb')\n"
        "out = []\n"
        "for i in range(b.slots):\n"
        "    f.seek(i * b.slot_bytes)\n"
        "    h = f.read(16)\n"
        "    if h[0] == 0xB5:\n"
        "        out.append(struct.unpack('>Q', h[4:12])[0])\n"
        "print(sorted(out), b.corrupt)\n"
        % (node.config["buffer"]["slots"], node.config["buffer"]["slot_bytes"])
    )
    proc = firmware.run_micropython(script, path=[node.build_dir], cwd=node.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seqs, corrupt = proc.stdout.decode().rsplit(" ", 1)
    assert int(corrupt) == 0, "buffer has damaged slots"
    return json.loads(seqs)


def test_power_cuts_never_repeat_a_sequence_number_or_corrupt_the_buffer(make_node, collector, broker):
    rng = random.Random(20261129)
    node = make_node(sensors=(), status_every=1, interval_s=0.05, seq_block=4,
                     buffer={"slots": 16, "slot_bytes": 256})
    cuts = int(os.environ.get("GOVEDGE_POWER_CUTS", "20"))
    for i in range(cuts):
        if i % 3 == 1:
            broker.stop()  # some cuts happen while messages wait in the buffer
        elif not broker.proc:
            broker.start()
        node.start()
        time.sleep(rng.uniform(0.05, 0.6))
        node.kill()
        _stored_seqs(node)  # asserts the buffer has no damaged slot
    if not broker.proc:
        broker.start()
    node.start()
    node.wait_for_log(r"mqtt: connected")
    time.sleep(2)
    node.kill()
    got = collector.verified("status")
    seqs = _seqs(got)
    # first arrivals strictly increase: no number reused, none going back
    firsts = []
    for s in seqs:
        if s not in firsts:
            firsts.append(s)
    assert firsts == sorted(firsts)
    assert len(firsts) > cuts


def test_full_buffer_drops_the_oldest_and_counts_it(make_node, collector, broker):
    broker.stop()
    node = make_node(sensors=(), status_every=1, interval_s=0.05, buffer={"slots": 4, "slot_bytes": 256})
    node.start()
    node.wait_for_log(r"uplink: .*next try in")
    time.sleep(1.5)
    broker.start()
    node.wait_for_log(r"uplink: buffer sent", timeout=60)
    time.sleep(0.5)
    node.kill()
    got = collector.verified("status")
    dropped = max(r.value("buffer_dropped") for r in got)
    assert dropped > 0
    # what survived the outage is the newest part, in order
    seqs = _seqs(got)
    assert seqs == sorted(seqs)
    assert seqs[0] > 4


def test_each_mqtt_uplink_gives_up_on_a_silent_broker_after_its_own_timeout(build_dir):
    # a board module passes the timeout (the Pico W's stays below its watchdog); two uplinks
    # in one interpreter keep their own, so it is no module-wide setting
    with socket.socket() as silent:  # takes the TCP connection, never answers CONNECT
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        script = (
            "import mqtt, time\n"
            "cfg = {'device_id': 'picow-0001', 'mqtt': {'host': '127.0.0.1', 'port': %d,"
            " 'topic': 't', 'status_topic': 's', 'ack_topic': 'a'}}\n"
            "for timeout_s in (0.3, 1.2):\n"
            "    uplink = mqtt.Uplink(cfg, print, timeout_s=timeout_s)\n"
            "    start = time.ticks_ms()\n"
            "    try:\n"
            "        uplink.connect()\n"
            "    except OSError as exc:\n"
            "        print(time.ticks_diff(time.ticks_ms(), start), exc)\n" % silent.getsockname()[1])
        proc = firmware.run_micropython(script, path=[build_dir])
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 2, proc.stdout.decode() + proc.stderr.decode()
    (short, why), (longer, _) = (line.split(" ", 1) for line in lines)
    assert 300 <= int(short) < 1000 and 1200 <= int(longer) < 2500, lines
    assert why.startswith("broker 127.0.0.1:") and "unreachable" in why


def _fake_broker(listener, cut_after_s):
    """CONNACK, SUBACK, one ack (QoS 1) for 7, 8, 9 and 41, then, cut_after_s after the node's PUBACK,
    the first byte of a packet and nothing more."""
    conn, _ = listener.accept()
    f = conn.makefile("rb")

    def packet():  # one whole packet (each short: one byte of remaining length)
        head = f.read(2)
        return head + f.read(head[1])

    with conn, f:
        packet()  # CONNECT
        conn.sendall(b"\x20\x02\x00\x00")
        sub = packet()  # SUBSCRIBE: its packet id answers in SUBACK
        conn.sendall(b"\x90\x03" + sub[2:4] + b"\x01")
        conn.sendall(b"\x32\x0b\x00\x01a\x00\x07" + b"7-9,41")
        packet()  # PUBACK
        time.sleep(cut_after_s)
        conn.sendall(b"\x30")
        time.sleep(5)


def test_mqtt_uplink_reads_acks_without_waiting_and_every_read_stays_bounded(build_dir):
    # a board's socket (lwip) forgets its timeout on setblocking(True), which umqtt.simple calls
    # in every read of a packet: the uplink must keep reads bounded all the same
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        threading.Thread(target=_fake_broker, args=(listener, 1.0), daemon=True).start()
        script = (
            "import mqtt, socket, time\n"
            "class BoardSocket:\n"
            "    def __init__(self, *a): self.s = socket.socket(*a)\n"
            "    def settimeout(self, t): self.s.settimeout(t)\n"
            "    def setblocking(self, flag): self.s.settimeout(None if flag else 0)\n"
            "    def connect(self, a): self.s.connect(a)\n"
            "    def read(self, n): return self.s.read(n)\n"
            "    def write(self, b, n=None): return self.s.write(b) if n is None else self.s.write(b, n)\n"
            "    def close(self): self.s.close()\n"
            "class Board:\n"
            "    getaddrinfo = socket.getaddrinfo\n"
            "    socket = BoardSocket\n"
            "mqtt._socket = Board\n"
            "cfg = {'device_id': 'esp32-0001', 'mqtt': {'host': '127.0.0.1', 'port': %d,"
            " 'topic': 't', 'status_topic': 's', 'ack_topic': 'a'}}\n"
            "u = mqtt.Uplink(cfg, print, timeout_s=0.5)\n"
            "u.connect()\n"
            "n = None\n"
            "start = time.ticks_ms()\n"
            "while n is None and time.ticks_diff(time.ticks_ms(), start) < 3000:\n"
            "    n = u.acked()\n"
            "    time.sleep_ms(10)\n"
            "start = time.ticks_ms()\n"
            "print('ack', n, u.acked(), time.ticks_diff(time.ticks_ms(), start))\n"
            "time.sleep_ms(1500)\n"
            "start = time.ticks_ms()\n"
            "try:\n"
            "    u.acked()\n"
            "except OSError as exc:\n"
            "    print('lost', time.ticks_diff(time.ticks_ms(), start), exc)\n" % listener.getsockname()[1])
        proc = firmware.run_micropython(script, path=[build_dir], timeout=20)
    lines = [line for line in proc.stdout.decode().splitlines() if not line.startswith("mqtt ")]  # its log
    assert len(lines) == 2, proc.stdout.decode() + proc.stderr.decode()
    ack, n, again, idle_ms = lines[0].split()
    assert (n, again) == ("[b'7-9,41']", "None") and int(idle_ms) < 100  # an ack read; nothing more: no wait
    lost, ms, why = lines[1].split(" ", 2)
    assert lost == "lost" and 500 <= int(ms) < 1500, lines  # the cut packet: the uplink's timeout, not forever
    assert why.startswith("connection to 127.0.0.1:")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"transport": "pigeon"}, "[config] config: transport must be 'mqtt' or 'serial', not 'pigeon'"),
        ({"format": "x"}, "[config] config: format must be 'govedge-node/1', not 'x'"),
        ({"interval_s": 0}, "[config] config: interval_s must be a positive number of seconds, not 0"),
        ({"ack_timeout_s": "30"}, "[config] config: ack_timeout_s must be a positive number of seconds, not '30'"),
        ({"sensors": {"dht22": {}}}, "[config] config: unknown sensor 'dht22' (known: bme280, sds011)"),
        ({"key_file": "missing.key"}, "[config] key: missing.key not found on the board (govedge flash writes it)"),
    ],
)
def test_wrong_config_gives_one_clear_line_and_stops(make_node, change, message):
    node = make_node()
    node.config.update(change)
    node.write_config()
    node.start()
    node.proc.wait(20)
    node.kill()
    assert node.lines == [message]


def test_reading_before_the_clock_is_set_carries_no_time(make_node, collector):
    node = make_node(sensors=(), status_every=1)
    node.sim(clock_unset=True)
    node.start()
    got = collector.wait_for(2, kind="status")
    node.kill()
    assert all(r.time is None for r in got)
    assert got[0].value("time_set") is False


def test_deep_sleep_node_sends_one_message_per_wake_up_and_never_reuses_a_number(make_node, collector):
    node = make_node(sensors=(), status_every=1, deep_sleep=True, seq_block=1)
    for _ in range(5):
        node.start()
        assert node.proc.wait(20) == 0  # the board "sleeps": its program ends after one cycle
        node.kill()
        assert "node: deep sleep for 200 ms" in node.log
    got = collector.wait_for(5, kind="status")
    assert _seqs(got) == [0, 1, 2, 3, 4]


def test_deep_sleep_node_waits_for_its_ack_and_keeps_what_was_not_acknowledged(make_node, collector):
    node = make_node(sensors=(), status_every=1, deep_sleep=True, seq_block=1, ack_timeout_s=2)
    collector.acking = False  # the first wake-up: no ack comes; the node waits 2 s, then sleeps
    wakes = []
    for acking in (False, True, True):
        collector.acking = acking
        collector.ack_delay = 1.0  # the gateway commits a second later
        before = len(node.lines)
        started = time.monotonic()
        node.start()
        assert node.proc.wait(20) == 0
        node.kill()
        wakes.append((time.monotonic() - started, node.lines[before:]))
    assert wakes[0][0] >= 2 and "first message delivered" not in "\n".join(wakes[0][1])
    second = "\n".join(wakes[1][1])
    assert "first message delivered (#0)" in second  # the message of the first wake-up went again
    assert second.index("first message delivered") < second.index("deep sleep")
    time.sleep(1.5)
    # nothing the gateway acknowledged went again
    assert collector.received("status") == [0, 0, 1, 2]


def test_bme280_readings_carry_what_the_sensor_measured(make_node, collector):
    node = make_node(sensors=("bme280",))
    node.sim(temp=18.25, hum=61.5, press=99870)
    node.start()
    first = collector.wait_for(2)
    node.sim(temp=19.0)
    deadline = time.time() + 20
    while time.time() < deadline:
        latest = collector.verified()[-1]
        if latest.value("temp") != first[0].value("temp"):
            break
        time.sleep(0.1)
    node.kill()
    r = first[0]
    assert [(m.name, m.unit) for m in r.measurements] == [("temp", "Cel"), ("hum", "%RH"), ("press", "Pa")]
    assert (str(r.value("temp")), str(r.value("hum")), r.value("press")) == ("18.25", "61.50", 99870)
    assert str(latest.value("temp")) == "19.00"
    assert len(r.message) <= 160


def test_unplugged_sensor_gives_a_log_line_and_a_degraded_status_then_recovers(make_node, collector):
    node = make_node(sensors=("bme280",), status_every=1000)
    node.start()
    collector.wait_for(2)
    node.sim(bme280_unplugged=True)
    node.wait_for_log(r"sensor: bme280: BME280 at 0x76 stopped answering")
    degraded = None
    deadline = time.time() + 20
    while degraded is None and time.time() < deadline:
        degraded = next((r for r in collector.verified("status") if r.value("health") == "degraded"), None)
        time.sleep(0.1)
    assert degraded is not None, node.log
    assert "bme280" in degraded.value("error")
    readings_before = len(collector.verified())
    time.sleep(1)
    node.sim(bme280_unplugged=False)
    node.wait_for_log(r"sensor: bme280 working again")
    collector.wait_for(readings_before + 2)
    node.kill()
    # a line when the sensor fails and one when re-opening it fails, not one per cycle
    faults = [line for line in node.lines if "sensor: bme280: BME280" in line]
    assert len(faults) == 2, faults
    assert "BME280 not found at 0x76" in faults[1]
    assert "Traceback" not in node.log


def test_same_node_code_runs_on_cpython_with_adafruit_driver_and_paho(make_node, collector):
    node = make_node("rpi-0001", sensors=("bme280",), interpreter="cpython")
    node.sim(temp=22.4, hum=40.0, press=101200)
    node.start()
    got = collector.wait_for(3, device="rpi-0001")
    node.kill()
    r = got[0]
    assert r.device_id == "rpi-0001"
    assert abs(float(r.value("temp")) - 22.4) <= 0.01
    assert abs(float(r.value("hum")) - 40.0) <= 0.05
    assert abs(r.value("press") - 101200) <= 1
    assert _seqs(got) == sorted(set(_seqs(got)))


def test_particulates_and_climate_in_one_reading_with_duty_cycled_sds011(make_node, collector):
    node = make_node(sensors=("bme280", "sds011"))
    node.config["sensors"]["sds011"].update(warmup_s=0.3, sim_interval_ms=100)
    node.write_config()
    node.sim(pm2_5=35.7, pm10=52.4)
    node.start()
    got = collector.wait_for(3)
    node.kill()
    r = got[-1]
    names = [m.name for m in r.measurements]
    assert names == ["temp", "hum", "press", "pm2_5", "pm10"]
    assert (str(r.value("pm2_5")), str(r.value("pm10"))) == ("35.7", "52.4")
    assert [m.unit for m in r.measurements][3:] == ["ug/m3", "ug/m3"]
    assert "Traceback" not in node.log and "sensor:" not in node.log


def test_node_publishes_over_tls_and_refuses_a_broker_it_cannot_verify(tmp_path, build_dir, registry_path):
    from govedge.tools.field.provision import _ca_der
    from support.nodes import make_ca_and_server_cert

    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    tls = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    with Mosquitto(tmp_path / "tls-broker", extra_config=tls, persistence=True) as broker:
        collector = Collector(broker.port, registry_path, ca=ca)
        nodes = []
        for device, trusted in (("esp32-0010", ca), ("esp32-0011", other_ca), ("rpi-0012", ca)):
            node = VirtualNode(tmp_path / device, build_dir, registry_path, device, broker.port,
                               interpreter="cpython" if device.startswith("rpi") else "micropython")
            node.config["mqtt"].update(tls=True, ca="ca.der")
            node.write_config()
            (node.root / "ca.der").write_bytes(_ca_der(trusted))
            nodes.append(node.start())
        try:
            collector.wait_for(3, device="esp32-0010")
            collector.wait_for(3, device="rpi-0012")
            nodes[1].wait_for_log(r"uplink: broker 127.0.0.1:\d+ unreachable")
        finally:
            for node in nodes:
                node.kill()
            collector.close()
    assert not [r for r in collector.verified() if r.device_id == "esp32-0011"]
