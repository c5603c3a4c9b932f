"""A WebHDFS *protocol double* for the test suite.

No HDFS server can run on this machine (no NameNode/DataNode JVMs), so the tests that
exercise datamill's HDFS support talk to this stand-in instead. It is a real HTTP
server (``http.server.ThreadingHTTPServer`` on 127.0.0.1, served from a daemon thread)
that speaks the subset of the WebHDFS REST API a client needs to list, stat, read and
write files, backed by a local folder:
https://hadoop.apache.org/docs/stable/hadoop-project-dist/hadoop-hdfs/WebHDFS.html

It is *not* HDFS. What it copies from WebHDFS is the wire protocol: the
``/webhdfs/v1/<path>?op=...`` URL layout, op and parameter names (case-insensitive
parameter names, as in Hadoop), the JSON bodies (``FileStatus``, ``FileStatuses``,
``ContentSummary``, ``boolean``, ``Path``, ``Location``), the status codes, the
``RemoteException`` error body, the NameNode -> DataNode ``307`` redirects of OPEN
(optional, see ``redirect_open``), CREATE and APPEND, and the HDFS answers that are
not errors (RENAME and DELETE answer ``{"boolean": false}`` when nothing was done).
The "DataNode" is a second path prefix, ``/datanode/webhdfs/v1/...``, on the same
server; ``datanode_host`` sets the host name put in redirect URLs (use a name the
client cannot resolve to test a client's address mapping, e.g. fsspec's
``data_proxy``).

``redirect_ops`` makes the NameNode misbehave on purpose: an op named there (e.g.
``OPEN`` or ``LISTSTATUS``) is answered, for any path, with a ``307`` to the given URL
instead of being served (a hostile NameNode pointing the client elsewhere, or a redirect
loop when the URL points back at the double). It may be changed while the double runs.

Supported: GET GETFILESTATUS, LISTSTATUS, OPEN, GETCONTENTSUMMARY, GETHOMEDIRECTORY,
CHECKACCESS, GETFILECHECKSUM; PUT MKDIRS, CREATE, RENAME, SETPERMISSION, SETOWNER,
SETREPLICATION, SETTIMES; POST APPEND; DELETE DELETE. Anything else answers 400
like an unknown op does on a real NameNode.

Not modelled: authentication (``user.name`` is accepted, recorded and used as the
owner of new files; ``doas``/``delegation`` are ignored), permission checks, blocks,
quotas, snapshots, symlinks, leases. Owners, groups, replication and permissions set
through the API are kept in memory; the default permission is the local file's mode.
GETFILECHECKSUM has the shape of HDFS's MD5-of-MD5-of-CRC checksum but is an MD5 of
the content, not bit-compatible with a real cluster.

Paths never leave ``root``: any ``.`` or ``..`` component (also when percent-encoded),
in the URL path or in RENAME's ``destination``, and any path whose resolved location
(symlinks followed) is outside ``root`` answers 403 ``AccessControlException``.
Requests outside ``/webhdfs/v1`` and ``/datanode/webhdfs/v1`` get a plain-text 404,
as a real NameNode's web server gives. Note that HTTP clients (requests/urllib3)
remove literal dot segments before sending, so ``/webhdfs/v1/../x`` arrives as
``/webhdfs/x`` and gets that 404.

Every request is logged: ``requests_seen`` holds ``(method, op)`` pairs and
``request_log`` the full :class:`RecordedRequest` (path, parameters, ``user.name``,
whether the NameNode or the DataNode prefix was hit).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

NAMENODE_PREFIX = "/webhdfs/v1"
DATANODE_PREFIX = "/datanode/webhdfs/v1"

_JAVA_CLASSES: dict[str, str] = {
    "FileNotFoundException": "java.io.FileNotFoundException",
    "AccessControlException": "org.apache.hadoop.security.AccessControlException",
    "SecurityException": "java.lang.SecurityException",
    "IllegalArgumentException": "java.lang.IllegalArgumentException",
    "UnsupportedOperationException": "java.lang.UnsupportedOperationException",
    "FileAlreadyExistsException": "org.apache.hadoop.fs.FileAlreadyExistsException",
    "ParentNotDirectoryException": "org.apache.hadoop.fs.ParentNotDirectoryException",
    "PathIsNotEmptyDirectoryException": "org.apache.hadoop.fs.PathIsNotEmptyDirectoryException",
    "EOFException": "java.io.EOFException",
    "IOException": "java.io.IOException",
    "RuntimeException": "java.lang.RuntimeException",
}

# Hadoop's web ExceptionHandler: these map to fixed codes, any other IOException is 403
# and anything that is not an IOException is 500.
_STATUS_OF: dict[str, HTTPStatus] = {
    "SecurityException": HTTPStatus.UNAUTHORIZED,
    "AccessControlException": HTTPStatus.FORBIDDEN,
    "FileNotFoundException": HTTPStatus.NOT_FOUND,
    "IllegalArgumentException": HTTPStatus.BAD_REQUEST,
    "UnsupportedOperationException": HTTPStatus.BAD_REQUEST,
    "RuntimeException": HTTPStatus.INTERNAL_SERVER_ERROR,
}

_ENUM_OF_METHOD: dict[str, str] = {
    "GET": "GetOpParam",
    "PUT": "PutOpParam",
    "POST": "PostOpParam",
    "DELETE": "DeleteOpParam",
}

# Parameters a NameNode copies into the DataNode URL it redirects to.
_FORWARDED_PARAMS = (
    "user.name",
    "doas",
    "delegation",
    "offset",
    "length",
    "buffersize",
    "permission",
    "replication",
    "blocksize",
)

_PERMISSION_RULE = re.compile(r"^[01]?[0-7]{1,3}$")
_FSACTION_RULE = re.compile(r"^[r-][w-][x-]$")
_DEFAULT_USER = "dr.who"  # what an insecure Hadoop cluster calls an anonymous caller


class WebHdfsError(Exception):
    """An error answered as WebHDFS does: a ``RemoteException`` JSON body."""

    def __init__(self, exception: str, message: str) -> None:
        super().__init__(message)
        self.exception = exception
        self.message = message
        self.status = _STATUS_OF.get(exception, HTTPStatus.FORBIDDEN)

    def response(self) -> _Response:
        body = {
            "RemoteException": {
                "exception": self.exception,
                "javaClassName": _JAVA_CLASSES.get(self.exception, "java.io.IOException"),
                "message": self.message,
            }
        }
        return _Response.json(body, self.status)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the double saw it."""

    method: str
    op: str  # upper-cased ``op`` parameter, "" when absent
    path: str  # the decoded HDFS path of the URL ("" for requests outside WebHDFS)
    params: dict[str, str]  # all query parameters, names lower-cased
    user: str | None  # the ``user.name`` parameter
    datanode: bool  # True for the /datanode/... half of a redirect


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = HTTPStatus.OK) -> _Response:
        return cls(status, json.dumps(payload).encode(), "application/json")

    @classmethod
    def redirect(cls, location: str, noredirect: bool) -> _Response:
        if noredirect:  # Hadoop >= 2.8: the Location comes back in the body instead
            return cls.json({"Location": location})
        return cls(HTTPStatus.TEMPORARY_REDIRECT, headers={"Location": location})


@dataclass
class _Meta:
    """Attributes HDFS keeps that a local folder does not (set through the API)."""

    owner: str | None = None
    group: str | None = None
    permission: str | None = None
    replication: int | None = None


def _error(exception: str, message: str) -> WebHdfsError:
    return WebHdfsError(exception, message)


def _bad_param(name: str, value: str, why: str) -> WebHdfsError:
    return _error(
        "IllegalArgumentException",
        f'Invalid value for webhdfs parameter "{name}": Invalid value: "{name}" = {value}: {why}',
    )


def _bool_param(params: dict[str, str], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("true", "false"):
        raise _bad_param(name, raw, "expected true or false")
    return raw.lower() == "true"


def _long_param(params: dict[str, str], name: str, default: int | None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad_param(name, raw, "not an integer") from None
    if value < 0:
        raise _bad_param(name, raw, f"{value} < 0")
    return value


def _permission_param(params: dict[str, str]) -> str | None:
    raw = params.get("permission")
    if raw is None or raw == "":
        return None
    if not _PERMISSION_RULE.match(raw):
        raise _bad_param("permission", raw, "expected an octal permission such as 755")
    return f"{int(raw, 8):o}"


def _normalise(path: str) -> str:
    """Canonicalise a decoded HDFS path and refuse ``.``/``..`` components."""
    if "\x00" in path:
        raise _error("IllegalArgumentException", f"Invalid path name {path!r}")
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise _error(
                "AccessControlException",
                f"Permission denied: path {path!r} has a {part!r} component; "
                "the WebHDFS double refuses paths that could leave its root",
            )
    return "/" + "/".join(parts)


def _child(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            line = handler.rfile.readline()
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, double: WebHdfsDouble) -> None:
        self.double = double
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive client connections, so nothing is served after stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Jetty; every answer has a Content-Length
    server_version = "WebHdfsDouble"
    timeout = 60
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.double._handle(self, "GET")

    def do_PUT(self) -> None:
        self.server.double._handle(self, "PUT")

    def do_POST(self) -> None:
        self.server.double._handle(self, "POST")

    def do_DELETE(self) -> None:
        self.server.double._handle(self, "DELETE")


class WebHdfsDouble:
    """WebHDFS over a local folder; see the module docstring."""

    BLOCK_SIZE: ClassVar[int] = 134_217_728

    def __init__(
        self,
        root: Path,
        *,
        redirect_open: bool = True,
        datanode_host: str = "127.0.0.1",
        default_owner: str = "hdfs",
        default_group: str = "supergroup",
        default_replication: int = 3,
        redirect_ops: dict[str, str] | None = None,
    ) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.redirect_open = redirect_open
        self.datanode_host = datanode_host
        self.default_owner = default_owner
        self.default_group = default_group
        self.default_replication = default_replication
        self.redirect_ops: dict[str, str] = dict(redirect_ops or {})
        self.requests_seen: list[tuple[str, str]] = []
        self.request_log: list[RecordedRequest] = []
        self._meta: dict[str, _Meta] = {}
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("WebHdfsDouble is already running")
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"webhdfs-double-{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> WebHdfsDouble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("WebHdfsDouble is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def users_seen(self) -> list[str | None]:
        """The ``user.name`` of every request, in order."""
        with self._lock:
            return [r.user for r in self.request_log]

    # -- request plumbing ------------------------------------------------------------

    def _handle(self, handler: _Handler, method: str) -> None:
        try:
            body = _read_body(handler)
        except (ValueError, OSError):
            handler.close_connection = True
            self._send(handler, _Response(HTTPStatus.BAD_REQUEST, b"Bad request body\n"))
            return
        split = urlsplit(handler.path)
        params = {k.lower(): v for k, v in parse_qsl(split.query, keep_blank_values=True)}
        op = params.get("op", "").upper()
        datanode = split.path == DATANODE_PREFIX or split.path.startswith(DATANODE_PREFIX + "/")
        namenode = split.path == NAMENODE_PREFIX or split.path.startswith(NAMENODE_PREFIX + "/")
        raw_path = split.path[len(DATANODE_PREFIX if datanode else NAMENODE_PREFIX) :]
        shown_path = (unquote(raw_path) or "/") if datanode or namenode else ""
        with self._lock:
            self.requests_seen.append((method, op))
            self.request_log.append(
                RecordedRequest(method, op, shown_path, params, params.get("user.name"), datanode)
            )
        if not (datanode or namenode):
            response = _Response(HTTPStatus.NOT_FOUND, b"Not Found\n", "text/plain")
        else:
            try:
                path = _normalise(unquote(raw_path))
                with self._lock:
                    if datanode:
                        response = self._datanode(method, op, path, params, body)
                    else:
                        response = self._namenode(method, op, path, params)
            except WebHdfsError as exc:
                response = exc.response()
            except Exception as exc:  # a bug in the double: answer like a crashed NameNode
                response = _error("RuntimeException", f"{type(exc).__name__}: {exc}").response()
        self._send(handler, response)

    @staticmethod
    def _send(handler: _Handler, response: _Response) -> None:
        handler.send_response(response.status)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        if response.content_type:
            handler.send_header("Content-Type", response.content_type)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body)

    def _local(self, path: str) -> Path:
        local = self.root.joinpath(*path.split("/")[1:]) if path != "/" else self.root
        resolved = local.resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise _error(
                "AccessControlException",
                f"Permission denied: {path} resolves outside the WebHDFS double's root",
            )
        return local

    def _existing(self, path: str, message: str) -> Path:
        local = self._local(path)
        if not local.exists():
            raise _error("FileNotFoundException", message)
        return local

    def _existing_file(self, path: str) -> Path:
        local = self._existing(path, f"File does not exist: {path}")
        if local.is_dir():
            raise _error("FileNotFoundException", f"Path is not a file: {path}")
        return local

    def _datanode_url(self, op: str, path: str, params: dict[str, str], **extra: str) -> str:
        query = {"op": op, "namenoderpcaddress": f"127.0.0.1:{self.port}"}
        query.update({k: params[k] for k in _FORWARDED_PARAMS if k in params})
        query.update(extra)
        host = f"{self.datanode_host}:{self.port}"
        return f"http://{host}{DATANODE_PREFIX}{quote(path)}?{urlencode(query)}"

    @staticmethod
    def _unknown_op(method: str, op: str) -> WebHdfsError:
        if not op:
            return _error("UnsupportedOperationException", "NULL is not supported")
        return _error(
            "IllegalArgumentException",
            f'Invalid value for webhdfs parameter "op": No enum constant '
            f"org.apache.hadoop.hdfs.web.resources.{_ENUM_OF_METHOD[method]}.Op.{op}",
        )

    # -- NameNode --------------------------------------------------------------------

    def _namenode(self, method: str, op: str, path: str, params: dict[str, str]) -> _Response:
        user = params.get("user.name") or _DEFAULT_USER
        noredirect = _bool_param(params, "noredirect", False)
        if op in self.redirect_ops:
            return _Response.redirect(self.redirect_ops[op], noredirect=False)
        if method == "GET":
            if op == "GETFILESTATUS":
                local = self._existing(path, f"File does not exist: {path}")
                return _Response.json({"FileStatus": self._status(path, local, "")})
            if op == "LISTSTATUS":
                return _Response.json({"FileStatuses": {"FileStatus": self._list(path)}})
            if op == "OPEN":
                offset = _long_param(params, "offset", 0) or 0
                length = _long_param(params, "length", None)
                local = self._existing_file(path)
                if not self.redirect_open:  # HttpFS-style: the bytes come straight back
                    return self._read(path, local, offset, length)
                url = self._datanode_url("OPEN", path, params, offset=str(offset))
                return _Response.redirect(url, noredirect)
            if op == "GETCONTENTSUMMARY":
                local = self._existing(path, f"File does not exist: {path}")
                return _Response.json({"ContentSummary": self._summary(path, local)})
            if op == "GETHOMEDIRECTORY":
                return _Response.json({"Path": f"/user/{user}"})
            if op == "CHECKACCESS":
                fsaction = params.get("fsaction", "")
                if not _FSACTION_RULE.match(fsaction):
                    raise _bad_param("fsaction", fsaction, "expected a value such as r-x")
                self._existing(path, f"File does not exist: {path}")
                return _Response(HTTPStatus.OK)
            if op == "GETFILECHECKSUM":
                self._existing_file(path)
                url = self._datanode_url("GETFILECHECKSUM", path, params)
                return _Response.redirect(url, noredirect)
        elif method == "PUT":
            if op == "MKDIRS":
                self._mkdirs(path, user, _permission_param(params))
                return _Response.json({"boolean": True})
            if op == "CREATE":
                # Step one of two: nothing is created here, a body sent now is ignored.
                _permission_param(params)
                _long_param(params, "replication", None)
                overwrite = "true" if _bool_param(params, "overwrite", False) else "false"
                url = self._datanode_url("CREATE", path, params, overwrite=overwrite)
                return _Response.redirect(url, noredirect)
            if op == "RENAME":
                raw = params.get("destination")
                if not raw:
                    raise _bad_param("destination", "null", "destination is missing")
                if not raw.startswith("/"):
                    raise _bad_param("destination", raw, "not an absolute path")
                return _Response.json({"boolean": self._rename(path, _normalise(raw))})
            if op == "SETPERMISSION":
                self._existing(path, f"File does not exist: {path}")
                self._meta_of(path).permission = _permission_param(params) or "755"
                return _Response(HTTPStatus.OK)
            if op == "SETOWNER":
                owner, group = params.get("owner") or None, params.get("group") or None
                if owner is None and group is None:
                    raise _error("IllegalArgumentException", "Both owner and group are empty.")
                self._existing(path, f"File does not exist: {path}")
                meta = self._meta_of(path)
                meta.owner = owner or meta.owner
                meta.group = group or meta.group
                return _Response(HTTPStatus.OK)
            if op == "SETREPLICATION":
                replication = _long_param(params, "replication", None)
                local = self._existing(path, f"File does not exist: {path}")
                if local.is_dir():
                    return _Response.json({"boolean": False})
                if replication is not None:
                    self._meta_of(path).replication = replication
                return _Response.json({"boolean": True})
            if op == "SETTIMES":
                mtime = params.get("modificationtime", "-1")
                atime = params.get("accesstime", "-1")
                local = self._existing(path, f"File does not exist: {path}")
                st = local.stat()
                try:
                    mtime_ms, atime_ms = int(mtime), int(atime)
                except ValueError:
                    raise _bad_param("modificationtime", mtime, "not an integer") from None
                os.utime(
                    local,
                    ns=(
                        st.st_atime_ns if atime_ms == -1 else atime_ms * 1_000_000,
                        st.st_mtime_ns if mtime_ms == -1 else mtime_ms * 1_000_000,
                    ),
                )
                return _Response(HTTPStatus.OK)
        elif method == "POST":
            if op == "APPEND":
                self._existing_file(path)
                return _Response.redirect(self._datanode_url("APPEND", path, params), noredirect)
        elif method == "DELETE" and op == "DELETE":
            recursive = _bool_param(params, "recursive", False)
            return _Response.json({"boolean": self._delete(path, recursive)})
        raise self._unknown_op(method, op)

    # -- DataNode --------------------------------------------------------------------

    def _datanode(
        self, method: str, op: str, path: str, params: dict[str, str], body: bytes
    ) -> _Response:
        user = params.get("user.name") or _DEFAULT_USER
        if method == "GET" and op == "OPEN":
            local = self._existing_file(path)
            offset = _long_param(params, "offset", 0) or 0
            return self._read(path, local, offset, _long_param(params, "length", None))
        if method == "GET" and op == "GETFILECHECKSUM":
            data = self._existing_file(path).read_bytes()
            digest = hashlib.md5(data, usedforsecurity=False).digest()
            raw = (512).to_bytes(4, "big") + (0).to_bytes(8, "big") + digest
            checksum = {"algorithm": "MD5-of-0MD5-of-512CRC32C", "bytes": raw.hex(), "length": 28}
            return _Response.json({"FileChecksum": checksum})
        if method == "PUT" and op == "CREATE":
            self._create(path, user, body, params)
            location = f"hdfs://127.0.0.1:{self.port}{quote(path)}"
            return _Response(HTTPStatus.CREATED, headers={"Location": location})
        if method == "POST" and op == "APPEND":
            local = self._local(path)
            if not local.exists():
                raise _error(
                    "FileNotFoundException",
                    f"Failed to append to non-existent file {path} for client 127.0.0.1",
                )
            if local.is_dir():
                raise _error("FileNotFoundException", f"Path is not a file: {path}")
            with local.open("ab") as stream:
                stream.write(body)
            return _Response(HTTPStatus.OK)
        raise _error("UnsupportedOperationException", f"{op or 'NULL'} is not supported")

    # -- the file system -------------------------------------------------------------

    def _meta_of(self, path: str) -> _Meta:
        return self._meta.setdefault(path, _Meta())

    def _status(self, path: str, local: Path, suffix: str) -> dict[str, Any]:
        st = local.stat()
        is_dir = stat.S_ISDIR(st.st_mode)
        meta = self._meta.get(path) or _Meta()
        replication = meta.replication or self.default_replication
        return {
            "accessTime": 0 if is_dir else st.st_atime_ns // 1_000_000,
            "blockSize": 0 if is_dir else self.BLOCK_SIZE,
            "childrenNum": len(os.listdir(local)) if is_dir else 0,
            "fileId": st.st_ino,
            "group": meta.group or self.default_group,
            "length": 0 if is_dir else st.st_size,
            "modificationTime": st.st_mtime_ns // 1_000_000,
            "owner": meta.owner or self.default_owner,
            "pathSuffix": suffix,
            "permission": meta.permission or f"{st.st_mode & 0o777:o}",
            "replication": 0 if is_dir else replication,
            "storagePolicy": 0,
            "type": "DIRECTORY" if is_dir else "FILE",
        }

    def _list(self, path: str) -> list[dict[str, Any]]:
        local = self._existing(path, f"File {path} does not exist.")
        if not local.is_dir():
            return [self._status(path, local, "")]
        names = sorted(os.listdir(local), key=lambda n: n.encode("utf-8", "surrogateescape"))
        return [self._status(_child(path, n), local / n, n) for n in names]

    def _summary(self, path: str, local: Path) -> dict[str, Any]:
        directories = files = length = consumed = 0
        if local.is_dir():
            for folder, _, names in os.walk(local):
                directories += 1
                for name in names:
                    size = (Path(folder) / name).stat().st_size
                    rel = (Path(folder) / name).relative_to(self.root).as_posix()
                    meta = self._meta.get("/" + rel) or _Meta()
                    files += 1
                    length += size
                    consumed += size * (meta.replication or self.default_replication)
        else:
            meta = self._meta.get(path) or _Meta()
            files, length = 1, local.stat().st_size
            consumed = length * (meta.replication or self.default_replication)
        return {
            "directoryCount": directories,
            "fileCount": files,
            "length": length,
            "quota": -1,
            "spaceConsumed": consumed,
            "spaceQuota": -1,
            "typeQuota": {},
        }

    def _read(self, path: str, local: Path, offset: int, length: int | None) -> _Response:
        size = local.stat().st_size
        if offset > size:
            raise _error("EOFException", f"Cannot seek after EOF: offset={offset}, {path}")
        with local.open("rb") as stream:
            stream.seek(offset)
            data = stream.read() if length is None else stream.read(length)
        return _Response(HTTPStatus.OK, data, "application/octet-stream")

    def _check_parents(self, path: str) -> None:
        """Raise as HDFS does when an ancestor of ``path`` is a file."""
        parts = path.split("/")[1:-1]
        for i in range(1, len(parts) + 1):
            ancestor = "/" + "/".join(parts[:i])
            local = self._local(ancestor)
            if local.exists() and not local.is_dir():
                raise _error("ParentNotDirectoryException", f"{ancestor} (is not a directory)")

    def _make_parents(self, path: str, user: str) -> None:
        parts = path.split("/")[1:-1]
        for i in range(1, len(parts) + 1):
            ancestor = "/" + "/".join(parts[:i])
            local = self._local(ancestor)
            if not local.exists():
                local.mkdir()
                self._meta[ancestor] = _Meta(owner=user)

    def _mkdirs(self, path: str, user: str, permission: str | None) -> None:
        local = self._local(path)
        if local.exists():
            if not local.is_dir():
                raise _error("FileAlreadyExistsException", f"Path is not a directory: {path}")
            return
        self._check_parents(path)
        self._make_parents(path, user)
        local.mkdir()
        self._meta[path] = _Meta(owner=user, permission=permission)

    def _create(self, path: str, user: str, body: bytes, params: dict[str, str]) -> None:
        overwrite = _bool_param(params, "overwrite", False)
        permission = _permission_param(params)
        replication = _long_param(params, "replication", None)
        local = self._local(path)
        if path == "/" or local.is_dir():
            raise _error("FileAlreadyExistsException", f"{path} already exists as a directory")
        if local.exists() and not overwrite:
            raise _error(
                "FileAlreadyExistsException", f"{path} for client 127.0.0.1 already exists"
            )
        self._check_parents(path)
        self._make_parents(path, user)
        local.write_bytes(body)
        self._meta[path] = _Meta(owner=user, permission=permission, replication=replication)

    def _rename(self, src: str, dst: str) -> bool:
        """HDFS's (old) rename: false, not an error, when it cannot be done."""
        if src == "/":
            return False
        src_local = self._local(src)
        if not src_local.exists():
            return False
        dst_local = self._local(dst)
        if dst_local.is_dir():  # into an existing directory, under the same name
            dst = _child(dst, src.rsplit("/", 1)[1])
            dst_local = self._local(dst)
        if dst == src:
            return True
        if dst.startswith(src + "/") or dst_local.exists() or not dst_local.parent.is_dir():
            return False
        os.rename(src_local, dst_local)
        for key in [k for k in self._meta if k == src or k.startswith(src + "/")]:
            self._meta[dst + key[len(src) :]] = self._meta.pop(key)
        return True

    def _delete(self, path: str, recursive: bool) -> bool:
        if path == "/":
            return False  # HDFS never deletes its root
        local = self._local(path)
        if not local.exists():
            return False
        if local.is_dir():
            if not recursive and any(local.iterdir()):
                raise _error(
                    "PathIsNotEmptyDirectoryException",
                    f"`{path} is non empty': Directory is not empty",
                )
            shutil.rmtree(local)
        else:
            local.unlink()
        for key in [k for k in self._meta if k == path or k.startswith(path + "/")]:
            del self._meta[key]
        return True


class ConnectionProbe:
    """A TCP listener that only counts the connections it gets: the target of the double's
    ``redirect_ops`` when a test checks that a client never went there.

    ``bind`` is the address it listens on, ``host`` the name put in the URL (they differ
    when the URL's host reaches the listener another way, e.g. ``0.0.0.0``).
    """

    def __init__(self, host: str, bind: str) -> None:
        self.host = host
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((bind, 0))
        self._socket.listen(16)
        self._socket.settimeout(0.05)
        self.connections = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="connection-probe", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def url(self, path: str = "/datanode/webhdfs/v1/x?op=OPEN") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        """Stop listening; connections still waiting in the backlog are counted too."""
        self._stopping.set()
        self._thread.join(timeout=5)
        self._socket.setblocking(False)
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self._socket.accept()
                self.connections += 1
                connection.close()
        self._socket.close()

    def __enter__(self) -> ConnectionProbe:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
