"""``uun-gateway onewire scan [--server HOST:PORT]``: list devices and their current values."""

from __future__ import annotations

import argparse
import math
import sys
from typing import TextIO

from uun_gateway import Commands

from .connection import OwnetError, OwServer, ServerAddress, ServerUnavailable
from .families import properties_for
from .reader import Reader, ReadTarget
from .scanner import scan

EXIT_UNREACHABLE = 2


def register(commands: Commands) -> None:
    """Add the ``onewire`` command group with its ``scan`` subcommand."""
    group = commands.add("onewire", help="1-wire sensors through owserver")
    sub = group.add_subparsers(dest="onewire_command", metavar="SUBCOMMAND", required=True)
    scan_cmd = sub.add_parser("scan", help="list the devices of an owserver with their current values")
    scan_cmd.add_argument(
        "--server",
        action="append",
        type=_address,
        metavar="HOST:PORT",
        help="owserver to ask (repeatable; default 127.0.0.1:4304)",
    )
    scan_cmd.add_argument(
        "--conversion-delay",
        type=_delay,
        default=1.2,
        metavar="SECONDS",
        help="wait after the simultaneous temperature conversion (0 to 10, default 1.2)",
    )
    scan_cmd.set_defaults(func=run_scan)


def _address(text: str) -> ServerAddress:
    try:
        return ServerAddress.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _delay(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 10:  # as gateway.onewire.conversionDelay; also rejects nan and inf
        raise argparse.ArgumentTypeError(f"invalid delay {text!r}: expected a number of seconds from 0 to 10")
    return seconds


def run_scan(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Scan each server and print one line per device. Returns 0, or 2 if a server was unreachable."""
    out = out or sys.stdout
    err = err or sys.stderr
    status = 0
    for address in args.server or [ServerAddress()]:
        server = OwServer(address, persistent=True, log_transitions=False)
        try:
            with server.session() as session:
                result = scan(session)
                for bus, name in result.simulated_buses.items():
                    print(
                        f"warning: {address}{bus} is a simulated bus master ({name}); values are not real",
                        file=err,
                    )
                targets = [
                    ReadTarget(d.id, None, d.bus_path, properties_for(d.family)) for d in result.devices.values()
                ]
                cycle = Reader(conversion_delay=args.conversion_delay).read([(session, targets)])
                if cycle.unavailable:
                    raise ServerUnavailable(address, cycle.unavailable[str(address)])
        except ServerUnavailable as exc:
            print(f"uun-gateway onewire scan: cannot reach owserver at {address}: {exc.reason}", file=err)
            status = EXIT_UNREACHABLE
            continue
        except OwnetError as exc:
            print(f"uun-gateway onewire scan: owserver at {address} refused the scan: {exc}", file=err)
            status = EXIT_UNREACHABLE
            continue
        values: dict[str, list[str]] = {}
        for reading in cycle.readings:
            unit = f" {reading.unit}" if reading.unit else ""
            values.setdefault(reading.device_id, []).append(f"{reading.property}={reading.value}{unit}")
        for error in cycle.errors:
            values.setdefault(error.device_id, []).append(f"{error.property}: {error.kind} ({error.detail})")
        print(
            f"owserver {address}: {len(result.devices)} device(s) on {len(result.buses)} bus path(s)",
            file=out,
        )
        print(f"{'ID':<16} {'FAMILY':<6} {'TYPE':<10} {'BUS PATH':<32} VALUES", file=out)
        for dev in sorted(result.devices.values(), key=lambda d: (d.bus_path, d.id)):
            shown = ", ".join(values.get(dev.id, [])) or "-"
            print(f"{dev.id:<16} {dev.family:<6} {dev.type or '?':<10} {dev.bus_path:<32} {shown}", file=out)
    return status
