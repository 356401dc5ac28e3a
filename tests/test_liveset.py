"""The live module set: modules added, removed and restarted by a config change while the others keep
running; rollback of a failing new module; start/stop order by priority; the module catalogue."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import liveset_modules
from tests.conftest import wait_for
from tests.fake_uuapp import FakeUuApp
from tests.liveset_modules import JOURNAL, Ticker, Tuner
from tests.uuapp_modules import gateway_config
from uun_gateway import ConfigApplyError, ConfigError, Gateway, Module, cli, on

pytest_plugins = ["tests.uuapp_fixtures"]

GET_CONFIG = "gateway/getConfiguration"


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """The test modules installed as entry points (a dist-info on sys.path); the journal cleared."""
    (tmp_path / "site").mkdir()
    with liveset_modules.installed_in(tmp_path / "site") as site:
        yield site


@pytest.fixture
def running(tmp_path: Path, installed: Path) -> Iterator[Gateway]:
    """A started gateway running ``ticker`` (every 10 ms, label "a") and ``tuner``."""
    gateway = Gateway(base_config(tmp_path))
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.stop()


def base_config(tmp_path: Path, **gateway: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "storageDir": str(tmp_path / "storage"),
        "stopTimeout": 5,
        "moduleTimers": {"ticker": 0.01},
        "ticker": {"label": "a"},
        "tuner": {"gain": 1},
    }
    return {"gateway": {**section, **gateway}}


def module(gateway: Gateway, module_id: str) -> Any:
    found = [m for m in gateway.modules if m.id == module_id]
    assert found, f"module {module_id} is not loaded: {[m.id for m in gateway.modules]}"
    return found[0]


def threads_of(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def test_remote_config_enables_a_module_then_disabling_it_ends_its_timers_threads_and_keeps_its_data(
    fake: FakeUuApp, tmp_path: Path, installed: Path
) -> None:
    config = gateway_config(fake, tmp_path, moduleTimers={"config": 3600}, config={"uuCmd": GET_CONFIG})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with_ticker = {**config["gateway"], "moduleTimers": {"config": 3600, "ticker": 0.01}, "ticker": {"label": "a"}}
    gateway = Gateway(path)
    try:
        gateway.start()
        remote = module(gateway, "config")
        assert [m.id for m in gateway.modules] == ["config"]

        fake.gateway_config = with_ticker
        remote.update()
        assert remote.last_error is None and gateway.config_error is None
        ticker = module(gateway, "ticker")
        wait_for(lambda: ticker.ticks >= 3)
        assert ticker.gateway is gateway
        ticker_timer = gateway.timers[("ticker", None)]
        assert json.loads(path.read_text())["gateway"] == with_ticker  # saved like any remote config

        fake.gateway_config = config["gateway"]
        remote.update()
        assert [m.id for m in gateway.modules] == ["config"]
        assert ("ticker", None) not in gateway.timers
        assert ticker.start_thread_ended.is_set()
        assert not ticker_timer.is_alive()
        wait_for(lambda: not threads_of("start:Ticker"))
        assert ticker.stored_count() is None  # its storage is closed ...
        kept = ticker.storage
        stored = len(kept)
        kept.close()
        assert stored >= 3  # ... and its file kept with every entry
        assert f"stop {ticker.name}" in JOURNAL
        assert remote.applied == 2

        fake.gateway_config = with_ticker
        remote.update()
        again = module(gateway, "ticker")
        assert again is not ticker
        wait_for(lambda: (again.stored_count() or 0) > stored)  # the entries of before are still there
        assert [e.data["n"] for e in again.storage.oldest(3)] == [1, 2, 3]
    finally:
        gateway.stop()
    assert not threads_of("start:")


def test_a_changed_section_restarts_a_module_without_update_handlers_and_updates_the_others_in_place(
    running: Gateway, tmp_path: Path
) -> None:
    old, tuner = module(running, "ticker"), module(running, "tuner")
    old_timer = running.timers[("ticker", None)]
    assert isinstance(old, Ticker) and isinstance(tuner, Tuner)
    wait_for(lambda: old.ticks >= 2)
    assert running.reconfigure(base_config(tmp_path, ticker={"label": "b"}, tuner={"gain": 2}), save=False)

    new = module(running, "ticker")
    assert new is not old and module(running, "tuner") is tuner
    assert tuner.updates == 1 and tuner._config["tuner"] == {"gain": 2}
    assert old.start_thread_ended.is_set() and old.stored_count() is None and not old_timer.is_alive()
    assert JOURNAL.index(f"stop {old.name}") < JOURNAL.index(f"start {new.name}")  # stopped before the new one starts
    assert f"stop {tuner.name}" not in JOURNAL
    wait_for(lambda: new.ticks >= 2)
    labels = [entry.data["label"] for entry in new.storage.oldest(1000)]
    assert labels[0] == "a" and labels[-1] == "b"  # the old instance's entries are kept, in order
    assert running.timers[("ticker", None)].is_alive()


def test_a_new_module_that_fails_to_import_or_construct_changes_nothing(running: Gateway, tmp_path: Path) -> None:
    before = list(running.modules)
    config = running.config
    with pytest.raises(ConfigError, match=r"gateway\.broken: module 'broken' failed to initialise: OSError"):
        running.reconfigure(base_config(tmp_path, broken={}), save=False)
    assert running.config_error is not None and "broken" in running.config_error
    with pytest.raises(ConfigError, match=r"gateway\.missing: module 'missing' .* cannot be imported"):
        running.reconfigure(base_config(tmp_path, missing={}), save=False)
    with pytest.raises(ConfigError, match=r"gateway\.nothere: no module has the id 'nothere'"):
        running.reconfigure(base_config(tmp_path, nothere={}), save=False)
    assert running.modules == before and running.config == config
    assert not any(entry.startswith("stop ") for entry in JOURNAL)


def test_a_new_module_whose_start_fails_is_rolled_back_with_the_rest_of_the_config(
    running: Gateway, tmp_path: Path
) -> None:
    ticker, tuner = module(running, "ticker"), module(running, "tuner")
    wait_for(lambda: ticker.ticks >= 1)
    old_config = running.config
    failing = base_config(tmp_path, badStart={}, tuner={"gain": 9})
    del failing["gateway"]["ticker"], failing["gateway"]["moduleTimers"]["ticker"]
    with pytest.raises(ConfigApplyError, match=r"BadStart\.open_device failed to start; rolled back"):
        running.reconfigure(failing, save=False)

    assert running.config == old_config
    assert [m.id for m in running.modules] == ["ticker", "tuner"]
    assert module(running, "ticker") is ticker  # the stopped instance is started again, not rebuilt
    assert running.config_error is not None and "open_device" in running.config_error
    assert tuner._config["tuner"] == {"gain": 1} and tuner.updates == 2  # updated, then back
    assert [e for e in JOURNAL if "badStart" in e][-1].startswith("stop badStart#")
    ticks = ticker.ticks
    wait_for(lambda: ticker.ticks > ticks)  # ticking again
    assert running.timers[("ticker", None)].is_alive()


def test_a_module_given_by_module_init_is_never_restarted_or_removed_live(tmp_path: Path, installed: Path) -> None:
    class Fixed(Module):
        updates_in_place = False

        @on("tick")
        def tick(self) -> None:
            pass

    config = {"gateway": {"storageDir": str(tmp_path), "moduleTimers": {"fixed": 60}, "fixed": {"a": 1}}}
    gateway = Gateway(config, lambda c, u: Fixed(c["gateway"]), strict=True)
    with pytest.raises(ConfigError, match="was given by module_init, so it cannot be restarted while the gateway runs"):
        gateway.reconfigure({"gateway": {**config["gateway"], "fixed": {"a": 2}}}, save=False)
    with pytest.raises(ConfigError, match="was given by module_init, so it cannot be removed"):
        gateway.reconfigure({"gateway": {"storageDir": str(tmp_path)}}, save=False)
    assert gateway.config == config


def test_modules_start_by_priority_and_stop_in_reverse(
    tmp_path: Path, installed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = base_config(tmp_path, early={}, modulePriority={"tuner": -10})
    gateway = Gateway(config)
    assert [m.id for m in gateway.modules] == ["tuner", "early", "ticker"]  # -10, class -5, then 0
    with caplog.at_level(logging.INFO, logger="uun_gateway.gateway"):
        gateway.start()
        gateway.stop()
    assert "module start order (priority): tuner (-10), early (-5), ticker (0)" in caplog.text
    starts = [e.split()[1].split("#")[0] for e in JOURNAL if e.startswith("start ")]
    stops = [e.split()[1].split("#")[0] for e in JOURNAL if e.startswith("stop ")]
    assert starts == ["tuner", "early", "ticker"] and stops == ["ticker", "early", "tuner"]

    ties = Gateway(base_config(tmp_path, early={}, modulePriority={"early": 0}))
    assert [m.id for m in ties.modules] == ["ticker", "tuner", "early"]  # equal priorities: config order
    with pytest.raises(ConfigError, match=r"gateway\.modulePriority\.ticker"):
        Gateway(base_config(tmp_path, modulePriority={"ticker": "first"}))
    with pytest.raises(ConfigError, match=r"gateway\.modulePriority\.tickr: no module has the id 'tickr'"):
        Gateway(base_config(tmp_path, modulePriority={"tickr": 1}))


def test_a_module_added_live_takes_its_place_in_the_priority_order(running: Gateway, tmp_path: Path) -> None:
    running.reconfigure(base_config(tmp_path, early={}, modulePriority={"ticker": 5}), save=False)
    assert [m.id for m in running.modules] == ["early", "tuner", "ticker"]
    assert f"start {module(running, 'early').name}" in JOURNAL


def test_modules_lists_the_installed_modules_without_starting_any(
    tmp_path: Path, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(base_config(tmp_path)))
    assert cli.main(["modules", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ticker  [enabled]  (tests.liveset_modules:Ticker)" in out
    assert "    Counts ticks into its storage; a start thread lives until the module stops." in out
    assert "    config gateway.ticker: label\n" in out
    assert "    timers (gateway.moduleTimers.ticker): tick\n" in out
    assert "    socket commands: ticks" in out
    assert "early  [not enabled]" in out and "priority -5; a changed section restarts the module" in out
    assert "tuner  [enabled]" in out and "a changed section is applied in place" in out
    assert "onewire  [not enabled]" in out and "scan (default 60s), read (default 10s)" in out
    assert "missing  [not enabled]  (tests.no_such_module:Missing)\n    cannot be imported" in out
    assert JOURNAL == []  # nothing constructed, nothing started
    assert cli.main(["modules"]) == 0
    assert "ticker  (tests.liveset_modules:Ticker)" in capsys.readouterr().out


def test_a_remote_config_may_remove_a_module_that_brings_remote_configs_but_not_the_last_one(
    tmp_path: Path, installed: Path
) -> None:
    config = base_config(tmp_path, courier={}, herald={})
    gateway = Gateway(config)
    try:
        gateway.start()
        without_herald = {"gateway": {k: v for k, v in config["gateway"].items() if k != "herald"}}
        gateway.reconfigure(without_herald, save=False)
        assert "herald" not in [m.id for m in gateway.modules], "courier still brings remote configs"
        alone = {"gateway": {k: v for k, v in without_herald["gateway"].items() if k != "courier"}}
        with pytest.raises(ConfigError, match=r"gateway.moduleTimers.courier: a remote config cannot remove"):
            gateway.reconfigure(alone, save=False)
        assert "courier" in [m.id for m in gateway.modules]
        gateway.reconfigure(alone, save=False, remote=False)  # the config file may
        assert "courier" not in [m.id for m in gateway.modules]
    finally:
        gateway.stop()
