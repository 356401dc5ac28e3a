"""The upload module against the fake uuApp on 127.0.0.1: batches, ids, partial acceptance, faults,
backoff, binary entries and an outage with every reading delivered in order."""

from __future__ import annotations

import json
import logging
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

from tests.conftest import wait_for
from tests.fake_uuapp import FakeUuApp
from tests.uuapp_modules import UPLOAD, delivered, running, upload_config

pytest_plugins = ["tests.uuapp_fixtures"]


def test_backlog_goes_out_in_batches_with_stable_ids(fake: FakeUuApp, tmp_path: Path) -> None:
    with running(upload_config(fake, tmp_path), start=False) as (gateway, sensor, _):
        ids = sensor.storage.extend([{"n": i} for i in range(250)])
        gateway.start()
        wait_for(lambda: len(sensor.storage) == 0)
        uid = sensor.storage.uid
    # batches in flight together may arrive in any order; their ids give it
    records = sorted(fake.for_cmd(UPLOAD), key=lambda r: int(r.dto["data"][0]["id"]))
    assert [len(r.dto["data"]) for r in records] == [100, 100, 50]
    assert sorted(delivered(fake)) == ids
    first = records[0].dto
    assert first["source"] == "sensor" and first["storageId"] == uid
    assert first["data"][0]["data"] == {"n": 0}
    assert first["data"][0]["created"].endswith("Z")
    assert sensor.stats.last_send_ok is not None


def test_partial_acceptance_keeps_the_rest_in_order(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.reject_ids = {3, 5}
    config = upload_config(fake, tmp_path, backoffInitial=0.01, backoffMax=0.02)
    with running(config, start=False) as (gateway, sensor, upload):
        ids = sensor.storage.extend([{"n": i} for i in range(8)])
        assert ids == list(range(1, 9))
        upload.send_batch("sensor")
        assert [e.id for e in sensor.storage.oldest(10)] == [3, 5]
        assert upload.state["sensor"].failures == 1
        fake.reject_ids = set()
        gateway.start()
        wait_for(lambda: len(sensor.storage) == 0)
    records = fake.for_cmd(UPLOAD)
    assert [[i["id"] for i in r.dto["data"]] for r in records] == [ids, [3, 5]]


def test_failed_list_in_answer_is_honoured(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.upload_handler = lambda dto: (200, {"failed": [dto["data"][-1]["id"]]})
    with running(upload_config(fake, tmp_path), start=False) as (_, sensor, upload):
        sensor.storage.extend([{"n": i} for i in range(4)])
        assert upload.send_batch("sensor") is False
        assert [e.id for e in sensor.storage.oldest(10)] == [4]


def test_errors_keep_the_batch_and_back_off_exponentially(fake: FakeUuApp, tmp_path: Path) -> None:
    config = upload_config(fake, tmp_path, period=0.01, backoffInitial=0.05, backoffMax=0.2)
    fake.fault("5xx", UPLOAD, count=5)
    with running(config, start=False) as (gateway, sensor, upload):
        assert [upload.backoff(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.2, 0.2]
        sensor.storage.extend([{"n": i} for i in range(10)])
        gateway.start()
        # the success is recorded just after the ack empties the storage
        wait_for(lambda: len(sensor.storage) == 0 and upload.state["sensor"].failures == 0)
    times = [r.at for r in fake.for_cmd(UPLOAD)]
    assert len(times) == 6
    gaps = [b - a for a, b in pairwise(times)]
    for gap, expected in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=True):
        assert gap >= expected * 0.9, gaps
    assert delivered(fake) == list(range(1, 11))


def test_malformed_answer_timeout_and_reset_lose_nothing(tmp_path: Path, caplog: Any) -> None:
    with FakeUuApp(slow_delay=2.0) as fake:
        config = upload_config(fake, tmp_path, backoffInitial=0.01, backoffMax=0.02)
        config["uuApp"]["timeout"] = 0.3
        for kind in ("malformed", "slow", "reset", "lost"):
            fake.fault(kind, UPLOAD)
        with caplog.at_level(logging.WARNING), running(config, start=False) as (gateway, sensor, upload):
            ids = sensor.storage.extend([{"n": i} for i in range(30)])
            gateway.start()
            wait_for(lambda: len(sensor.storage) == 0)
            assert upload.state["sensor"].requests >= 5
        counts = Counter(delivered(fake))
        assert sorted(counts) == ids
        # malformed, slow and lost were processed but not answered: each may cost one resend
        assert max(counts.values()) <= 4
        warnings = [r for r in caplog.records if "upload of sensor: failed" in r.getMessage()]
        assert len(warnings) == 1


def test_binary_entries_go_multipart_in_order(fake: FakeUuApp, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 10
    with running(upload_config(fake, tmp_path), start=False) as (gateway, sensor, _):
        sensor.storage.extend([{"n": 0}, {"n": 1}])
        sensor.storage.append(blob)
        sensor.storage.append({"n": 3})
        gateway.start()
        wait_for(lambda: len(sensor.storage) == 0)
        uid = sensor.storage.uid
    records = fake.for_cmd(UPLOAD)
    assert len(records) == 3
    assert [i["id"] for i in records[0].dto["data"]] == [1, 2]
    assert records[1].files == {"data": blob}
    assert records[1].dto["id"] == "3" and records[1].dto["storageId"] == uid
    assert [i["id"] for i in records[2].dto["data"]] == [4]


def test_without_uuapp_data_is_kept_and_warned_once(tmp_path: Path, caplog: Any) -> None:
    config = {
        "gateway": {
            "storageDir": str(tmp_path),
            "moduleTimers": {"sensor": 3600, "upload": 3600},
            "upload": {"sources": {"sensor": {"uuCmd": UPLOAD}}},
        }
    }
    with caplog.at_level(logging.WARNING), running(config, start=False) as (_, sensor, upload):
        sensor.storage.append({"n": 0})
        upload.drain()
        upload.drain()
        assert upload.send_batch("sensor") is False
        assert len(sensor.storage) == 1
    assert [r.getMessage() for r in caplog.records] == ["no uuApp configured; stored entries are kept, not uploaded"]


def test_unknown_source_is_skipped_and_warned_once(fake: FakeUuApp, tmp_path: Path, caplog: Any) -> None:
    config = upload_config(fake, tmp_path)
    config["gateway"]["upload"]["sources"] = {"ghost": {"uuCmd": UPLOAD}, "sensor": {"uuCmd": UPLOAD}}
    with caplog.at_level(logging.WARNING), running(config, start=False) as (_, sensor, upload):
        sensor.storage.append({"n": 0})
        upload.drain()
        upload.drain()
        assert len(sensor.storage) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "upload source 'ghost' is not a loaded module with a storage; skipped"
    ]


def test_outage_every_reading_arrives_in_order(tmp_path: Path) -> None:
    fake = FakeUuApp().start()
    try:
        # pipeline 1: one batch in flight, so arrival order is the storage order too
        config = upload_config(fake, tmp_path, period=0.02, backoffInitial=0.02, backoffMax=0.1, pipeline=1)
        config["gateway"]["moduleTimers"]["sensor"] = 0.005
        with running(config) as (_, sensor, upload):
            sensor.producing.set()
            wait_for(lambda: len(delivered(fake)) >= 20)
            fake.stop()
            mark = len(sensor.appended)
            wait_for(lambda: len(sensor.appended) >= mark + 100 and upload.state["sensor"].failures >= 3)
            assert len(sensor.storage) >= 100
            fake.fault("lost", UPLOAD)  # the first answer after the outage is lost: that batch comes twice
            fake.start()
            wait_for(lambda: len(sensor.appended) >= mark + 150)
            sensor.producing.clear()
            wait_for(lambda: len(sensor.storage) == 0)
            appended = list(sensor.appended)
    finally:
        fake.stop()
    arrivals = delivered(fake)
    counts = Counter(arrivals)
    assert sorted(counts) == appended
    assert max(counts.values()) == 2
    first_seen = list(dict.fromkeys(arrivals))
    assert first_seen == appended


CRASH_CHILD = """
import json, sys
from tests.uuapp_modules import Sensor
from uun_gateway import Gateway, on
from uun_gateway.modules.upload import Upload

class Reporting(Sensor):
    id = "sensor"

    @on("tick")
    def measure(self):
        entry_id = self.storage.append({"n": len(self.appended)})
        self.appended.append(entry_id)
        sys.stdout.write(f"{entry_id}\\n")
        sys.stdout.flush()

gateway = Gateway(json.loads(sys.argv[1]), lambda c, u: [Reporting(c["gateway"], u), Upload(c["gateway"], u)])
gateway.modules[0].producing.set()
gateway.start()
gateway.stopev.wait()
"""


def test_sigkill_during_uploads_loses_no_appended_reading(fake: FakeUuApp, tmp_path: Path) -> None:
    import random
    import subprocess
    import sys

    config = upload_config(fake, tmp_path, period=0.01, backoffInitial=0.01, backoffMax=0.05)
    config["gateway"]["moduleTimers"]["sensor"] = 0.002
    config["gateway"]["upload"]["sources"]["sensor"]["batchSize"] = 20
    rng = random.Random(7)
    acknowledged: list[int] = []
    root = Path(__file__).resolve().parent.parent
    for run in range(25):
        out = tmp_path / f"run{run}.out"
        before = len(fake.for_cmd(UPLOAD))
        with out.open("w") as stdout:
            child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, json.dumps(config)], cwd=root, stdout=stdout)
            try:
                wait_for(lambda: child.poll() is not None or len(fake.for_cmd(UPLOAD)) >= before + 2, 30)  # noqa: B023
                assert child.poll() is None, "the gateway process died"
                fake.wait_for(lambda: False, timeout=rng.uniform(0.0, 0.2))  # kill at a random moment
            finally:
                child.kill()
                child.wait()
        lines = out.read_text().split("\n")
        acknowledged += [int(line) for line in lines[:-1]]  # the last piece may be torn
    assert len(acknowledged) > 200
    with running(upload_config(fake, tmp_path)) as (_, sensor, _upload):
        wait_for(lambda: len(sensor.storage) == 0)
    arrived = set(delivered(fake))
    missing = sorted(set(acknowledged) - arrived)
    assert not missing, f"{len(missing)} acknowledged readings never arrived: {missing[:10]}"
    assert len({r.dto["storageId"] for r in fake.for_cmd(UPLOAD)}) == 1
