"""The ``config`` module: remote configuration, uun-iot's ``Config.on_tick`` done safely.

On its tick (``gateway.moduleTimers.config``, default 300 s) it GETs ``gateway.config.uuCmd``, else
``uuApp.uuCmdList.gatewayGetConfiguration``. The answer (without ``uuAppErrorMap``) is the new
``gateway`` section, as in uun-iot; with ``gateway.nondecrementalUpdate`` it is merged key by key
into the current one instead. Only the ``gateway`` section can change remotely: ``uuApp``,
``uuThing`` and ``oidcGrantToken`` always stay as they are locally.

The new config goes to :meth:`Gateway.reconfigure`, which validates it with the same schema as at
start, applies it (timers re-timed, ``@on("update")`` handlers run), saves it atomically next to the
config file, and rolls back if applying or saving fails. An invalid config is logged once and not
tried again until the server's answer changes; one that could not be applied or saved is logged once
and tried again at every tick. The error stays in ``Gateway.config_error`` (and so in the
heartbeat) until an update succeeds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from uun_gateway import ConfigApplyError, ConfigError, Module, StateLog, UuAppClient, describe_failure, on
from uun_gateway.uuapp import answer_json


class RemoteConfig(Module):
    """Polls uuApp for the gateway configuration and applies it (id ``config``).

    :attr:`last_error` is the last failure (fetch or rejection) or None; :attr:`applied` counts the
    updates applied. The tick blocks for at most the client's timeout plus the gateway's update.
    """

    id = "config"
    carries_remote_config = True
    # it reads its section at every tick; restarting it would stop the tick that applies the change
    updates_in_place = True
    timer_defaults: ClassVar[Mapping[str | None, float]] = {None: 300.0}
    config_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "description": "remote configuration settings",
        "properties": {"uuCmd": {"type": "string", "minLength": 1, "description": "the uuCmd to GET"}},
        "additionalProperties": False,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.last_error: str | None = None
        self.applied = 0
        self._rejected: str | None = None
        self._failing: str | None = None
        self.fetching = StateLog(self.logger, "remote config")
        self._warned = False

    @property
    def uucmd(self) -> str | None:
        """The uuCmd to fetch the configuration from, or None when none is configured."""
        own = self._c("uuCmd", None)
        if own:
            return str(own)
        if self.uuclient is not None:
            return self.uuclient.uucmd_list.get("gatewayGetConfiguration")
        return None

    @on("tick")
    def update(self) -> None:
        """Fetch the remote config and hand it to the gateway; failures are recorded, never raised."""
        uucmd = self.uucmd
        if self.uuclient is None or self.gateway is None or uucmd is None:
            if not self._warned:
                self._warned = True
                self.logger.warning("remote configuration needs uuApp and uuApp.uuCmdList.gatewayGetConfiguration")
            return
        fetched = self._fetch(uucmd)
        if fetched is None or self.stop_event.is_set():
            return  # an answer that comes after stop() began is not applied to a stopped gateway
        fingerprint = json.dumps(fetched, sort_keys=True, default=str)
        if fingerprint == self._rejected:
            return
        new = dict(self.gateway.config)
        if self._config.get("nondecrementalUpdate"):
            new["gateway"] = {**self.gateway.config["gateway"], **fetched}
        else:
            new["gateway"] = fetched
        try:
            changed = self.gateway.reconfigure(new)
        except ConfigError as exc:
            # an invalid config stays invalid until the server changes it; one that could not be
            # applied or saved (a full disk, say) is tried again at the next tick
            retry = isinstance(exc, ConfigApplyError)
            if fingerprint not in (self._rejected, self._failing):
                self.logger.error(
                    "remote config %s, keeping the current one%s:\n%s",
                    "could not be applied" if retry else "rejected",
                    "; retrying at the next tick" if retry else "",
                    exc,
                )
            self._rejected, self._failing = (None, fingerprint) if retry else (fingerprint, None)
            self.last_error = str(exc)
            self.stats.record_send(False, "remote config not applied" if retry else "remote config rejected")
            return
        self._rejected = self._failing = None
        self.last_error = None
        self.stats.record_send(True)
        if changed:
            self.applied += 1
            self.logger.info("remote config applied")

    def _fetch(self, uucmd: str) -> dict[str, Any] | None:
        assert self.uuclient is not None
        stop = self.stop_event
        response, exc = self.uuclient.get(uucmd, log_level=logging.DEBUG, stop=stop)
        problem: str | None = None
        body: Any = None
        if exc is not None or response is None:
            problem = describe_failure(exc)
        else:
            try:
                body = answer_json(response)
            except ValueError:
                problem = "the answer is not JSON"
            else:
                if not isinstance(body, dict):
                    problem = "the answer is not a JSON object"
        if problem is not None:
            self.fetching.failed(f"cannot fetch the configuration ({problem}); keeping the current one")
            self.last_error = f"fetch failed: {problem}"
            return None
        self.fetching.ok("can be fetched again")
        fetched = {k: v for k, v in body.items() if k != "uuAppErrorMap"}
        return fetched or None
