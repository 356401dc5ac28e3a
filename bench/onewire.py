"""Benchmark: one 1-wire read cycle over 50 emulated DS18B20 (owserver ``--tester``).

Measures owserver round trips and wall time per cycle through the module's own code path
(:class:`OwServer` session + :class:`Reader`), with one persistent connection per cycle versus a
new TCP connection per request. Then computes what a cycle of N *real* DS18B20 costs with and
without simultaneous conversion: owserver does not emulate conversion time, so that part is the
datasheet figure (750 ms max at 12 bit), not a measurement.

Usage: python bench/onewire.py [--sensors 50] [--cycles 200]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import time

from pyownet import protocol  # type: ignore[import-untyped]
from uun_gateway.modules.onewire import OwServer, Reader, ReadTarget, ServerAddress, scan
from uun_gateway.modules.onewire.families import properties_for

DATASHEET_CONVERSION_12BIT = 0.750  # DS18B20 tCONV max at 12 bit
OUR_CONVERSION_WAIT = 1.2  # what the module waits: owserver rounds the remaining wait to whole seconds
# One scratchpad read on the wire: reset + MATCH ROM (8 id bytes) + READ SCRATCHPAD + 9 bytes at
# standard speed is about 11 ms; bus masters (DS2482 over I2C, DS9490 over USB, w1-gpio) add
# overhead. An estimate, not measured here (no hardware).
BUS_READ_LOW, BUS_READ_HIGH = 0.015, 0.040


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_owserver(sensors: int) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("owserver") or "/usr/bin/owserver"
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--foreground",
            "--error_print=2",
            "--error_level=0",
            "-p",
            f"127.0.0.1:{port}",
            "--tester=" + ",".join(["28"] * sensors),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("owserver exited at start")
        try:
            protocol.proxy("127.0.0.1", port)
            return proc, port
        except protocol.Error:
            time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise SystemExit("owserver did not start")


def setup(port: int, persistent: bool) -> tuple[OwServer, list[ReadTarget], Reader]:
    server = OwServer(ServerAddress("127.0.0.1", port), persistent=persistent)
    with server.session() as session:
        found = scan(session)
    targets = [ReadTarget(d.id, None, d.bus_path, properties_for(d.family)) for d in found.devices.values()]
    return server, targets, Reader(simultaneous=True, conversion_delay=0.0)


def one_cycle(server: OwServer, targets: list[ReadTarget], reader: Reader) -> tuple[float, int]:
    """Wall seconds and owserver round trips of one read cycle."""
    start = time.perf_counter()
    with server.session() as session:
        result = reader.read([(session, targets)])
    elapsed = time.perf_counter() - start
    assert len(result.readings) == len(targets), result.errors
    return elapsed, result.round_trips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args()
    proc, port = start_owserver(args.sensors)
    try:
        print(f"owserver --tester with {args.sensors} DS18B20 on 127.0.0.1:{port}; {args.cycles} cycles each")
        head = ("connection", "round trips", "TCP connects", "min ms", "median ms", "p90 ms")
        print(f"{head[0]:<26} {head[1]:>11} {head[2]:>12} {head[3]:>8} {head[4]:>10} {head[5]:>8}")
        variants = {"persistent (1 per cycle)": True, "per request (new TCP)": False}
        prepared = {label: setup(port, persistent) for label, persistent in variants.items()}
        times: dict[str, list[float]] = {label: [] for label in variants}
        trips: dict[str, int] = {}
        # interleaved, so both variants see the same background load
        for _ in range(args.cycles):
            for label in variants:
                elapsed, trips[label] = one_cycle(*prepared[label])
                times[label].append(elapsed)
        per_read = {}
        for label, persistent in variants.items():
            ordered = sorted(times[label])
            median = statistics.median(ordered)
            per_read[label] = median / max(trips[label], 1)
            connects = 1 if persistent else trips[label]
            p90 = ordered[int(len(ordered) * 0.9)]
            ms = f"{ordered[0] * 1e3:>8.2f} {median * 1e3:>10.2f} {p90 * 1e3:>8.2f}"
            print(f"{label:<26} {trips[label]:>11} {connects:>12} {ms}")
    finally:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proto = per_read["persistent (1 per cycle)"]
    print()
    print("Real DS18B20 on one bus, 12 bit (computed: conversion time is the datasheet's, not measured;")
    bus_low, bus_high = BUS_READ_LOW * 1e3, BUS_READ_HIGH * 1e3
    print(f"bus read per sensor estimated {bus_low:.0f}-{bus_high:.0f} ms;", end=" ")
    print(f"protocol per read {proto * 1e3:.3f} ms measured):")
    cols = ("individual conversions s", "simultaneous (750 ms) s", "simultaneous (1.2 s wait) s")
    print(f"{'N':>4} {cols[0]:>26} {cols[1]:>24} {cols[2]:>28}")
    for n in (1, 10, 20, 50, 100):
        lo = n * (DATASHEET_CONVERSION_12BIT + BUS_READ_LOW + proto)
        hi = n * (DATASHEET_CONVERSION_12BIT + BUS_READ_HIGH + proto)
        s_lo = DATASHEET_CONVERSION_12BIT + n * (BUS_READ_LOW + proto)
        s_hi = DATASHEET_CONVERSION_12BIT + n * (BUS_READ_HIGH + proto)
        w_lo = OUR_CONVERSION_WAIT + n * (BUS_READ_LOW + proto)
        w_hi = OUR_CONVERSION_WAIT + n * (BUS_READ_HIGH + proto)
        print(f"{n:>4} {f'{lo:.2f}-{hi:.2f}':>26} {f'{s_lo:.2f}-{s_hi:.2f}':>24} {f'{w_lo:.2f}-{w_hi:.2f}':>28}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
