"""pytest fixtures of the Unisenza double; import them into a test module to use them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unisenza_fakes import CertFiles, CloudEnv, FakeCloud, make_test_ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A throw-away test CA and server certificate for 127.0.0.1."""
    return make_test_ca(tmp_path_factory.mktemp("unisenza-ca"))


@pytest.fixture(scope="module")
def shared_env(ca: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudEnv]:
    """mosquitto + the fake cloud process, shared by the tests of one module."""
    env = CloudEnv(ca, tmp_path_factory.mktemp("unisenza-cloud"))
    yield env
    env.close()


@pytest.fixture
def cloud(shared_env: CloudEnv) -> FakeCloud:
    """The shared fake cloud, reset to its initial state for this test."""
    shared_env.cloud.control("reset")
    return shared_env.cloud
