"""The module set: one adapter per loaded module (Module or plain class), the host protocol the
modules see, and the import graph of the framework and the built-in modules."""

from __future__ import annotations

import ast
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from uun_gateway import ConfigError, Gateway, Module, ModuleHost, ModuleLoadError, on
from uun_gateway.loading import adapt

ROOT = Path(__file__).resolve().parent.parent


class Plain:
    """A uun-iot style module: no base class, its own ``_config``."""

    id = "plain"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config
        self.seen: list[Any] = []

    @on("update")
    def updated(self) -> None:
        self.seen.append(self._config["plain"]["x"])


def test_a_plain_class_gets_the_new_section_on_update() -> None:
    config = {"gateway": {"plain": {"x": 1}}}
    gateway = Gateway(config, lambda c, u: Plain(c["gateway"]))
    plain = gateway.modules[0]
    assert isinstance(plain, Plain)
    assert gateway.reconfigure({"gateway": {"plain": {"x": 2}}}, save=False)
    assert plain.seen == [2] and plain._config == {"plain": {"x": 2}}
    assert gateway.health()["modules"]["plain"]["stored"] is None


def test_an_object_without_an_id_is_refused_naming_it() -> None:
    with pytest.raises(ModuleLoadError, match="has no string 'id' attribute"):
        adapt(object())
    with pytest.raises(ModuleLoadError, match="has no string 'id' attribute"):
        Gateway({}, lambda c, u: [object()])


def test_stored_count_never_opens_a_storage(tmp_path: Path) -> None:
    class Counted(Module):
        pass

    module = Counted({"storageDir": str(tmp_path)})
    loaded = adapt(module)
    assert loaded.stored_count() is None and not any(tmp_path.iterdir())
    module.storage.append({"n": 1})
    assert loaded.stored_count() == 1
    loaded.close()
    assert loaded.stored_count() is None


class TinyHost:
    """The smallest host a module can run under: what :class:`ModuleHost` promises, nothing more."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {"gateway": {}}
        self.stopev = threading.Event()
        self.stopping = threading.Event()
        self.modules: Sequence[Any] = []
        self.services: Sequence[Any] = []
        self.updates: list[Mapping[str, Any]] = []

    def health(self) -> dict[str, Any]:
        return {"uptime": 1.0, "configError": None, "modules": {}}

    def publish(self, readings: Sequence[Any]) -> None:
        self.published = list(readings)

    def reconfigure(self, new_config: Mapping[str, Any], *, save: bool = True) -> bool:
        self.updates.append(new_config)
        return True

    def reload(self) -> str:
        return "no change"


def test_a_module_runs_under_any_module_host() -> None:
    class Waiter(Module):
        pass

    module = Waiter({})
    assert not module.stop_event.is_set()
    module.request_stop()
    assert module.stop_event.is_set()  # without a host: its own stop event

    host: ModuleHost = TinyHost()
    attached = Waiter({})
    attached.attach(host)
    assert attached.gateway is host and attached.stop_event is host.stopping


def test_the_gateway_is_a_module_host() -> None:
    host: ModuleHost = Gateway({})
    assert host.modules == []


def _imports(path: Path, package: str, known: Mapping[str, Path]) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (also under TYPE_CHECKING, in functions);
    ``from package import submodule`` counts as importing the submodule only."""
    found: set[str] = set()
    is_init = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts if is_init else parts[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & set(known)
            found.update(submodules or {target})
    return found


def _project_modules() -> dict[str, Path]:
    names: dict[str, Path] = {}
    for top, prefix in ((ROOT / "uun_gateway", "uun_gateway"), (ROOT / "modules", "uun_gateway.modules")):
        for path in top.rglob("*.py"):
            rel = path.relative_to(top).with_suffix("").parts
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            names[".".join((prefix, *parts))] = path
    return names


def test_the_import_graph_has_no_cycles() -> None:
    modules = _project_modules()
    graph = {
        name: {t for t in _imports(path, name, modules) if t in modules and t != name} for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_check_config_lists_schema_and_load_time_errors_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uun_gateway.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = {
        "gateway": {
            "storageDir": str(blocker / "storage"),
            "moduleTimers": {"onewire": {"scna": 60}, "hearbeat": 10},
            "onewire": {"servers": [{"host": "127.0.0.1", "port": "x"}]},
        }
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert "gateway.onewire.servers[0].port" in err  # the schema error
    assert "gateway.moduleTimers.onewire.scna: module 'onewire' has no @on('tick', 'scna') handler" in err
    assert "gateway.moduleTimers.hearbeat: no module has the id 'hearbeat' (did you mean \"heartbeat\"?)" in err
    assert "gateway.storageDir: cannot create" in err


def test_a_module_init_gateway_lists_schema_and_timer_errors_together() -> None:
    class Ticking(Module):
        config_schema = {"type": "object", "properties": {"n": {"type": "integer"}}}

        @on("tick", "fast")
        def fast(self) -> None:
            pass

    with pytest.raises(ConfigError) as info:
        Gateway(
            {"gateway": {"moduleTimers": {"ticking": {"fsat": 1}}, "ticking": {"n": "x"}}},
            lambda c, u: Ticking({}),
        )
    text = "\n".join(info.value.errors)
    assert "gateway.ticking.n" in text and "gateway.moduleTimers.ticking.fsat" in text


def test_a_config_without_uuapp_never_imports_the_uuapp_client(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys; from uun_gateway import Gateway; "
        f"Gateway({{'gateway': {{'onewire': {{}}, 'storageDir': {str(tmp_path)!r}}}}}); "
        "print('requests' in sys.modules, 'uun_gateway.uuapp' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "False"]
