"""The ``uun-gateway`` command: run, check-config, storage inspection, the module catalogue, the
control channel's clients (status, reload) and the modules' own commands."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .errors import EX_CONFIG, EX_SOFTWARE, ConfigError, ModuleLoadError, UunGatewayError
from .gateway import Gateway
from .plugins import Commands, command_entry_points, load_command
from .signals import RELOAD_SIGNAL, STOP_SIGNALS, ReloadRequests, StopRequest, signal_name
from .storage import storage_command
from .systemd import JournalFormatter
from .version import __version__

logger = logging.getLogger("uun_gateway.cli")


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr: journal priority prefixes under systemd (``JOURNAL_STREAM`` set), else a
    readable line with a timestamp."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _print_config_errors(exc: ConfigError) -> None:
    print(f"{exc.source or 'config'}: invalid configuration ({len(exc.errors)} error(s)):", file=sys.stderr)
    for error in exc.errors:
        print(f"  {error}", file=sys.stderr)


def _load_gateway(path: str, strict: bool = True) -> Gateway | int:
    """The gateway of the config file ``path``, or the exit code after saying why it cannot load."""
    try:
        return Gateway(path, strict=strict)
    except ConfigError as exc:
        _print_config_errors(exc)
        return EX_CONFIG
    except ModuleLoadError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EX_SOFTWARE


def cmd_check_config(args: argparse.Namespace) -> int:
    gateway = _load_gateway(args.file, strict=args.strict)
    if isinstance(gateway, int):
        return gateway
    timers = ", ".join(f"{t.name} every {t.period:g}s" for t in gateway.timers.values()) or "none"
    print(f"{args.file}: OK; modules: {', '.join(m.id for m in gateway.modules) or 'none'}; timers: {timers}")
    if gateway.config_warnings:
        print(
            f"{args.file}: {len(gateway.config_warnings)} warning(s), fine for an application that brings its own "
            "modules; `uun-gateway run` refuses them (check with --strict):",
            file=sys.stderr,
        )
        for warning in gateway.config_warnings:
            print(f"  {warning}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    # A watchdog kill is SIGABRT: leave every thread's stack in the journal.
    faulthandler.enable(all_threads=True)
    gateway = _load_gateway(args.config)
    if isinstance(gateway, int):
        return gateway
    from .systemd import SystemdNotifier

    stop = StopRequest()

    def on_signal(sig: int, frame: Any) -> None:
        if stop.receive(sig):
            logger.info("%s received, stopping", signal_name(sig))
        else:
            logger.warning("%s received while stopping; already stopping", signal_name(sig))

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    reloads = ReloadRequests(logger)
    signal.signal(RELOAD_SIGNAL, lambda sig, frame: reloads.request())
    notifier = SystemdNotifier.from_env(gateway)
    try:
        gateway.start()
        notifier.ready()
        reloads.start(gateway.reload)
        stop.requested.wait()
    finally:
        reloads.close()
        notifier.stopping()
        gateway.stop()
        notifier.close()
    return stop.exit_code


def cmd_modules(args: argparse.Namespace) -> int:
    from .catalogue import format_module, installed_modules
    from .config import load_config
    from .loading import configured_module_ids

    enabled: set[str] | None = None
    if args.config:
        try:
            enabled = set(configured_module_ids(load_config(args.config)))
        except ConfigError as exc:
            _print_config_errors(exc)
            return EX_CONFIG
    for info in installed_modules():
        for line in format_module(info, None if enabled is None else info.id in enabled):
            print(line)
    return 0


def _control(args: argparse.Namespace, command: str) -> tuple[bool, str]:
    from .config import load_config
    from .control import client_socket_path, send_command

    config = None
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            _print_config_errors(exc)
            raise SystemExit(EX_CONFIG) from None
    return send_command(client_socket_path(args.socket, config), command, timeout=args.timeout)


def cmd_status(args: argparse.Namespace) -> int:
    import json

    ok, text = _control(args, "status")
    if not ok:
        print(f"uun-gateway status: {text}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(json.loads(text), indent=2))
    except ValueError:
        print(text)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    ok, text = _control(args, "reload")
    if not ok:
        print(f"uun-gateway reload: {text}", file=sys.stderr)
        return EX_CONFIG if text.startswith("reload refused") else 1
    print(text)
    return 0


def _add_control_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="the gateway's command socket (default: gateway.socket.path of -c FILE, else "
        "$RUNTIME_DIRECTORY/control.sock, else /run/uun-gateway/control.sock if it exists, else ./uun-gateway.sock)",
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="the config file whose gateway.socket.path to use")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait for the answer (30)")


def cmd_storage(args: argparse.Namespace) -> int:
    return storage_command(args.path, args.file, show=args.show, output=args.output)


def _count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uun-gateway", description="uun-gateway: IoT gateway framework")
    parser.add_argument("--version", action="version", version=f"uun-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", help="run the gateway in the foreground until SIGTERM/SIGINT; SIGHUP re-reads the config file"
    )
    run.add_argument("-c", "--config", required=True, help="the JSON config file")
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="default INFO",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file; exit 0 if valid, 78 with every error if not")
    check.add_argument("file")
    check.add_argument(
        "--strict",
        action="store_true",
        help="refuse, as `uun-gateway run` does, what an application bringing its own modules may leave to them "
        "(unknown module ids and top-level keys, non-object gateway values, ticks without a period)",
    )
    check.set_defaults(func=cmd_check_config)

    storage = sub.add_parser(
        "storage",
        help="show a module storage file (entry count, oldest entries), or 'export FILE' it as a uun-iot JSON backup",
    )
    storage.add_argument("path", help="the storage file (e.g. storage/onewire.sqlite), or 'export'")
    storage.add_argument("file", nargs="?", help="with 'export': the storage file to export")
    storage.add_argument("--show", type=_count, default=10, metavar="N", help="how many of the oldest entries (10)")
    storage.add_argument("-o", "--output", metavar="OUT", help="with 'export': write OUT (0600) instead of stdout")
    storage.set_defaults(func=cmd_storage)

    modules = sub.add_parser(
        "modules",
        help="list the installed modules: description, config keys, timers, and with -c whether a config enables them",
    )
    modules.add_argument("-c", "--config", metavar="FILE", help="say which modules this config file enables")
    modules.set_defaults(func=cmd_modules)

    status = sub.add_parser("status", help="ask the running gateway for its status (over its command socket)")
    _add_control_arguments(status)
    status.set_defaults(func=cmd_status)

    reload = sub.add_parser(
        "reload", help="make the running gateway re-read its config file and apply it (as SIGHUP does)"
    )
    _add_control_arguments(reload)
    reload.set_defaults(func=cmd_reload)

    commands = Commands(sub)
    for entry_point in command_entry_points().values():
        register = load_command(entry_point)
        if register is None:
            continue
        try:
            register(commands)
        except Exception as exc:
            logger.warning("command %r (%s) failed to register: %s", entry_point.name, entry_point.value, exc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UunGatewayError as exc:
        print(f"uun-gateway {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
