# MQTT uplink of MicroPython nodes: umqtt.simple, QoS 1. publish() returns only
# once the broker has acknowledged the message (PUBACK) and raises OSError
# otherwise, so the buffer forgets nothing the broker does not have. Every
# socket operation, connect included, is bounded by a timeout: a dead network
# cannot hang the loop.

import socket as _socket

import umqtt.simple as _umqtt

TIMEOUT_S = 10  # a board module may lower it (Pico W: below its watchdog limit)


class _Sockets:
    # what umqtt.simple uses of the socket module, with a timeout on every socket
    getaddrinfo = _socket.getaddrinfo

    @staticmethod
    def socket(*args):
        s = _socket.socket(*args)
        s.settimeout(TIMEOUT_S)
        return s


_umqtt.socket = _Sockets


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
    def __init__(self, cfg, log):
        m = cfg["mqtt"]
        self.log = log
        self.where = "%s:%d" % (m["host"], m["port"])
        self.client = _umqtt.MQTTClient(
            m.get("client_id") or cfg["device_id"], m["host"], m["port"],
            user=m.get("user"), password=m.get("password"), keepalive=m.get("keepalive", 60),
            ssl=bool(m.get("tls")), ssl_params=_tls(m) if m.get("tls") else {},
        )
        self.topics = (m["topic"].encode(), m["status_topic"].encode())
        self.connected = False

    def connect(self):
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
