"""A fleet of gateway processes delivering readings over MQTT to one local mosquitto.

Usage (from the repository root)::

    python bench/fleet.py fleet --gateways 1,10,50 --rate 400 --seconds 20 [--qos 1] [--restart-broker]
    python bench/fleet.py drain --readings 100000 [--batch 500]

``fleet``: for each N, N gateway processes (each a real ``Gateway`` with a producer module and the
``mqtt`` module) append ``--rate`` readings/s each (one entry per reading, in transactions every
200 ms) for ``--seconds``; a subscriber in this process records every message. Printed per N:
messages/s and readings/s received, latency from append (the entry's ``created``) to the
subscriber p50/p99, RSS per gateway, the CPU a gateway process spends per 1,000 readings (all of
it, producer and fsyncs included) and that of its delivery thread alone, and readings lost
(produced but never received). ``--restart-broker`` restarts mosquitto (SIGTERM, persistence on,
the subscriber's session kept) in the middle of the run. ``--rate 0`` means: store
``--backlog`` readings first, then measure how fast one gateway drains them (capacity).

``drain``: 100k stored readings through mqtt (one gateway, QoS 1) and through ``upload`` to the
fake uuApp (``bench/upload.py``), side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from uun_gateway import Gateway, Module, on, parse_iso  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TICK = 0.2  # a producer appends its readings in one transaction per tick, as a read cycle does


# -- the gateway process ---------------------------------------------------------------------------


class Producer(Module):
    """Appends readings at a fixed rate (start handler), or holds a pre-stored backlog."""

    id = "sensor"
    rate = 0
    seconds = 0.0

    def __init__(self, config: Any = None, uuclient: Any = None) -> None:
        super().__init__(config, uuclient)
        self.produced = 0
        self.done = threading.Event()

    @on("start")
    def produce(self, evs: tuple[threading.Event, threading.Event]) -> None:
        runev, stopev = evs
        if not self.rate:
            self.done.set()
            return
        per_tick = max(1, round(self.rate * TICK))
        began = time.monotonic()
        n = 0
        while runev.is_set() and time.monotonic() - began < self.seconds:
            due = began + n * TICK
            if (wait := due - time.monotonic()) > 0:
                stopev.wait(wait)
            self.storage.extend({"t": 21.5, "seq": self.produced + i} for i in range(per_tick))
            self.produced += per_tick
            n += 1
        self.done.set()


def thread_cpu(name: str) -> float:
    """CPU seconds of this process's thread called ``name`` (from /proc)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> int:
    config = {
        "gateway": {
            "storageDir": args.storage,
            "mqtt": {
                "brokers": [{"host": "127.0.0.1", "port": args.port}],
                "clientId": args.id,
                "sources": {"sensor": {"qos": args.qos, "batchSize": args.batch}},
                "maxInflight": args.inflight,
                "healthPeriod": 5,
                "backoffInitial": 0.2,
                "backoffMax": 1,
            },
        }
    }
    producer_cls = type("P", (Producer,), {"id": "sensor", "rate": args.rate, "seconds": args.seconds})
    gateway = Gateway(config, lambda c, u: [producer_cls(c["gateway"], u)])
    producer = gateway.modules[0]
    if args.backlog:
        for start in range(0, args.backlog, 5000):
            producer.storage.extend({"t": 21.5, "seq": start + i} for i in range(min(5000, args.backlog - start)))
        producer.produced = args.backlog
    print("ready", flush=True)
    sys.stdin.readline()  # the bench starts every gateway at once
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    began = time.monotonic()
    gateway.start()
    deadline = began + args.seconds + 120
    while time.monotonic() < deadline and (not producer.done.is_set() or len(producer.storage) > 0):
        time.sleep(0.05)
    drained_s = time.monotonic() - began
    delivery_cpu = thread_cpu("start:Mqtt.serve")
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    left = len(producer.storage)
    rss = rss_kb()
    gateway.stop()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(
        json.dumps(
            {
                "produced": producer.produced,
                "left": left,
                "rss_kb": rss,
                "cpu_s": cpu,
                "delivery_cpu_s": delivery_cpu,
                "drain_s": drained_s,
            }
        ),
        flush=True,
    )
    return 0


# -- the broker and the subscriber -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {directory}/",
            "max_queued_messages 0",
            "max_inflight_messages 100",
            "log_dest none",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        (directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None


class Recorder:
    """Subscribes ``uun/+/data/#`` with a persistent session; records ids and latencies."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.messages = 0
        self.seen: set[tuple[str, int]] = set()
        self.duplicates = 0
        self.latencies: list[float] = []
        self.first: float | None = None
        self.last: float | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-bench-recorder", clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("uun/+/data/#", qos=1)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, 60)
        self.client.loop_start()

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        doc = json.loads(msg.payload)
        gateway = doc["gatewayId"]
        created: dict[str, float] = {}
        with self.lock:
            self.messages += 1
            self.first = self.first if self.first is not None else now
            self.last = now
            for entry in doc["entries"]:
                key = (gateway, entry["id"])
                if key in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(key)
                stamp = entry["created"]
                if stamp not in created:
                    created[stamp] = parse_iso(stamp).timestamp()
                self.latencies.append(now - created[stamp])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run_fleet(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        broker = Broker(Path(tmp))
        broker.start()
        recorder = Recorder(broker.port)
        procs = []
        try:
            for k in range(n):
                storage = Path(tmp) / f"gw{k}"
                cmd = [
                    sys.executable, __file__, "child", "--port", str(broker.port), "--id", f"gw{k}",
                    "--rate", str(args.rate), "--seconds", str(args.seconds), "--qos", str(args.qos),
                    "--batch", str(args.batch), "--inflight", str(args.inflight), "--storage", str(storage),
                    "--backlog", str(args.backlog if not args.rate else 0),
                ]  # fmt: skip
                if args.nice:
                    cmd = ["nice", "-n", str(args.nice), *cmd]
                procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for p in procs:
                assert p.stdout is not None
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError("a gateway did not start")
            began = time.time()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            if args.restart_broker:
                time.sleep(args.seconds / 2)
                broker.stop()
                time.sleep(1)
                broker.start()
            results = []
            for p in procs:
                assert p.stdout is not None
                results.append(json.loads(p.stdout.readline()))
                p.wait(60)
            produced = sum(r["produced"] for r in results)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with recorder.lock:
                    if len(recorder.seen) >= produced:
                        break
                time.sleep(0.1)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            recorder.close()
            broker.stop()
    with recorder.lock:
        received = len(recorder.seen)
        span = (recorder.last or began) - began
        latencies = list(recorder.latencies)
        messages, duplicates = recorder.messages, recorder.duplicates
    cpu = sum(r["cpu_s"] for r in results)
    delivery_cpu = sum(r["delivery_cpu_s"] for r in results)
    return {
        "gateways": n,
        "qos": args.qos,
        "rate_per_gateway": args.rate,
        "produced": produced,
        "received_distinct": received,
        "left_stored": sum(r["left"] for r in results),
        "lost": produced - received - sum(r["left"] for r in results),
        "duplicates": duplicates,
        "messages_per_s": round(messages / span, 1) if span > 0 else None,
        "readings_per_s": round(received / span) if span > 0 else None,
        "latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "rss_per_gateway_mb": round(statistics.mean(r["rss_kb"] for r in results) / 1024, 1),
        "cpu_ms_per_1000_readings": round(cpu / max(1, received) * 1e6, 1),
        "delivery_thread_cpu_ms_per_1000_readings": round(delivery_cpu / max(1, received) * 1e6, 1),
        "gateway_drain_readings_per_s": round(produced / max(r["drain_s"] for r in results)),
        "broker_restarted": bool(args.restart_broker),
        "gateway_nice": args.nice,
        "span_s": round(span, 2),
    }


def run_drain(args: argparse.Namespace) -> int:
    ns = argparse.Namespace(
        rate=0,
        seconds=0,
        qos=1,
        batch=args.batch,
        inflight=args.inflight,
        backlog=args.readings,
        restart_broker=False,
        nice=0,
    )
    mqtt_result = run_fleet(1, ns)
    mqtt_result["drain_readings_per_s"] = mqtt_result.pop("readings_per_s")
    print(json.dumps({"mqtt": mqtt_result}), flush=True)
    upload = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "upload.py"),
            "--readings",
            str(args.readings),
            "--batch",
            str(args.batch),
        ],
        capture_output=True,
        text=True,
    )
    print(json.dumps({"upload": json.loads(upload.stdout.splitlines()[0])}) if upload.stdout else upload.stderr)
    return 0 if mqtt_result["lost"] == 0 and upload.returncode == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    fleet = sub.add_parser("fleet")
    fleet.add_argument("--gateways", default="1,10,50")
    fleet.add_argument("--rate", type=int, default=400, help="readings/s per gateway (0: drain --backlog)")
    fleet.add_argument("--backlog", type=int, default=100_000)
    fleet.add_argument("--seconds", type=float, default=20.0)
    fleet.add_argument("--qos", type=int, choices=(0, 1), default=1)
    fleet.add_argument("--batch", type=int, default=500)
    fleet.add_argument("--inflight", type=int, default=20)
    fleet.add_argument("--restart-broker", action="store_true")
    fleet.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the gateways at this niceness, so that the broker and the subscriber (their own machines "
        "in a real fleet) are not starved by N gateways sharing this machine's cores",
    )
    drain = sub.add_parser("drain")
    drain.add_argument("--readings", type=int, default=100_000)
    drain.add_argument("--batch", type=int, default=500)
    drain.add_argument("--inflight", type=int, default=20)
    c = sub.add_parser("child")
    for name, kind in (("port", int), ("id", str), ("rate", int), ("seconds", float), ("qos", int), ("batch", int),
                       ("inflight", int), ("storage", str), ("backlog", int)):  # fmt: skip
        c.add_argument(f"--{name}", type=kind, required=True)
    args = parser.parse_args()
    if args.mode == "child":
        return child(args)
    if args.mode == "drain":
        return run_drain(args)
    status = 0
    for n in (int(x) for x in args.gateways.split(",")):
        result = run_fleet(n, args)
        print(json.dumps(result), flush=True)
        status |= result["lost"] != 0
    return status


if __name__ == "__main__":
    sys.exit(main())
