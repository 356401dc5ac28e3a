"""Alarm rules, their state machine, persistence, delivery and ``alarms test``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from uun_gateway.alarms import (
    AlarmEngine,
    AlarmError,
    AlarmRule,
    AlarmTransition,
    compile_rules,
    register,
)
from uun_gateway.alarmschema import ALARMS_SCHEMA
from uun_gateway.errors import EX_CONFIG, ConfigError
from uun_gateway.plugins import Commands
from uun_gateway.readings import Reading


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rule(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "boilerHot",
        "watch": {"module": "onewire", "device": "28.*", "point": "temperature"},
    }
    base.update(fields)
    return base


def engine_for(
    *rules: dict[str, Any],
    clock: Clock | None = None,
    state_path: Path | None = None,
    sink: Callable[[list[dict[str, Any]]], object] | None = None,
) -> AlarmEngine:
    clock = clock or Clock()
    return AlarmEngine(
        compile_rules(list(rules)),
        clock=clock,
        wall=lambda: 1_700_000_000.0 + clock.now,
        state_path=state_path,
        sink=sink,
    )


def temp(value: Any, device: str = "28.A", quality: Any = "good") -> Reading:
    return Reading("onewire", device, "temperature", value, 1_700_001_000.0, "°C", quality)


def states(engine: AlarmEngine) -> list[tuple[str, str, str]]:
    return [(a.rule, a.device, a.state) for a in engine.alarms()]


# -- rules -----------------------------------------------------------------------------------------


def test_compile_rules_reads_every_key() -> None:
    [compiled] = compile_rules(
        [rule(condition="value > 80", releaseCondition="value < 75", priority="critical", tripDelay=60, autoAck=True)]
    )
    assert compiled.name == "boilerHot"
    assert (compiled.module, compiled.device, compiled.point) == ("onewire", "28.*", "temperature")
    assert compiled.condition is not None and compiled.condition.text == "value > 80"
    assert compiled.release is not None and compiled.release.text == "value < 75"
    assert (compiled.priority, compiled.trip_delay, compiled.auto_ack, compiled.kind) == (
        "critical",
        60.0,
        True,
        "condition",
    )
    [stale] = compile_rules([{"name": "quiet", "watch": {"module": "onewire"}, "staleAfter": 30}])
    assert (stale.kind, stale.stale_after, stale.device, stale.point, stale.priority) == (
        "stale",
        30.0,
        "*",
        "*",
        "warning",
    )
    assert compile_rules(None) == []


def test_a_condition_that_does_not_compile_names_the_key_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_rules([rule(condition="value > 1"), rule(name="b", condition="value >", releaseCondition="valu < 3")])
    assert caught.value.errors == [
        'gateway.alarms[1].condition: column 8: expected a number, a name (value, previous, age), a function or "("; '
        'found the end of the expression; in "value >"',
        "gateway.alarms[1].releaseCondition: column 1: unknown name 'valu'; expected one of value, previous, age, "
        'true, false or a function (abs, min, max); in "valu < 3"',
    ]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            [{"name": "x", "watch": {"module": "m"}}],
            "gateway.alarms[0]: required key 'condition' or 'staleAfter' is missing",
        ),
        (
            [rule(condition="value > 1", priority="high")],
            "gateway.alarms[0].priority: 'high' is not one of ['info', 'warning', 'error', 'critical']; "
            "expected one of info",
        ),
        ([rule(condition="value > 1", tripDelay=-1)], "gateway.alarms[0].tripDelay: -1 is less than the minimum of 0"),
        (
            [rule(condition="value > 1", watch={"device": "x"})],
            "gateway.alarms[0].watch: required key 'module' is missing",
        ),
        ([rule(condition="value > 1", trip=3)], "gateway.alarms[0].trip: unknown key"),
        ([rule(name="a b", condition="value > 1")], "gateway.alarms[0].name: 'a b' does not match"),
        ({"name": "x"}, 'gateway.alarms: {"name": "x"} has the wrong type; expected a list of alarm rules'),
        (
            [rule(condition="value > 1"), rule(condition="value > 2")],
            "gateway.alarms[1].name: 'boilerHot' is also the name of gateway.alarms[0]; expected unique names",
        ),
        (
            [rule(staleAfter=10, tripDelay=5)],
            "gateway.alarms[0].tripDelay: a stale rule (staleAfter) takes no tripDelay",
        ),
    ],
)
def test_invalid_rules_are_config_errors(rules: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_rules(rules)
    assert any(e.startswith(expected) for e in caught.value.errors), caught.value.errors


def test_schema_is_a_plain_dict_to_compose() -> None:
    assert ALARMS_SCHEMA["type"] == "array"
    json.dumps(ALARMS_SCHEMA)


def test_rule_names_must_be_unique_in_an_engine() -> None:
    same = AlarmRule("a", "m", condition=None, stale_after=1.0)
    with pytest.raises(AlarmError, match="repeated: a"):
        AlarmEngine([same, same])


# -- the state machine -----------------------------------------------------------------------------


def test_trip_delay_is_honoured_on_readings_and_ticks() -> None:
    clock = Clock()
    engine = engine_for(rule(condition="value > 80", tripDelay=60), clock=clock)
    assert engine.evaluate(temp(81)) == []
    clock.now += 59
    assert engine.tick() == []
    assert engine.evaluate(temp(82)) == []
    clock.now += 1
    [tripped] = engine.tick()
    assert (tripped.previous_state, tripped.state, tripped.event, tripped.value) == ("normal", "active", "trip", 82.0)
    assert states(engine) == [("boilerHot", "28.A", "active")]
    clock.now += 100
    assert engine.tick() == []  # tripped once


def test_a_false_reading_restarts_the_trip_delay() -> None:
    clock = Clock()
    engine = engine_for(rule(condition="value > 80", tripDelay=60), clock=clock)
    engine.evaluate(temp(81))
    clock.now += 50
    engine.evaluate(temp(79))
    clock.now += 50
    engine.evaluate(temp(81))
    assert engine.tick() == []
    clock.now += 59.9
    assert engine.tick() == []
    clock.now += 0.1
    assert [t.state for t in engine.evaluate(temp(81))] == ["active"]


def test_without_trip_delay_a_reading_trips_at_once() -> None:
    engine = engine_for(rule(condition="value > 80"))
    assert [t.state for t in engine.evaluate(temp(81))] == ["active"]
    assert engine.evaluate(temp(90)) == []


def test_hysteresis_release_condition() -> None:
    engine = engine_for(rule(condition="value > 80", releaseCondition="value < 75"))
    engine.evaluate(temp(81))
    assert engine.evaluate(temp(78)) == []  # below the condition, not yet released
    [released] = engine.evaluate(temp(74))
    assert (released.previous_state, released.state, released.event) == ("active", "cleared", "release")
    assert released.reason == "value < 75"


def test_cleared_stays_visible_until_acknowledged() -> None:
    engine = engine_for(rule(condition="value > 80"))
    engine.evaluate(temp(81))
    engine.evaluate(temp(70))
    assert states(engine) == [("boilerHot", "28.A", "cleared")]
    [acked] = engine.acknowledge("boilerHot", by="operator")
    assert (acked.previous_state, acked.state, acked.by) == ("cleared", "normal", "operator")
    assert engine.alarms() == []


def test_acknowledged_then_released_goes_normal() -> None:
    engine = engine_for(rule(condition="value > 80"))
    engine.evaluate(temp(81))
    [acked] = engine.acknowledge("boilerHot")
    assert (acked.state, acked.by) == ("acknowledged", "api")
    assert engine.alarms()[0].acknowledged_by == "api"
    assert engine.acknowledge("boilerHot") == []  # nothing left to acknowledge
    [released] = engine.evaluate(temp(70))
    assert (released.previous_state, released.state) == ("acknowledged", "normal")
    assert engine.alarms() == []


def test_auto_ack_releases_to_normal() -> None:
    engine = engine_for(rule(condition="value > 80", autoAck=True))
    engine.evaluate(temp(81))
    [released] = engine.evaluate(temp(70))
    assert (released.previous_state, released.state) == ("active", "normal")


def test_a_cleared_alarm_trips_again() -> None:
    engine = engine_for(rule(condition="value > 80"))
    engine.evaluate(temp(81))
    engine.evaluate(temp(70))
    [again] = engine.evaluate(temp(85))
    assert (again.previous_state, again.state) == ("cleared", "active")


def test_each_device_has_its_own_state_and_ack_can_pick_one() -> None:
    engine = engine_for(rule(condition="value > 80"))
    engine.evaluate(temp(81, "28.A"))
    engine.evaluate(temp(79, "28.B"))
    engine.evaluate(temp(82, "28.C"))
    engine.evaluate(temp(90, "10.X"))  # not watched: device glob 28.*
    assert sorted(states(engine)) == [("boilerHot", "28.A", "active"), ("boilerHot", "28.C", "active")]
    [acked] = engine.acknowledge("boilerHot", device="28.C")
    assert acked.device == "28.C"
    assert sorted(states(engine)) == [("boilerHot", "28.A", "active"), ("boilerHot", "28.C", "acknowledged")]
    with pytest.raises(AlarmError, match="no alarm rule named 'nope'; rules: boilerHot"):
        engine.acknowledge("nope")


def test_previous_and_age() -> None:
    clock = Clock()
    engine = engine_for(rule(condition="abs(value - previous) > 5 and age < 60"), clock=clock)
    assert engine.evaluate(temp(20)) == []  # previous = value for the first reading
    assert engine.evaluate(temp(24)) == []
    assert [t.state for t in engine.evaluate(temp(30))] == ["active"]
    old = Reading("onewire", "28.B", "temperature", 50.0, 1_700_000_000.0 + clock.now - 61)
    engine.evaluate(Reading("onewire", "28.B", "temperature", 10.0, 1_700_000_000.0 + clock.now))
    assert engine.evaluate(old) == []  # a jump, but 61 s old


def test_unusable_readings_are_skipped() -> None:
    engine = engine_for(rule(condition="value > 80"))
    assert engine.evaluate(temp(200, quality="bad")) == []
    assert engine.evaluate(temp("hot")) == []
    assert engine.evaluate(temp(float("nan"))) == []
    assert engine.skipped == 3
    assert [t.state for t in engine.evaluate(temp(81, quality="uncertain"))] == ["active"]


def test_an_evaluation_error_is_logged_once_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    engine = engine_for(rule(condition="value / (previous - 10) > 1"))
    engine.evaluate(temp(10))
    engine.evaluate(temp(10))
    errors = [r for r in caplog.records if "cannot evaluate" in r.getMessage()]
    assert len(errors) == 1
    assert "alarm boilerHot: cannot evaluate on onewire/28.A/temperature value 10: column 7: division by zero" in (
        errors[0].getMessage()
    )
    assert engine.alarms() == []


def test_stale_rule_on_a_named_point_counts_from_the_start() -> None:
    clock = Clock()
    stale = {
        "name": "quiet",
        "watch": {"module": "onewire", "device": "28.A", "point": "temperature"},
        "staleAfter": 30,
    }
    engine = engine_for(stale, clock=clock)
    clock.now += 29
    assert engine.tick() == []
    clock.now += 1
    [tripped] = engine.tick()
    assert (tripped.state, tripped.reason) == ("active", "no reading for 30 s (staleAfter 30 s)")
    assert engine.tick() == []
    [back] = engine.evaluate(temp(20))
    assert (back.previous_state, back.state, back.reason) == ("active", "cleared", "a reading arrived again")
    clock.now += 29
    assert engine.tick() == []


def test_stale_rule_with_a_pattern_watches_points_once_seen() -> None:
    clock = Clock()
    engine = engine_for(
        {"name": "quiet", "watch": {"module": "onewire"}, "staleAfter": 30, "autoAck": True}, clock=clock
    )
    clock.now += 100
    assert engine.tick() == []
    engine.evaluate(temp(20, "28.A"))
    clock.now += 20
    engine.evaluate(temp(20, "28.B"))
    clock.now += 10
    assert [(t.device, t.state) for t in engine.tick()] == [("28.A", "active")]
    engine.evaluate(temp(20, "28.A", quality="bad"))  # a bad reading is no sign of life
    assert states(engine) == [("quiet", "28.A", "active")]
    assert [(t.device, t.state) for t in engine.evaluate(temp(21, "28.A"))] == [("28.A", "normal")]


def test_each_transition_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "uun_gateway.alarms")
    engine = engine_for(rule(condition="value > 80", priority="critical"))
    engine.evaluate(temp(81))
    engine.evaluate(temp(82))
    engine.acknowledge("boilerHot", by="cli")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith("alarm boilerHot")]
    assert lines == [
        (
            logging.CRITICAL,
            "alarm boilerHot (critical) onewire/28.A/temperature: normal -> active: value > 80, value 81",
        ),
        (
            logging.INFO,
            "alarm boilerHot (critical) onewire/28.A/temperature: active -> acknowledged by cli: "
            "acknowledged, value 82",
        ),
    ]


# -- delivery --------------------------------------------------------------------------------------


def test_transitions_go_to_the_sink_and_listeners_in_order() -> None:
    stored: list[dict[str, Any]] = []
    seen: list[str] = []
    engine = engine_for(rule(condition="value > 80"), sink=stored.extend)
    unsubscribe = engine.subscribe(lambda t: seen.append(f"{t.previous_state}->{t.state}"))
    engine.evaluate(temp(81))
    engine.acknowledge("boilerHot")
    engine.evaluate(temp(70))
    assert seen == ["normal->active", "active->acknowledged", "acknowledged->normal"]
    assert [(e["from"], e["state"], e["event"]) for e in stored] == [
        ("normal", "active", "trip"),
        ("active", "acknowledged", "ack"),
        ("acknowledged", "normal", "release"),
    ]
    first = stored[0]
    assert first["rule"] == "boilerHot" and first["priority"] == "warning" and first["value"] == 81.0
    assert first["timestamp"] == "2023-11-14T22:30:00.000Z"
    assert len({e["id"] for e in stored}) == 3
    unsubscribe()
    engine.evaluate(temp(81))
    assert len(seen) == 3 and len(stored) == 4


def test_a_failing_listener_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[AlarmTransition] = []

    def broken(transition: AlarmTransition) -> None:
        raise RuntimeError("listener bug")

    engine = engine_for(rule(condition="value > 80"))
    engine.subscribe(broken)
    engine.subscribe(seen.append)
    engine.evaluate(temp(81))
    assert len(seen) == 1
    assert any("alarm listener" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_listener_may_acknowledge() -> None:
    seen: list[str] = []
    engine = engine_for(rule(condition="value > 80"))

    def auto_acknowledge(transition: AlarmTransition) -> None:
        seen.append(transition.state)
        if transition.state == "active":
            engine.acknowledge(transition.rule, by="listener")

    engine.subscribe(auto_acknowledge)
    engine.evaluate(temp(81))
    assert seen == ["active", "acknowledged"]


def test_a_failing_sink_keeps_transitions_and_retries(tmp_path: Path) -> None:
    stored: list[dict[str, Any]] = []
    broken = [True]

    def sink(entries: list[dict[str, Any]]) -> None:
        if broken[0]:
            raise OSError(28, "No space left on device")
        stored.extend(entries)

    engine = engine_for(rule(condition="value > 80"), sink=sink, state_path=tmp_path / "alarms.json")
    engine.evaluate(temp(81))
    engine.evaluate(temp(70))
    assert engine.pending() == 2
    assert len(json.loads((tmp_path / "alarms.json").read_text())["outbox"]) == 2
    broken[0] = False
    engine.tick()
    assert [e["state"] for e in stored] == ["active", "cleared"]
    assert engine.pending() == 0
    assert json.loads((tmp_path / "alarms.json").read_text())["outbox"] == []


def test_concurrent_readings_trip_each_point_once() -> None:
    stored: list[dict[str, Any]] = []
    lock = threading.Lock()

    def sink(entries: list[dict[str, Any]]) -> None:
        with lock:
            stored.extend(entries)

    engine = engine_for(rule(condition="value > 80", releaseCondition="value < 0"), sink=sink)
    devices = [f"28.{i}" for i in range(20)]
    start = threading.Barrier(4)

    def feed() -> None:
        start.wait()
        for value in range(70, 100):
            for device in devices:
                engine.evaluate(temp(value, device))

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["device"] for e in stored) == sorted(devices)
    assert {e["state"] for e in stored} == {"active"}


# -- persistence -----------------------------------------------------------------------------------


def test_state_survives_a_restart_and_is_not_raised_twice(tmp_path: Path) -> None:
    path = tmp_path / "alarms.json"
    clock = Clock()
    first = engine_for(
        rule(condition="value > 80"), rule(name="cold", condition="value < 0"), clock=clock, state_path=path
    )
    first.evaluate(temp(81, "28.A"))
    first.evaluate(temp(90, "28.B"))
    first.acknowledge("boilerHot", device="28.B")
    second = engine_for(
        rule(condition="value > 80"), rule(name="cold", condition="value < 0"), clock=clock, state_path=path
    )
    assert sorted(states(second)) == [("boilerHot", "28.A", "active"), ("boilerHot", "28.B", "acknowledged")]
    assert second.load_problem is None
    assert second.evaluate(temp(85, "28.A")) == []
    [released] = second.evaluate(temp(20, "28.B"))
    assert (released.previous_state, released.state) == ("acknowledged", "normal")


def test_state_of_a_removed_rule_is_forgotten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "alarms.json"
    engine_for(rule(condition="value > 80"), state_path=path).evaluate(temp(81))
    renamed = engine_for(rule(name="other", condition="value > 80"), state_path=path)
    assert renamed.alarms() == []
    assert any("no configured rule watches that point any more; forgotten" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"version": 99}', b'{"version": 1, "alarms": [{"rule": 1}]}', b"\xff\xfe"]
)
def test_a_corrupt_state_file_is_moved_aside_and_reported(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "alarms.json"
    path.write_bytes(content)
    engine = engine_for(rule(condition="value > 80"), state_path=path)
    assert engine.alarms() == []
    assert engine.load_problem is not None and str(path) in engine.load_problem
    assert (tmp_path / "alarms.json.corrupt").read_bytes() == content
    assert not path.exists()
    assert any(r.levelno == logging.ERROR and "every alarm starts normal" in r.getMessage() for r in caplog.records)
    engine.evaluate(temp(81))  # and it works on
    assert json.loads(path.read_text())["alarms"][0]["state"] == "active"


def test_a_missing_state_file_is_fine(tmp_path: Path) -> None:
    engine = engine_for(rule(condition="value > 80"), state_path=tmp_path / "alarms.json")
    assert engine.load_problem is None and engine.alarms() == []


def test_an_unwritable_state_file_is_logged_and_states_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engine_for(rule(condition="value > 80"), state_path=tmp_path / "missing-dir" / "alarms.json")
    engine.evaluate(temp(81))
    assert states(engine) == [("boilerHot", "28.A", "active")]
    assert any("cannot save" in r.getMessage() and "kept in memory" in r.getMessage() for r in caplog.records)


_KILLED_WRITER = """
import os, signal, sys
from uun_gateway.alarms import AlarmEngine, compile_rules
from uun_gateway.readings import Reading
from uun_gateway.storage import Storage

storage = Storage("alarms", sys.argv[2])
rules = compile_rules([{"name": "boilerHot", "watch": {"module": "onewire"}, "condition": "value > 80"}])
engine = AlarmEngine(rules, state_path=sys.argv[1], sink=storage.extend)
engine.evaluate(Reading("onewire", "28.A", "temperature", 81.0, 0.0))
if sys.argv[3] == "tick":
    engine.tick()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("last_call", ["evaluate", "tick"])
def test_an_active_alarm_survives_sigkill(tmp_path: Path, last_call: str) -> None:
    from uun_gateway.storage import Storage

    state, store = tmp_path / "alarms.json", tmp_path / "alarms.sqlite"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(state), str(store), last_call], check=False, timeout=60
    )
    assert done.returncode == -signal.SIGKILL
    storage = Storage("alarms", store)
    try:
        assert [e.data["state"] for e in storage] == ["active"]
        engine = AlarmEngine(
            compile_rules([{"name": "boilerHot", "watch": {"module": "onewire"}, "condition": "value > 80"}]),
            state_path=state,
            sink=storage.extend,
        )
        assert [(a.rule, a.state) for a in engine.alarms()] == [("boilerHot", "active")]
        assert engine.evaluate(Reading("onewire", "28.A", "temperature", 82.0, 0.0)) == []
        engine.tick()
        entries = [e.data for e in storage]
        # killed before the tick that drops delivered transitions from the state file: delivered
        # again, with the same id (at least once); never a second trip
        assert len(entries) == (2 if last_call == "evaluate" else 1)
        assert {(e["id"], e["state"]) for e in entries} == {(entries[0]["id"], "active")}
    finally:
        storage.close()
    assert os.stat(state).st_mode & 0o777 == 0o600


# -- alarms test ---------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(Commands(parser.add_subparsers(dest="command")))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_alarms_test_prints_the_transitions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    rules = [
        rule(condition="value > 80", releaseCondition="value < 75", tripDelay=60),
        {"name": "x", "watch": {"module": "m"}, "staleAfter": 5},
    ]
    config.write_text(json.dumps({"gateway": {"alarms": rules}}))
    code = run_cli(
        [
            "alarms",
            "test",
            "-c",
            str(config),
            "--rule",
            "boilerHot",
            "--value",
            "81",
            "--value",
            "82@30",
            "--value",
            "83@60",
            "--value",
            "78",
            "--value",
            "74",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == [
        "rule boilerHot (warning): onewire/28.*/temperature: value > 80 for 60 s, release on value < 75",
        "  t=       0 s  value 81         -> normal (condition holds since t=0 s; trips after 60 s)",
        "  t=      30 s  value 82         -> normal (condition holds since t=0 s; trips after 60 s)",
        "  t=      60 s  value 83         -> active",
        "      normal -> active (trip): value > 80 held for 60 s",
        "  t=      61 s  value 78         -> active",
        "  t=      62 s  value 74         -> cleared",
        "      active -> cleared (release): value < 75",
    ]


def test_alarms_test_reports_a_bad_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"gateway": {"alarms": [rule(condition="value >> 3")]}}))
    assert run_cli(["alarms", "test", "-c", str(config), "--value", "1"]) == EX_CONFIG
    assert "gateway.alarms[0].condition: column 8: expected a number" in capsys.readouterr().out
    assert run_cli(["alarms", "test", "-c", str(tmp_path / "none.json"), "--value", "1"]) == EX_CONFIG


def test_alarms_test_rejects_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"gateway": {"alarms": [rule(condition="value > 3")]}}))
    with pytest.raises(SystemExit):
        run_cli(["alarms", "test", "-c", str(config), "--value", "hot"])
    assert "expected a number, true/false, or NUMBER@SECONDS" in capsys.readouterr().err
    assert run_cli(["alarms", "test", "-c", str(config), "--value", "1@10", "--value", "2@5"]) == 2
    assert run_cli(["alarms", "test", "-c", str(config), "--rule", "nope", "--value", "1"]) == 2


def test_flush_drops_delivered_transitions_from_the_state_file(tmp_path: Path) -> None:
    stored: list[dict[str, Any]] = []
    path = tmp_path / "alarms.json"
    engine = engine_for(rule(condition="value > 80"), sink=stored.extend, state_path=path)
    engine.evaluate(temp(81))
    assert len(stored) == 1
    assert len(json.loads(path.read_text())["outbox"]) == 1  # until the next tick or flush
    assert engine.flush() is True
    assert json.loads(path.read_text())["outbox"] == []
    again = engine_for(rule(condition="value > 80"), sink=stored.extend, state_path=path)
    again.flush()
    assert len(stored) == 1
