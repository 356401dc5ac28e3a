#!/usr/bin/env python3
"""Alarm evaluation cost: CPU time of AlarmEngine.evaluate per 1,000 readings with 100 rules.

Three shapes, each the best of ``--repeat`` runs of ``--readings`` readings (figures are per 1,000):

- ``routed``: 100 condition rules, each watching one of 100 devices (``28.<n>``, the typical
  setup: a rule per sensor); readings cycle over the devices, so each reading meets one rule;
- ``globbed``: the same 100 rules written with glob patterns (``28.<n>.*``, still one match each)
  plus 10 stale rules on ``*`` (every reading refreshes them);
- ``every``: 100 rules that all watch every reading (``device: "*"``): 100 evaluations per
  reading, the worst case.

Conditions are a mix (``value > T``, ``abs(value - previous) > D and age < 60``, a hysteresis
release), values a slow ramp that trips and releases some alarms, so transitions (state file
writes) are part of the figure; the state file lives in a temporary directory. ``--no-state``
leaves it out to show the pure evaluation cost. Each shape runs twice: one ``evaluate`` call per
reading, and ``evaluate_many`` per read cycle of 100 readings (how a module publishes a cycle; the
state file is then written at most once per cycle).

    python bench/alarms.py [--readings 10000] [--repeat 5] [--no-state]
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from uun_gateway.alarms import AlarmEngine, compile_rules
from uun_gateway.readings import Reading

TARGET_MS = 50.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rules_for(shape: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for n in range(100):
        device = "*" if shape == "every" else (f"28.{n}.*" if shape == "globbed" else f"28.{n}")
        kind = n % 3
        rule: dict[str, Any] = {
            "name": f"r{n}",
            "watch": {"module": "onewire", "device": device, "point": "temperature"},
        }
        if kind == 0:
            rule.update(condition=f"value > {60 + n % 30}", tripDelay=30)
        elif kind == 1:
            rule.update(condition="abs(value - previous) > 5 and age < 60")
        else:
            rule.update(condition=f"value > {70 + n % 20}", releaseCondition=f"value < {65 + n % 20}", autoAck=True)
        rules.append(rule)
    if shape == "globbed":
        for n in range(10):
            rules.append({"name": f"stale{n}", "watch": {"module": "onewire"}, "staleAfter": 300})
    return rules


def readings(count: int, shape: str) -> list[Reading]:
    now = time.time()
    devices = 1 if shape == "every" else 100
    found = []
    for i in range(count):
        n = i % devices
        value = 60.0 + 30.0 * math.sin(4 * math.pi * i / count + n)  # two slow swings through the thresholds
        found.append(Reading("onewire", f"28.{n}" if shape != "globbed" else f"28.{n}.x", "temperature", value, now))
    return found


def run(shape: str, count: int, repeat: int, with_state: bool, batch_size: int) -> tuple[float, int]:
    best = math.inf
    transitions = 0
    batch = readings(count, shape)
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            clock = Clock()
            engine = AlarmEngine(
                compile_rules(rules_for(shape)),
                state_path=Path(tmp) / "alarms.json" if with_state else None,
                sink=lambda entries: None,
                clock=clock,
            )
            made = 0
            start = time.process_time()
            if batch_size == 1:
                for i, reading in enumerate(batch):
                    clock.now = i * 0.1
                    made += len(engine.evaluate(reading))
            else:
                for i in range(0, len(batch), batch_size):
                    clock.now = i * 0.1
                    made += len(engine.evaluate_many(batch[i : i + batch_size]))
            elapsed = time.process_time() - start
            best = min(best, elapsed)
            transitions = made
    return best / count * 1000 * 1000, transitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-state", action="store_true", help="no state file (pure evaluation)")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the transitions' log lines are not what is measured
    print(f"alarm evaluation, 100 rules, CPU per 1,000 readings (best of {args.repeat} x {args.readings} readings)")
    print(f"  state file: {'none' if args.no_state else 'yes'}; target <= {TARGET_MS:g} ms")
    for batch_size, how in ((1, "evaluate per reading"), (100, "evaluate_many per 100")):
        for shape in ("routed", "globbed", "every"):
            ms, transitions = run(shape, args.readings, args.repeat, not args.no_state, batch_size)
            verdict = "ok" if ms <= TARGET_MS else "over"
            print(
                f"  {how:22s} {shape:8s} {ms:8.2f} ms  {verdict:4s} "
                f"({transitions} transitions in {args.readings} readings)"
            )


if __name__ == "__main__":
    main()
