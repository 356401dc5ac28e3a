"""Benchmark: 1-wire read cycles through the module's whole code path, against a real owserver.

Part 1 - N emulated DS18x20 (owserver ``--tester``). owserver 3.2p4 aborts with "buffer
overflow detected" when its tester lists pass about 410 characters (136 devices), so more than
100 sensors are spread over several owserver processes, one server entry each; as tester ids
depend only on family and position, each process emulates another DS18x20-class family (28, 22,
3B, 42, 10: all converted and read the same way) so that ids differ (at most 500 sensors).
Times one whole read cycle of the module (``OneWire.read_cycle``: session, schedule, conversion
trigger, reads, 85.0/range checks, the storage transaction, events) next to the Reader alone,
with one persistent connection per cycle versus a new TCP connection per request. Then
computes what a cycle of N *real* DS18B20 costs with and without simultaneous conversion:
owserver does not emulate conversion time, so that part is the datasheet figure (750 ms max at
12 bit), not a measurement.

Part 2 - the mixed installation of issue 13: 50 DS18B20 read every 60 s, 4 DS2413 inputs every
1 s, 2 DS2423 counters every 10 s, on a 1 s read timer, for one simulated minute (an injected
clock; the conversion wait is counted, not slept), against reading everything every second.
Reports owserver round trips per minute, gateway CPU per minute (process time of the cycles) and
owserver's CPU per minute (``/proc/PID/stat``), and the conversion waits a real bus would pay.

Usage: python bench/onewire.py [--sensors 50] [--cycles 200] [--minutes 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyownet import protocol  # type: ignore[import-untyped]
from uun_gateway.modules.onewire import OneWire, OwServer, Reader, ReadTarget, ServerAddress, scan
from uun_gateway.modules.onewire.families import properties_for

DATASHEET_CONVERSION_12BIT = 0.750  # DS18B20 tCONV max at 12 bit
OUR_CONVERSION_WAIT = 1.2  # what the module waits: owserver rounds the remaining wait to whole seconds
# One scratchpad read on the wire: reset + MATCH ROM (8 id bytes) + READ SCRATCHPAD + 9 bytes at
# standard speed is about 11 ms; bus masters (DS2482 over I2C, DS9490 over USB, w1-gpio) add
# overhead. An estimate, not measured here (no hardware).
BUS_READ_LOW, BUS_READ_HIGH = 0.015, 0.040
PER_OWSERVER = 100  # owserver 3.2p4 overflows a buffer at ~136 emulated devices in one process
FAMILIES = ("28", "22", "3B", "42", "10")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chunks(families: list[str]) -> list[list[str]]:
    """``families`` split into lists one owserver can emulate."""
    return [families[i : i + PER_OWSERVER] for i in range(0, len(families), PER_OWSERVER)]


def start_owserver(options: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("owserver") or "/usr/bin/owserver"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--foreground", "--error_print=2", "--error_level=0", "-p", f"127.0.0.1:{port}", *options],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"owserver exited at start (status {proc.returncode}) with {len(options)} bus(es)")
        try:
            protocol.proxy("127.0.0.1", port)
            return proc, port
        except protocol.Error:
            time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise SystemExit("owserver did not start")


def stop_owserver(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def module_for(ports: list[int], storage: str, persistent: bool = True, **section: Any) -> OneWire:
    config = {
        "storageDir": storage,
        "moduleTimers": {"onewire": {"scan": 600, "read": 1}},
        "onewire": {
            "servers": [{"host": "127.0.0.1", "port": port} for port in ports],
            "conversionDelay": 0.0,
            "persistent": persistent,
            "alarmInterval": 0,
            **section,
        },
    }
    return OneWire(config)


def reader_setup(ports: list[int], persistent: bool) -> tuple[list[tuple[OwServer, list[ReadTarget]]], Reader]:
    jobs = []
    for port in ports:
        server = OwServer(ServerAddress("127.0.0.1", port), persistent=persistent)
        with server.session() as session:
            found = scan(session)
        targets = [ReadTarget(d.id, None, d.bus_path, properties_for(d.family)) for d in found.devices.values()]
        jobs.append((server, targets))
    return jobs, Reader(simultaneous=True, conversion_delay=0.0)


def part_one(sensors: int, cycles: int, storage: str) -> float:
    if sensors > PER_OWSERVER * len(FAMILIES):
        raise SystemExit(f"--sensors: at most {PER_OWSERVER * len(FAMILIES)}")
    started = [
        start_owserver(["--tester=" + ",".join([FAMILIES[k]] * len(chunk))])
        for k, chunk in enumerate(chunks(["28"] * sensors))
    ]
    ports = [port for _, port in started]
    try:
        print(
            f"owserver --tester with {sensors} DS18x20 in {len(ports)} owserver process(es) "
            f"(ports {', '.join(map(str, ports))}); {cycles} cycles each"
        )
        head = ("what is timed", "round trips", "TCP connects", "min ms", "median ms", "p90 ms")
        print(f"{head[0]:<40} {head[1]:>11} {head[2]:>12} {head[3]:>8} {head[4]:>10} {head[5]:>8}")
        modules = {True: module_for(ports, storage + "/p"), False: module_for(ports, storage + "/n", persistent=False)}
        readers = {True: reader_setup(ports, True), False: reader_setup(ports, False)}
        for module in modules.values():
            module.scan_all()
        times: dict[str, list[float]] = {}
        trips: dict[str, int] = {}
        for _ in range(cycles):  # interleaved, so every variant sees the same background load
            for persistent in (True, False):
                kind = "persistent" if persistent else "per request"
                label = f"module cycle ({kind})"
                start = time.perf_counter()
                result = modules[persistent].read_cycle()
                times.setdefault(label, []).append(time.perf_counter() - start)
                trips[label] = result.round_trips
                assert len(result.readings) == sensors, (len(result.readings), result.errors)
                label = f"Reader only ({kind})"
                jobs, reader = readers[persistent]
                start = time.perf_counter()
                total = 0
                for server, targets in jobs:
                    with server.session() as session:
                        total += reader.read([(session, targets)]).round_trips
                times.setdefault(label, []).append(time.perf_counter() - start)
                trips[label] = total
        per_read = 0.0
        for label, values in times.items():
            ordered = sorted(values)
            median = statistics.median(ordered)
            if label == "module cycle (persistent)":
                per_read = median / max(trips[label], 1)
            connects = len(ports) if "(persistent)" in label else trips[label]
            p90 = ordered[int(len(ordered) * 0.9)]
            print(
                f"{label:<40} {trips[label]:>11} {connects:>12} "
                f"{ordered[0] * 1e3:>8.2f} {median * 1e3:>10.2f} {p90 * 1e3:>8.2f}"
            )
        for module in modules.values():
            module.close_storage()
    finally:
        for proc, _ in started:
            stop_owserver(proc)
    return per_read


def print_real_estimate(proto: float) -> None:
    print()
    print("Real DS18B20 on one bus, 12 bit (computed: conversion time is the datasheet's, not measured;")
    print(f"bus read per sensor estimated {BUS_READ_LOW * 1e3:.0f}-{BUS_READ_HIGH * 1e3:.0f} ms;", end=" ")
    print(f"module cost per request {proto * 1e3:.3f} ms measured):")
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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(module: OneWire, minutes: int, owserver_pid: int) -> dict[str, float]:
    """Run 60 ticks per minute on an injected clock; the conversion wait is counted, not slept."""
    clock = Clock()
    module.schedule.clock = clock
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return True

    module.reader._wait = wait
    module.reader.conversion_delay = OUR_CONVERSION_WAIT
    module.scan_all()
    trips = readings = 0
    cpu_before, ow_before, wall = time.process_time(), cpu_seconds(owserver_pid), time.perf_counter()
    for _ in range(60 * minutes):
        result = module.read_cycle()
        trips += result.round_trips
        readings += len(result.readings)
        clock.now += 1.0
    cpu = time.process_time() - cpu_before
    ow_cpu = cpu_seconds(owserver_pid) - ow_before
    return {
        "round trips/min": trips / minutes,
        "readings/min": readings / minutes,
        "gateway CPU ms/min": cpu * 1e3 / minutes,
        "owserver CPU ms/min": ow_cpu * 1e3 / minutes,
        "conversion waits/min": len(waits) / minutes,
        "wall ms/min (emulated)": (time.perf_counter() - wall) * 1e3 / minutes,
    }


def part_two(minutes: int, storage: str) -> None:
    temps, inputs, counters = ["28"] * 50, ["3A"] * 4, ["1D"] * 2
    proc, port = start_owserver(["--tester=" + ",".join(temps), "--tester=" + ",".join(inputs + counters)])
    try:
        probe = module_for([port], storage + "/probe")
        probe.scan_all()
        ids = {fam: [d.id for d in probe.inventory.devices() if d.family == fam] for fam in ("28", "3A", "1D")}
        probe.close_storage()
        sensors: dict[str, Any] = {i: {"interval": 1} for i in ids["3A"]}
        sensors.update({i: {"interval": 10} for i in ids["1D"]})
        variants = {
            "mixed intervals (60 s / 1 s / 10 s)": module_for([port], storage + "/mixed", interval=60, sensors=sensors),
            "everything every second": module_for([port], storage + "/all"),
        }
        print()
        print(
            f"Mixed installation on owserver --tester (127.0.0.1:{port}): 50 DS18B20 at 60 s, "
            f"4 DS2413 inputs at 1 s, 2 DS2423 counters at 10 s; 1 s read timer; {minutes} simulated minute(s)"
        )
        figures = {label: simulate(module, minutes, proc.pid) for label, module in variants.items()}
        keys = list(next(iter(figures.values())))
        print(f"{'':<24}" + "".join(f"{label:>38}" for label in figures))
        for key in keys:
            print(f"{key:<24}" + "".join(f"{figures[label][key]:>38.1f}" for label in figures))
        mixed, full = figures.values()
        for key in ("round trips/min", "gateway CPU ms/min"):
            print(f"{key}: mixed is {mixed[key] / max(full[key], 1e-9):.3f} of everything-every-second")
        lo = (mixed["round trips/min"] * BUS_READ_LOW, full["round trips/min"] * BUS_READ_LOW)
        hi = (mixed["round trips/min"] * BUS_READ_HIGH, full["round trips/min"] * BUS_READ_HIGH)
        print(
            "On a real bus (estimate, not measured): bus time per minute "
            f"{lo[0]:.1f}-{hi[0]:.1f} s mixed vs {lo[1]:.1f}-{hi[1]:.1f} s everything every second, plus "
            f"{mixed['conversion waits/min'] * OUR_CONVERSION_WAIT:.1f} s vs "
            f"{full['conversion waits/min'] * OUR_CONVERSION_WAIT:.1f} s of conversion waits: reading "
            "everything every second does not fit in a second on real hardware"
        )
        for module in variants.values():
            module.close_storage()
    finally:
        stop_owserver(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--minutes", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onewire-bench-") as storage:
        proto = part_one(args.sensors, args.cycles, storage)
        print_real_estimate(proto)
        part_two(args.minutes, storage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
