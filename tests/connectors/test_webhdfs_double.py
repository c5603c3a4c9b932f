"""Checks of the WebHDFS protocol double against an independent client (fsspec's WebHDFS).

No HDFS server can run on this machine; tests/webhdfs_double.py stands in for one. These
tests pin down that it speaks WebHDFS well enough for a third-party client (and for plain
HTTP calls that follow the Hadoop documentation); datamill's own client is checked
against it in test_webhdfs.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fsspec.implementations.webhdfs import WebHDFS

from tests.webhdfs_double import WebHdfsDouble

USER = "test"
FILE_STATUS_KEYS = {
    "pathSuffix",
    "type",
    "length",
    "modificationTime",
    "permission",
    "owner",
    "group",
    "replication",
    "blockSize",
    "accessTime",
}


@pytest.fixture
def hdfs_root(tmp_path: Path) -> Path:
    root = tmp_path / "hdfs"
    (root / "data" / "sub" / "deeper").mkdir(parents=True)
    (root / "data" / "a.csv").write_bytes(b"id,name\n1,one\n2,two\n")
    (root / "data" / "b.csv").write_bytes(b"id,name\n3,three\n")
    (root / "data" / "notes.txt").write_bytes(b"0123456789abcdefghij")
    (root / "data" / "sub" / "c.csv").write_bytes(b"id,name\n4,four\n")
    (root / "data" / "sub" / "deeper" / "d.json").write_bytes(b'{"id": 5}\n')
    (root / "empty").mkdir()
    return root


@pytest.fixture
def double(hdfs_root: Path) -> Iterator[WebHdfsDouble]:
    server = WebHdfsDouble(hdfs_root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client(server: WebHdfsDouble, **options: Any) -> WebHDFS:
    # skip_instance_cache: fsspec caches instances by host/port, and ports get reused.
    return WebHDFS(
        host="127.0.0.1",
        port=server.port,
        user=USER,
        use_https=False,
        skip_instance_cache=True,
        **options,
    )


@pytest.fixture
def fs(double: WebHdfsDouble) -> WebHDFS:
    return client(double)


def api(server: WebHdfsDouble, path: str) -> str:
    return f"{server.url}/webhdfs/v1{path}"


# -- listing and status --------------------------------------------------------------


def test_ls_lists_files_and_subfolders(fs: WebHDFS) -> None:
    assert fs.ls("/data") == ["/data/a.csv", "/data/b.csv", "/data/notes.txt", "/data/sub"]
    detail = {entry["name"]: entry for entry in fs.ls("/data", detail=True)}
    assert detail["/data/a.csv"]["type"] == "file"
    assert detail["/data/a.csv"]["size"] == len(b"id,name\n1,one\n2,two\n")
    assert detail["/data/sub"]["type"] == "directory"
    assert detail["/data/sub"]["size"] == 0
    assert fs.ls("/") == ["/data", "/empty"]
    assert fs.ls("/empty") == []


def test_liststatus_json_has_the_webhdfs_shape(double: WebHdfsDouble) -> None:
    response = requests.get(api(double, "/data"), params={"op": "LISTSTATUS"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    statuses = response.json()["FileStatuses"]["FileStatus"]
    assert [s["pathSuffix"] for s in statuses] == ["a.csv", "b.csv", "notes.txt", "sub"]
    for status in statuses:
        assert status.keys() >= FILE_STATUS_KEYS
        assert isinstance(status["modificationTime"], int)
    file_status, dir_status = statuses[0], statuses[3]
    assert file_status["type"] == "FILE"
    assert set(file_status["permission"]) <= set("01234567")
    assert file_status["blockSize"] == 134_217_728
    assert file_status["replication"] == 3
    assert (dir_status["type"], dir_status["length"], dir_status["replication"]) == (
        "DIRECTORY",
        0,
        0,
    )


def test_info_of_file_and_directory(fs: WebHDFS) -> None:
    info = fs.info("/data/notes.txt")
    assert info["type"] == "file"
    assert info["size"] == 20
    assert info["pathSuffix"] == ""  # GETFILESTATUS answers with an empty suffix
    assert info["owner"] == "hdfs"
    assert fs.info("/data/sub")["type"] == "directory"
    assert fs.isdir("/data/sub")
    assert fs.isfile("/data/a.csv")
    assert fs.exists("/data/a.csv")
    assert not fs.exists("/data/missing.csv")


def test_glob_and_find(fs: WebHDFS) -> None:
    assert fs.glob("/data/*.csv") == ["/data/a.csv", "/data/b.csv"]
    assert fs.glob("/data/**/*.csv") == ["/data/a.csv", "/data/b.csv", "/data/sub/c.csv"]
    assert fs.find("/data/sub") == ["/data/sub/c.csv", "/data/sub/deeper/d.json"]


# -- reading -------------------------------------------------------------------------


def test_cat_and_ranged_reads_go_through_the_datanode(double: WebHdfsDouble, fs: WebHDFS) -> None:
    assert fs.cat("/data/a.csv") == b"id,name\n1,one\n2,two\n"
    assert fs.cat_file("/data/notes.txt", start=5, end=12) == b"56789ab"
    start = len(double.request_log)
    with fs.open("/data/notes.txt", "rb", block_size=4) as stream:
        stream.seek(10)
        assert stream.read(3) == b"abc"
        assert stream.read() == b"defghij"

    # fsspec's read-ahead cache asks for [10, 17) then [17, 20); each OPEN is redirected
    # to the datanode with the same range, and the client follows.
    opens = [
        (r.datanode, r.params["offset"], r.params.get("length"))
        for r in double.request_log[start:]
        if r.op == "OPEN"
    ]
    assert opens == [
        (False, "10", "7"),
        (True, "10", "7"),
        (False, "17", "3"),
        (True, "17", "3"),
    ]


def test_open_redirects_with_307(double: WebHdfsDouble) -> None:
    response = requests.get(
        api(double, "/data/notes.txt"),
        params={"op": "OPEN", "offset": "2", "length": "3", "user.name": USER},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 307
    location = response.headers["Location"]
    assert location.startswith(f"{double.url}/datanode/webhdfs/v1/data/notes.txt?")
    data = requests.get(location, timeout=10)
    assert (data.status_code, data.content) == (200, b"234")
    assert data.headers["Content-Type"] == "application/octet-stream"
    followed = requests.get(
        api(double, "/data/notes.txt"), params={"op": "OPEN", "offset": "18"}, timeout=10
    )
    assert followed.content == b"ij"


def test_open_without_redirect(hdfs_root: Path) -> None:
    with WebHdfsDouble(hdfs_root, redirect_open=False) as server:
        fs = client(server)
        assert fs.cat_file("/data/notes.txt", start=3, end=6) == b"345"
        direct = requests.get(
            api(server, "/data/notes.txt"), params={"op": "OPEN"}, allow_redirects=False, timeout=10
        )
        assert (direct.status_code, direct.content) == (200, b"0123456789abcdefghij")
        assert not any(r.datanode for r in server.request_log)


def test_noredirect_returns_location_in_body(double: WebHdfsDouble) -> None:
    response = requests.get(
        api(double, "/data/a.csv"), params={"op": "OPEN", "noredirect": "true"}, timeout=10
    )
    assert response.status_code == 200
    assert "/datanode/webhdfs/v1/data/a.csv?" in response.json()["Location"]


def test_datanode_host_needs_data_proxy(hdfs_root: Path) -> None:
    with WebHdfsDouble(hdfs_root, datanode_host="datanode.invalid") as server:
        response = requests.get(
            api(server, "/data/a.csv"), params={"op": "OPEN"}, allow_redirects=False, timeout=10
        )
        assert response.headers["Location"].startswith(f"http://datanode.invalid:{server.port}/")
        fs = client(server, data_proxy={"datanode.invalid": "127.0.0.1"})
        assert fs.cat("/data/b.csv") == b"id,name\n3,three\n"
        with fs.open("/out/x.txt", "wb") as stream:
            stream.write(b"proxied")
        assert (hdfs_root / "out" / "x.txt").read_bytes() == b"proxied"


# -- writing -------------------------------------------------------------------------


def test_write_is_a_two_step_create_and_reads_back(
    double: WebHdfsDouble, fs: WebHDFS, hdfs_root: Path
) -> None:
    start = len(double.request_log)
    with fs.open("/incoming/new.csv", "wb") as stream:
        stream.write(b"id\n1\n")
    writes = [(r.method, r.op, r.datanode) for r in double.request_log[start:]]
    # fsspec creates an empty file in two steps, then appends the data in two steps.
    assert writes == [
        ("PUT", "CREATE", False),
        ("PUT", "CREATE", True),
        ("POST", "APPEND", False),
        ("POST", "APPEND", True),
    ]
    assert double.requests_seen[start:] == [
        ("PUT", "CREATE"),
        ("PUT", "CREATE"),
        ("POST", "APPEND"),
        ("POST", "APPEND"),
    ]
    assert (hdfs_root / "incoming" / "new.csv").read_bytes() == b"id\n1\n"
    assert fs.cat("/incoming/new.csv") == b"id\n1\n"
    assert fs.info("/incoming/new.csv")["owner"] == USER
    assert fs.info("/incoming")["owner"] == USER  # parents are created, as HDFS does

    fs.pipe_file("/incoming/new.csv", b"replaced")  # fsspec always sends overwrite=true
    assert fs.cat("/incoming/new.csv") == b"replaced"


def test_large_write_is_uploaded_in_several_appends(double: WebHdfsDouble, fs: WebHDFS) -> None:
    payload = bytes(range(256)) * 64
    start = len(double.request_log)
    with fs.open("/big.bin", "wb", block_size=5 * 1024) as stream:
        for i in range(0, len(payload), 1000):
            stream.write(payload[i : i + 1000])
    appends = [r for r in double.request_log[start:] if r.op == "APPEND" and r.datanode]
    assert len(appends) > 1
    assert fs.cat("/big.bin") == payload


def test_create_honours_overwrite(double: WebHdfsDouble, hdfs_root: Path) -> None:
    def create(overwrite: str, data: bytes) -> requests.Response:
        step1 = requests.put(
            api(double, "/data/a.csv"),
            params={"op": "CREATE", "overwrite": overwrite, "user.name": USER},
            allow_redirects=False,
            timeout=10,
        )
        assert step1.status_code == 307
        assert (hdfs_root / "data" / "a.csv").read_bytes().startswith(b"id,name")
        return requests.put(step1.headers["Location"], data=data, timeout=10)

    refused = create("false", b"nope")
    assert refused.status_code == 403
    assert refused.json()["RemoteException"]["exception"] == "FileAlreadyExistsException"
    assert (hdfs_root / "data" / "a.csv").read_bytes() == b"id,name\n1,one\n2,two\n"

    created = create("true", b"new content")
    assert created.status_code == 201
    assert created.headers["Location"] == f"hdfs://127.0.0.1:{double.port}/data/a.csv"
    assert (hdfs_root / "data" / "a.csv").read_bytes() == b"new content"


def test_append_two_step(double: WebHdfsDouble, hdfs_root: Path) -> None:
    step1 = requests.post(
        api(double, "/data/b.csv"),
        params={"op": "APPEND", "user.name": USER},
        allow_redirects=False,
        timeout=10,
    )
    assert step1.status_code == 307
    step2 = requests.post(step1.headers["Location"], data=b"5,five\n", timeout=10)
    assert step2.status_code == 200
    assert (hdfs_root / "data" / "b.csv").read_bytes() == b"id,name\n3,three\n5,five\n"

    missing = requests.post(
        api(double, "/data/nothing.csv"), params={"op": "APPEND"}, allow_redirects=False, timeout=10
    )
    assert missing.status_code == 404


def test_mkdir(fs: WebHDFS, hdfs_root: Path) -> None:
    fs.mkdir("/new/nested/dir")
    assert (hdfs_root / "new" / "nested" / "dir").is_dir()
    assert fs.info("/new/nested/dir")["type"] == "directory"
    fs.makedirs("/new/nested/dir", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs("/new/nested/dir")
    with pytest.raises(RuntimeError, match="not a directory"):  # 403 ParentNotDirectory...
        fs.mkdir("/data/a.csv/child")


def test_rm(double: WebHdfsDouble, fs: WebHDFS, hdfs_root: Path) -> None:
    fs.rm("/data/b.csv")
    assert not (hdfs_root / "data" / "b.csv").exists()
    with pytest.raises(RuntimeError, match="non empty"):  # PathIsNotEmptyDirectoryException
        fs.rm("/data/sub")
    assert (hdfs_root / "data" / "sub" / "c.csv").exists()
    fs.rm("/data/sub", recursive=True)
    assert not (hdfs_root / "data" / "sub").exists()
    fs.rm("/empty")
    assert not (hdfs_root / "empty").exists()

    gone = requests.delete(api(double, "/data/b.csv"), params={"op": "DELETE"}, timeout=10)
    assert (gone.status_code, gone.json()) == (200, {"boolean": False})
    root = requests.delete(
        api(double, "/"), params={"op": "DELETE", "recursive": "true"}, timeout=10
    )
    assert root.json() == {"boolean": False}
    assert hdfs_root.is_dir()


def test_rename(double: WebHdfsDouble, fs: WebHDFS, hdfs_root: Path) -> None:
    fs.mv("/data/a.csv", "/data/renamed.csv")
    assert (hdfs_root / "data" / "renamed.csv").exists()
    assert not (hdfs_root / "data" / "a.csv").exists()
    fs.mv("/data/renamed.csv", "/empty")  # into an existing directory, as HDFS does
    assert (hdfs_root / "empty" / "renamed.csv").exists()
    fs.mv("/data/sub", "/moved")
    assert fs.find("/moved") == ["/moved/c.csv", "/moved/deeper/d.json"]

    # HDFS answers {"boolean": false} rather than an error; fsspec does not look at it.
    fs.mv("/data/missing.csv", "/data/other.csv")
    refused = requests.put(
        api(double, "/data/b.csv"),
        params={"op": "RENAME", "destination": "/no/such/parent/b.csv"},
        timeout=10,
    )
    assert (refused.status_code, refused.json()) == (200, {"boolean": False})
    onto_file = requests.put(
        api(double, "/data/b.csv"),
        params={"op": "RENAME", "destination": "/data/notes.txt"},
        timeout=10,
    )
    assert onto_file.json() == {"boolean": False}
    relative = requests.put(
        api(double, "/data/b.csv"), params={"op": "RENAME", "destination": "x"}, timeout=10
    )
    assert relative.status_code == 400


# -- errors --------------------------------------------------------------------------


def test_not_found_raises_file_not_found(double: WebHdfsDouble, fs: WebHDFS) -> None:
    with pytest.raises(FileNotFoundError):
        fs.info("/data/missing.csv")
    with pytest.raises(FileNotFoundError):
        fs.ls("/missing")
    with pytest.raises(FileNotFoundError):
        fs.cat("/data/missing.csv")
    with pytest.raises(FileNotFoundError):
        fs.open("/data/missing.csv", "rb")

    response = requests.get(
        api(double, "/data/missing.csv"), params={"op": "GETFILESTATUS"}, timeout=10
    )
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "RemoteException": {
            "exception": "FileNotFoundException",
            "javaClassName": "java.io.FileNotFoundException",
            "message": "File does not exist: /data/missing.csv",
        }
    }
    directory = requests.get(api(double, "/data"), params={"op": "OPEN"}, timeout=10)
    assert directory.status_code == 404
    assert directory.json()["RemoteException"]["message"] == "Path is not a file: /data"


def test_dot_dot_is_refused(double: WebHdfsDouble, fs: WebHDFS, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_bytes(b"secret")

    # requests removes literal dot segments before sending, so ``..`` leaves /webhdfs/v1
    # and meets the web server's plain 404 (as on a real NameNode), not a JSON error.
    with pytest.raises(requests.HTTPError, match="404"):
        fs.ls("/../")
    with pytest.raises(requests.HTTPError, match="404"):
        fs.cat("/data/../../outside.txt")

    # Encoded dot segments reach the server and are refused with 403.
    for url in (
        f"{double.url}/webhdfs/v1/%2E%2E/outside.txt?op=OPEN",
        f"{double.url}/webhdfs/v1/data/%2e%2e/%2e%2e/outside.txt?op=GETFILESTATUS",
        f"{double.url}/datanode/webhdfs/v1/%2E%2E/outside.txt?op=OPEN",
    ):
        response = requests.get(url, timeout=10)
        assert response.status_code == 403, url
        error = response.json()["RemoteException"]
        assert error["exception"] == "AccessControlException"
        assert error["javaClassName"] == "org.apache.hadoop.security.AccessControlException"
        assert b"secret" not in response.content

    # So is a RENAME destination (a query parameter, which no client normalises).
    with pytest.raises(PermissionError):
        fs.mv("/data/a.csv", "/../stolen.csv")
    assert (double.root / "data" / "a.csv").exists()
    assert not (tmp_path / "stolen.csv").exists()


def test_symlink_out_of_root_is_refused(
    double: WebHdfsDouble, fs: WebHDFS, hdfs_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (hdfs_root / "link").symlink_to(outside)
    with pytest.raises(PermissionError):
        fs.ls("/link")
    with pytest.raises(PermissionError):
        fs.cat("/link/secret.txt")


def test_unknown_op_and_bad_parameters(double: WebHdfsDouble) -> None:
    unknown = requests.get(api(double, "/data"), params={"op": "NOSUCHOP"}, timeout=10)
    assert unknown.status_code == 400
    assert unknown.json()["RemoteException"]["exception"] == "IllegalArgumentException"
    wrong_method = requests.get(api(double, "/data"), params={"op": "MKDIRS"}, timeout=10)
    assert wrong_method.status_code == 400
    assert "GetOpParam.Op.MKDIRS" in wrong_method.json()["RemoteException"]["message"]
    bad_offset = requests.get(
        api(double, "/data/a.csv"), params={"op": "OPEN", "offset": "-1"}, timeout=10
    )
    assert bad_offset.status_code == 400
    outside_api = requests.get(f"{double.url}/elsewhere", timeout=10)
    assert outside_api.status_code == 404


# -- other read-only ops, user.name and lifecycle --------------------------------------


def test_summary_home_checkaccess_checksum(double: WebHdfsDouble, fs: WebHDFS) -> None:
    summary = fs.content_summary("/data")
    assert summary["directoryCount"] == 3
    assert summary["fileCount"] == 5
    assert summary["length"] == sum(
        p.stat().st_size for p in (double.root / "data").rglob("*") if p.is_file()
    )
    assert summary["quota"] == -1
    assert fs.home_directory() == f"/user/{USER}"
    access = requests.get(
        api(double, "/data"), params={"op": "CHECKACCESS", "fsaction": "r-x"}, timeout=10
    )
    assert access.status_code == 200
    checksum = fs.ukey("/data/a.csv")
    assert checksum["length"] == 28
    assert checksum["algorithm"].startswith("MD5-of-")
    assert checksum != fs.ukey("/data/b.csv")


def test_user_name_is_recorded(double: WebHdfsDouble, fs: WebHDFS, hdfs_root: Path) -> None:
    fs.ls("/data")
    assert double.request_log[-1].user == USER
    assert double.request_log[-1].params["user.name"] == USER
    anonymous = WebHDFS(host="127.0.0.1", port=double.port, skip_instance_cache=True)
    anonymous.pipe_file("/anon.txt", b"x")
    assert None in double.users_seen
    assert anonymous.info("/anon.txt")["owner"] == "dr.who"
    assert anonymous.home_directory() == "/user/dr.who"


def test_stop_closes_the_port(hdfs_root: Path) -> None:
    server = WebHdfsDouble(hdfs_root)
    server.start()
    fs = client(server)
    assert fs.ls("/empty") == []  # leaves a kept-alive connection in the client's pool
    url = server.url
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/webhdfs/v1/?op=LISTSTATUS", timeout=5)
    with pytest.raises(requests.ConnectionError):
        fs.ls("/empty")
    with pytest.raises(RuntimeError):
        _ = server.port
    server.stop()  # stopping twice is harmless
