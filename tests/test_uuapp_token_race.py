"""The uuApp client: a late 401 for an old token threw away the renewed one."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.conftest import wait_for
from tests.fake_uuapp import FakeUuApp
from uun_gateway.uuapp import UuAppClient


def test_a_late_401_for_an_old_token_keeps_the_renewed_one(tmp_path: Path) -> None:
    with FakeUuApp(slow_delay=1.0) as fake:
        client = UuAppClient(fake.config(str(tmp_path / "token")))
        try:
            assert client.post("gateway/warmup", {})[1] is None  # token 1
            fake.fault("slow", "gateway/slow")
            results: list[object] = []
            slow = threading.Thread(target=lambda: results.append(client.post("gateway/slow", {})[1]))
            slow.start()
            wait_for(lambda: not fake._faults.get("gateway/slow"))  # the slow request holds token 1
            fake.expire_tokens()
            assert client.post("gateway/other", {})[1] is None  # 401, token 2, retried
            assert client.grants == 2
            slow.join()  # its 401 for token 1 comes now: token 2 is still good
            assert results == [None]
            assert client.grants == 2, "a 401 for token 1 made the client drop token 2 and grant a third"
        finally:
            client.close()
