"""Packaging for uun-gateway.

The framework lives in ``uun_gateway/``; the built-in modules live in ``modules/``
and are installed as the package ``uun_gateway.modules``.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "uun_gateway" / "version.py").read_text(), re.M).group(1)  # type: ignore[union-attr]

module_packages = ["uun_gateway.modules" + p[len("modules") :] for p in find_packages(include=["modules", "modules.*"])]

setup(
    name="uun-gateway",
    version=VERSION,
    description="Thread-based framework for embedded IoT gateways (uun-iot compatible)",
    long_description=(HERE / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["uun_gateway", "uun_gateway.*"]) + module_packages,
    package_dir={"uun_gateway.modules": "modules"},
    package_data={"uun_gateway": ["py.typed"]},
    install_requires=[
        "requests>=2.25",
        "requests-toolbelt>=0.9",
        "pyownet>=0.10",
        "paho-mqtt>=2.0",
        "jsonschema>=4.0",
        "sdnotify>=0.3",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout>=2",
            "mypy>=1.8",
            "ruff>=0.4",
            "types-requests",
            "types-jsonschema",
            "setuptools>=70.1",  # builds the README's example offline (tests/test_readme_example.py)
        ],
    },
    entry_points={
        "console_scripts": ["uun-gateway = uun_gateway.cli:main"],
        "uun_gateway.modules": [
            "heartbeat = uun_gateway.modules.heartbeat:Heartbeat",
            "upload = uun_gateway.modules.upload:Upload",
            "config = uun_gateway.modules.remoteconfig:RemoteConfig",
            "socket = uun_gateway.modules.commandsocket:CommandSocket",
            "onewire = uun_gateway.modules.onewire.module:OneWire",
            "unisenza = uun_gateway.modules.unisenza.module:Unisenza",
            "mqtt = uun_gateway.modules.mqtt.module:Mqtt",
        ],
        "uun_gateway.commands": [
            "alarms = uun_gateway.alarms:register",
            "mqtt = uun_gateway.modules.mqtt.cli:register",
            "onewire = uun_gateway.modules.onewire.cli:register",
            "unisenza = uun_gateway.modules.unisenza.cli:register",
        ],
    },
)
