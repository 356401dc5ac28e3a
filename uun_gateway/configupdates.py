"""The all-or-nothing config update of a :class:`~uun_gateway.gateway.Gateway`: check, apply, save,
roll back; the remote update saved by an earlier run, laid over the config file at start; and
re-reading the config file (SIGHUP, ``uun-gateway reload``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from .config import load_config, normalized, read_saved_update, save_update, value_errors
from .errors import ConfigApplyError, ConfigError
from .liveset import LiveSet
from .plugins import rescan

logger = logging.getLogger("uun_gateway.gateway")


class _Gateway(Protocol):
    """What :class:`ConfigUpdates` reads and changes of its gateway."""

    config: dict[str, Any]
    config_path: Path | None
    saved_update_path: Path | None
    config_error: str | None
    _lock: threading.RLock

    def reconfigure(self, new_config: Mapping[str, Any], *, save: bool = True, remote: bool = True) -> bool: ...


class ConfigUpdates:
    """The config updates of one gateway, serialised by the gateway's lock. See
    :meth:`Gateway.reconfigure <uun_gateway.gateway.Gateway.reconfigure>` for the promises."""

    def __init__(self, gateway: _Gateway, live: LiveSet) -> None:
        self._gateway = gateway
        self._live = live

    def check(self, config: Mapping[str, Any], *, remote: bool = False) -> list[str]:
        """Every problem ``config`` would have for the loaded modules (empty when valid). A
        ``remote`` config may not move a storage outside the state directory, remove the last
        modules that bring remote configs or stop a running timer (see :meth:`LiveSet.check
        <uun_gateway.liveset.LiveSet.check>`)."""
        return value_errors(config) or self._live.check(normalized(config), remote=remote)

    def reconfigure(self, new_config: Mapping[str, Any], *, save: bool, remote: bool) -> bool:
        """Validate, apply and (``save``) persist ``new_config``; False if it equals the current one.
        Raises :class:`ConfigError` (nothing changed) or :class:`ConfigApplyError` (rolled back)."""
        gateway = self._gateway
        with gateway._lock:
            errors = self.check(new_config, remote=remote)
            if errors:
                gateway.config_error = "; ".join(errors)
                raise ConfigError(errors, "remote config")
            new = normalized(new_config)
            if new == gateway.config:
                return False
            old = gateway.config
            failure = self._apply(new)
            target = gateway.saved_update_path if save else None
            if failure is None and target is not None:
                try:
                    save_update(target, gateway.config_path, new)
                except OSError as exc:
                    failure = f"saving {target} failed: {exc}"
            if failure is not None:
                logger.error("config update failed (%s); rolling back to the previous config", failure)
                if self._apply(old, rollback=True) is not None:
                    logger.error("the previous config's update handlers failed too while rolling back")
                gateway.config_error = failure
                raise ConfigApplyError([f"{failure}; rolled back to the previous config"], "remote config")
            gateway.config_error = None
            logger.info("config updated%s", f" and saved to {target}" if target else "")
            return True

    def _apply(self, config: dict[str, Any], *, rollback: bool = False) -> str | None:
        """Make ``config`` the one in effect; the failure (None: none) for :meth:`reconfigure` to
        roll back. Never raises: a failure half-way is rolled back like a failing handler. The
        module set is changed by :meth:`LiveSet.apply <uun_gateway.liveset.LiveSet.apply>`
        (``rollback``: starting again the modules the failed change stopped)."""
        try:
            if config["gateway"].get("alarms") != self._gateway.config["gateway"].get("alarms"):
                self._live.apply_alarms(config["gateway"])
            return self._live.apply(config, rollback=rollback)
        except Exception as exc:
            logger.exception("applying the config failed")
            return f"applying failed: {type(exc).__name__}: {exc}"

    def apply_saved(self) -> None:
        """Lay the ``gateway`` section of the remote update saved next to the config file over the
        file's, if there is one. An unreadable, invalid or failing saved update is reported (in the
        log and ``config_error``) and ignored."""
        gateway = self._gateway
        path = self._saved_update_path()
        if path is None:
            return
        try:
            gateway.reconfigure({**gateway.config, "gateway": read_saved_update(path)}, save=False)
        except ConfigError as exc:
            gateway.config_error = f"ignored the saved remote config {path}: {exc}"
            logger.warning("ignoring the saved remote config %s: %s", path, exc)
            return
        logger.info("using the remote config saved at %s over %s", path, gateway.config_path)

    def _saved_update_path(self) -> Path | None:
        """Where a remote update saved by an earlier run is, if there is one apart from the file."""
        path = self._gateway.saved_update_path
        return path if path is not None and path != self._gateway.config_path and path.exists() else None

    def reload(self) -> str:
        """Re-read the config file (with the saved remote update over it, as at start) and apply it
        with :meth:`Gateway.reconfigure` (not saved: the file is where it came from). Returns what changed;
        raises :class:`ConfigError` (the file's errors, or what failed and was rolled back).
        Installed modules are looked up again first: a package installed since start can be enabled."""
        gateway = self._gateway
        if gateway.config_path is None:
            raise ConfigError(["the gateway was given a config object, not a file: nothing to re-read"], "reload")
        rescan()
        config = normalized(load_config(gateway.config_path))
        saved = self._saved_update_path()
        if saved is not None:
            config["gateway"] = read_saved_update(saved)
        with gateway._lock:
            self._live.last_change = "no change"
            changed = gateway.reconfigure(config, save=False, remote=False)
            return self._live.last_change if changed else f"{gateway.config_path}: no change"
