"""The ``uun-gateway`` command: run, check-config, storage inspection and the modules' own commands."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import EX_CONFIG, EX_SOFTWARE, ConfigError, ModuleLoadError, StorageError, UunGatewayError
from .gateway import Gateway
from .plugins import Commands, command_entry_points, load_command
from .signals import STOP_SIGNALS, StopRequest, signal_name
from .storage import Storage
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


def _load_gateway(path: str) -> Gateway | int:
    """The gateway of the config file ``path``, or the exit code after saying why it cannot load."""
    try:
        return Gateway(path)
    except ConfigError as exc:
        _print_config_errors(exc)
        return EX_CONFIG
    except ModuleLoadError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EX_SOFTWARE


def cmd_check_config(args: argparse.Namespace) -> int:
    gateway = _load_gateway(args.file)
    if isinstance(gateway, int):
        return gateway
    timers = ", ".join(f"{t.name} every {t.period:g}s" for t in gateway.timers.values()) or "none"
    print(f"{args.file}: OK; modules: {', '.join(m.id for m in gateway.modules) or 'none'}; timers: {timers}")
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
    notifier = SystemdNotifier.from_env(gateway)
    try:
        gateway.start()
        notifier.ready()
        stop.requested.wait()
    finally:
        notifier.stopping()
        gateway.stop()
        notifier.close()
    return stop.exit_code


def cmd_storage(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        print(f"{path}: no such storage file", file=sys.stderr)
        return 1
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        print(f"{path}: cannot read the storage file: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if head != b"SQLite format 3\x00":
        print(
            f"{path}: not a uun-gateway storage (a uun-iot JSON backup is imported when its module opens it)",
            file=sys.stderr,
        )
        return 1
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        # SQLite needs both for its WAL; without them the open fails and would look like damage
        print(f"{path}: cannot open the storage: no write access to the file or its directory", file=sys.stderr)
        return 1
    if not _is_uun_gateway_store(path):
        print(f"{path}: an SQLite database, but not a uun-gateway storage (no entries/meta tables)", file=sys.stderr)
        return 1
    try:
        storage = Storage(path.stem, path)
    except (OSError, sqlite3.Error, StorageError) as exc:
        print(f"{path}: cannot open the storage: {exc}", file=sys.stderr)
        return 1
    try:
        entries = storage.oldest(args.show)
        print(f"{path}: {len(storage)} entries (store uid {storage.uid})")
        for entry in entries:
            when = datetime.fromtimestamp(entry.created, UTC).isoformat(timespec="seconds")
            data = (
                f"<{len(entry.data)} bytes>"
                if isinstance(entry.data, bytes)
                else json.dumps(entry.data, ensure_ascii=False)
            )
            print(f"  #{entry.id}  {when}  {data[:200]}")
        if storage.quarantined:
            print(f"warning: the file was damaged and was moved aside to {storage.quarantined}", file=sys.stderr)
            return 1
    finally:
        storage.close()
    return 0


def _is_uun_gateway_store(path: Path) -> bool:
    """False for another program's SQLite database (opening it as a storage would add our tables
    to it); True for a storage, and for a damaged file, which opening moves aside with a warning."""
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in probe.execute("PRAGMA table_info(entries)")}
        finally:
            probe.close()
    except sqlite3.DatabaseError:
        return True
    return {"entries", "meta"} <= tables and {"id", "created", "kind", "payload"} <= columns


def _count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uun-gateway", description="uun-gateway: IoT gateway framework")
    parser.add_argument("--version", action="version", version=f"uun-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the gateway in the foreground until SIGTERM/SIGINT")
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
    check.set_defaults(func=cmd_check_config)

    storage = sub.add_parser("storage", help="show a module storage file: entry count and the oldest entries")
    storage.add_argument("path", help="the storage file (e.g. storage/onewire.sqlite)")
    storage.add_argument("--show", type=_count, default=10, metavar="N", help="how many of the oldest entries (10)")
    storage.set_defaults(func=cmd_storage)

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
