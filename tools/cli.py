"""The `govedge` command: one program for technicians, operators and auditors."""

from __future__ import annotations

import argparse
import sys


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    result = bench.bench_firmware(rounds=args.rounds)
    bench.print_result(result, args.json)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run(readings=args.readings, workdir=args.workdir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="govedge",
        description="govchain-edge: signed sensor readings from street boards to the IoT-Hub.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="sign readings on the MicroPython node firmware and verify them here")
    p.add_argument("--readings", type=int, default=3, help="how many readings the node signs (default 3)")
    p.add_argument("--workdir", help="keep the demo's files (node key, compiled firmware) in this folder")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="measure speed and size figures (see docs/BENCHMARKS.md)")
    p.add_argument("target", choices=["firmware"], help="what to measure")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rounds", type=int, default=201, help="signatures timed per interpreter (default 201)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
