"""``uun-gateway onewire scan``: list devices and their current values; ``uun-gateway onewire set
ID PROPERTY VALUE``: write one property and confirm it by a read-back."""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import AbstractContextManager
from typing import TextIO

from uun_gateway import Commands

from .connection import OwServer, OwSession, ServerAddress, ServerUnavailable
from .errors import PathError
from .families import BOOL, FLOAT, INT, TEXT, properties_for, property_spec
from .reader import Reader, ReadTarget
from .scanner import DEVICE_ID, ScanResult, scan
from .sysfs import SysfsAddress, SysfsBus, SysfsSession
from .writer import WriteFailed, typed, write_confirmed

EXIT_FAILED = 1
EXIT_UNREACHABLE = 2


def register(commands: Commands) -> None:
    """Add the ``onewire`` command group with its ``scan`` and ``set`` subcommands."""
    group = commands.add("onewire", help="1-wire sensors through owserver or the kernel w1 bus")
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
    scan_cmd.add_argument(
        "--sysfs",
        action="append",
        metavar="DIR",
        help="read the kernel's 1-wire bus instead (e.g. /sys/bus/w1/devices; repeatable)",
    )
    scan_cmd.set_defaults(func=run_scan)
    set_cmd = sub.add_parser(
        "set",
        help="write one property (e.g. PIO.A true) and confirm it by reading it back",
        description="Write PROPERTY of device ID and read it back. VALUE: true/false (also on/off, 1/0) "
        "for PIO.* and latch.* (latch: false clears it), a whole number for tempres (9-12), a number for "
        "temphigh/templow. Exit status: 0 confirmed, 1 refused or not confirmed, 2 server unreachable.",
    )
    set_cmd.add_argument("device", metavar="ID", type=_device_id, help="device id, e.g. 3A.00003AC50200")
    set_cmd.add_argument("property", metavar="PROPERTY", help="e.g. PIO.A, latch.0, temphigh, tempres")
    set_cmd.add_argument("value", metavar="VALUE")
    set_cmd.add_argument("--server", type=_address, metavar="HOST:PORT", help="owserver (default 127.0.0.1:4304)")
    set_cmd.add_argument("--sysfs", metavar="DIR", help="the kernel's 1-wire bus instead, e.g. /sys/bus/w1/devices")
    set_cmd.set_defaults(func=run_set)


def _device_id(text: str) -> str:
    dev_id = text.strip().upper()
    if not DEVICE_ID.match(dev_id):
        raise argparse.ArgumentTypeError(f"invalid device id {text!r}: expected FF.XXXXXXXXXXXX, e.g. 28.000028D70000")
    return dev_id


_TRUE, _FALSE = {"true", "on", "1", "yes"}, {"false", "off", "0", "no"}


def parse_value(text: str, kind: str | None) -> bool | int | float | str:
    """VALUE from the command line for a property of ``kind``; raises ValueError naming the
    expected form."""
    word = text.strip().lower()
    if kind == BOOL:
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"expected true or false (on/off, 1/0), not {text!r}")
    if kind == INT:
        try:
            return int(word)
        except ValueError:
            raise ValueError(f"expected a whole number, not {text!r}") from None
    if kind == FLOAT:
        try:
            number = float(word)
        except ValueError:
            raise ValueError(f"expected a number, not {text!r}") from None
        return int(number) if number.is_integer() and "." not in word else number
    if kind == TEXT:
        return text
    for parse in (int, float):
        try:
            return parse(word)
        except ValueError:
            pass
    return text


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
    targets_list: list[ServerAddress | SysfsAddress] = [SysfsAddress(d) for d in args.sysfs or []]
    targets_list += args.server or ([] if targets_list else [ServerAddress()])
    for address in targets_list:
        try:
            with _open(address) as session:
                result = session.scan() if isinstance(session, SysfsSession) else scan(session)
                for bus, name in result.simulated_buses.items():
                    print(
                        f"warning: {address}{bus} is a simulated bus master ({name}); values are not real",
                        file=err,
                    )
                targets = [
                    ReadTarget(d.id, None, d.bus_path, properties_for(d.family, device_type=d.type))
                    for d in result.devices.values()
                ]
                cycle = Reader(conversion_delay=args.conversion_delay).read([(session, targets)])
                if cycle.unavailable:
                    raise ServerUnavailable(address, cycle.unavailable[str(address)])
        except ServerUnavailable as exc:
            print(f"uun-gateway onewire scan: cannot reach {_what(address)}: {exc.reason}", file=err)
            status = EXIT_UNREACHABLE
            continue
        except PathError as exc:
            print(f"uun-gateway onewire scan: {_what(address)} refused the scan: {exc.detail}", file=err)
            status = EXIT_UNREACHABLE
            continue
        values: dict[str, list[str]] = {}
        for reading in cycle.readings:
            unit = f" {reading.unit}" if reading.unit else ""
            values.setdefault(reading.device_id, []).append(f"{reading.property}={reading.value}{unit}")
        for error in cycle.errors:
            values.setdefault(error.device_id, []).append(f"{error.property}: {error.kind} ({error.detail})")
        print(
            f"{_label(address)}: {len(result.devices)} device(s) on {len(result.buses)} bus path(s)",
            file=out,
        )
        print(f"{'ID':<16} {'FAMILY':<6} {'TYPE':<10} {'BUS PATH':<32} VALUES", file=out)
        for dev in sorted(result.devices.values(), key=lambda d: (d.bus_path, d.id)):
            shown = ", ".join(values.get(dev.id, [])) or "-"
            print(f"{dev.id:<16} {dev.family:<6} {dev.type or '?':<10} {dev.bus_path:<32} {shown}", file=out)
    return status


def _what(address: ServerAddress | SysfsAddress) -> str:
    return f"the kernel 1-wire bus {address.root}" if isinstance(address, SysfsAddress) else f"owserver at {address}"


def _label(address: ServerAddress | SysfsAddress) -> str:
    return f"kernel 1-wire bus {address.root}" if isinstance(address, SysfsAddress) else f"owserver {address}"


def _open(address: ServerAddress | SysfsAddress) -> AbstractContextManager[OwSession | SysfsSession]:
    if isinstance(address, SysfsAddress):
        return SysfsBus(address).session()
    return OwServer(address, persistent=True, log_transitions=False).session()


def _locate(session: OwSession | SysfsSession, dev_id: str) -> ScanResult:
    return session.scan() if isinstance(session, SysfsSession) else scan(session)


def run_set(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Write one property and confirm it; returns 0, 1 (refused/not confirmed/not found) or 2."""
    out = out or sys.stdout
    err = err or sys.stderr
    address: ServerAddress | SysfsAddress = SysfsAddress(args.sysfs) if args.sysfs else args.server or ServerAddress()
    prog = "uun-gateway onewire set"
    try:
        with _open(address) as session:
            found = _locate(session, args.device).devices.get(args.device)
            if found is None:
                print(f"{prog}: no device {args.device} on {_what(address)}", file=err)
                return EXIT_FAILED
            spec = typed(session, found.id[:2], property_spec(args.property, found.family))
            try:
                value = parse_value(args.value, spec.kind)
                spec.encode(value, found.family)
            except ValueError as exc:
                print(f"{prog}: {args.device} {args.property}: {exc}", file=err)
                return EXIT_FAILED
            result = write_confirmed(session, found.bus_path, found.id, spec, value)
    except ServerUnavailable as exc:
        print(f"{prog}: cannot reach {_what(address)}: {exc.reason}", file=err)
        return EXIT_UNREACHABLE
    except PathError as exc:
        print(f"{prog}: {_what(address)} refused: {exc.detail}", file=err)
        return EXIT_FAILED
    except WriteFailed as exc:
        print(f"{prog}: {exc}", file=err)
        return EXIT_FAILED
    shown = str(result.value).lower() if isinstance(result.value, bool) else result.value
    print(f"{result.device_id} {result.property} = {shown} (confirmed by read-back)", file=out)
    return 0
