"""README.rst's "Writing a module" example, run from the README's own text: the module file, its
pyproject.toml (entry point), its config, ``pip install -e .`` and ``uun-gateway run``, and the
library-mode program, each until a reading is stored and then SIGTERM (exit 0)."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for

README = Path(__file__).resolve().parent.parent / "README.rst"
SECTION = "Writing a module"
# `uun-gateway` is the console script of uun_gateway.cli:main; the throwaway venv has no scripts
CLI = "import sys; from uun_gateway.cli import main; sys.exit(main(sys.argv[1:]))"
FILES = ("weather_conditions.py", "pyproject.toml", "config.json", "run_weather.py")


def readme_section(title: str) -> str:
    """The text of the README section ``title`` (up to the next section heading)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(title)}\n-+\n(.*?)(?=^[^\n]+\n-{{3,}}\n)", text, re.M | re.S)
    assert match, f"README.rst has no section {title!r}"
    return match.group(1)


def code_blocks(section: str) -> Iterator[tuple[str, str]]:
    """``(caption, code)`` of every ``.. code-block::`` in ``section``; the caption is the paragraph
    before the block (e.g. ````pyproject.toml``; the entry point's name ...:``)."""
    lines = section.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith(".. code-block::"):
            continue
        before = "\n".join(lines[:i]).rstrip().split("\n\n")
        caption = before[-1] if before else ""
        body: list[str] = []
        for follow in lines[i + 1 :]:
            if follow and not follow.startswith("    "):
                break
            body.append(follow[4:])
        yield caption, "\n".join(body).strip("\n") + "\n"


def readme_files() -> dict[str, str]:
    """The files of the example, by name, as the README gives them."""
    files: dict[str, str] = {}
    for caption, code in code_blocks(readme_section(SECTION)):
        named = [name for name in FILES if f"``{name}``" in caption]
        if len(named) == 1:
            files[named[0]] = code
    assert set(files) == set(FILES), f"README example files found: {sorted(files)}"
    return files


def stored_readings(path: Path) -> list[dict[str, object]]:
    """The entries of a storage file, read-only (the gateway may be creating or writing it)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT payload FROM entries ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()
    return [json.loads(payload) for (payload,) in rows]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The README's example files in ``tmp_path/weather``, ``pip install -e``'d into a throwaway
    virtualenv that sees this one's packages (uun-gateway, setuptools), so this one is unchanged."""
    weather = tmp_path / "weather"
    weather.mkdir()
    for name, code in readme_files().items():
        (weather / name).write_text(code, encoding="utf-8")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # addsitedir, not a plain path line: this venv's editable install of uun-gateway is itself a .pth
    Path(site_packages, "outer-venv.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n"
    )
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet"]
    install = subprocess.run(
        [*pip, "--no-build-isolation", "--no-deps", "--no-index", "-e", str(weather)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return weather


def run_until_stored(argv: list[str], cwd: Path) -> str:
    """Run ``argv`` in ``cwd`` under a bare environment until a reading is stored, SIGTERM it and
    return its output; the exit status must be 0."""
    log = cwd / "output.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env={"PATH": "/usr/bin:/bin"}, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(
                lambda: stored_readings(cwd / "storage" / "weatherConditions.sqlite") or proc.poll() is not None, 60
            )
            assert proc.poll() is None, log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return log.read_text()


def test_the_readme_commands_install_and_run_the_module(project: Path) -> None:
    commands = next(code for caption, code in code_blocks(readme_section(SECTION)) if "pip install -e ." in code)
    assert "uun-gateway run -c config.json" in commands
    python = str(project.parent / "venv" / "bin" / "python")
    output = run_until_stored([python, "-c", CLI, "run", "-c", "config.json"], project)
    assert "loaded 1 module(s): weatherConditions" in output, output
    assert "SIGTERM received" in output, output
    (reading, *_) = stored_readings(project / "storage" / "weatherConditions.sqlite")
    assert reading["sensor"] == "garden"


def check_config(project: Path, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    (project / "check.json").write_text(json.dumps(config))
    return subprocess.run(
        [str(project.parent / "venv" / "bin" / "python"), "-c", CLI, "check-config", "check.json"],
        cwd=project,
        capture_output=True,
        text=True,
    )


def test_the_readme_config_schema_and_timer_defaults_apply(project: Path) -> None:
    config = json.loads((project / "config.json").read_text())
    del config["gateway"]["moduleTimers"]
    check = check_config(project, config)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "timers: weatherConditions.measure every 10s" in check.stdout, check.stdout
    config["gateway"]["weatherConditions"]["offset"] = "warm"
    check = check_config(project, config)
    assert check.returncode == 78, check.stdout + check.stderr
    assert "gateway.weatherConditions.offset" in check.stderr, check.stderr


def test_the_readme_library_mode_program_runs_until_sigterm_with_logging(project: Path) -> None:
    python = str(project.parent / "venv" / "bin" / "python")
    output = run_until_stored([python, "run_weather.py"], project)
    assert "INFO    uun_gateway.modules.weatherConditions: stored {" in output, output
    assert "gateway stopped" in output, output
