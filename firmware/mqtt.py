# MQTT uplink of MicroPython nodes: umqtt.simple, QoS 1. publish() returns only
# once the broker has acknowledged the message (PUBACK) and raises OSError
# otherwise, so the buffer forgets nothing the broker does not have. Every
# socket operation, connect included, is bounded by a timeout: a dead network
# cannot hang the loop.

import socket as _socket

import umqtt.simple as _umqtt


class _Sockets:
    # what umqtt.simple uses of the socket module, each socket with the uplink's timeout
    def __init__(self, timeout_s):
        self.timeout_s = timeout_s
        self.getaddrinfo = _socket.getaddrinfo

    def socket(self, *args):
        s = _socket.socket(*args)
        s.settimeout(self.timeout_s)
        return s


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
    """QoS 1 to the broker cfg["mqtt"] names; timeout_s bounds every socket operation
    (a board whose watchdog is shorter passes less: Pico W)."""

    def __init__(self, cfg, log, timeout_s=10):
        m = cfg["mqtt"]
        self.log = log
        self.sockets = _Sockets(timeout_s)
        self.where = "%s:%d" % (m["host"], m["port"])
        self.client = _umqtt.MQTTClient(
            m.get("client_id") or cfg["device_id"], m["host"], m["port"],
            user=m.get("user"), password=m.get("password"), keepalive=m.get("keepalive", 60),
            ssl=bool(m.get("tls")), ssl_params=_tls(m) if m.get("tls") else {},
        )
        self.topics = (m["topic"].encode(), m["status_topic"].encode())
        self.connected = False

    def connect(self):
        # umqtt.simple 1.3.4 takes no timeout: it opens its socket from its module's `socket`
        _umqtt.socket = self.sockets
        try:
            self.client.connect()
        except Exception as exc:  # umqtt raises OSError, MQTTException, IndexError on a cut reply
            self.close()
            raise OSError("broker %s unreachable: %r" % (self.where, exc))
        self.connected = True
        self.log("mqtt", "connected to %s" % self.where)

    def send(self, kind, seq, msg):
        if not self.connected:
            self.connect()
        try:
            self.client.publish(self.topics[kind], msg, qos=1)
        except Exception as exc:
            self.close()
            raise OSError("publish to %s failed: %r" % (self.where, exc))

    def close(self):
        if self.client.sock:
            try:
                self.client.sock.close()
            except Exception:
                pass
            self.client.sock = None
        if self.connected:
            self.log("mqtt", "disconnected from %s" % self.where)
        self.connected = False
