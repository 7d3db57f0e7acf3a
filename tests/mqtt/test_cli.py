"""`dance mqtt-proxy` as a process: a paho-mqtt device publishes through it to Mosquitto, the
metrics count refusals by reason, SIGTERM stops it; bad options exit 2."""

from __future__ import annotations

import json
import signal
import urllib.request

import pytest

from dance.testkit.servers import free_port
from tests.mqtt.conftest import Broker, wait_for
from tests.mqtt.test_broker import V5, device, monitor
from tests.processes import dance_process
from tests.tls.common import DEVICE, World

pytestmark = pytest.mark.integration


def test_mqtt_proxy_process(world: World, broker: Broker) -> None:
    metrics = free_port()
    proc = dance_process(
        "mqtt-proxy", "--listen", "127.0.0.1:0", "--broker", f"127.0.0.1:{broker.proc.port}",
        "--cert", world.server.cert, "--key", world.server.key,
        "--allow", "._device.example.test", "--server", f"{world.dns[0]}:{world.dns[1]}",
        "--trust-anchor", world.anchor_file, "--max-packet", "1024",
        "--metrics", f"127.0.0.1:{metrics}", "--json",
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        where = json.loads(proc.stdout.readline())["listening"]
        port = int(where.rsplit(":", 1)[1])
        mon = monitor(broker, V5)
        dev = device(world, V5).start(port)
        try:
            assert dev.connected.wait(15) and not dev.rc.is_failure
            dev.publish(f"devices/{DEVICE}/cli", b"via the command")
            assert wait_for(lambda: (f"devices/{DEVICE}/cli", b"via the command") in mon.messages)
            dev.publish(f"devices/{DEVICE}/big", b"x" * 2000)  # over --max-packet: closed
            assert dev.gone.wait(15)
        finally:
            dev.stop()
            mon.stop()
        url = f"http://127.0.0.1:{metrics}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "packet-too-large" in text, text
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "extra",
    [["--max-packet", "0"], ["--connect-timeout", "0"], ["--broker", "nowhere"]],
    ids=["max-packet", "connect-timeout", "broker"],
)
def test_bad_options_exit_2(world: World, extra: list[str]) -> None:
    args = [
        "mqtt-proxy",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        "127.0.0.1:1883",
        "--cert",
        world.server.cert,
        "--key",
        world.server.key,
        "--allow",
        ".example.test",
    ]
    for i in range(0, len(extra), 2):
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i : i + 2]
    proc = dance_process(*args)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err
