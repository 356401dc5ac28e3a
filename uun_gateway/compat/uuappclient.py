"""uun-iot's ``uun_iot.UuAppClient``."""

from __future__ import annotations

from ..uuapp import TokenCommandError, TokenError, UuAppClient, UuCmdSession

__all__ = ["TokenCommandError", "TokenError", "UuAppClient", "UuCmdSession"]
