"""The ``uun-gateway`` command: run, check-config, storage inspection, the module catalogue, the
control channel's clients (status, reload) and the modules' own commands."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .control import add_client_arguments
from .errors import EX_CONFIG, EX_SOFTWARE, ConfigError, ModuleLoadError, UunGatewayError
from .plugins import Commands, command_entry_points, load_command
from .signals import ReloadRequests, SignalWatch, StopRequest
from .version import __version__

if TYPE_CHECKING:
    from .gateway import Gateway

# Each command imports what it needs when it runs: ``--help``, ``storage`` or a plugin's command
# never pay for the gateway, jsonschema or the uuApp client, and ``run`` never imports a plugin's CLI.

logger = logging.getLogger("uun_gateway.cli")


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr: journal priority prefixes under systemd (``JOURNAL_STREAM`` set), else a
    readable line with a timestamp."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        from .systemd import JournalFormatter

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
    _print_config_warnings(exc.source or "config", exc.warnings)


def _print_config_warnings(source: str, warnings: list[str]) -> None:
    if warnings:
        print(
            f"{source}: {len(warnings)} warning(s), fine for an application that brings its own modules; "
            "`uun-gateway run` refuses them (check with --strict):",
            file=sys.stderr,
        )
    for warning in warnings:
        print(f"  {warning}", file=sys.stderr)


def _load_gateway(path: str, strict: bool = True) -> Gateway | int:
    """The gateway of the config file ``path``, or the exit code after saying why it cannot load."""
    from .gateway import Gateway

    try:
        return Gateway(path, strict=strict)
    except ConfigError as exc:
        _print_config_errors(exc)
        return EX_CONFIG
    except ModuleLoadError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EX_SOFTWARE


#: The packaged service: its config file and the working directory its unit runs in.
SERVICE_CONFIG = Path("/etc/uun-gateway/config.json")
SERVICE_WORKDIR = Path("/var/lib/uun-gateway")


def service_workdir(config: Path) -> Path:
    """Where the service running ``config`` resolves relative paths: ``$STATE_DIRECTORY`` under
    systemd, the packaged unit's working directory for the packaged config, else the current one."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    if config.resolve() == SERVICE_CONFIG.resolve() and SERVICE_WORKDIR.is_dir():
        return SERVICE_WORKDIR
    return Path.cwd()


def cmd_check_config(args: argparse.Namespace) -> int:
    path = Path(args.file).absolute()
    workdir = Path(args.workdir).absolute() if args.workdir else service_workdir(path)
    if not workdir.is_dir():
        print(f"uun-gateway check-config: --workdir {str(workdir)!r} is not a directory", file=sys.stderr)
        return 2
    previous = Path.cwd()
    os.chdir(workdir)  # judge relative paths where the service resolves them
    try:
        gateway = _load_gateway(str(path), strict=args.strict)
    finally:
        os.chdir(previous)
    if isinstance(gateway, int):
        return gateway
    timers = ", ".join(f"{t.name} every {t.period:g}s" for t in gateway.timers.values()) or "none"
    print(f"{args.file}: OK; modules: {', '.join(m.id for m in gateway.modules) or 'none'}; timers: {timers}")
    _print_config_warnings(args.file, gateway.config_warnings)
    return 0


def cmd_run(args: argparse.Namespace, stop: StopRequest | None = None, reloads: ReloadRequests | None = None) -> int:
    """Run until a stop signal; ``stop`` and ``reloads`` (SIGHUP) are fed by the
    :class:`SignalWatch` :func:`main` set up before anything else, so a signal at any moment of
    start-up or stop is handled (a SIGHUP before the gateway started is a reload once it has)."""
    stop = stop if stop is not None else StopRequest()
    # A watchdog kill is SIGABRT: leave every thread's stack in the journal.
    faulthandler.enable(all_threads=True)
    gateway = _load_gateway(args.config)
    if isinstance(gateway, int):
        return gateway
    from .systemd import SystemdNotifier

    reloads = reloads if reloads is not None else ReloadRequests(logger)
    notifier = SystemdNotifier.from_env(gateway)
    try:
        if not stop.requested.is_set():
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


def cmd_storage(args: argparse.Namespace) -> int:
    from .storage import storage_command

    return storage_command(args.path, args.file, show=args.show, output=args.output)


def _count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def build_parser(plugins: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser. Plugin commands named in ``plugins`` (all when None) are imported
    and registered in full; the others are listed by their entry-point name only (a command
    imports its plugin when it is the one given)."""
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
        "--workdir",
        metavar="DIR",
        help="judge relative paths from DIR (default: where the service resolves them: $STATE_DIRECTORY, "
        f"{SERVICE_WORKDIR} for {SERVICE_CONFIG}, else the current directory)",
    )
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
    add_client_arguments(status)
    status.set_defaults(func=cmd_status)

    reload = sub.add_parser(
        "reload", help="make the running gateway re-read its config file and apply it (as SIGHUP does)"
    )
    add_client_arguments(reload)
    reload.set_defaults(func=cmd_reload)

    commands = Commands(sub)
    for name, entry_point in command_entry_points().items():
        if plugins is not None and name not in plugins:
            stub = sub.add_parser(name, help=f"{name} commands (plugin {entry_point.module})", add_help=False)
            stub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        register = load_command(entry_point)
        if register is None:
            continue
        try:
            register(commands)
        except Exception as exc:
            logger.warning("command %r (%s) failed to register: %s", entry_point.name, entry_point.value, exc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``uun-gateway`` command. Stop signals are blocked first thing and, for ``run``, taken by
    a :class:`SignalWatch` thread until the gateway has stopped; other commands get the normal
    signal behaviour back once their arguments are parsed."""
    watch = SignalWatch.block(logger)
    try:
        arguments = list(sys.argv[1:] if argv is None else argv)
        command = next((a for a in arguments if not a.startswith("-")), None)
        args = build_parser({command} if command else set()).parse_args(arguments)
        if args.command == "run":
            configure_logging(args.log_level)
            watch.start()
            code = cmd_run(args, watch.stop, watch.reloads)
            # as the program, exit with the stop signals still blocked: one arriving after the stop
            # cannot kill the process and change its exit code
            watch.close(keep_blocked=argv is None)
            return code
        watch.close()
        return int(args.func(args))
    except ConfigError as exc:  # every config failure is 78, whichever command finds it
        _print_config_errors(exc)
        return EX_CONFIG
    except UunGatewayError as exc:
        print(f"uun-gateway {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        watch.close()


if __name__ == "__main__":
    sys.exit(main())
