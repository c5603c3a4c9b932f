"""The guarded WebHDFS client and its read-only fsspec filesystem, against the WebHDFS
protocol double (tests/webhdfs_double.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from datamill.connectors.outbound.errors import OutboundError
from datamill.connectors.outbound.webhdfs import MAX_REDIRECTS, WebHdfs, WebHdfsFileSystem
from datamill.errors import DatamillError, E
from tests.webhdfs_double import ConnectionProbe, WebHdfsDouble

ALLOW = ["127.0.0.1"]


@pytest.fixture
def double(tmp_path: Path) -> Iterator[WebHdfsDouble]:
    root = tmp_path / "hdfs"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.csv").write_bytes(b"id,name\n1,one\n2,two\n")
    (root / "data" / "notes.txt").write_bytes(b"0123456789abcdefghij")
    (root / "data" / "sub" / "c.csv").write_bytes(b"id,name\n4,four\n")
    with WebHdfsDouble(root) as server:
        yield server


@pytest.fixture
def fs(double: WebHdfsDouble) -> WebHdfsFileSystem:
    return WebHdfsFileSystem(WebHdfs("127.0.0.1", double.port, False, "etl", ALLOW, "spec.x"))


def test_listing_and_info(fs: WebHdfsFileSystem) -> None:
    assert fs.ls("/data", detail=False) == ["/data/a.csv", "/data/notes.txt", "/data/sub"]
    assert fs.info("webhdfs:///data/notes.txt")["size"] == 20
    assert fs.info("/data/sub")["type"] == "directory"
    assert fs.find("/data") == ["/data/a.csv", "/data/notes.txt", "/data/sub/c.csv"]
    assert fs.glob("/data/*.csv") == ["/data/a.csv"]
    assert not fs.exists("/data/missing")
    with pytest.raises(FileNotFoundError):
        fs.ls("/missing")


def test_ranged_reads_follow_the_datanode_redirect(
    double: WebHdfsDouble, fs: WebHdfsFileSystem
) -> None:
    start = len(double.request_log)
    with fs.open("/data/notes.txt", "rb", block_size=4) as stream:
        stream.seek(10)
        assert stream.read(3) == b"abc"
    opens = [(r.datanode, r.params["offset"]) for r in double.request_log[start:] if r.op == "OPEN"]
    assert opens[:2] == [(False, "10"), (True, "10")]
    assert "etl" in double.users_seen
    with pytest.raises(OSError, match="only be read"):
        fs.open("/data/new.txt", "wb")


def test_duckdb_reads_through_the_filesystem(fs: WebHdfsFileSystem) -> None:
    con = duckdb.connect()
    con.register_filesystem(fs)
    rows = con.sql("SELECT id, name FROM read_csv('webhdfs:///data/a.csv') ORDER BY id")
    assert rows.fetchall() == [(1, "one"), (2, "two")]


CALLS_BY_OP: dict[str, Callable[[WebHdfsFileSystem], object]] = {
    "OPEN": lambda fs: fs.cat_file("/data/a.csv"),
    "LISTSTATUS": lambda fs: fs.ls("/data"),
    "GETFILESTATUS": lambda fs: fs.exists("/data/a.csv"),
}


@pytest.mark.parametrize("op", list(CALLS_BY_OP))
def test_a_redirect_to_a_refused_address_is_not_followed(
    double: WebHdfsDouble, fs: WebHdfsFileSystem, op: str
) -> None:
    call = CALLS_BY_OP[op]
    with ConnectionProbe("127.0.0.2", "127.0.0.2") as probe:
        double.redirect_ops[op] = probe.url()
        with pytest.raises(DatamillError) as refused:
            call(fs)
    assert refused.value.error is E.OUTBOUND_REFUSED
    assert refused.value.field == "spec.x"
    assert probe.connections == 0


def test_a_redirect_chain_is_capped(double: WebHdfsDouble, fs: WebHdfsFileSystem) -> None:
    double.redirect_ops["LISTSTATUS"] = f"{double.url}/webhdfs/v1/data?op=LISTSTATUS"
    with pytest.raises(OutboundError, match=f"more than {MAX_REDIRECTS} redirects"):
        fs.ls("/data")
    assert double.requests_seen.count(("GET", "LISTSTATUS")) == MAX_REDIRECTS + 1


def test_the_namenode_itself_must_be_allowed(double: WebHdfsDouble) -> None:
    with pytest.raises(DatamillError) as refused:
        WebHdfs("127.0.0.1", double.port, False, None, [], "spec.paths[0]")
    assert refused.value.error is E.OUTBOUND_REFUSED
    assert double.requests_seen == []


def test_a_write_redirected_to_a_refused_address_is_not_sent(double: WebHdfsDouble) -> None:
    client = WebHdfs("127.0.0.1", double.port, False, "etl", ALLOW, "spec.path")
    with ConnectionProbe("127.0.0.2", "127.0.0.2") as probe:
        double.redirect_ops["CREATE"] = probe.url()
        with pytest.raises(DatamillError) as refused:
            client.put("/out/x.csv", b"id\n1\n")
    assert (refused.value.error, refused.value.field) == (E.OUTBOUND_REFUSED, "spec.path")
    assert probe.connections == 0
    assert not (double.root / "out").exists()
