"""uun-iot's ``uun_iot.Gateway``: ``Gateway``, ``Config`` and ``ModuleTimer``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ..config import load_config
from ..gateway import Gateway
from ..timers import RepeatTimer


class Config:
    """uun-iot 0.10/0.11's config holder: ``Config(gateway, config_file).config`` is the loaded file
    (with a ``gateway`` key). Updates are the gateway's job (:meth:`Gateway.reconfigure`)."""

    def __init__(self, gateway_instance: Gateway | None, config_file: str | os.PathLike[str]) -> None:
        self.g = gateway_instance
        self._config_file = config_file
        self.config: dict[str, Any] = dict(load_config(config_file))
        self.config.setdefault("gateway", {})


class ModuleTimer:
    """uun-iot 0.10/0.11's timer(s) of one module: one :class:`RepeatTimer` (``f`` a callable and
    ``period`` a number) or one per timer id (both dicts keyed by timer id)."""

    def __init__(
        self,
        module_id: str,
        f: Callable[[], Any] | Mapping[str, Callable[[], Any]],
        period: float | Mapping[str, float],
    ) -> None:
        self.id = module_id
        self.timer: RepeatTimer | dict[str, RepeatTimer]
        if callable(f) and isinstance(period, (int, float)):
            self.multi = False
            self.timer = RepeatTimer(float(period), f, name=module_id)
        elif isinstance(f, Mapping) and isinstance(period, Mapping):
            self.multi = True
            missing = sorted(set(f) - set(period))
            if missing:
                raise KeyError(f"gateway.moduleTimers.{module_id}: no period for timer(s) {', '.join(missing)}")
            self.timer = {tid: RepeatTimer(float(period[tid]), fn, name=f"{module_id}.{tid}") for tid, fn in f.items()}
        else:
            raise TypeError(
                f"ModuleTimer({module_id!r}): expected a callable and a number, or two dicts keyed by timer id; "
                f"got {type(f).__name__} and {type(period).__name__}"
            )

    def _all(self) -> list[RepeatTimer]:
        return list(self.timer.values()) if isinstance(self.timer, dict) else [self.timer]

    def start(self) -> None:
        for timer in self._all():
            timer.start()

    def stop(self) -> None:
        for timer in self._all():
            timer.stop()


__all__ = ["Config", "Gateway", "ModuleTimer"]
