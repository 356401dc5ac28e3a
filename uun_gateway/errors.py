"""The exceptions the framework raises; every one derives from :class:`UunGatewayError`."""


class UunGatewayError(Exception):
    """Base of every error raised by uun-gateway itself."""


class ConfigError(UunGatewayError):
    """The configuration is invalid.

    ``errors`` lists every problem found, each naming the JSON path, the bad value and what was
    expected, so a user can fix them all in one go; ``warnings`` what was found besides that a
    lenient check lets pass.
    """

    def __init__(self, errors: list[str], source: str | None = None, warnings: list[str] | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        self.warnings = list(warnings or [])
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + e for e in self.errors) or f"{prefix}invalid configuration")


class ConfigApplyError(ConfigError):
    """A valid configuration could not be applied or saved; the previous one is in effect again.

    Unlike a plain :class:`ConfigError` the cause may be passing (a full disk, a device that was busy),
    so trying the same configuration again later makes sense.
    """


class EventError(UunGatewayError):
    """Event handlers were declared or registered wrongly."""


class UnsupportedEvent(EventError, ValueError):
    """``@on`` was given an event it does not know, or arguments that event does not take."""


class ModuleLoadError(UunGatewayError):
    """A module could not be found, imported or constructed; the message names the module."""


class StorageError(UunGatewayError):
    """A storage operation failed (closed store, unserialisable entry, unreadable file)."""


EX_SOFTWARE = 70
"""Exit code (sysexits.h) of a gateway whose modules cannot be loaded."""
EX_CONFIG = 78
"""Exit code (sysexits.h) of an invalid configuration; the unit's ``RestartPreventExitStatus``."""
