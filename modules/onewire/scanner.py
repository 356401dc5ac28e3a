"""Bus walk of one owserver: buses, devices and DS2409 coupler branches.

The walk is breadth first over bus paths (``/bus.0/``, then ``/bus.0/1F.X/main/`` ...). Every
device is reported once, at the first (shallowest) path where it shows up: emulated couplers list
the whole bus again under ``main/`` and ``aux/``, including themselves, so a visited set plus a
depth limit keeps the walk finite whatever the server returns.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from .connection import OwSession
from .errors import PathError

log = logging.getLogger(__name__)

DEVICE_ID = re.compile(r"^[0-9A-F]{2}\.[0-9A-F]{12}$")
COUPLER_FAMILY = "1F"
COUPLER_BRANCHES = ("main", "aux")
UNCACHED = "/uncached"


@dataclass(frozen=True)
class FoundDevice:
    """A device seen by a scan at ``bus_path`` (ends in ``/``; the device path is bus_path + id)."""

    id: str
    family: str
    type: str | None
    bus_path: str

    @property
    def path(self) -> str:
        return f"{self.bus_path}{self.id}/"


@dataclass
class ScanResult:
    """Outcome of one complete walk. ``devices`` is keyed by device id."""

    buses: list[str] = field(default_factory=list)
    devices: dict[str, FoundDevice] = field(default_factory=dict)
    simulated_buses: dict[str, str] = field(default_factory=dict)
    depth_limited: list[str] = field(default_factory=list)
    branch_errors: dict[str, str] = field(default_factory=dict)
    round_trips: int = 0


def _strip_uncached(path: str) -> str:
    return path[len(UNCACHED) :] if path.startswith(UNCACHED + "/") else path


def _name(entry: str) -> str:
    return entry.rstrip("/").rsplit("/", 1)[-1]


def scan(
    session: OwSession,
    *,
    max_depth: int = 3,
    uncached: bool = True,
    known_types: Mapping[str, str] | None = None,
) -> ScanResult:
    """Walk every bus of the session's server and return what was found.

    ``uncached`` lists through ``/uncached`` so owserver searches the bus now rather than
    answering from its directory cache (up to 60 s old). ``max_depth`` is the number of nested
    coupler levels followed. ``known_types`` (id -> type) avoids re-reading ``type`` for devices
    already known. Raises :class:`~.connection.ServerUnavailable` if the server fails; an error
    listing one coupler branch is recorded in ``branch_errors`` and the walk goes on.
    """
    known_types = known_types or {}
    result = ScanResult()
    start = session.round_trips
    root = session.dir("/", bus=True)
    top = [_name(e) for e in root if re.fullmatch(r"bus\.\d+", _name(e))]
    top.sort(key=lambda name: int(name.split(".")[1]))
    bus_paths = [f"/{name}/" for name in top] or ["/"]
    for bus_path in bus_paths:
        if bus_path == "/":
            continue
        try:
            name = session.read(f"{bus_path}interface/settings/name").decode("ascii", "replace").strip()
        except PathError:
            continue
        if name.startswith("Simulated-"):
            result.simulated_buses[bus_path] = name

    visited: set[str] = set()
    queue: deque[tuple[str, int]] = deque((p, 0) for p in bus_paths)
    while queue:
        bus_path, depth = queue.popleft()
        listing_path = (UNCACHED + bus_path) if uncached else bus_path
        try:
            entries = session.dir(listing_path)
        except PathError as err:
            if depth == 0:
                raise
            result.branch_errors[bus_path] = str(err)
            log.debug("cannot list coupler branch %s: %s", bus_path, err)
            continue
        result.buses.append(bus_path)
        for entry in entries:
            dev_id = _name(_strip_uncached(entry))
            if not DEVICE_ID.match(dev_id) or dev_id in visited:
                continue
            visited.add(dev_id)
            family = dev_id[:2]
            dev_type = known_types.get(dev_id)
            if dev_type is None:
                try:
                    # EDS sensors (7E) all read type "EDS"; their model is in device_type
                    leaf = "device_type" if family == "7E" else "type"
                    dev_type = session.read(f"{bus_path}{dev_id}/{leaf}").decode("ascii", "replace").strip()
                except PathError:
                    dev_type = None
            result.devices[dev_id] = FoundDevice(dev_id, family, dev_type, bus_path)
            if family == COUPLER_FAMILY:
                if depth >= max_depth:
                    result.depth_limited.append(f"{bus_path}{dev_id}/")
                    continue
                for branch in COUPLER_BRANCHES:
                    queue.append((f"{bus_path}{dev_id}/{branch}/", depth + 1))
    result.round_trips = session.round_trips - start
    return result
