"""The MQTT client of every service, made in one place (paho-mqtt): credentials, TLS, reconnect pacing."""

from __future__ import annotations

import random

import paho.mqtt.client as paho

from .config import MqttEndpoint


class Client(paho.Client):
    """paho's client that keeps why its last attempt to connect failed (``connect_error``): paho's
    ``on_connect_fail`` is told that an attempt failed, not why (govedge.core.connection words it)."""

    connect_error: OSError | None = None

    def reconnect(self):
        try:
            result = super().reconnect()
        except OSError as exc:  # refused, DNS, timeout, TLS: paho calls on_connect_fail next
            self.connect_error = exc
            raise
        self.connect_error = None
        return result


def client(ep: MqttEndpoint, clean_session: bool, manual_ack: bool = False) -> Client:
    c = Client(paho.CallbackAPIVersion.VERSION2, client_id=ep.client_id, clean_session=clean_session,
               manual_ack=manual_ack)
    if ep.user:
        c.username_pw_set(ep.user, ep.password)
    if ep.tls:
        c.tls_set(ca_certs=ep.ca, certfile=ep.cert, keyfile=ep.key)
    # paho doubles the delay between tries up to a minute; a random start spreads gateways out
    c.reconnect_delay_set(random.uniform(1, 2), 60)
    return c
