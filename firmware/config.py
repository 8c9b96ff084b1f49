# The board's config.json (written by `govedge provision`), checked at boot so
# that a wrong file gives one clear line instead of a failure later.

import json

FORMAT = "govedge-node/1"


class ConfigError(ValueError):
    pass


DEFAULTS = {
    "transport": "mqtt",
    "interval_s": 60,
    "status_every": 10,
    "sensors": {},
    "buffer": {"slots": 256, "slot_bytes": 384},
    "seq_block": 16,
    "watchdog_s": 120,
    "deep_sleep": False,
    "ack_timeout_s": 30,
    "key_file": "device.key",
    "ntp": {"host": "pool.ntp.org"},
}


def _need(cfg, path, kind):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError("config: %s is missing" % path)
        node = node[part]
    if kind is int and (not isinstance(node, int) or isinstance(node, bool)):
        raise ConfigError("config: %s must be a whole number, not %r" % (path, node))
    if kind is not int and not isinstance(node, kind):
        raise ConfigError("config: %s must be %s, not %r" % (path, kind.__name__, node))
    return node


def check(cfg):
    """Fill defaults in and check cfg; raise ConfigError naming the first fault."""
    if not isinstance(cfg, dict):
        raise ConfigError("config: not a JSON object")
    if cfg.get("format") != FORMAT:
        raise ConfigError("config: format must be %r, not %r" % (FORMAT, cfg.get("format")))
    for key in DEFAULTS:
        if key not in cfg:
            cfg[key] = DEFAULTS[key]
    _need(cfg, "device_id", str)
    _need(cfg, "board", str)
    transport = _need(cfg, "transport", str)
    if transport == "mqtt":
        _need(cfg, "mqtt.host", str)
        port = _need(cfg, "mqtt.port", int)
        if not 0 < port < 65536:
            raise ConfigError("config: mqtt.port %d is not a TCP port" % port)
        _need(cfg, "mqtt.topic", str)
        topic = _need(cfg, "mqtt.status_topic", str)
        if "ack_topic" not in cfg["mqtt"]:  # the gateway's acks: govedge/v1/DEVICE/ack beside the others
            cfg["mqtt"]["ack_topic"] = topic.rsplit("/", 1)[0] + "/ack"
        _need(cfg, "mqtt.ack_topic", str)
    elif transport == "serial":
        _need(cfg, "serial", dict)
    else:
        raise ConfigError("config: transport must be 'mqtt' or 'serial', not %r" % transport)
    for key in ("interval_s", "ack_timeout_s"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError("config: %s must be a positive number of seconds, not %r" % (key, value))
    if _need(cfg, "status_every", int) < 1:
        raise ConfigError("config: status_every must be at least 1")
    if _need(cfg, "seq_block", int) < 1:
        raise ConfigError("config: seq_block must be at least 1")
    slots = _need(cfg, "buffer.slots", int)
    size = _need(cfg, "buffer.slot_bytes", int)
    if slots < 2 or size < 128:
        raise ConfigError("config: buffer needs at least 2 slots of at least 128 bytes")
    sensors = _need(cfg, "sensors", dict)
    for name in sensors:
        if name not in ("bme280", "sds011"):
            raise ConfigError("config: unknown sensor %r (known: bme280, sds011)" % name)
    _need(cfg, "key_file", str)
    return cfg


def load(path="config.json"):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("config: %s not found on the board (govedge flash writes it)" % path)
    except ValueError as exc:
        raise ConfigError("config: %s is not valid JSON (%s)" % (path, exc))
    return check(cfg)


def load_key(path):
    """The device's private scalar from its key file (64 hex digits)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        raise ConfigError("key: %s not found on the board (govedge flash writes it)" % path)
    if len(text) != 64:
        raise ConfigError("key: %s does not hold a P-256 private key" % path)
    try:
        return int(text, 16)
    except ValueError:
        raise ConfigError("key: %s does not hold a P-256 private key" % path)
