"""Tests for tests/servers.py: the real servers start, work, and stop."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from tests import servers
from tests.servers import (
    RunningServer,
    create_database,
    free_port,
    start_postgres,
    start_s3,
    wait_for_port,
)


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def pids_mentioning(path: Path) -> list[int]:
    """Processes whose command line mentions ``path`` (Linux /proc)."""
    needle = os.fsencode(path)
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(proc.name))
    return pids


def s3_client(server: RunningServer, secret_key: str | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id=server.extra["access_key"],
        aws_secret_access_key=secret_key or server.extra["secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


# ----------------------------------------------------------------------------- PostgreSQL


def test_postgres_accepts_connections(postgres: RunningServer) -> None:
    assert postgres.url == f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres"
    with psycopg.connect(postgres.url, connect_timeout=5) as conn:
        row = conn.execute("SELECT current_user, current_database(), current_setting('fsync')")
        assert row.fetchone() == ("postgres", "postgres", "off")
        max_connections = conn.execute("SHOW max_connections").fetchone()
        assert max_connections == ("200",)


def test_create_database_gives_usable_database(postgres: RunningServer) -> None:
    url = create_database(postgres, "datamill_test")
    assert url == f"postgresql://postgres@127.0.0.1:{postgres.port}/datamill_test"
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("datamill_test",)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
        conn.commit()
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT id, name FROM items ORDER BY id").fetchall()
    assert rows == [(1, "one"), (2, "two")]


def test_create_database_quotes_name(postgres: RunningServer) -> None:
    url = create_database(postgres, "Odd-Name")
    assert url.endswith("/Odd-Name")
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("Odd-Name",)


def test_create_database_twice_fails(postgres: RunningServer) -> None:
    create_database(postgres, "twice")
    with pytest.raises(psycopg.errors.DuplicateDatabase):
        create_database(postgres, "twice")


# ------------------------------------------------------------------------------------- S3


def test_s3_bucket_put_list_get(s3: RunningServer) -> None:
    client = s3_client(s3)
    client.create_bucket(Bucket="datamill-bucket")
    assert "datamill-bucket" in [b["Name"] for b in client.list_buckets()["Buckets"]]

    payload = os.urandom(3 * 1024 * 1024 + 17)  # binary, not a multiple of anything
    client.put_object(Bucket="datamill-bucket", Key="exports/2024/data.bin", Body=payload)
    client.put_object(Bucket="datamill-bucket", Key="exports/2024/small.txt", Body=b"hello\n")
    client.put_object(Bucket="datamill-bucket", Key="other/x.txt", Body=b"x")

    listed = client.list_objects_v2(Bucket="datamill-bucket", Prefix="exports/")
    sizes = {obj["Key"]: obj["Size"] for obj in listed["Contents"]}
    assert sizes == {"exports/2024/data.bin": len(payload), "exports/2024/small.txt": 6}

    body = client.get_object(Bucket="datamill-bucket", Key="exports/2024/data.bin")["Body"]
    assert hashlib.sha256(body.read()).digest() == hashlib.sha256(payload).digest()

    # Buckets are plain directories under s3root.
    on_disk = Path(s3.extra["root"]) / "datamill-bucket" / "exports" / "2024" / "data.bin"
    assert on_disk.read_bytes() == payload


def test_s3_lists_files_put_on_disk_directly(s3: RunningServer) -> None:
    client = s3_client(s3)
    client.create_bucket(Bucket="seeded")
    client.list_objects_v2(Bucket="seeded")  # would fill rclone's directory cache
    seeded = Path(s3.extra["root"]) / "seeded" / "in" / "file.csv"
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(b"a,b\n1,2\n")
    listed = client.list_objects_v2(Bucket="seeded", Prefix="in/")
    assert [obj["Key"] for obj in listed["Contents"]] == ["in/file.csv"]
    got = client.get_object(Bucket="seeded", Key="in/file.csv")["Body"].read()
    assert got == b"a,b\n1,2\n"


def test_s3_rejects_wrong_secret(s3: RunningServer) -> None:
    client = s3_client(s3, secret_key="not-the-secret")
    with pytest.raises(ClientError):
        client.list_buckets()


# ------------------------------------------------------------------------------- stopping


@pytest.mark.slow
def test_stop_postgres(tmp_path: Path) -> None:
    server = start_postgres(tmp_path)
    pgdata = Path(server.extra["pgdata"])
    pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    assert port_answers(server.port)
    server.stop()
    assert not port_answers(server.port)
    assert not (pgdata / "postmaster.pid").exists()
    assert not servers.pid_alive(pid)  # gone, or a zombie init has not reaped yet
    server.stop()  # idempotent


def test_stop_s3(tmp_path: Path) -> None:
    server = start_s3(tmp_path)
    assert server.process is not None
    assert port_answers(server.port)
    server.stop()
    assert server.process.poll() is not None
    assert not port_answers(server.port)
    server.stop()  # idempotent


# -------------------------------------------------------------------------------- failures


def test_wait_for_port_timeout_includes_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "FATAL: it broke\n")
    with pytest.raises(RuntimeError, match="did not answer") as info:
        wait_for_port("127.0.0.1", free_port(), 0.3, log_file=log)
    message = str(info.value)
    assert "FATAL: it broke" in message
    assert "line 99" in message
    assert "line 10\n" not in message  # only the tail


def test_start_s3_failure_is_clear_and_leaves_no_process(tmp_path: Path) -> None:
    # rclone refuses an auth pair with two commas and exits.
    with pytest.raises(RuntimeError, match="rclone serve s3 exited") as info:
        start_s3(tmp_path, access_key="bad,key")
    assert "invalid auth pair" in str(info.value)
    assert pids_mentioning(tmp_path) == []


@pytest.mark.slow
def test_start_postgres_retries_when_port_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        ports = iter([taken])
        real_free_port = servers.free_port
        monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or real_free_port())
        server = start_postgres(tmp_path)
    try:
        assert server.port != taken
        with psycopg.connect(server.url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


@pytest.mark.slow
def test_start_postgres_gives_up_cleanly_when_ports_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used_dirs = [tmp_path]
    real_make_tmp_dir = servers._make_tmp_dir

    def recording_make_tmp_dir(prefix: str) -> Path:
        used_dirs.append(real_make_tmp_dir(prefix))
        return used_dirs[-1]

    monkeypatch.setattr(servers, "_make_tmp_dir", recording_make_tmp_dir)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        monkeypatch.setattr(servers, "free_port", lambda: taken)
        with pytest.raises(RuntimeError, match="no free port") as info:
            start_postgres(tmp_path)
    assert "could not bind" in str(info.value)
    for directory in used_dirs:
        assert pids_mentioning(directory) == []
        assert list(directory.glob("pgdata/postmaster.pid")) == []


# ------------------------------------------------------------------------ MQTT and Kafka


@pytest.mark.parametrize("start", [servers.start_mosquitto, servers.start_kafka])
def test_stop_mqtt_and_kafka(tmp_path: Path, start: Any) -> None:
    server = start(tmp_path)
    assert server.process is not None
    assert port_answers(server.port)
    server.stop()
    assert server.process.poll() is not None
    assert not port_answers(server.port)
    server.stop()  # idempotent


def test_start_mosquitto_retries_when_port_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy, free_port()])
        monkeypatch.setattr(servers, "free_port", lambda: next(ports))
        server = servers.start_mosquitto(tmp_path)
        try:
            assert server.port != busy
            assert port_answers(server.port)
        finally:
            server.stop()
