"""The kernel's 1-Wire bus (``w1-gpio``, ``w1-ds2482`` ...) through sysfs, without owserver.

Chosen per server entry ``{"sysfs": "/sys/bus/w1/devices"}``. The same inventory, events and
readings as with owserver: devices keep the id owserver would print (the kernel names a device
``28-0000075abc12``, its serial bytes in reverse order; we show ``28.12BC5A070000``), bus paths
are ``/w1_bus_master1/``, and a session speaks the owserver path vocabulary the reader uses.

Files used (the kernel's formats):

- ``w1_bus_masterN/w1_master_slaves``: one device name per line (``not found.`` when none) - the scan;
- ``w1_bus_masterN/therm_bulk_read``: ``trigger`` written starts a conversion of every
  temperature sensor of that bus (the simultaneous conversion);
- ``<device>/temperature``: millidegrees, e.g. ``23125``; else ``<device>/w1_slave``, two lines
  ``72 01 4b 46 7f ff 0e 10 57 : crc=57 YES`` and ``72 01 4b 46 7f ff 0e 10 57 t=23125`` (a
  ``NO`` is a CRC error on the bus);
- ``<device>/resolution``: 9 to 12 (``tempres``);
- DS2423 ``w1_slave``: one line per memory page ``... crc=YES c=1234``, the last two pages
  being counters A and B;
- DS2413/DS2408 ``state`` (one byte of pin and latch bits) for ``sensed.*``, ``output`` for
  ``PIO.*`` (owserver's ``PIO=1``, transistor on, is an output bit 0).

Reading sysfs blocks in the kernel for the bus transaction (about 750 ms for an unconverted
12-bit temperature); it cannot be interrupted, but never hangs: the kernel times it out.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from uun_gateway import StateLog

from .connection import ServerUnavailable
from .errors import BUS, MISSING, UNSUPPORTED, PathError
from .scanner import FoundDevice, ScanResult

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/sys/bus/w1/devices"
_UNCACHED = "/uncached"
_MASTER = re.compile(r"^w1_bus_master\d+$")
_KERNEL_NAME = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{12})$")
_CRC_LINE = re.compile(r"crc=([0-9a-f]{2})\s+(YES|NO)\s*$")
_TEMP = re.compile(r"\bt=(-?\d+)\s*$")
_COUNTER = re.compile(r"crc=(YES|NO)\s+c=(\d+)\s*$")
TYPES = {
    "10": "DS18S20",
    "22": "DS1822",
    "28": "DS18B20",
    "3B": "DS1825",
    "42": "DS28EA00",
    "1D": "DS2423",
    "29": "DS2408",
    "3A": "DS2413",
}
_THERM = frozenset({"10", "22", "28", "3B", "42"})
_PIO_CHANNELS = {"3A": ("A", "B"), "29": tuple(str(i) for i in range(8))}


@dataclass(frozen=True, order=True)
class SysfsAddress:
    """The sysfs directory of the kernel's 1-wire devices; ``str()`` gives ``sysfs:<root>``."""

    root: str = DEFAULT_ROOT

    def __str__(self) -> str:
        return f"sysfs:{self.root}"


def kernel_name(device_id: str) -> str:
    """``28.12BC5A070000`` -> ``28-0000075abc12`` (the kernel prints the serial reversed)."""
    serial = bytes.fromhex(device_id[3:])[::-1].hex()
    return f"{device_id[:2].lower()}-{serial}"


def device_id(name: str) -> str | None:
    """``28-0000075abc12`` -> ``28.12BC5A070000``; None for names that are not a device."""
    match = _KERNEL_NAME.match(name.strip())
    if match is None:
        return None
    return f"{match[1].upper()}.{bytes.fromhex(match[2])[::-1].hex().upper()}"


StateListener = Callable[[SysfsAddress, bool, str], None]


class SysfsBus:
    """The kernel's 1-wire devices under one sysfs root: state and sessions. Thread-safe.

    Mirrors :class:`~.connection.OwServer`: ``session()`` raises
    :class:`~.connection.ServerUnavailable` when the root is missing (w1 driver not loaded),
    state changes are logged once and reported to ``on_state``.
    """

    persistent = True

    def __init__(self, address: SysfsAddress, *, on_state: StateListener | None = None) -> None:
        self.address = address
        self.backoff_max = 0.0
        self.request_timeout = 0.0
        self.stopping: Callable[[], bool] = lambda: False
        self._on_state = on_state
        self._lock = threading.Lock()
        self._connected: bool | None = None
        self._state_log = StateLog(log, f"kernel 1-wire bus {address.root}")

    def __str__(self) -> str:
        return str(self.address)

    @property
    def name(self) -> str:
        return str(self.address)

    @property
    def connected(self) -> bool | None:
        with self._lock:
            return self._connected

    def in_backoff(self) -> bool:
        return False

    def _set(self, connected: bool, reason: str) -> None:
        with self._lock:
            changed = self._connected is not connected
            self._connected = connected
        if connected:
            self._state_log.ok("available again", first="available")
        else:
            self._state_log.failed(f"unavailable: {reason}")
        if changed and self._on_state is not None:
            try:
                self._on_state(self.address, connected, reason)
            except Exception:
                log.exception("1-wire state listener failed")

    @contextmanager
    def session(self) -> Iterator[SysfsSession]:
        """A session for one cycle; raises ServerUnavailable when the root is not a directory."""
        root = Path(self.address.root)
        if not root.is_dir():
            reason = (
                f"{root} does not exist: the kernel's w1 driver is not loaded "
                "(Raspberry Pi: dtoverlay=w1-gpio in config.txt)"
            )
            self._set(False, reason)
            raise ServerUnavailable(self.address, reason)
        self._set(True, "available")
        yield SysfsSession(self, root)


def _split(path: str) -> tuple[str, str, str]:
    """``[/uncached]/w1_bus_master1/28.X/temperature`` -> (master, device id, property)."""
    if path.startswith(_UNCACHED + "/"):
        path = path[len(_UNCACHED) :]
    parts = path.strip("/").split("/", 2)
    if len(parts) != 3:
        raise PathError(MISSING, "not a device property path", path)
    return parts[0], parts[1], parts[2]


class SysfsSession:
    """Reads and writes one cycle's sysfs files. Not thread-safe (one per thread and cycle)."""

    def __init__(self, bus: SysfsBus, root: Path) -> None:
        self.bus = bus
        self.root = root
        self.round_trips = 0

    @property
    def name(self) -> str:
        return self.bus.name

    # -- files --------------------------------------------------------------------------------

    def _read_file(self, file: Path, path: str) -> str:
        self.round_trips += 1
        try:
            return file.read_text("ascii", "replace")
        except FileNotFoundError:
            raise PathError(MISSING, "no such device or property (gone from the bus?)", path) from None
        except OSError as err:
            raise PathError(BUS, f"bus error: {os.strerror(err.errno or errno.EIO).lower()}", path) from None

    def _write_file(self, file: Path, data: bytes, path: str) -> None:
        self.round_trips += 1
        try:
            with open(file, "wb", buffering=0) as handle:
                handle.write(data)
        except FileNotFoundError:
            raise PathError(MISSING, "no such device or property (gone from the bus?)", path) from None
        except PermissionError:
            raise PathError(UNSUPPORTED, f"permission denied writing {file}", path) from None
        except OSError as err:
            raise PathError(BUS, f"bus error: {os.strerror(err.errno or errno.EIO).lower()}", path) from None

    def _device_dir(self, dev_id: str, path: str) -> Path:
        directory = self.root / kernel_name(dev_id)
        if not directory.is_dir():
            raise PathError(MISSING, "no such device (gone from the bus?)", path)
        return directory

    # -- scan ---------------------------------------------------------------------------------

    def scan(self) -> ScanResult:
        """Every bus master and its devices, from ``w1_master_slaves``."""
        result = ScanResult()
        start = self.round_trips
        try:
            masters = sorted(
                (e for e in os.listdir(self.root) if _MASTER.match(e)), key=lambda n: int(n[len("w1_bus_master") :])
            )
        except OSError as err:
            raise ServerUnavailable(self.bus.address, f"cannot list {self.root}: {err.strerror}") from None
        for master in masters:
            bus_path = f"/{master}/"
            try:
                listing = self._read_file(self.root / master / "w1_master_slaves", bus_path)
            except PathError as err:
                result.branch_errors[bus_path] = err.detail
                continue
            result.buses.append(bus_path)
            for line in listing.splitlines():
                dev_id = device_id(line)
                if dev_id is None or dev_id in result.devices:
                    continue
                family = dev_id[:2]
                result.devices[dev_id] = FoundDevice(dev_id, family, TYPES.get(family), bus_path)
        result.round_trips = self.round_trips - start
        return result

    # -- the reader's vocabulary ----------------------------------------------------------------

    def convert_temperatures(self, bus_path: str) -> None:
        """Write ``trigger`` to the master's ``therm_bulk_read`` (kernel 5.10 and later)."""
        master = bus_path.strip("/")
        file = self.root / master / "therm_bulk_read"
        if not file.exists():
            raise PathError(UNSUPPORTED, "no therm_bulk_read: kernel older than 5.10", bus_path)
        self._write_file(file, b"trigger\n", bus_path)

    def read(self, path: str) -> bytes:
        """Read one property as owserver would print it (e.g. ``b'23.125'``)."""
        _master, dev_id, prop = _split(path)
        family = dev_id[:2]
        directory = self._device_dir(dev_id, path)
        if family in _THERM and re.fullmatch(r"temperature(9|10|11|12)?", prop):
            return self._temperature(directory, path)
        if family in _THERM and prop == "tempres":
            return self._read_file(directory / "resolution", path).strip().encode()
        if family == "1D" and prop in ("counter.A", "counter.B"):
            return self._counter(directory, path, 0 if prop == "counter.A" else 1)
        if family in _PIO_CHANNELS:
            base, _, channel = prop.partition(".")
            channels = _PIO_CHANNELS[family]
            if base in ("sensed", "PIO") and (channel in channels or channel == "ALL"):
                bits = self._bits(directory, family, base, path)
                wanted = channels if channel == "ALL" else (channel,)
                return ",".join("1" if bits[c] else "0" for c in wanted).encode()
        raise PathError(UNSUPPORTED, "not available through the kernel w1 driver (use owserver for it)", path)

    def write(self, path: str, data: bytes) -> None:
        """Write ``tempres`` or a ``PIO.*`` output; other properties are not writable here."""
        _master, dev_id, prop = _split(path)
        family = dev_id[:2]
        directory = self._device_dir(dev_id, path)
        if family in _THERM and prop == "tempres":
            self._write_file(directory / "resolution", data.strip() + b"\n", path)
            return
        base, _, channel = prop.partition(".")
        if family in _PIO_CHANNELS and base == "PIO" and channel in _PIO_CHANNELS[family]:
            bits = self._bits(directory, family, "PIO", path)
            bits[channel] = data.strip() == b"1"
            channels = _PIO_CHANNELS[family]
            byte = 0
            for i, name in enumerate(channels):
                if not bits[name]:  # PIO on (owserver's 1) = transistor conducting = latch bit 0
                    byte |= 1 << i
            if family == "3A":
                byte |= 0xFC  # unused bits of the DS2413's PIO output access write are 1
            self._write_file(directory / "output", bytes([byte]), path)
            return
        raise PathError(UNSUPPORTED, "not writable through the kernel w1 driver (use owserver for it)", path)

    def dir(self, path: str, bus: bool = False) -> list[str]:
        raise PathError(UNSUPPORTED, "no conditional search (alarm) through the kernel w1 driver", path)

    # -- formats --------------------------------------------------------------------------------

    def _temperature(self, directory: Path, path: str) -> bytes:
        if (directory / "temperature").exists():
            text = self._read_file(directory / "temperature", path).strip()
            if not re.fullmatch(r"-?\d+", text):
                raise PathError(BUS, f"bus error: unreadable temperature {text[:40]!r}", path)
            return _millis(int(text))
        lines = self._read_file(directory / "w1_slave", path).splitlines()
        crc = _CRC_LINE.search(lines[0]) if lines else None
        if crc is None:
            raise PathError(BUS, "bus error: w1_slave has no crc line", path)
        if crc[2] != "YES":
            raise PathError(BUS, f"bus error: CRC check failed (w1_slave: crc={crc[1]} NO)", path)
        temp = _TEMP.search(lines[1]) if len(lines) > 1 else None
        if temp is None:
            raise PathError(BUS, "bus error: w1_slave has no t= value", path)
        return _millis(int(temp[1]))

    def _counter(self, directory: Path, path: str, index: int) -> bytes:
        lines = [line for line in self._read_file(directory / "w1_slave", path).splitlines() if line.strip()]
        counters = [_COUNTER.search(line) for line in lines[-2:]]
        if len(counters) != 2 or any(c is None for c in counters):
            raise PathError(BUS, "bus error: w1_slave has no counter lines", path)
        found = counters[index]
        assert found is not None
        if found[1] != "YES":
            raise PathError(BUS, "bus error: CRC check failed (w1_slave: crc=NO)", path)
        return found[2].encode()

    def _bits(self, directory: Path, family: str, base: str, path: str) -> dict[str, bool]:
        """Channel -> bool for ``sensed`` (pin high) or ``PIO`` (transistor on) from ``state``."""
        self.round_trips += 1
        try:
            raw = (directory / "state").read_bytes()
        except FileNotFoundError:
            raise PathError(MISSING, "no such device (gone from the bus?)", path) from None
        except OSError as err:
            raise PathError(BUS, f"bus error: {os.strerror(err.errno or errno.EIO).lower()}", path) from None
        if len(raw) < 1:
            raise PathError(BUS, "bus error: empty state", path)
        byte = raw[0]
        channels = _PIO_CHANNELS[family]
        if family == "3A":
            if (byte >> 4) != (~byte & 0x0F):
                raise PathError(BUS, "bus error: DS2413 state check bits wrong", path)
            # bit 0 PIOA pin, bit 1 PIOA output latch, bit 2 PIOB pin, bit 3 PIOB latch
            offset = 0 if base == "sensed" else 1
            return {c: bool(byte >> (2 * i + offset) & 1) != (base == "PIO") for i, c in enumerate(channels)}
        if base == "sensed":
            return {c: bool(byte >> i & 1) for i, c in enumerate(channels)}
        try:
            out = (directory / "output").read_bytes()
        except OSError:
            raise PathError(BUS, "bus error: cannot read the DS2408 output register", path) from None
        if not out:
            raise PathError(BUS, "bus error: empty output register", path)
        return {c: not bool(out[0] >> i & 1) for i, c in enumerate(channels)}


def _millis(value: int) -> bytes:
    return f"{value / 1000:.3f}".rstrip("0").rstrip(".").encode() if value % 1000 else str(value // 1000).encode()
