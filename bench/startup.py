#!/usr/bin/env python3
"""Start-up figures: exec -> first tick, CPU until then, RSS and imported modules at the first tick.

Scenarios (each a fresh process, median of ``--runs``):

- ``cli``: ``uun-gateway run -c config.json`` with one installed module (a tiny tick module made
  installable for the run through a ``*.dist-info`` entry point on ``PYTHONPATH``);
- ``library``: ``python -c`` building a ``Gateway`` with the same module from ``module_init``;
- ``uun-iot``: the same library-mode module on uun-iot, when ``--uuniot-python`` names an
  interpreter that has it (e.g. ``/tmp/uuniot-venv/bin/python``);
- ``cli --help`` and ``check-config``: what the other commands cost.

    python bench/startup.py [--runs 7] [--uuniot-python PATH]

Exec -> first tick is measured on CLOCK_MONOTONIC, shared by parent and child: from just before
``Popen`` to the child's ``time.monotonic()`` inside its first tick handler.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK_PROBE = """
import json, os, resource, sys, time
def report():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rss = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS:")))
    print(json.dumps({"t": time.monotonic(), "cpu": ru.ru_utime + ru.ru_stime, "rss_kb": rss,
                      "modules": len(sys.modules)}), flush=True)
    os._exit(0)
"""

PLUGIN = (
    TICK_PROBE
    + """
from uun_gateway import Module, on
class BenchTick(Module):
    id = "benchTick"
    @on("tick")
    def tick(self):
        report()
"""
)

LIBRARY = (
    TICK_PROBE
    + """
import threading
from uun_gateway import Gateway, Module, on
class BenchTick(Module):
    id = "benchTick"
    @on("tick")
    def tick(self):
        report()
with Gateway({"gateway": {"moduleTimers": {"benchTick": 3600}, "storageDir": sys.argv[1]}},
             lambda c, u: BenchTick(c["gateway"], u)):
    threading.Event().wait(60)
"""
)

UUNIOT = (
    TICK_PROBE
    + """
import json as _json, threading, uun_iot
from uun_iot import Gateway, Module
NEW = hasattr(uun_iot, "EvTick")
def tick(self):
    report()
tick.__qualname__ = "BenchTick.tick"
BenchTick = type("BenchTick", (Module,), {"tick": (uun_iot.EvTick.subscribe if NEW else uun_iot.on("tick"))(tick)})
path = sys.argv[1] + "/config.json"
with open(path, "w") as f:
    _json.dump({"gateway": {"moduleTimers": {"benchTick": 3600}}}, f)
with Gateway(path, lambda c, u: [BenchTick(c["gateway"])]):
    threading.Event().wait(60)
"""
)


def run_probe(cmd: list[str], env: dict[str, str] | None, cwd: str) -> dict[str, float]:
    began = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{cmd[:3]} gave no tick report (exit {proc.returncode}): {proc.stderr[-1500:]}")
    report: dict[str, float] = json.loads(lines[-1])
    report["first_tick_ms"] = (report.pop("t") - began) * 1e3
    return report


def run_plain(cmd: list[str], env: dict[str, str] | None, cwd: str) -> dict[str, float]:
    """A command that exits by itself: wall time, and the child's CPU and peak RSS."""
    began = time.monotonic()
    before = os.times()
    subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=120, check=False)
    after = os.times()
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"first_tick_ms": (time.monotonic() - began) * 1e3, "cpu": cpu, "rss_kb": peak, "modules": 0}


def install_plugin(root: Path) -> None:
    (root / "bench_tick_plugin.py").write_text(PLUGIN)
    info = root / "bench_tick_plugin-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-tick-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[uun_gateway.modules]\nbenchTick = bench_tick_plugin:BenchTick\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--uuniot-python", help="an interpreter with uun-iot installed, for the side-by-side run")
    args = parser.parse_args()

    exe = Path(sys.executable)
    cli = str(exe.parent / "uun-gateway")
    with tempfile.TemporaryDirectory(prefix="uun-startup-") as tmp:
        root = Path(tmp)
        install_plugin(root)
        (root / "storage").mkdir()
        config = root / "config.json"
        config.write_text(json.dumps({"gateway": {"moduleTimers": {"benchTick": 3600}, "storageDir": "storage"}}))
        env = {**os.environ, "PYTHONPATH": str(root)}
        scenarios: list[tuple[str, list[str], dict[str, str] | None, bool]] = [
            ("uun-gateway run -c config.json", [cli, "run", "-c", str(config)], env, True),
            ("library: Gateway(dict, module_init)", [str(exe), "-c", LIBRARY, str(root / "storage")], None, True),
            ("uun-gateway --help (exit)", [cli, "--help"], env, False),
            ("uun-gateway check-config (exit)", [cli, "check-config", str(config)], env, False),
            ("bare interpreter: python -c pass", [str(exe), "-c", "pass"], None, False),
        ]
        if args.uuniot_python:
            scenarios.insert(
                2, ("uun-iot library: Gateway(file, module_init)", [args.uuniot_python, "-c", UUNIOT, tmp], None, True)
            )
            scenarios.append(("uun-iot bare interpreter", [args.uuniot_python, "-c", "pass"], None, False))
        print(f"{'scenario':46} {'exec->tick/exit':>16} {'CPU':>8} {'RSS':>9} {'modules':>8}   (median of {args.runs})")
        for name, cmd, scenario_env, probe in scenarios:
            results = []
            for _ in range(args.runs):
                results.append(run_probe(cmd, scenario_env, tmp) if probe else run_plain(cmd, scenario_env, tmp))
            med = {key: statistics.median(r[key] for r in results) for key in results[0]}
            rss = f"{med['rss_kb'] / 1024:.1f} MB" if probe else "   -"
            mods = f"{med['modules']:.0f}" if probe else "-"
            print(f"{name:46} {med['first_tick_ms']:13.0f} ms {med['cpu'] * 1e3:5.0f} ms {rss:>9} {mods:>8}")


if __name__ == "__main__":
    main()
