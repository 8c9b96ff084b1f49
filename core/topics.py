"""The MQTT topic layout, in one place: nodes publish here, the gateway subscribes here."""

PREFIX = "govedge/v1"


def reading(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/reading"


def status(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/status"


def ack(device_id: str) -> str:
    """Where the gateway tells a node which of its messages are committed (docs/FORMAT.md,
    "Acknowledgements between node and gateway"); only that node may read it."""
    return f"{PREFIX}/{device_id}/ack"


ACK_PAYLOAD_BYTES = 256  # what one acknowledgement carries at most: a node reads it whole into memory


def ack_payload(seq: int) -> bytes:
    """An acknowledgement of one message: its sequence number in ASCII decimal."""
    return b"%d" % seq


def ack_payloads(seqs) -> list[bytes]:
    """Acknowledgements of the messages numbered ``seqs``: ascending ranges, "a" or "a-b" (inclusive),
    separated by commas, as many payloads of at most ACK_PAYLOAD_BYTES as they need (docs/FORMAT.md,
    "Acknowledgements between node and gateway")."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    payloads: list[bytes] = []
    current = b""
    for first, last in ranges:
        part = b"%d" % first if first == last else b"%d-%d" % (first, last)
        if current and len(current) + 1 + len(part) > ACK_PAYLOAD_BYTES:
            payloads.append(current)
            current = b""
        current = current + b"," + part if current else part
    if current:
        payloads.append(current)
    return payloads


def acked(payload: bytes) -> list[tuple[int, int]]:
    """The (first, last) ranges an acknowledgement names; ValueError when it is not one."""
    out = []
    for part in payload.split(b","):
        first, _, last = part.partition(b"-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"not an acknowledgement: {payload[:40]!r}")
        out.append((int(first), int(last or first)))
    return out


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


def gateway_status(gateway_id: str) -> str:
    """Where a gateway publishes its signed status record, its heartbeat (docs/FORMAT.md, "The gateway's status
    record"): that gateway writes, the hub reads."""
    return f"{PREFIX}/gateway/{gateway_id}/status"


def gateway_of(topic: str) -> str | None:
    """The gateway id in a batch, epoch or gateway status topic, or None for a topic outside the layout."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PREFIX}/gateway" and parts[4] in ("batch", "epoch", "status"):
        return parts[3]
    return None


# what the hub subscribes to
ALL_BATCHES = f"{PREFIX}/gateway/+/batch"
ALL_EPOCHS = f"{PREFIX}/gateway/+/epoch"
ALL_GATEWAY_STATUS = f"{PREFIX}/gateway/+/status"

# what the gateway subscribes to
ALL_READINGS = f"{PREFIX}/+/reading"
ALL_STATUS = f"{PREFIX}/+/status"


def device_of(topic: str) -> str | None:
    """The device id in a node topic, or None for a topic outside the layout."""
    parts = topic.split("/")
    if len(parts) == 4 and "/".join(parts[:2]) == PREFIX and parts[3] in ("reading", "status"):
        return parts[2]
    return None
