"""uun-iot's ``uun_iot.typing``: ``IModule``, ``ModuleId``, ``Numeric``."""

from __future__ import annotations

from abc import ABC, abstractmethod

ModuleId = str
Numeric = float | int


class IModule(ABC):
    """uun-iot's interface of a module: anything with an ``id``. Subclasses set ``id`` (a class
    attribute or property); any such object can be returned by ``module_init``."""

    @property
    @abstractmethod
    def id(self) -> str:
        """The module id, the key of its config section and timers."""
