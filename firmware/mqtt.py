# MQTT uplink of MicroPython nodes: umqtt.simple, QoS 1. The broker's PUBACK
# only means the broker has the message (transport, not custody): the gateway
# acknowledges on the device's ack topic once it has committed the message
# (its sequence number, in ranges: docs/FORMAT.md), and only then does the
# node forget it. Every socket operation, connect included, is bounded by a
# timeout: a dead network cannot hang the loop.

import gc
import socket as _socket

import umqtt.simple as _umqtt


class _Link:
    # what umqtt.simple uses of the socket module, each socket with the uplink's timeout; once
    # connected, also the stream umqtt reads and writes: its wait_msg() calls setblocking(True)
    # after the first byte of every packet, which on a board means no timeout at all, and here
    # means the uplink's timeout
    def __init__(self, timeout_s):
        self.timeout_s = timeout_s
        self.getaddrinfo = _socket.getaddrinfo
        self.raw = self.stream = None  # the TCP socket (it holds the timeout); what umqtt uses on it

    def socket(self, *args):
        s = self.raw = _socket.socket(*args)
        s.settimeout(self.timeout_s)
        return s

    def read(self, n):
        return self.stream.read(n)

    def write(self, buf, n=None):
        return self.stream.write(buf) if n is None else self.stream.write(buf, n)

    def setblocking(self, flag):
        self.raw.settimeout(self.timeout_s if flag else 0)

    def close(self):
        self.stream.close()


def _tls(m):
    # the broker's certificate must chain to the CA file on the board (DER), for its host name
    import ssl

    ca = m.get("ca", "ca.der")
    try:
        with open(ca, "rb") as f:
            cadata = f.read()
    except OSError:
        raise OSError("TLS: CA certificate %s not found on the board" % ca)
    return {"cert_reqs": ssl.CERT_REQUIRED, "cadata": cadata,
            "server_hostname": m.get("server_hostname") or m["host"]}


class Uplink:
    """QoS 1 to the broker cfg["mqtt"] names, acknowledgements from the gateway on
    mqtt.ack_topic; timeout_s bounds every socket operation (a board whose watchdog
    is shorter passes less: Pico W)."""

    def __init__(self, cfg, log, timeout_s=10):
        m = cfg["mqtt"]
        self.log = log
        self.link = _Link(timeout_s)
        self.where = "%s:%d" % (m["host"], m["port"])
        self.client = _umqtt.MQTTClient(
            m.get("client_id") or cfg["device_id"], m["host"], m["port"],
            user=m.get("user"), password=m.get("password"), keepalive=m.get("keepalive", 60),
            ssl=bool(m.get("tls")), ssl_params=_tls(m) if m.get("tls") else {},
        )
        # before anything is read: publish() hands incoming acks to it while it waits for PUBACK
        self.client.set_callback(self._incoming)
        self.topics = (m["topic"].encode(), m["status_topic"].encode())
        self.ack_topic = m["ack_topic"].encode()
        self.acks = []  # the acknowledgements (payloads) since acked()
        self.connected = False

    def _incoming(self, topic, msg):
        if topic == self.ack_topic:
            self.acks.append(msg)

    def connect(self):
        # umqtt.simple 1.3.4 takes no timeout: it opens its socket from its module's `socket`
        _umqtt.socket = self.link
        gc.collect()  # rare, and the socket (TLS: its buffers) lives long: in one piece, low in the heap
        try:
            self.client.connect()
            self.link.stream, self.client.sock = self.client.sock, self.link
        except Exception as exc:  # umqtt raises OSError, MQTTException, IndexError on a cut reply
            self.close()
            raise OSError("broker %s unreachable: %r" % (self.where, exc))
        try:
            # clean session: acks published while the node was away are lost; it sends again instead
            self.client.subscribe(self.ack_topic, 1)
        except Exception as exc:  # MQTTException(128): the broker's ACL refused it
            self.close()
            raise OSError("broker %s refused %s: %r" % (self.where, self.ack_topic.decode(), exc))
        self.connected = True
        self.log("mqtt", "connected to %s" % self.where)

    def send(self, kind, seq, msg):
        """Publish; False: the gateway's acknowledgement comes later, through acked()."""
        if not self.connected:
            self.connect()
        try:
            self.client.publish(self.topics[kind], msg, qos=1)
        except Exception as exc:
            self.close()
            raise OSError("publish to %s failed: %r" % (self.where, exc))
        return False

    def acked(self):
        """The acknowledgements that came since the last call, or None; never waits
        (OSError when the connection broke)."""
        if self.connected:
            try:
                # one packet, without waiting (the node polls every 200 ms; publish() reads
                # acks too); setblocking(True) in it restores the timeout
                self.client.check_msg()
            except Exception as exc:
                self.close()
                raise OSError("connection to %s lost: %r" % (self.where, exc))
        acks = self.acks
        if acks:
            self.acks = []
            return acks

    def close(self):
        if self.client.sock:
            try:
                self.client.sock.close()
            except Exception:
                pass
            self.client.sock = self.link.stream = None
        if self.connected:
            self.log("mqtt", "disconnected from %s" % self.where)
        self.connected = False
