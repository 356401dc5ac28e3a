"""``uun-gateway alarms list`` and ``uun-gateway alarms ack``: the command-line clients of the
running gateway's ``alarms`` and ``ack`` commands (answered by the alarm service on the command
socket, see :class:`~uun_gateway.alarmservice.AlarmService`).

Exit codes (also in ``--help``): 0 done; 1 an unknown rule, or another error the gateway answered;
3 ``ack`` found nothing to acknowledge; 4 the gateway has no alarm rules (``gateway.alarms``);
69 (``EX_UNAVAILABLE``) the gateway cannot be reached: no socket at the path, nothing listening
(the service is not running) or no answer in time; 78 (``EX_CONFIG``) ``-c FILE`` cannot be read.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from .control import add_client_arguments
from .errors import EX_CONFIG, ConfigError

EX_UNKNOWN_RULE = 1
EX_NOTHING_TO_ACK = 3
EX_NO_RULES = 4
EX_UNAVAILABLE = 69

EXIT_CODES = (
    "exit codes: 0 done; 1 unknown rule (or another error answered by the gateway); 3 nothing to "
    "acknowledge; 4 the gateway has no alarm rules; 69 the gateway cannot be reached (no socket, "
    "not running, no answer); 78 -c FILE unreadable"
)


class _Failed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _ask(args: argparse.Namespace, command: str) -> Any:
    """The JSON answer of the running gateway to ``command``; raises :class:`_Failed`."""
    from .config import load_config
    from .control import ControlError, client_socket_path, send_command

    config = None
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise _Failed(EX_CONFIG, "; ".join(f"{args.config}: {line}" for line in exc.errors)) from None
    path = client_socket_path(args.socket, config)
    try:
        done, text = send_command(path, command, timeout=args.timeout)
    except ControlError as exc:
        raise _Failed(EX_UNAVAILABLE, str(exc)) from None
    if not done:
        if text == "Unknown command!":
            raise _Failed(EX_NO_RULES, f"the gateway at {path} has no alarm rules (gateway.alarms is empty or unset)")
        raise _Failed(EX_UNKNOWN_RULE, f"the gateway at {path} answered: {text}")
    try:
        return json.loads(text)
    except ValueError:
        raise _Failed(
            EX_UNKNOWN_RULE, f"the gateway at {path} answered something other than JSON: {text[:200]!r}"
        ) from None


def cmd_alarms_list(args: argparse.Namespace) -> int:
    """Print the running gateway's alarms that are not normal (a table, or ``--json``)."""
    try:
        alarms = _ask(args, "alarms")
    except _Failed as failed:
        print(f"uun-gateway alarms list: {failed}", file=sys.stderr)
        return failed.code
    if args.json:
        print(json.dumps(alarms, indent=2))
        return 0
    if not alarms:
        print("no alarms (every alarm is normal)")
        return 0
    for alarm in alarms:
        value = "" if alarm.get("value") is None else f" value {alarm['value']:g}"
        by = f" by {alarm['acknowledgedBy']}" if alarm.get("acknowledgedBy") else ""
        print(
            f"{alarm['state']:<12} {alarm['priority']:<8} {alarm['rule']} "
            f"{alarm['module']}/{alarm['device']}/{alarm['point']} since {alarm['since']}{value}{by}"
        )
    return 0


def cmd_alarms_ack(args: argparse.Namespace) -> int:
    """Acknowledge rule ``args.name``'s active and cleared alarms on the running gateway."""
    request = shlex.join([args.name, args.device, args.point])
    try:
        answer = _ask(args, f"ack {request}")
    except _Failed as failed:
        print(f"uun-gateway alarms ack: {failed}", file=sys.stderr)
        return failed.code
    if "error" in answer:
        print(f"uun-gateway alarms ack: {answer['error']}", file=sys.stderr)
        return EX_UNKNOWN_RULE
    acknowledged = answer.get("acknowledged", [])
    if not acknowledged:
        where = f"{args.device}/{args.point}"
        print(f"alarm {args.name}: nothing to acknowledge on {where} (no active or cleared alarm)", file=sys.stderr)
        return EX_NOTHING_TO_ACK
    for entry in acknowledged:
        print(
            f"{entry['rule']} {entry['module']}/{entry['device']}/{entry['point']}: {entry['from']} -> {entry['state']}"
        )
    return 0


def register_client_commands(actions: Any) -> None:
    """Add ``list`` and ``ack`` to the ``uun-gateway alarms`` subparsers ``actions``."""
    listing = actions.add_parser(
        "list",
        help="list the running gateway's active, cleared and acknowledged alarms",
        description="Ask the running gateway (over its command socket) for every alarm that is not normal.",
        epilog=EXIT_CODES,
    )
    add_client_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print the answer as JSON")
    listing.set_defaults(func=cmd_alarms_list)
    ack = actions.add_parser(
        "ack",
        help="acknowledge a rule's alarms on the running gateway",
        description=(
            "Acknowledge rule NAME's active alarms (then acknowledged) and cleared ones (then normal) on the "
            "running gateway, on the devices and points matching --device and --point (globs, default every one)."
        ),
        epilog=EXIT_CODES,
    )
    ack.add_argument("name", metavar="NAME", help="the rule's name (gateway.alarms[].name)")
    ack.add_argument("--device", default="*", metavar="D", help="the device (a glob; default: every one)")
    ack.add_argument("--point", default="*", metavar="P", help="the point (a glob; default: every one)")
    add_client_arguments(ack)
    ack.set_defaults(func=cmd_alarms_ack)
