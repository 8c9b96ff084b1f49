"""The MQTT topic layout, in one place: nodes publish here, the gateway subscribes here."""

PREFIX = "govedge/v1"


def reading(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/reading"


def status(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/status"


def batch(gateway_id: str) -> str:
    """Where a gateway publishes its signed batches on the hub's broker."""
    return f"{PREFIX}/gateway/{gateway_id}/batch"


def epoch(gateway_id: str) -> str:
    """Where a gateway publishes its anchored epochs (docs/PROOF.md, "Epoch records")."""
    return f"{PREFIX}/gateway/{gateway_id}/epoch"


def committed(gateway_id: str) -> str:
    """Where the hub confirms to a gateway what it committed or refused of its batches and epoch records
    (docs/FORMAT.md, "Acknowledgements between gateway and hub"): the hub writes, only that gateway reads."""
    return f"{PREFIX}/gateway/{gateway_id}/committed"


def gateway_of(topic: str) -> str | None:
    """The gateway id in a batch or epoch topic, or None for a topic outside the layout."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PREFIX}/gateway" and parts[4] in ("batch", "epoch"):
        return parts[3]
    return None


# what the hub subscribes to
ALL_BATCHES = f"{PREFIX}/gateway/+/batch"
ALL_EPOCHS = f"{PREFIX}/gateway/+/epoch"

# what the gateway subscribes to
ALL_READINGS = f"{PREFIX}/+/reading"
ALL_STATUS = f"{PREFIX}/+/status"


def device_of(topic: str) -> str | None:
    """The device id in a node topic, or None for a topic outside the layout."""
    parts = topic.split("/")
    if len(parts) == 4 and "/".join(parts[:2]) == PREFIX and parts[3] in ("reading", "status"):
        return parts[2]
    return None
