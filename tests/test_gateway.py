"""Gateway: loading, lifecycle order, handler errors, multi-timer modules, stop bounds, signals,
send-with-backup and health (config updates: ``test_configupdates.py``)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from uun_gateway import ConfigError, Gateway, Module, ModuleLoadError, on


class Recorder(Module):
    """Records the order of its events in a list shared by all Recorders."""

    def __init__(self, config: Any, log: list[str], name: str = "") -> None:
        super().__init__(config)
        self.log = log
        self.name = name or self.id

    @on("start")
    def started(self, evs: tuple[threading.Event, threading.Event]) -> None:
        runev, stopev = evs
        assert runev.is_set() and not stopev.is_set()
        self.log.append(f"start:{self.name}")

    @on("tick")
    def ticked(self) -> None:
        self.log.append(f"tick:{self.name}")

    @on("stop")
    def stopped(self) -> None:
        self.log.append(f"stop:{self.name}")


class First(Recorder):
    pass


class Second(Recorder):
    pass


def two_module_config(tmp_path: Path) -> dict[str, Any]:
    return {"gateway": {"moduleTimers": {"first": 0.01, "second": 0.01}, "storageDir": str(tmp_path)}}


def test_start_handlers_run_before_ticks_and_stop_in_reverse(tmp_path: Path) -> None:
    log: list[str] = []
    config = two_module_config(tmp_path)
    with Gateway(config, lambda c, u: [First(c["gateway"], log), Second(c["gateway"], log)]) as gateway:
        assert gateway.runev.is_set()
        wait_for(lambda: "tick:first" in log and "tick:second" in log)
    assert log[:2] == ["start:first", "start:second"]
    assert log[-2:] == ["stop:second", "stop:first"]
    assert gateway.stopev.is_set() and not gateway.runev.is_set()


def test_start_and_stop_are_idempotent(tmp_path: Path) -> None:
    log: list[str] = []
    config = {"gateway": {"moduleTimers": {"first": 3600}, "storageDir": str(tmp_path)}}
    gateway = Gateway(config, lambda c, u: First(c["gateway"], log))
    gateway.start()
    gateway.start()
    gateway.stop()
    gateway.stop()
    assert log.count("start:first") == 1 and log.count("stop:first") == 1


def test_module_id_from_class_name() -> None:
    class WeatherConditions(Module):
        pass

    class Explicit(Module):
        id = "custom"

    assert WeatherConditions().id == "weatherConditions"
    assert Explicit.id == "custom"


def test_plain_class_with_id_works_as_module() -> None:
    ticks = threading.Event()

    class Plain:
        id = "plain"

        @on("tick")
        def tick(self) -> None:
            ticks.set()

    with Gateway({"gateway": {"moduleTimers": {"plain": 0.01}}}, lambda c, u: Plain()):
        assert ticks.wait(10)


def test_handler_exception_is_logged_counted_and_timer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Faulty(Module):
        @on("tick")
        def tick(self) -> None:
            raise RuntimeError("sensor exploded")

    with Gateway({"gateway": {"moduleTimers": {"faulty": 0.005}}}, lambda c, u: Faulty(c["gateway"])) as gateway:
        wait_for(lambda: gateway.health()["modules"]["faulty"]["handlerErrors"] >= 3)
        assert gateway.runev.is_set()
    assert "RuntimeError: sensor exploded" in caplog.text
    assert "Traceback" in caplog.text
    assert "sensor exploded" in gateway.health()["modules"]["faulty"]["lastError"]


def test_multi_timer_module() -> None:
    seen: dict[str, int] = {"fast": 0, "slow": 0}

    class SendReceive(Module):
        @on("tick", "fast")
        def fast(self) -> None:
            seen["fast"] += 1

        @on("tick", "slow")
        def slow(self) -> None:
            seen["slow"] += 1

    config = {"gateway": {"moduleTimers": {"sendReceive": {"fast": 0.005, "slow": 3600}}}}
    with Gateway(config, lambda c, u: SendReceive(c["gateway"])) as gateway:
        wait_for(lambda: seen["fast"] >= 5)
        assert seen["slow"] == 1
        assert {t.name: t.period for t in gateway.timers.values()} == {
            "sendReceive.fast": 0.005,
            "sendReceive.slow": 3600,
        }


def test_timer_defaults_fill_missing_periods() -> None:
    class Defaulted(Module):
        timer_defaults = {"scan": 3600}

        @on("tick", "scan")
        def scan(self) -> None:
            pass

    gateway = Gateway({"gateway": {"defaulted": {}}}, lambda c, u: Defaulted(c["gateway"]))
    assert gateway.timers[("defaulted", "scan")].period == 3600


def test_tick_without_period_is_a_load_error() -> None:
    class NoPeriod(Module):
        @on("tick", "read")
        def read(self) -> None:
            pass

    with pytest.raises(ConfigError, match=r"gateway\.moduleTimers\.noPeriod: .*\(.tick., .read.\) but no period"):
        Gateway({"gateway": {"noPeriod": {}}}, lambda c, u: NoPeriod(c["gateway"]), strict=True)


def test_timer_id_without_handler_suggests_nearest() -> None:
    class Reader(Module):
        @on("tick", "read")
        def read(self) -> None:
            pass

    with pytest.raises(ConfigError, match=r'gateway\.moduleTimers\.reader\.raed: .*did you mean "read"'):
        Gateway({"gateway": {"moduleTimers": {"reader": {"read": 1, "raed": 2}}}}, lambda c, u: Reader(c["gateway"]))


def test_unknown_module_id_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match=r'gateway\.moduleTimers\.frist: .*did you mean "first"'):
        Gateway({"gateway": {"moduleTimers": {"frist": 1}}}, lambda c, u: First(c["gateway"], []), strict=True)


def test_constructor_failure_names_the_module() -> None:
    def init(config: Any, uuclient: Any) -> Module:
        raise OSError("no such device")

    with pytest.raises(ModuleLoadError, match=r"module_init.*no such device"):
        Gateway({}, init)


def test_constructor_failure_inside_module_init_names_that_module() -> None:
    class Thermometer(Module):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            raise FileNotFoundError("/dev/i2c-1")

    with pytest.raises(ModuleLoadError, match=r"module 'thermometer' failed to initialise: FileNotFoundError"):
        Gateway({}, lambda c, u: [First({}, []), Thermometer({})])


def test_builtin_module_enabled_by_config_alone(tmp_path: Path) -> None:
    gateway = Gateway({"gateway": {"onewire": {}, "storageDir": str(tmp_path)}})
    assert [m.id for m in gateway.modules] == ["onewire"]
    assert gateway.modules[0].gateway is gateway


def test_third_party_module_discovered_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "acme_sensors-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sensors\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[uun_gateway.modules]\nacmeProbe = acme_probe:AcmeProbe\n")
    (tmp_path / "acme_probe.py").write_text(
        "from uun_gateway import Module, on\n"
        "class AcmeProbe(Module):\n"
        "    config_schema = {'type': 'object', 'properties': {'gain': {'type': 'integer'}}}\n"
        "    @on('tick')\n"
        "    def tick(self):\n"
        "        self.ticked = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    gateway = Gateway({"gateway": {"moduleTimers": {"acmeProbe": 3600}, "acmeProbe": {"gain": 2}}})
    assert [type(m).__name__ for m in gateway.modules] == ["AcmeProbe"]
    with pytest.raises(ConfigError, match=r"gateway\.acmeProbe\.gain"):
        Gateway({"gateway": {"acmeProbe": {"gain": "high"}}})
    with pytest.raises(ConfigError, match='did you mean "acmeProbe"'):
        Gateway({"gateway": {"moduleTimers": {"acmeProbes": 5}}})


def test_module_checks_its_own_section_at_construction() -> None:
    class Probe(Module):
        config_schema = {"type": "object", "properties": {"gain": {"type": "integer", "description": "an integer"}}}

    with pytest.raises(ConfigError, match=r'gateway\.probe\.gain: "x" has the wrong type; expected an integer'):
        Probe({"probe": {"gain": "x"}})
    assert Probe({"probe": {"gain": 3}})._c("gain") == 3


def test_duplicate_module_ids_are_refused() -> None:
    with pytest.raises(ModuleLoadError, match="two modules with the id 'first'"):
        Gateway({}, lambda c, u: [First({}, []), First({}, [])])


def test_stop_returns_within_bound_when_a_stop_handler_hangs(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    class Hanging(Module):
        @on("stop")
        def stop(self) -> None:
            release.wait(30)

    gateway = Gateway({"gateway": {"stopTimeout": 0.2, "hanging": {}}}, lambda c, u: Hanging(c["gateway"]))
    gateway.start()
    try:
        gateway.stop()
        assert "did not return in time" in caplog.text
    finally:
        release.set()
    wait_for(lambda: not any(t.name.startswith("stop:") for t in threading.enumerate()))


def test_stop_wakes_one_hour_timers_and_long_start_loops() -> None:
    loops = threading.Event()

    class Poller(Module):
        @on("start")
        def poll(self, evs: tuple[threading.Event, threading.Event]) -> None:
            runev, stopev = evs
            loops.set()
            while runev.is_set():
                stopev.wait(3600)

        @on("tick")
        def tick(self) -> None:
            pass

    gateway = Gateway({"gateway": {"moduleTimers": {"poller": 3600}}}, lambda c, u: Poller(c["gateway"]))
    gateway.start()
    assert loops.wait(10)
    gateway.stop()
    assert not any(t.is_alive() for t in gateway.timers.values())


def test_second_signal_during_stop_does_not_rerun_stop_handlers(tmp_path: Path) -> None:
    log: list[str] = []
    gateway: Gateway

    class Slow(Recorder):
        @on("stop")
        def stopped(self) -> None:
            gateway.signal_handler(signal.SIGTERM, None)  # returns: no exit, no second stop
            log.append("second signal ignored")
            super().stopped()

    config = {"gateway": {"moduleTimers": {"slow": 3600}, "storageDir": str(tmp_path)}}
    gateway = Gateway(config, lambda c, u: Slow(c["gateway"], log))
    gateway.start()
    with pytest.raises(SystemExit) as first:
        gateway.signal_handler(signal.SIGUSR1, None)
    assert first.value.code == 1
    assert log.count("stop:slow") == 1 and log.count("second signal ignored") == 1


def test_send_storage_keeps_failed_entries_in_order(tmp_path: Path) -> None:
    class Sender(Module):
        pass

    sender = Sender({"storageDir": str(tmp_path)})
    try:
        for n in range(10):
            sender.storage.append({"n": n})
        assert sender._send_storage(lambda batch: [d for d in batch if d["n"] % 3 == 0], batch_size=4) is False
        assert [d["n"] for d in sender.storage.data] == [0, 3, 4, 5, 6, 7, 8, 9]
        assert sender.stats.send_failures == 1
        assert sender._send_storage(lambda batch: [], batch_size=3) is True
        assert sender.storage.is_empty() and sender.stats.last_send_ok is not None
    finally:
        sender.close_storage()


def test_send_storage_raise_or_none_deletes_nothing(tmp_path: Path) -> None:
    sender = Module({"storageDir": str(tmp_path)})
    try:
        sender.storage.extend([1, 2, 3])

        def boom(batch: list[Any]) -> list[Any]:
            raise ConnectionError("offline")

        assert not sender._send_storage(boom)
        assert not sender._send_storage(lambda batch: None)
        assert sender.storage.data == [1, 2, 3]
        assert not sender._send_storage(lambda batch: [2])  # returns equal, not identical, items
        assert sender.storage.data == [2]
    finally:
        sender.close_storage()


def test_send_storage_does_not_hold_the_lock_during_the_send(tmp_path: Path) -> None:
    sender = Module({"storageDir": str(tmp_path)})
    try:
        sender.storage.append("old")
        appended = threading.Event()

        def slow_send(batch: list[Any]) -> list[Any]:
            if batch != ["old"]:
                return []

            def produce() -> None:
                sender.storage.append("new")
                appended.set()

            producer = threading.Thread(target=produce)
            producer.start()
            assert appended.wait(10), "a producer was blocked while the send ran"
            producer.join()
            return []

        assert sender._send_storage(slow_send, batch_size=1) is True
        assert sender.storage.is_empty()
    finally:
        sender.close_storage()


def test_backup_storage_config_path_and_limit(tmp_path: Path) -> None:
    class Limited(Module):
        pass

    config = {"moduleBackupStorage": {"limited": {"path": str(tmp_path / "l.db"), "limit": 2}}}
    module = Limited(config)
    try:
        module.storage.extend([1, 2, 3])
        assert module.storage.data == [2, 3] and module.storage.path == tmp_path / "l.db"
    finally:
        module.close_storage()


def test_config_view() -> None:
    class Viewer(Module):
        pass

    viewer = Viewer({"viewer": {"a": {"b": 5}}, "storageDir": "x"})
    assert viewer._c("a/b") == 5
    assert viewer._c("a/c", 7) == 7
    assert viewer._c("storageDir", scope="gateway") == "x"
    with pytest.raises(KeyError, match=r"gateway\.viewer\.a\.c"):
        viewer._c("a/c")


def test_stalled_names_a_stuck_handler() -> None:
    release = threading.Event()

    class Stuck(Module):
        @on("tick")
        def tick(self) -> None:
            release.wait(30)

    gateway = Gateway({"gateway": {"moduleTimers": {"stuck": 3600}}}, lambda c, u: Stuck(c["gateway"]))
    gateway.start()
    try:
        wait_for(lambda: gateway.stalled(handler_timeout=0.01) != [])
        assert "stuck" in gateway.stalled(handler_timeout=0.01)[0]
        assert gateway.stalled(handler_timeout=3600) == []
    finally:
        release.set()
        gateway.stop()
    assert gateway.stalled(handler_timeout=0.01) == []


def test_unusable_storage_locations_are_config_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"gateway\.storageDir: cannot create .*is not a directory"):
        Gateway(
            {"gateway": {"storageDir": str(blocker / "storage"), "moduleTimers": {"first": 1}}},
            lambda c, u: First(c["gateway"], []),
        )
    config = {"gateway": {"moduleBackupStorage": {"first": str(tmp_path)}, "moduleTimers": {"first": 1}}}
    with pytest.raises(ConfigError, match=r"gateway\.moduleBackupStorage\.first: .* is a directory"):
        Gateway(config, lambda c, u: First(c["gateway"], []))


def test_a_start_handler_may_stop_the_gateway(tmp_path: Path) -> None:
    """A long-running start handler that gives up (a fatal error) stops the gateway itself: the stop
    must complete (stop handlers run, storages closed), not die trying to join its own thread."""
    stopped = threading.Event()
    returned = threading.Event()

    class Fatal(Module):
        @on("start")
        def run(self, evs: tuple[threading.Event, threading.Event]) -> None:
            self.storage.append({"reading": 1})
            assert isinstance(self.gateway, Gateway)
            self.gateway.stop()
            returned.set()

        @on("stop")
        def stop(self) -> None:
            stopped.set()

    gateway = Gateway({"gateway": {"storageDir": str(tmp_path), "fatal": {}}}, lambda c, u: Fatal(c["gateway"]))
    module = gateway.modules[0]
    gateway.start()
    try:
        wait_for(lambda: not any(t.name.startswith("start:") for t in threading.enumerate()))
        assert returned.is_set() and stopped.is_set()
        assert gateway.health()["modules"]["fatal"]["handlerErrors"] == 0
        assert module._storage_obj is not None and module._storage_obj.closed
    finally:
        gateway.stop()
        module.close_storage()


def test_a_second_stop_returns_only_after_the_stop_handlers_finished(tmp_path: Path) -> None:
    """stop() from a second thread (a handler's fatal error, then the main thread's shutdown) must
    not return while the first stop still runs the stop handlers: the process would exit under them."""
    in_stop = threading.Event()
    release = threading.Event()
    finished = threading.Event()
    saw: list[bool] = []

    class Flushing(Module):
        @on("stop")
        def flush(self) -> None:
            in_stop.set()
            release.wait(10)
            finished.set()

    config = {"gateway": {"storageDir": str(tmp_path), "stopTimeout": 10, "flushing": {}}}
    gateway = Gateway(config, lambda c, u: Flushing(c["gateway"]))
    gateway.start()
    first = threading.Thread(target=gateway.stop, name="first-stop")

    def second_stop() -> None:
        gateway.stop()
        saw.append(finished.is_set())

    second = threading.Thread(target=second_stop, name="second-stop")
    try:
        first.start()
        assert in_stop.wait(10)
        second.start()
        second.join(0.5)  # with the bug it has returned by now; a correct stop() is still waiting
    finally:
        release.set()
        first.join()
        second.join()
    assert saw == [True]
