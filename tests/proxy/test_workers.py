"""The pure parts of ``[server] workers``: the key, its warning, port reservation, the ready pipe, log fields.

The supervisor itself runs real processes: tests/integration/test_workers.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path

import pytest

from spamgate.proxy.cli import main
from spamgate.proxy.config import ConfigError, parse_config
from spamgate.proxy.logs import SESSION, JsonFormatter, TextFormatter
from spamgate.proxy.workers import Seat, reserve_ports

MINIMAL = {"listen": [{"port": 0}], "backend": {"url": "maildir:/tmp/x"}}


def test_workers_defaults_to_one_and_takes_a_positive_int() -> None:
    assert parse_config(MINIMAL).server.workers == 1
    assert parse_config({**MINIMAL, "server": {"workers": 4}}).server.workers == 4


@pytest.mark.parametrize(("value", "words"), [(0, "greater than or equal to 1"), ("2", "integer")])
def test_bad_worker_counts_name_the_key(value: object, words: str) -> None:
    with pytest.raises(ConfigError, match=rf"^t.toml: server.workers: .*{words}"):
        parse_config({**MINIMAL, "server": {"workers": value}}, "t.toml")


def test_memory_state_with_workers_is_warned_about_and_redis_is_not() -> None:
    warned = [w for w in parse_config({**MINIMAL, "server": {"workers": 2}}).warnings() if "server.workers" in w]
    assert len(warned) == 1 and 'backend = "redis"' in warned[0] and "per worker" in warned[0]
    redis = {**MINIMAL, "server": {"workers": 2}, "state": {"backend": "redis", "url": "redis://127.0.0.1:1"}}
    assert not [w for w in parse_config(redis).warnings() if "server.workers" in w]
    assert not [w for w in parse_config(MINIMAL).warnings() if "server.workers" in w]


def test_check_config_prints_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[server]\nworkers = 2\n[[listen]]\nport = 0\n[backend]\nurl = "maildir:/tmp/x"\n'
                 "[dns]\nreverse_lookup = false\n")
    assert main(["check-config", str(f)]) == 0
    assert 'spamgate: warning: server.workers = 2 with [state] backend = "memory"' in capsys.readouterr().err


def test_port_zero_becomes_one_port_every_worker_can_bind_and_only_listeners_answer() -> None:
    cfg = parse_config({**MINIMAL, "listen": [{"port": 0, "name": "a"}, {"port": 0, "name": "b"}]})
    ports, held = reserve_ports(cfg.listen)
    workers: list[socket.socket] = []
    try:
        assert set(ports) == {"a", "b"} and ports["a"] != ports["b"] and all(ports.values())
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", ports["a"])) != 0, "the placeholder never listens"
        for _ in range(2):
            w = socket.socket()
            workers.append(w)
            w.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            w.bind(("127.0.0.1", ports["a"]))
            w.listen()
        with socket.create_connection(("127.0.0.1", ports["a"]), timeout=5):
            pass
    finally:
        for s in held + workers:
            s.close()


def test_a_port_taken_without_reuseport_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = parse_config({**MINIMAL, "listen": [{"port": taken.getsockname()[1]}]})
        with pytest.raises(OSError):
            reserve_ports(cfg.listen)


def test_the_seat_says_ready_once_through_its_pipe() -> None:
    r, w = os.pipe()
    seat = Seat.from_args(1, json.dumps({"mx_0": 2525}), w)
    assert seat.ports == {"mx_0": 2525} and not seat.serves_http and Seat(0, {}).serves_http
    seat.ready()
    seat.ready()  # the second call is a no-op: the fd is closed and forgotten
    assert os.read(r, 64) == b"ready\n" and os.read(r, 64) == b""
    os.close(r)


def _record() -> logging.LogRecord:
    return logging.getLogger("spamgate.t").makeRecord("spamgate.t", logging.INFO, __file__, 1, "hello", (), None)


def test_log_lines_carry_the_worker_number() -> None:
    assert TextFormatter().format(_record()).endswith("spamgate.t: hello")
    assert TextFormatter(1).format(_record()).endswith("spamgate.t: worker=1 hello")
    token = SESSION.set("abc")
    try:
        assert TextFormatter(0).format(_record()).endswith("spamgate.t: worker=0 session=abc hello")
        assert json.loads(JsonFormatter(3).format(_record()))["worker"] == 3
        assert "worker" not in json.loads(JsonFormatter().format(_record()))
    finally:
        SESSION.reset(token)


@pytest.mark.parametrize(("value", "words"), [(0.5, "at least 1 second"), (-1, "greater than or equal to 0"),
                                              ("30", "number")])
def test_bad_watchdogs_name_the_key(value: object, words: str) -> None:
    with pytest.raises(ConfigError, match=rf"^t.toml: server.worker_watchdog: .*{words}"):
        parse_config({**MINIMAL, "server": {"workers": 2, "worker_watchdog": value}}, "t.toml")


def test_the_watchdog_defaults_to_30_seconds_and_0_turns_it_off() -> None:
    assert parse_config(MINIMAL).server.worker_watchdog == 30.0
    assert parse_config({**MINIMAL, "server": {"worker_watchdog": 0}}).server.worker_watchdog == 0


async def test_a_seat_with_a_heartbeat_keeps_beating_until_the_supervisor_is_gone() -> None:
    r, w = os.pipe()
    pipe = os.fstat(w).st_ino
    seat = Seat.from_args(1, "{}", w)
    seat.ready(heartbeat=0.02)
    await asyncio.sleep(0.3)
    said = os.read(r, 4096)
    assert said.startswith(b"ready\n")
    assert said.count(b".") >= 5, said  # ~15 expected; the loop may be slow, never silent
    os.close(r)  # the supervisor is gone: the next beat hits EPIPE and closes the worker's end
    await asyncio.sleep(0.1)
    try:
        assert os.fstat(w).st_ino != pipe  # the number may have been reused, by something else
    except OSError:
        pass


@pytest.mark.parametrize(("workers", "reloads"), [(2, False), (1, True)])
async def test_a_reload_changing_the_watchdog_is_refused_only_under_a_supervisor(
    tmp_path: Path, workers: int, reloads: bool
) -> None:
    from spamgate.proxy.config import load_config
    from spamgate.proxy.server import Server

    path = tmp_path / "sg.toml"
    base = (f'[backend]\nurl = "maildir:{tmp_path}/md"\n[metrics]\nenabled = false\n[dns]\nreverse_lookup = false\n'
            f'[server]\nstate_dir = "{tmp_path}/state"\nworkers = {workers}\n')
    path.write_text(base + "worker_watchdog = 10\n")
    srv = Server(load_config(path), str(path))
    old = srv.runtime
    path.write_text(base + "worker_watchdog = 20\n")
    assert await srv.reload() is reloads  # the supervisor goes on with the value it started with
    await old.pipeline.close()


def test_the_seat_reads_the_supervisors_census(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    seat = Seat(0, {})
    assert seat.census() is None  # not written yet: /readyz says so
    (tmp_path / "workers.json").write_text('{"up": 1, "workers": 2}')
    assert seat.census() == (1, 2)
    (tmp_path / "workers.json").write_text("{half")
    assert seat.census() is None
