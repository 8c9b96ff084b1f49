"""Writes the example configurations (gateway/gateway.toml, hub/hub.toml) and docs/CONFIG.md from the
schemas of govedge.gateway.config and govedge.hub.config; tests/gateway/test_gateway_config.py and
tests/hub/test_hub_config.py fail while a written file differs from what this would write.

    python -m govedge.tools.dev.configdoc          # after changing a key: rewrite the three files
"""

from __future__ import annotations

import sys
from pathlib import Path

from govedge.core import config as schema

SOURCE = Path(__file__).resolve().parent.parent.parent  # the checkout: gateway/, hub/, docs/

INTRO = """# Configuration files

`govedge gateway run` reads gateway.toml, `govedge hub run` hub.toml (TOML). Every key of both is below:
its type, its default and what it means. The example files `gateway/gateway.toml` and `hub/hub.toml` show
every key with the same defaults; both, and these tables, are written from the schema in the code
(`python -m govedge.tools.dev.configdoc`), so they cannot disagree with what the services accept.

The rules, the same for both files:

- A key or section the schema does not know is an error naming the file, the section and the key, with
  the nearest known key when it looks misspelt:
  `gateway.toml: [batch] intervall_s: unknown key; did you mean interval_s?`
- A value of the wrong type or out of range names the key, the value and what it takes:
  `gateway.toml: [metrics] port = "9108x": expected a whole number 0..65535`. `true` is not a number.
- A missing required key is named: `hub.toml: [hub] registry is missing (the device registry that ...)`.
- Every path (type "path") is relative to the configuration file's folder unless it is absolute: under
  systemd the working directory is `/`, so a relative path never depends on where a service was started.
- Secrets (passwords) are never shown back in errors, logs or status.

`govedge gateway check --config gateway.toml` and `govedge hub check --config hub.toml` check a file
without starting the service: the configuration, then the files it names, then each connection. One
line per check, `ok` or `FAIL` with what to do; exit status 0 all ok, 1 a check failed, 2 the
configuration is not valid (said in one line on standard error, as every command says it).

```
$ govedge gateway check --config /etc/govedge/gateway.toml
ok    configuration   /etc/govedge/gateway.toml is valid
ok    gateway key     /etc/govedge/gateway.key: a P-256 private key
ok    registry        0 devices in /etc/govedge/registry.json
ok    data folder     /var/lib/govedge writable
ok    disk space      82.5 GB free at /var/lib/govedge (store quota 2 GB)
--    clock           cannot tell here (no timedatectl); the clock reads 2026-11-30 11:17:33 UTC: compare it with a phone
--    local TLS       [ingest.mqtt] tls = false: no TLS files needed
ok    hub TLS         the system's CAs
ok    local broker    MQTT login to 127.0.0.1:1883 accepted
FAIL  hub broker      hub.example:8883 unreachable: [Errno -2] Name or service not known; check [hub] host and port, the network, and that the broker runs
--    govchain        no anchoring configured ([anchor] backend = "none")
$ echo $?
1
$ govedge gateway check --config /etc/govedge/gateway.toml     # with "heartbeat = 30" under [hub]
govedge gateway check: /etc/govedge/gateway.toml: [hub] heartbeat: unknown key; did you mean heartbeat_s?
$ echo $?
2
```

`--` is a check that does not apply. While the gateway service runs, the local broker is not logged in
to (the gateway's login owns its session there): the running service's own state is shown instead.
`govedge hub check` checks the registry, the gateway list, `[hub] state_dir`, the `[mqtt]` TLS files,
the store (an SQLite file is opened read-only, one that does not exist yet is left to the first start;
PostgreSQL is logged in to) and a login on the broker under the client id `<client_id>-check`, so a
running worker's session is left alone.
"""


def gateway_files() -> dict[Path, str]:
    from govedge.gateway import config as gwconfig
    from govedge.hub import config as hubconfig

    gateway, hub = gwconfig.schema_sections(), hubconfig.SCHEMA
    doc = (INTRO + "\n## gateway.toml\n\n" + schema.markdown(gateway) + "\n## hub.toml\n\n"
           + schema.markdown(hub))
    return {SOURCE / "gateway/gateway.toml": schema.example(gateway, gwconfig.EXAMPLE_HEADER),
            SOURCE / "hub/hub.toml": schema.example(hub, hubconfig.EXAMPLE_HEADER),
            SOURCE / "docs/CONFIG.md": doc.rstrip("\n") + "\n"}


def main() -> int:
    for path, text in gateway_files().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
