"""``uun-gateway unisenza list`` and ``uun-gateway unisenza set``: diagnostics and manual control.

Both read the account from ``gateway.unisenza`` of the gateway's JSON config (``-c``). Exit
codes: 0 success, 1 cloud failure (login, connection, rejected or unanswered request), 2 bad
arguments (unknown device, value out of range), 78 unusable config.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, TextIO

from uun_gateway import EX_CONFIG, Commands, ConfigError, load_config, validate_config

from .client import Client
from .errors import AuthenticationError, ClientError
from .models import Gateway, HvacDevice, enum_name, parse_system_mode
from .module import build_client
from .schema import CONFIG_SCHEMA

# What the commands need of the config file; the rest of it is the gateway's business.
_CONFIG_FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "a JSON object",
    "required": ["gateway"],
    "properties": {
        "gateway": {
            "type": "object",
            "description": "an object",
            "required": ["unisenza"],
            "properties": {"unisenza": CONFIG_SCHEMA},
        }
    },
}


def register(commands: Commands) -> None:
    """Add the ``unisenza`` command with its ``list`` and ``set`` subcommands."""
    parser = commands.add("unisenza", help="Unisenza Plus thermostats: list, set")
    sub = parser.add_subparsers(dest="unisenza_command", metavar="SUBCOMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", required=True, help="the gateway's JSON config file")
    common.add_argument("--timeout", type=_seconds, default=30.0, help="seconds to wait for the cloud (30)")

    listing = sub.add_parser("list", parents=[common], help="print gateways and thermostats with their state")
    listing.set_defaults(func=cmd_list)

    setter = sub.add_parser("set", parents=[common], help="set a thermostat's temperature and/or mode")
    setter.add_argument("device", metavar="DEVICE", help="device code, id or name")
    setter.add_argument("--temperature", "-t", type=float, help="target temperature in °C (0.5 steps)")
    setter.add_argument("--mode", "-m", choices=["off", "heat"], help="system mode")
    setter.set_defaults(func=cmd_set)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: expected a number of seconds > 0")
    return seconds


def _open(args: argparse.Namespace) -> Client:
    config = load_config(args.config)
    errors = validate_config(config, _CONFIG_FILE_SCHEMA)
    if errors:
        raise ConfigError(errors, str(args.config))
    section = config["gateway"]["unisenza"]
    try:
        client = build_client(section)
    except ClientError as exc:  # no network yet: the password (file) is unusable
        raise ConfigError([f"gateway.unisenza: {exc}"], str(args.config)) from None
    try:
        client.login()
        client.populate_devices()
        if not client.connect(args.timeout):
            raise ClientError(f"not connected to the cloud within {args.timeout:g} s")
    except BaseException:
        client.close()
        raise
    return client


def _fmt(value: float | None, unit: str = "°C") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def print_devices(client: Client, out: TextIO) -> None:
    """One line per gateway, one indented line per thermostat."""
    for gateway in client.get_gateways():
        g = gateway.get_attributes()
        print(f"{g.device_code}  {g.name}  gateway  {'available' if g.available else 'unavailable'}", file=out)
        for device in gateway.get_children():
            a = device.get_attributes()
            print(
                f"  {a.device_code}  {a.name}  current {_fmt(a.current_temperature)}  "
                f"target {_fmt(a.target_temperature)}  mode {enum_name(a.system_mode) or '-'}  "
                f"{enum_name(a.running_state) or '-'}  {'available' if a.available else 'unavailable'}",
                file=out,
            )


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        client = _open(args)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"uun-gateway unisenza: {exc.source or args.config}: {error}", file=sys.stderr)
        return EX_CONFIG
    except AuthenticationError as exc:
        print(f"uun-gateway unisenza: login refused: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"uun-gateway unisenza: {exc}", file=sys.stderr)
        return 1
    try:
        return int(action(client))
    except ClientError as exc:
        print(f"uun-gateway unisenza: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def cmd_list(args: argparse.Namespace) -> int:
    """Refresh every device and print them; exit 1 when some could not be refreshed."""

    def action(client: Client) -> int:
        status = 0
        try:
            client.refresh_all_devices(args.timeout)
        except ClientError as exc:
            print(f"uun-gateway unisenza: {exc}", file=sys.stderr)
            status = 1
        print_devices(client, sys.stdout)
        return status

    return _run(args, action)


def cmd_set(args: argparse.Namespace) -> int:
    """Send a new temperature and/or mode to one thermostat; exit 0 once the cloud accepted it."""
    if args.temperature is None and args.mode is None:
        print("uun-gateway unisenza set: give --temperature and/or --mode", file=sys.stderr)
        return 2

    def action(client: Client) -> int:
        try:
            gateway, device = client.find_device(args.device)
        except KeyError as exc:
            print(f"uun-gateway unisenza set: {exc.args[0]}", file=sys.stderr)
            return 2
        if not isinstance(device, HvacDevice) or not isinstance(gateway, Gateway):
            print(f"uun-gateway unisenza set: {args.device} is not a thermostat", file=sys.stderr)
            return 2
        client.refresh_device_state(gateway, device, args.timeout)
        changes: dict[str, Any] = {}
        try:
            if args.temperature is not None:
                changes["target_temperature"] = device.validate_target_temperature(args.temperature)
            if args.mode is not None:
                changes["system_mode"] = parse_system_mode(args.mode)
        except ValueError as exc:
            print(f"uun-gateway unisenza set: {exc}", file=sys.stderr)
            return 2
        client.update_device_state(gateway, device, changes, args.timeout)
        summary = ", ".join(f"{k} {enum_name(v) if k == 'system_mode' else v}" for k, v in changes.items())
        print(f"{device.get_device_code()} ({device.get_name()}): {summary} accepted")
        return 0

    return _run(args, action)
