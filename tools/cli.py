"""The `govedge` command: one program for technicians, operators and auditors."""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from collections.abc import Callable


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

        result = bench_hub(store=args.store, hubs=args.hubs, devices=args.devices, workers=args.workers)
    elif args.target == "hub-api":
        from govedge.tools.dev.bench_hub_api import bench_hub_api

        result = bench_hub_api(stores=args.stores, readings=args.readings, requests=args.requests)
    else:
        result = bench.bench_firmware(rounds=args.rounds)
    bench.print_result(result, args.json)
    return 0


def _hub_counts(text: str) -> list[int]:
    """--hubs: numbers of hub processes, "1,2"."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 1,2") from None
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every number of hub processes is at least 1")
    return counts


def _store_list(text: str) -> list[str]:
    """--stores: "sqlite,postgresql"."""
    stores = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [s for s in stores if s not in ("sqlite", "postgresql")]
    if not stores or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: the stores are sqlite and postgresql, comma-separated")
    return stores


def _cmd_demo(args: argparse.Namespace) -> int:
    from govedge.tools.dev import demo

    return demo.run(nodes=args.nodes, duration=args.duration, workdir=args.workdir, broker=args.broker)


def _cmd_provision(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from govedge.core import registry
    from govedge.tools.field import provision

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
        ca=Path(args.ca) if args.ca else None, open_wifi=args.open_wifi,
        location=args.location, place=args.place,
    )
    folder = result["folder"]
    print(f"{'rotated the key of' if result['rotated'] else 'provisioned'} {result['device_id']} "
          f"({result['board']}; sensors {', '.join(result['sensors'])})")
    print(f"  key       {folder}/device.key (owner only), public key {result['public_key'][:18]}...")
    print(f"  config    {folder}/config.json")
    print(f"  registry  {result['registry']} ({result['keys']} key{'s' if result['keys'] > 1 else ''}"
          f"{', older ones retired' if result['keys'] > 1 else ''})")
    location = result["location"]
    if location is not None:
        print(f"  location  {location.describe()} since {location.since}"
              f"{'' if result['location_recorded'] or not result['rotated'] else ' (kept)'}")
    if result["registry_created"]:
        print(f"  new registry: there was no {result['registry']}, it was created now with this device only "
              "(if the devices' registry is elsewhere, give it with --registry)")
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

    from govedge.core import logs
    from govedge.gateway import config as gwconfig
    from govedge.gateway.service import Gateway

    from govedge.gateway.room import disk_fault

    logs.setup()
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
            raise  # main() tells it in one line
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

    cfg = gwconfig.load(args.config)
    if (doc := live(cfg.data_dir)) is not None and doc["running"]:
        print(f"govedge gateway replay-quarantine: the service runs (process {doc['pid']}); stop it first "
              "(systemctl stop govedge-gateway), then start it again", file=sys.stderr)
        return 2
    gateway = Gateway(cfg)
    try:
        stored, left = gateway.replay_quarantined(args.code)
    finally:
        gateway.verifier.close()
        gateway.store.close()
        gateway.guard.close()
    print(f"{stored} {args.code} messages stored (they go out with the next batch), {left} still refused "
          "(their quarantine rows stay)")
    return 0


def _serve_page(what: str, app_of, cfg, args: argparse.Namespace) -> int:
    """`govedge gateway web`, `govedge hub web`: the service's status page, until SIGTERM or Ctrl-C. The
    address and the refresh come from the config's [web] section unless a flag gives them."""
    from govedge.core import logs, web

    host = args.host if args.host is not None else cfg.web_host
    port = args.port if args.port is not None else cfg.web_port
    refresh = args.refresh if args.refresh is not None else cfg.web_refresh_s
    sock = web.bind(host, port)  # first: a taken port is one line, before anything else starts
    logs.setup()
    shown = f"[{host}]" if ":" in host else host
    print(f"govedge {what} web: the status page on http://{shown}:{sock.getsockname()[1]}/ (read-only)",
          file=sys.stderr, flush=True)
    web.serve(app_of(refresh), sock)
    return 0


def _cmd_gateway_web(args: argparse.Namespace) -> int:
    from govedge.gateway import config as gwconfig
    from govedge.gateway import web as gwweb

    cfg = gwconfig.load(args.config)
    return _serve_page("gateway", lambda refresh: gwweb.app(cfg, refresh), cfg, args)


def _cmd_hub_web(args: argparse.Namespace) -> int:
    from govedge.hub import config as hubconfig
    from govedge.hub import web as hubweb

    cfg = hubconfig.load(args.config)
    return _serve_page("hub", lambda refresh: hubweb.app(cfg, refresh), cfg, args)


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


def _installed(role: str, root, started: list[str], checks, width: int, again: str = "") -> int:
    """The end of `gateway install`'s and `hub install`'s report: the commands run, then the self-test
    (``checks()``: its checklist; None: skipped), one line a check. Exit status 1 when one failed."""
    from pathlib import Path

    for command in started:
        print(f"  ran       {command}")
    if not started:
        print("  services  not started: " + ("--root writes files only (no user, no systemctl)"
                                             if root != Path("/") else "--no-start"))
    if checks is None:
        return 0
    print("\nself-test")
    failed = 0
    for name, ok, text in checks():
        mark = "ok  " if ok else "??  " if ok is None else "FAIL"
        failed += ok is False
        print(f"  [{mark}] {name:<{width}} {text}", flush=True)
    if failed:
        print(f"\n{failed} check(s) failed: fix them, then run govedge {role} install again (it changes nothing "
              f"that is in place){again}")
    return 1 if failed else 0


def _cmd_gateway_install(args: argparse.Namespace) -> int:
    import socket
    import time
    from pathlib import Path

    from govedge import anchor
    from govedge.gateway import install

    for flag in ("--hub-ca", "--hub-cert", "--hub-key"):  # the gateway reads them at every start: they must be there
        if (given := _flag_value(args, flag)) and not Path(given).is_file():
            print(f"govedge gateway install: {flag} {given}: no such file (give the file the hub operator gave you)",
                  file=sys.stderr)
            return 2
    anchor_settings = {}
    if args.anchor != anchor.NONE:  # the backend's required settings, from their flags or asked for
        anchor_settings = {s.key: _ask(_flag_value(args, s.flag), s.description[0].upper() + s.description[1:])
                           for s in anchor.lookup(args.anchor).settings if s.required}
    options = install.Options(
        root=Path(args.root).resolve(),
        gateway_id=_ask(args.gateway_id, "Gateway id (e.g. gw-koeln-01)"),
        hub_host=_ask(args.hub_host, "The hub broker's host name"),
        hub_port=args.hub_port, hub_ca=args.hub_ca, hub_cert=args.hub_cert, hub_key=args.hub_key,
        hub_password_file=Path(args.hub_password_file) if args.hub_password_file else None,
        broker_port=args.broker_port,
        broker_names=args.broker_name or [socket.gethostname() + ".local", "127.0.0.1"],
        registry=Path(args.registry) if args.registry else None,
        devices=Path(args.devices) if args.devices else None,
        anchor=args.anchor, anchor_settings=anchor_settings, service_user=args.service_user)
    try:
        result = install.install(options)
        started_at = time.time()
        started = [] if args.no_start or options.root != Path("/") else install.start_services(result)
    except install.InstallError as exc:  # a file or a port: main() tells it
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
    print(f"  hub       give {lay.pub} to the hub operator: govedge hub add-gateway --config /etc/govedge/hub-1.toml "
          f"{options.gateway_id} {lay.pub.name}")
    return _installed("gateway", options.root, started,
                      None if args.no_self_test else
                      lambda: install.self_test(lay.toml, started_at=started_at if started else None),
                      14, " or systemctl restart govedge-gateway")


def _cmd_gateway_proof(args: argparse.Namespace) -> int:
    from govedge.core import proof
    from govedge.gateway import config as gwconfig
    from govedge.gateway.proofs import bundle_for

    text = proof.dumps(bundle_for(gwconfig.load(args.config), args.device_id, args.seq))
    _write_text(text, args.output)
    return 0


def _write_text(text: str, output: str | None) -> None:
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def _chain_asked(args: argparse.Namespace, command: str, creator_keys: Callable[[], dict | None]):
    """The chain `govedge verify` or `verify-report` is to ask: the anchor backend whose address flag was given
    (--rpc, --observer) with its audit settings, None when none was given, or the exit status after one line
    on what is wrong (2: the flags; 3: the chain cannot be reached). ``creator_keys()``: whose records the
    chain must hold, asked only when a chain is."""
    from govedge import anchor
    from govedge.anchor import AnchorError

    asked = [b for b in map(anchor.lookup, anchor.backend_names()) if _flag_value(args, b.address.flag)]
    if len(asked) > 1:
        print(f"govedge {command}: give one chain to ask, not {' and '.join(b.address.flag for b in asked)}",
              file=sys.stderr)
        return 2
    if not asked:
        return None
    backend = asked[0]
    settings = {s.key: _flag_value(args, s.flag) for s in backend.settings if s.audit and _flag_value(args, s.flag)}
    missing = [s for s in backend.settings if s.audit and s.required and s.key not in settings]
    if missing:
        print(f"govedge {command}: {backend.address.flag} needs {missing[0].flag}, {missing[0].description} "
              "you trust", file=sys.stderr)
        return 2
    try:
        return backend.audit(settings, creator_keys())
    except AnchorError as exc:
        print(f"govedge {command}: {exc}", file=sys.stderr)
        return 3 if exc.code == "unreachable" else 2


def _cmd_verify(args: argparse.Namespace) -> int:
    import json

    from govedge.core import proof
    from govedge.core.registry import Registry

    try:
        with open(args.bundle) as f:
            bundle = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"govedge verify: {args.bundle} is not a JSON proof bundle: {exc} (give the file govedge gateway "
              "proof or govedge hub proof wrote)", file=sys.stderr)
        return 2
    registry = Registry.load(args.registry)

    def creator_keys():
        if not args.gateway_key:
            return None
        from govedge.hub.gateways import load_public_key

        # the chain's records must be signed by the gateway itself
        gateway_id = bundle.get("epoch", {}).get("gateway") if isinstance(bundle, dict) else None
        return {gateway_id: [load_public_key(args.gateway_key)]}

    chain = _chain_asked(args, "verify", creator_keys)
    if isinstance(chain, int):
        return chain
    lines, failed, code = proof.check(bundle, registry, chain, account=args.account)
    if args.json:
        print(json.dumps(proof.outcome(lines, failed, code, chain is not None), indent=1))
        return code
    for line in lines:
        print(f"  {proof.status(line)}  {line}")
    if failed is not None:
        print(f"  {'FAILED' if code == 1 else 'UNCHECKED'}  {failed.link}: {failed.reason}")
        if code == 3:
            print(f"  (could not check: {proof.RESULTS[3].split(': ', 1)[1]})")
        return code
    if chain is not None and proof.status(lines[-1]) != "ok":
        print("  (the anchoring identity was not checked: give --account (EVM) or --gateway-key (REST) "
              "to check it is the gateway's)")
    if chain is None:
        print("  (the chain was not asked: give --rpc and --contract, or --observer, to check the anchor there)")
    return 0


def _cmd_hub_proof(args: argparse.Namespace) -> int:
    from govedge.core import proof
    from govedge.hub import config as hubconfig
    from govedge.hub.proofs import bundle_for

    text = proof.dumps(bundle_for(hubconfig.load(args.config), args.device_id, args.seq,
                                  warn=lambda line: print(f"govedge hub proof: warning: {line}", file=sys.stderr)))
    _write_text(text, args.output)
    return 0


def _cmd_hub_install(args: argparse.Namespace) -> int:
    from pathlib import Path

    from govedge.hub import install

    options = install.Options(
        root=Path(args.root).resolve(), broker_port=args.broker_port, broker_names=args.broker_name or [],
        registry=Path(args.registry) if args.registry else None, store=args.store, workers=args.workers,
        gateways=args.gateway, service_user=args.service_user)
    try:
        result = install.install(options)
        started = [] if args.no_start or options.root != Path("/") else install.start_services(result)
    except (install.InstallError, OSError, ValueError) as exc:
        print(f"govedge hub install: {exc}", file=sys.stderr)
        return 2
    lay = result["layout"]
    print(f"hub installed under {options.root}")
    for path in result["changed"] or ():
        print(f"  wrote     {path}")
    if not result["changed"]:
        print("  nothing changed: keys, credentials, certificates and data were all in place")
    print(f"  workers   {result['workers']}: {', '.join(str(lay.toml(n)) for n in range(1, result['workers'] + 1))}")
    for gateway_id in result["gateways"]:
        print(f"  gateway   {gateway_id}: give {lay.gateway_passwords / gateway_id} and {lay.tls / 'ca.pem'} to its "
              "technician (gateway install --hub-password-file, --hub-ca)")
    return _installed("hub", options.root, started,
                      None if args.no_self_test else lambda: install.self_test(result, started=bool(started)), 18)


def _cmd_hub_run(args: argparse.Namespace) -> int:
    import signal

    from govedge.core import logs
    from govedge.hub import config as hubconfig
    from govedge.hub.service import HubService

    logs.setup()
    hub = HubService(hubconfig.load(args.config))
    signal.signal(signal.SIGTERM, lambda *a: hub.stop())
    hub.run()
    return 0


def _change_gateways(args: argparse.Namespace, change, done, missing_ok: bool = False) -> int:
    """Loads the hub's gateway list, applies ``change`` to it and saves it; prints ``done(cfg, result)``."""
    from govedge.hub import config as hubconfig
    from govedge.hub.gateways import Gateways

    cfg = hubconfig.load(args.config)
    gateways = Gateways.load(cfg.gateways, missing_ok=missing_ok)
    result = change(gateways)
    gateways.save()
    print(done(cfg, result))
    return 0


def _cmd_hub_add_gateway(args: argparse.Namespace) -> int:
    from govedge.hub.gateways import load_public_key

    return _change_gateways(
        args, lambda gateways: gateways.add(args.gateway_id, load_public_key(args.key)),
        lambda cfg, what: f"{args.gateway_id}: {what} ({cfg.gateways}); running hub workers reload it within "
                          "seconds (SIGHUP: at once)", missing_ok=True)


def _cmd_hub_revoke_gateway(args: argparse.Namespace) -> int:
    return _change_gateways(
        args, lambda gateways: gateways.revoke(args.gateway_id, args.since),
        lambda cfg, key: f"{args.gateway_id}: key {key} revoked ({cfg.gateways}); add its new key with "
                         "`govedge hub add-gateway`")


def _cmd_revoke(args: argparse.Namespace) -> int:
    from govedge.core.registry import Registry

    registry = Registry.load(args.registry)
    key = registry.revoke(args.device_id, args.since, args.key)
    registry.save()
    print(f"{args.device_id}: key {key.key_id} revoked from {key.revoked_since} ({args.registry})"
          + ("" if args.key else f"; give the device a new key with `govedge provision {args.device_id} --rotate`"))
    return 0


def _cmd_locate(args: argparse.Namespace) -> int:
    from govedge.core.registry import Registry
    from govedge.tools.field.provision import location_of_flags

    # checked as provision checks --location and --place, before the registry is read
    position = location_of_flags(args.position, args.place, flag="LAT,LON[,HEIGHT]")
    registry = Registry.load(args.registry)
    location, recorded = registry.locate(args.device_id, *position)
    if recorded:
        registry.save()
    count = len(registry.devices[args.device_id].locations)
    print(f"{args.device_id}: {'at' if recorded else 'already at'} {location.describe()} since {location.since} "
          f"({args.registry}; {count} location{'s' if count > 1 else ''} in its history)")
    return 0


def _cmd_hub_export(args: argparse.Namespace) -> int:
    from govedge.hub import config as hubconfig
    from govedge.hub import export
    from govedge.hub.store import HubStore

    cfg = hubconfig.load(args.config)
    since = export.parse_time(args.since) if args.since else None
    until = export.parse_time(args.until) if args.until else None
    store = HubStore(cfg.store)
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


def _cmd_hub_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from govedge.core.install import write
    from govedge.core.report import hub_key_id
    from govedge.hub import config as hubconfig

    cfg = hubconfig.load(args.config)
    public_path = cfg.key.with_name(cfg.key.name.removesuffix(".pem") + ".pub.pem")
    if cfg.key.exists():
        key = cfg.signing_key()
        made = False
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write(cfg.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), 0o600)
        made = True
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write(public_path, public, 0o644)
    print(f"hub key {hub_key_id(key.public_key())}: {'made' if made else 'there already, kept'}")
    print(f"  private key  {cfg.key} (owner only; [hub] key of {args.config})")
    print(f"  public key   {public_path} (for verifiers: govedge verify-report --hub-key)")
    return 0


def _report_period(args: argparse.Namespace):
    from govedge.core import report

    if args.year is not None:
        if args.date_from or args.date_to:
            raise report.ReportError("bad_period", "give --year or --from and --to, not both")
        return report.year_period(args.year)
    if not (args.date_from and args.date_to):
        raise report.ReportError("bad_period", "give the period: --from YYYY-MM-DD --to YYYY-MM-DD (both days "
                                               "included), or --year YYYY")
    return report.period_of(args.date_from, args.date_to)


def _cmd_hub_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from govedge.hub import config as hubconfig
    from govedge.hub import report

    cfg = hubconfig.load(args.config)
    period = _report_period(args)
    output = Path(args.output) if args.output else report.default_output(args.station, period)
    made = report.make(cfg, args.station, period, output, args.interval)
    for line in report.summary(made):
        print(line)
    if cfg.anchor_backend == "none":
        print("  anchor      none ([anchor] backend = \"none\"): signed, not anchored")
        return 0
    return _anchor_report(cfg, output, args.wait, args.config, "hub report")


def _anchor_report(cfg, path, wait_s: float, config: str, command: str) -> int:
    from govedge.anchor import AnchorError
    from govedge.hub import report

    try:
        receipt = report.anchor_report(cfg, path, wait_s, say=lambda line: print(f"  anchor      {line}"))
    except AnchorError as exc:
        print(f"govedge {command}: {path} is signed and written, not anchored: {exc.code}: {exc.reason} (govedge hub "
              f"anchor-report --config {config} {path} tries again)", file=sys.stderr)
        return 1
    if receipt is not None and receipt.confirmed:
        print(f"  anchor      confirmed: {receipt.backend} {receipt.chain}, block {receipt.block}, {receipt.reference}"
              f" (the receipt is in {path})")
        return 0
    print(f"govedge {command}: {path} is signed and submitted, not confirmed after {wait_s:g} s: its pending receipt "
          f"is in the file (govedge hub anchor-report --config {config} {path} asks again)", file=sys.stderr)
    return 1


def _cmd_hub_anchor_report(args: argparse.Namespace) -> int:
    from govedge.hub import config as hubconfig

    cfg = hubconfig.load(args.config)
    if cfg.anchor_backend == "none":
        print(f"govedge hub anchor-report: {args.config}: [anchor] backend = \"none\": no chain to anchor on (set "
              "[anchor] backend and its section)", file=sys.stderr)
        return 2
    return _anchor_report(cfg, args.report, args.wait, args.config, "hub anchor-report")


# govedge verify-report's exit status, as govedge verify's (docs/REPORT.md)
VERIFY_REPORT_RESULTS = {0: "holds: every part checked holds",
                         1: "does not hold: an input or a figure is false",
                         2: "usage or input error: the report, the readings, the registry or an option cannot be "
                            "used",
                         3: "could not check: the chain asked did not answer or refused the question; nothing is "
                            "proven or disproven, ask again later or ask another node"}


class _MappedReader(io.RawIOBase):
    """A file's map as the readable stream a CBOR decoder takes, without a copy of the file."""

    def __init__(self, data):
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def _signed_readings(path: str):
    """The items of a CBOR sequence (govedge hub export --format cose), each as its bytes, read through a map of
    the file: an export of a whole hub is not read into memory."""
    import mmap

    import cbor2

    from govedge.core.errors import GovedgeError

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            reader = _MappedReader(data)
            while data.tell() < len(data):
                start = data.tell()
                try:
                    cbor2.load(reader)
                except (cbor2.CBORDecodeError, ValueError, EOFError) as exc:
                    raise GovedgeError("bad_readings", f"{path}: not a CBOR sequence of signed readings at byte "
                                                       f"{start} ({exc}); give what govedge hub export --format "
                                                       "cose wrote") from None
                yield data[start:data.tell()]


def _cmd_verify_report(args: argparse.Namespace) -> int:
    import json

    from govedge.core import report
    from govedge.core.registry import Registry
    from govedge.hub.gateways import load_public_key

    with open(args.report, "rb") as f:
        data = f.read()
    rf = report.load_file(data, args.report)
    registry = Registry.load(args.registry)
    hub_keys = [load_public_key(args.hub_key)] if args.hub_key else None
    messages = _signed_readings(args.readings)  # read as checked; a broken file ends it as an input error, exit 2
    chain = _chain_asked(args, "verify-report", lambda: {f"hub-{rf.body['hub']}": hub_keys} if hub_keys else None)
    if isinstance(chain, int):
        return chain
    check = report.verify(rf, messages, registry, registry.key_rule, hub_keys, chain, args.account)
    code = 1 if check.faults else 3 if check.unchecked else 0
    if args.json:
        print(json.dumps({"exit_code": code, "result": VERIFY_REPORT_RESULTS[code].split(":", 1)[0],
                          "meaning": VERIFY_REPORT_RESULTS[code],
                          "held": [{"part": line[4:].split()[0], "status": "ok" if line.startswith("ok") else
                                    "not checked", "text": line[4:].split(None, 1)[1]} for line in check.lines],
                          "faults": [{"part": part, "text": text} for part, text in check.faults]
                          + ([{"part": check.unchecked[0], "text": check.unchecked[1], "status": "could not check"}]
                             if check.unchecked else [])}, indent=1))
        return code
    for line in check.lines:
        print(f"  {line}")
    for part, text in check.faults:
        print(f"  FAILED  {part}: {text}")
    if check.unchecked:
        print(f"  UNCHECKED  {check.unchecked[0]}: {check.unchecked[1]}")
        print(f"  (could not check: {VERIFY_REPORT_RESULTS[3].split(': ', 1)[1]})")
    elif chain is None and rf.receipt is not None and not check.faults:
        print("  (the chain was not asked: give --rpc and --contract, or --observer, to check the anchor there)")
    return code


def _cmd_gateway_check(args: argparse.Namespace) -> int:
    from govedge.gateway import check

    return check.run(args.config)


def _cmd_hub_check(args: argparse.Namespace) -> int:
    from govedge.hub import check

    return check.run(args.config)


def _cmd_hub_status(args: argparse.Namespace) -> int:
    import json

    from govedge.hub import config as hubconfig
    from govedge.hub.status import describe, status

    doc = status(hubconfig.load(args.config), silent_after=args.silent_after)
    print(json.dumps(doc, indent=1) if args.json else describe(doc))
    return 0 if doc["ok"] else 1


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every command of the parser as (its words, its parser): ("gateway", "run"), ... (subcommands, not groups)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
    for group in groups:
        for name, sub in group.choices.items():
            yield from commands(sub, path + (name,))


def _web_arguments(p: argparse.ArgumentParser, section: str) -> None:
    p.add_argument("--host", help=f"the address to listen on (default: {section} [web] host)")
    p.add_argument("--port", type=int, help=f"the TCP port (default: {section} [web] port)")
    p.add_argument("--refresh", type=float, help=f"seconds between the page's updates (default: {section} [web] "
                   "refresh_s)")


def build_parser() -> argparse.ArgumentParser:
    from govedge import anchor

    parser = _Parser(
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
    p.add_argument("--rotate", action="store_true",
                   help="give an existing device a new key; the old one is kept as retired; its config.json keeps "
                        "every value no flag changes")
    # the defaults are node_config's: None here is "not given" (a rotation keeps the device's value)
    p.add_argument("--transport", choices=["mqtt", "serial"], help="mqtt (default) or serial")
    p.add_argument("--broker-host", help="the gateway's MQTT broker (default gateway.local)")
    p.add_argument("--broker-port", type=int, help="default 1883")
    p.add_argument("--tls", action="store_true", default=None, help="connect to the broker with TLS")
    p.add_argument("--ca", help="with --tls: the CA certificate (PEM or DER) the broker's certificate chains to")
    p.add_argument("--mqtt-user", help="broker user name (password from $GOVEDGE_MQTT_PASSWORD)")
    p.add_argument("--wifi-ssid", help="Wi-Fi network (password from $GOVEDGE_WIFI_PASSWORD, needed unless "
                                       "--open-wifi)")
    p.add_argument("--open-wifi", action="store_true", help="the Wi-Fi network has no password")
    p.add_argument("--interval", type=int, help="seconds between readings (default 60)")
    p.add_argument("--buffer-slots", type=int, help="readings kept while offline (default 256)")
    p.add_argument("--deep-sleep", action="store_true", default=None,
                   help="battery node: deep sleep between readings")
    p.add_argument("--location", metavar="LAT,LON[,HEIGHT]",
                   help="where the device stands: WGS 84 decimal degrees, height in metres, e.g. "
                        "51.962944,7.625519,62 (south or west: --location=-33.86,151.21); a rotation without it "
                        "keeps the device's locations")
    p.add_argument("--place", metavar="TEXT", help="with --location: the place in words, at most 200 characters, "
                                                   "e.g. 'Domplatz, Münster, lamp post 12'")
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
    p.set_defaults(func=_cmd_gateway_status, failure_status=3)  # 2 is "not running"
    p = gsub.add_parser("replay-quarantine", help="verify quarantined messages of one code again and store those "
                                                  "that pass now (future_time, once the wrong clock is right)")
    p.add_argument("--config", required=True, help="gateway.toml")
    p.add_argument("--code", default="future_time", help="the quarantine code (default future_time)")
    p.set_defaults(func=_cmd_gateway_replay_quarantine)

    p = gsub.add_parser("web", help="the gateway's status page for a phone or laptop at the cabinet (read-only)")
    p.add_argument("--config", required=True, help="gateway.toml")
    _web_arguments(p, "gateway.toml")
    p.set_defaults(func=_cmd_gateway_web)

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
    p.add_argument("--hub-password-file", help="the file with the gateway's password on the hub broker (the hub "
                                               "operator's govedge hub install --gateway ID writes it)")
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
    p = gsub.add_parser("check", help="check gateway.toml and what it names (key, registry, data folder, TLS files), "
                                      "then each connection; starts nothing (exit status 0 ok, 1 a check failed, "
                                      "2 the configuration is not valid)")
    p.add_argument("--config", required=True, help="gateway.toml")
    p.set_defaults(func=_cmd_gateway_check)

    p = sub.add_parser("verify", help="check a proof bundle link by link, offline, and on the chain if given "
                                      "(exit status 0 proven, 1 does not hold, 2 usage or input error, 3 could not "
                                      "check)")
    p.add_argument("bundle", metavar="BUNDLE.json")
    p.add_argument("--registry", required=True, help="the device registry (registry.json)")
    p.add_argument("--rpc", help="EVM chain: a JSON-RPC URL to check the anchor on")
    p.add_argument("--contract", help="EVM chain: the anchor contract's address")
    p.add_argument("--account", help="EVM chain: the gateway's account address; the root must be anchored by it")
    p.add_argument("--observer", help="REST chain: the observer's base URL")
    p.add_argument("--ca", help="REST chain: CA file for the observer's certificate")
    p.add_argument("--gateway-key", help="REST chain: the gateway's public key (PEM); the observer's record "
                                         "of the anchor must carry its signature")
    p.add_argument("--json", action="store_true", help="print one JSON object: each link, its status, the exit "
                                                       "status and its meaning")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("verify-report", help="check a hub's report: every figure recomputed from the device-signed "
                                             "readings, their signatures, the commitment, the hub's signature, the "
                                             "anchor (exit 0 holds, 1 does not hold, 2 input error, 3 could not check)")
    p.add_argument("report", metavar="REPORT", help="the file govedge hub report wrote")
    p.add_argument("--readings", required=True, metavar="EXPORT",
                   help="the signed readings: what govedge hub export --format cose wrote (a CBOR sequence)")
    p.add_argument("--registry", default="registry.json", help="the device registry (default registry.json)")
    p.add_argument("--hub-key", metavar="PUB.pem", help="the hub's public key (govedge hub keygen wrote it)")
    p.add_argument("--rpc", help="EVM chain: a JSON-RPC URL to check the anchor on")
    p.add_argument("--contract", help="EVM chain: the anchor contract's address")
    p.add_argument("--account", help="EVM chain: the hub's account address; the root must be anchored by it")
    p.add_argument("--observer", help="REST chain: the observer's base URL")
    p.add_argument("--ca", help="REST chain: CA file for the observer's certificate")
    p.add_argument("--json", action="store_true", help="print one JSON object: what held, what did not, the exit "
                                                       "status and its meaning")
    p.set_defaults(func=_cmd_verify_report)

    p = sub.add_parser("revoke", help="a leaked device key: nothing it signed from --since on is accepted")
    p.add_argument("device_id", metavar="DEVICE", help="the device whose active key is revoked")
    p.add_argument("--since", metavar="TIME", help="UTC time like 2026-11-29T06:00:00Z (default now)")
    p.add_argument("--key", metavar="KEY_ID", help="a retired key that leaked after its rotation (its key id, "
                   "the first 16 hex digits of its x coordinate); default the active key")
    p.add_argument("--registry", default="registry.json", help="device registry file (default registry.json)")
    p.set_defaults(func=_cmd_revoke)

    p = sub.add_parser("locate", help="record where a device stands now (a moved station keeps its earlier "
                                      "locations); its keys are not touched")
    p.add_argument("device_id", metavar="DEVICE_ID", help="a provisioned device, e.g. esp32-0007")
    p.add_argument("position", metavar="LAT,LON[,HEIGHT]",
                   help="WGS 84 decimal degrees, height in metres, e.g. 51.962944,7.625519,62 (south or west: "
                        "options first, then -- before it: --place TEXT -- -33.86,151.21)")
    p.add_argument("--place", metavar="TEXT", help="the place in words, at most 200 characters, e.g. "
                                                   "'Domplatz, Münster, lamp post 12' (not taken over from the "
                                                   "earlier location)")
    p.add_argument("--registry", default="registry.json", help="device registry file (default registry.json)")
    p.set_defaults(func=_cmd_locate)

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
    p = hsub.add_parser("web", help="the hub's status page: gateways and devices, last heard, problems (read-only)")
    p.add_argument("--config", required=True, help="hub.toml")
    _web_arguments(p, "hub.toml")
    p.set_defaults(func=_cmd_hub_web)
    p = hsub.add_parser("proof", help="a reading's proof bundle (JSON), from the hub's store")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("seq", metavar="SEQ", type=int, help="the reading's sequence number")
    p.add_argument("--output", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_hub_proof)
    p = hsub.add_parser("status", help="gateways by when last heard, their backlog and anchoring, silent devices; "
                        "exit 0 ok, 1 a problem, 2 the store cannot be read")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("--json", action="store_true", help="the same as one JSON document (hub/README.md, \"Status\")")
    p.add_argument("--silent-after", type=float, default=3, metavar="N",
                   help="a gateway is silent after N of its heartbeats without a word, a device after N of its "
                        "intervals (default 3)")
    p.set_defaults(func=_cmd_hub_status)
    p = hsub.add_parser("export", help="readings for analysts (csv, json) or the signed originals (cose)")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("--since", help="from this time on (RFC 3339, e.g. 2026-11-29T00:00:00Z, or seconds)")
    p.add_argument("--until", help="before this time")
    p.add_argument("--format", choices=["csv", "json", "cose"], default="csv")
    p.add_argument("--output", help="file to write (default: standard output)")
    p.set_defaults(func=_cmd_hub_export)
    p = hsub.add_parser("keygen", help="make the hub's report key ([hub] key, owner only) if it has none, and write "
                                       "its public key beside it for verifiers")
    p.add_argument("--config", required=True, help="hub.toml")
    p.set_defaults(func=_cmd_hub_keygen)
    p = hsub.add_parser("report", help="a station's signed report of a period: hourly, daily and period means with "
                                       "their data capture, days over the EU limit values (docs/REPORT.md)")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("--station", required=True, metavar="DEVICE_ID", help="the station: a device of the registry")
    p.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="the first UTC day of the period")
    p.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="the last UTC day of the period (included)")
    p.add_argument("--year", type=int, metavar="YYYY", help="the calendar year (instead of --from and --to)")
    p.add_argument("--interval", type=int, default=60, metavar="S",
                   help="the station's reading interval in seconds: an hour has 3600/S slots, valid with 75 %% of "
                        "them covered (default 60)")
    p.add_argument("--output", help="the report file (default: report-STATION-PERIOD.cbor here)")
    p.add_argument("--wait", type=float, default=120, metavar="S",
                   help="with [anchor]: seconds to wait for the chain to confirm (default 120)")
    p.set_defaults(func=_cmd_hub_report)
    p = hsub.add_parser("anchor-report", help="anchor a report on the chain of [anchor], or confirm its pending "
                                              "anchoring, and keep the receipt in the file")
    p.add_argument("--config", required=True, help="hub.toml")
    p.add_argument("report", metavar="REPORT", help="the file govedge hub report wrote")
    p.add_argument("--wait", type=float, default=120, metavar="S", help="seconds to wait for the confirmation "
                                                                        "(default 120)")
    p.set_defaults(func=_cmd_hub_anchor_report)
    p = hsub.add_parser("check", help="check hub.toml and what it names (registry, gateway list, state folder, TLS "
                                      "files), then the store and the broker; starts nothing (exit status 0 ok, 1 a "
                                      "check failed, 2 the configuration is not valid)")
    p.add_argument("--config", required=True, help="hub.toml")
    p.set_defaults(func=_cmd_hub_check)

    p = hsub.add_parser("install", help="make this host the hub: broker with TLS and per-gateway logins and ACL, "
                                        "hub-N.toml, systemd units; then a self-test")
    p.add_argument("--root", default="/", help="install into this folder instead of / (default /)")
    p.add_argument("--registry", help="the device registry to install (govedge provision writes it)")
    p.add_argument("--store", help="hub.toml [store] url, e.g. postgresql://govedge@localhost/govedge "
                                   "(default: SQLite in /var/lib/govedge/hub.db)")
    p.add_argument("--workers", type=int, default=1, help="hub workers, govedge-hub@1 ... (default 1)")
    p.add_argument("--gateway", action="append", default=[], metavar="GATEWAY_ID",
                   help="give this gateway a login on the hub broker (repeatable; the gateways in "
                        "gateways.json get one anyway)")
    p.add_argument("--broker-port", type=int, default=8883, help="the hub broker's TLS port (default 8883)")
    p.add_argument("--broker-name", action="append",
                   help="a host name or address the gateways reach the hub by (repeatable; default: "
                        "this host's name and 127.0.0.1)")
    p.add_argument("--no-self-test", action="store_true", help="skip the self-test")
    p.add_argument("--no-start", action="store_true",
                   help="write files and make the service user, but do not enable and start the services")
    p.add_argument("--service-user", default="govedge",
                   help="the system user of the hub workers, created if missing (default govedge); "
                        "with --root only used if it exists")
    p.set_defaults(func=_cmd_hub_install)

    p = sub.add_parser("bench", help="measure speed and size figures (see docs/BENCHMARKS.md)")
    p.add_argument("target", choices=["firmware", "gateway", "hub", "hub-api", "anchor"], help="what to measure")
    p.add_argument("--devices", type=int, default=500, help="gateway, hub: devices publishing (default 500)")
    p.add_argument("--per-device", type=int, default=40, help="gateway: readings per device (default 40)")
    p.add_argument("--workers", type=int, default=None,
                   help="gateway, hub: verification processes, with several hub processes all of theirs together "
                        "(default: the service's default, one per core)")
    p.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                   help="hub: the store, a SQLite file or a PostgreSQL server the bench starts, fsync on "
                        "(default sqlite)")
    p.add_argument("--hubs", type=_hub_counts, default=[1], metavar="N[,N...]",
                   help="hub: hub processes on one shared subscription; several numbers, one run each, "
                        "e.g. 1,2 (default 1)")
    p.add_argument("--stores", type=_store_list, default=["sqlite", "postgresql"], metavar="STORE[,STORE]",
                   help="hub-api: the stores, sqlite and postgresql, each filled with the same readings "
                        "(default both)")
    p.add_argument("--readings", type=int, default=1_000_000,
                   help="hub-api: readings in the store (default 1,000,000)")
    p.add_argument("--requests", type=int, default=200, help="hub-api: dashboard queries timed (default 200)")
    p.add_argument("--synchronous", choices=["NORMAL", "FULL"], default=None,
                   help="gateway: the store's [store] synchronous (default: the service's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rounds", type=int, default=201, help="signatures timed per interpreter (default 201)")
    p.set_defaults(func=_cmd_bench)
    version = f"govedge {_version()}"
    parser.add_argument("--version", action="version", version=version)
    for _, p in commands(parser):  # also after a command: govedge gateway run --version
        p.add_argument("--version", action="version", version=version, help="show the version and exit")
    return parser


# the extra (pyproject.toml) that installs what a command needs beyond the base install;
# EVM anchoring's modules come with [evm], whichever command needs them
EXTRAS = {"gateway": "gateway", "verify": "gateway", "verify-report": "gateway", "hub": "hub", "flash": "field",
          "monitor": "field", "demo": "dev", "bench": "dev"}
EVM_MODULES = {"web3", "eth_account", "eth_utils"}


def _os_error_line(exc: OSError) -> str:
    """One line for a failed system call: the file (or the address) it concerns, what failed and what to do."""
    if exc.errno is None:  # raised by the product with its own text (e.g. "... does not exist: has it run?")
        return str(exc)
    name = exc.filename if exc.filename is not None else None
    where = f"{name}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "") if name is not None else ""
    hint = {
        errno.ENOENT: "does not exist (check the path)",
        errno.EACCES: "permission denied (run the command as the file's owner, e.g. with sudo, or give a file "
                      "you may read)",
        errno.EPERM: "operation not permitted (run the command as the file's owner, e.g. with sudo)",
        errno.EISDIR: "is a folder (give the path of a file)",
        errno.ENOTDIR: "a part of the path is not a folder (check the path)",
        errno.ENOSPC: "no space left on the device (make room, then try again)",
        errno.EROFS: "is on a read-only file system (give a path on a writable one)",
        errno.EADDRINUSE: "address already in use (another process holds the port: stop it or choose another "
                          "port)",
        errno.ECONNREFUSED: "connection refused (is the service running at that address and port?)",
    }.get(exc.errno, exc.strerror or str(exc))
    return f"{where}: {hint}" if where else hint


def _sqlite_error_line(exc: Exception) -> str:
    """One line for a SQLite error that reached the command: what SQLite said and what to do about it."""
    from govedge.core.errors import text_of

    text = text_of(exc)
    if "not a database" in text or "malformed" in text:
        return (f"a SQLite database: {text} (the file is damaged or is not a database: restore it from a backup, "
                "or move it aside to start an empty one)")
    if "readonly" in text or "unable to open" in text:
        return f"a SQLite database: {text} (run the command as the database's owner, e.g. with sudo)"
    if "locked" in text:
        return f"a SQLite database: {text} (another process holds it: try again when it is done)"
    return f"a SQLite database: {text}"


def _failure(exc: BaseException) -> tuple[int, str | None] | None:
    """The exit status and the one line of an operational error; None for what is a fault of the program."""
    import json
    import sqlite3
    import tomllib

    from govedge.core.errors import GovedgeError, text_of

    if isinstance(exc, KeyboardInterrupt):
        return 130, None
    if isinstance(exc, GovedgeError):
        return 2, str(exc)
    if isinstance(exc, OSError):
        return 2, _os_error_line(exc)
    if isinstance(exc, sqlite3.Error):
        return 2, _sqlite_error_line(exc)
    if isinstance(exc, json.JSONDecodeError):
        return 2, f"not valid JSON: {text_of(exc)} (fix the file, or give the right one)"
    if isinstance(exc, tomllib.TOMLDecodeError):
        return 2, f"not valid TOML: {text_of(exc)} (fix the file, or give the right one)"
    if isinstance(exc, UnicodeDecodeError):
        return 2, f"not a text file: {text_of(exc)} (give the right file)"
    if isinstance(exc, ValueError):  # a value the command could not take, e.g. a number in a config
        return 2, text_of(exc, 400)
    psycopg = sys.modules.get("psycopg")  # imported by the commands that use PostgreSQL, never for this
    if psycopg is not None and isinstance(exc, psycopg.Error):
        from govedge.core import redact

        return 2, f"PostgreSQL: {redact.text(exc, '', paths=False)}"
    return None


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("govchain-edge")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Runs one command. An operational error (a missing or unreadable file, a damaged database, a busy port, a
    bad config) ends it with one line on standard error, "govedge COMMAND: what is wrong (what to do)", and
    exit status 2; Ctrl-C with 130; a closed pipe (``| head``) quietly. GOVEDGE_DEBUG=1 shows the traceback."""
    args = build_parser().parse_args(argv)
    command = " ".join(filter(None, (args.command, getattr(args, "gateway_command", None),
                                     getattr(args, "hub_command", None))))
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (`govedge hub export | head`): what is still buffered goes nowhere, so that the
        # interpreter's last flush at exit does not complain; 141 is what a shell shows for a command SIGPIPE ended
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except ModuleNotFoundError as exc:
        module = (exc.name or "govedge").partition(".")[0]
        extra = "evm" if module in EVM_MODULES else EXTRAS.get(args.command)
        if extra is None or module == "govedge":
            raise
        print(f"govedge {args.command}: no module {module!r}; it comes with the [{extra}] extra: "
              f"pip install 'govchain-edge[{extra}]'", file=sys.stderr)
        return 2
    except (Exception, KeyboardInterrupt) as exc:
        failure = _failure(exc)
        if failure is None or os.environ.get("GOVEDGE_DEBUG") == "1":
            raise
        status, line = failure
        if status == 2:  # a command whose exit status 2 means something else names its own (gateway status: 3)
            status = getattr(args, "failure_status", status)
        if line is not None:
            from govedge.core.errors import one_line
            from govedge.core.logs import under_journald

            # under systemd the journal files it as an error (`journalctl -p err`), not as the default info
            print(f"{'<3>' if under_journald() else ''}govedge {command}: {one_line(line, 1000)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
