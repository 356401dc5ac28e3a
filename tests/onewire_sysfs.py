"""A fake ``/sys/bus/w1/devices`` tree in a temp dir, in the kernel's file formats, for the
kernel w1 backend's tests."""

from __future__ import annotations

from pathlib import Path


def _scratchpad_lines(millis: int, crc_ok: bool) -> str:
    raw = round(millis / 62.5) & 0xFFFF
    data = f"{raw & 0xFF:02x} {raw >> 8:02x} 4b 46 7f ff 0c 10 1c"
    return f"{data} : crc=1c {'YES' if crc_ok else 'NO'}\n{data} t={millis}\n"


class FakeSysfs:
    """``root`` holds ``w1_bus_masterN`` directories and one directory per device, as the kernel's
    w1 core makes them. Kernel names (``28-0000075abc12``) are used throughout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def master(self, number: int, slaves: list[str]) -> Path:
        """A bus master listing ``slaves`` (``not found.`` when empty), with ``therm_bulk_read``."""
        directory = self.root / f"w1_bus_master{number}"
        directory.mkdir(exist_ok=True)
        (directory / "w1_master_slaves").write_text("".join(f"{s}\n" for s in slaves) or "not found.\n")
        (directory / "therm_bulk_read").write_text("0\n")
        return directory

    def therm(self, name: str, millis: int, *, crc_ok: bool = True, temperature_file: bool = True) -> Path:
        """A w1_therm device: ``w1_slave``, ``resolution``, and (kernel 5.10+) ``temperature``."""
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        (directory / "w1_slave").write_text(_scratchpad_lines(millis, crc_ok))
        (directory / "resolution").write_text("12\n")
        if temperature_file:
            (directory / "temperature").write_text(f"{millis}\n")
        return directory

    def counter(self, name: str, a: int, b: int) -> Path:
        """A DS2423: ``w1_slave`` with one line per memory page 12-15, the last two the counters."""
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        page = " ".join(["00"] * 42)
        lines = [f"{page} crc=YES c=0", f"{page} crc=YES c=0", f"{page} crc=YES c={a}", f"{page} crc=YES c={b}"]
        (directory / "w1_slave").write_text("\n".join(lines) + "\n")
        return directory

    def ds2413(self, name: str, state: int) -> Path:
        """A DS2413 with its one-byte ``state`` (pin/latch bits, upper nibble the complement)."""
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        (directory / "state").write_bytes(bytes([state]))
        (directory / "output").write_bytes(b"")
        return directory
