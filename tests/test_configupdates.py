"""Config updates (:mod:`uun_gateway.configupdates`): all or nothing, re-timed timers, the save,
the roll-back of a change that fails half-way, and the saved remote update used at the next start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from uun_gateway import ConfigApplyError, ConfigError, Gateway, Module, on


class First(Module):
    @on("tick")
    def tick(self) -> None:
        pass


class Tuned(Module):
    updates: list[dict[str, Any]]

    @on("tick")
    def tick(self) -> None:
        pass

    @on("update")
    def updated(self) -> None:
        self.updates.append(dict(self._config))
        if self._c("fail", False):
            raise RuntimeError("cannot apply")


def _tuned_gateway(tmp_path: Path) -> tuple[Gateway, Path, Tuned]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"gateway": {"moduleTimers": {"tuned": 3600}, "tuned": {}}}))
    path.chmod(0o640)
    module = Tuned({})
    module.updates = []
    return Gateway(path, lambda c, u: module), path, module


def test_reconfigure_applies_retimes_and_persists(tmp_path: Path) -> None:
    gateway, path, module = _tuned_gateway(tmp_path)
    with gateway:
        new = {"gateway": {"moduleTimers": {"tuned": 0.01}, "tuned": {"x": 1}}}
        assert gateway.reconfigure(new) is True
        assert gateway.timers[("tuned", None)].period == 0.01
        wait_for(lambda: gateway.timers[("tuned", None)].runs >= 3)
        assert module._c("x") == 1 and len(module.updates) == 1
        assert gateway.reconfigure(new) is False
    assert json.loads(path.read_text()) == new
    assert path.stat().st_mode & 0o777 == 0o640


def test_reconfigure_invalid_changes_nothing(tmp_path: Path) -> None:
    gateway, path, module = _tuned_gateway(tmp_path)
    before = path.read_text()
    with gateway:
        with pytest.raises(ConfigError, match=r"gateway\.moduleTimers\.tuned: -5"):
            gateway.reconfigure({"gateway": {"moduleTimers": {"tuned": -5}}})
        assert gateway.timers[("tuned", None)].period == 3600
        assert module.updates == [] and gateway.config_error is not None
    assert path.read_text() == before


def test_reconfigure_rolls_back_when_applying_fails(tmp_path: Path) -> None:
    gateway, path, module = _tuned_gateway(tmp_path)
    before = path.read_text()
    with gateway:
        with pytest.raises(ConfigError, match="rolled back"):
            gateway.reconfigure({"gateway": {"moduleTimers": {"tuned": 5}, "tuned": {"fail": True}}})
        assert gateway.timers[("tuned", None)].period == 3600
        assert module._c("fail", False) is False
        assert "rolled back" not in (gateway.config_error or "") and gateway.config_error
    assert path.read_text() == before


def test_under_systemd_a_remote_update_is_saved_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    gateway, path, module = _tuned_gateway(tmp_path)
    local = path.read_text()
    with gateway:
        gateway.reconfigure({"gateway": {"moduleTimers": {"tuned": 7}, "tuned": {"x": 2}}})
    assert path.read_text() == local, "the config file (read-only /etc under systemd) is not written"
    saved = state / "remote-config.json"
    assert json.loads(saved.read_text()) == {"gateway": {"moduleTimers": {"tuned": 7}, "tuned": {"x": 2}}}
    assert saved.stat().st_mode & 0o777 == 0o600

    restarted, _, module = _tuned_gateway(tmp_path)  # the next start uses the saved update
    assert restarted.timers[("tuned", None)].period == 7 and module._c("x") == 2

    saved.write_text(json.dumps({"gateway": {"moduleTimers": {"tuned": -1}}}))
    ignored, _, module = _tuned_gateway(tmp_path)
    assert ignored.timers[("tuned", None)].period == 3600
    assert "ignoring the saved remote config" in caplog.text and "gateway.moduleTimers.tuned" in caplog.text


class Picky(Module):
    """Refuses a section with ``"refuse": true`` when it is handed one (as a module could fail
    half-way through an update)."""

    @on("tick")
    def tick(self) -> None:
        pass

    def replace_config(self, gateway_section: Any) -> None:
        if gateway_section.get("picky", {}).get("refuse"):
            raise OverflowError("cannot take this one")
        super().replace_config(gateway_section)


def test_a_config_that_fails_half_way_through_applying_is_rolled_back_entirely(tmp_path: Path) -> None:
    config = {"gateway": {"moduleTimers": {"first": 60, "picky": 60}, "storageDir": str(tmp_path)}}
    gateway = Gateway(config, lambda c, u: [First(c["gateway"]), Picky(c["gateway"])])
    first, picky = gateway.modules
    old = json.loads(json.dumps(gateway.config))
    new = {"gateway": {**old["gateway"], "moduleTimers": {"first": 5, "picky": 7}, "picky": {"refuse": True}}}
    with pytest.raises(ConfigApplyError, match="OverflowError: cannot take this one"):
        gateway.reconfigure(new, save=False)
    assert gateway.config == old
    assert first._config == old["gateway"] and picky._config == old["gateway"]  # the first one was put back
    assert gateway.timers[("first", None)].period == 60 and gateway.timers[("picky", None)].period == 60
    assert gateway.config_error is not None and "OverflowError" in gateway.config_error
    gateway.reconfigure({"gateway": {**old["gateway"], "moduleTimers": {"first": 5, "picky": 7}}}, save=False)
    assert gateway.config_error is None and gateway.timers[("picky", None)].period == 7


def test_a_timer_that_cannot_take_its_new_period_rolls_the_update_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uun_gateway.timers import RepeatTimer

    original: property = RepeatTimer.__dict__["period"]

    def refuse_42(timer: RepeatTimer, value: float) -> None:
        if value == 42:
            raise OverflowError("timestamp out of range")
        assert original.fset is not None
        original.fset(timer, value)

    monkeypatch.setattr(RepeatTimer, "period", property(original.fget, refuse_42))
    config = {"gateway": {"moduleTimers": {"first": 60, "picky": 60}, "storageDir": str(tmp_path)}}
    gateway = Gateway(config, lambda c, u: [First(c["gateway"]), Picky(c["gateway"])])
    with pytest.raises(ConfigApplyError):
        gateway.reconfigure({"gateway": {**config["gateway"], "moduleTimers": {"first": 5, "picky": 42}}}, save=False)
    assert gateway.timers[("first", None)].period == 60 and gateway.config["gateway"]["moduleTimers"]["first"] == 60
