"""The MQTT client of every service, made in one place (paho-mqtt): credentials, TLS, reconnect pacing."""

from __future__ import annotations

import random

import paho.mqtt.client as paho

from .config import MqttEndpoint


def client(ep: MqttEndpoint, clean_session: bool, manual_ack: bool = False) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=ep.client_id, clean_session=clean_session,
                    manual_ack=manual_ack)
    if ep.user:
        c.username_pw_set(ep.user, ep.password)
    if ep.tls:
        c.tls_set(ca_certs=ep.ca, certfile=ep.cert, keyfile=ep.key)
    # paho doubles the delay between tries up to a minute; a random start spreads gateways out
    c.reconnect_delay_set(random.uniform(1, 2), 60)
    return c
