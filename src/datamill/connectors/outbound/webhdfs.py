"""WebHDFS over the outbound guard: the client that HDFS sources and sinks share.

Every request, to the NameNode and to each DataNode it redirects to, connects only where
the outbound guard allows: the host is resolved once (:func:`pin_url`), the connection goes
to that address, and redirects are followed by hand (at most :data:`MAX_REDIRECTS` hops),
each new address through the guard again. :class:`WebHdfsFileSystem` exposes the client to
DuckDB as a read-only fsspec filesystem (protocol ``webhdfs``).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote, urlencode, urljoin

import httpx
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from datamill.connectors.outbound.errors import OutboundError, TransientOutboundError, first_line
from datamill.connectors.outbound.http import PinnedUrl, pin_url

MAX_REDIRECTS = 5
"""Redirects followed for one WebHDFS call (NameNode to DataNode is one)."""

_REDIRECTS = {301, 302, 303, 307, 308}
_HDFS_TRANSIENT = {
    "StandbyException",
    "RetriableException",
    "SafeModeException",
    "ConnectTimeoutException",
}


class WebHdfs:
    """The WebHDFS operations datamill needs: listing, file status and reading for
    sources; folders, writes, renames and deletes for sinks.

    ``field`` names the spec field a refused address is reported against (E18118).
    """

    def __init__(
        self,
        host: str,
        port: int,
        https: bool,
        user: str | None,
        allow: list[str],
        field: str = "spec.path",
    ) -> None:
        self.allow = allow
        self.field = field
        self.user = user
        self.base = f"{'https' if https else 'http'}://{host}:{port}/webhdfs/v1"
        self.shown = f"hdfs://{host}:{port}"
        self._pin(self.base)  # refuse a forbidden NameNode before any call
        self.http = httpx.Client(
            timeout=httpx.Timeout(120, connect=5), follow_redirects=False, trust_env=False
        )

    def show(self, path: str) -> str:
        return self.shown + path

    def _pin(self, url: str) -> PinnedUrl:
        return pin_url(url, self.allow, self.field)

    def _send(
        self,
        method: str,
        url: str,
        what: str,
        missing_ok: bool = False,
        follow: bool = True,
        **kwargs: Any,
    ) -> httpx.Response | None:
        """The response; None for a 404 when ``missing_ok``; errors as outbound errors.

        With ``follow``, redirects are followed by hand, every hop through the guard."""
        for _hop in range(MAX_REDIRECTS + 1):
            response = self._once(method, url, what, **kwargs)
            location = response.headers.get("Location")
            if not follow or response.status_code not in _REDIRECTS or not location:
                break
            url = urljoin(url, location)
        else:
            raise OutboundError(f"{what}: more than {MAX_REDIRECTS} redirects")
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise self._error(response, what)
        return response

    def _once(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        pinned = self._pin(url)
        headers = {"Host": pinned.host, **kwargs.pop("headers", {})}
        try:
            return self.http.request(
                method, pinned.base, headers=headers, extensions=pinned.extensions, **kwargs
            )
        except httpx.TransportError as exc:
            raise TransientOutboundError(f"{what}: {first_line(exc)}") from exc
        except httpx.HTTPError as exc:
            raise OutboundError(f"{what}: {first_line(exc)}") from exc

    @staticmethod
    def _error(response: httpx.Response, what: str) -> OutboundError:
        exception, message = "", ""
        try:
            remote = response.json()["RemoteException"]
            exception = str(remote.get("exception", ""))
            message = str(remote.get("message", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            message = (response.text or "").strip()[:300]
        text = f"{what}: HTTP {response.status_code}"
        if exception:
            text += f" {exception}"
        if message:
            text += f": {message}"
        if response.status_code >= 500 or exception in _HDFS_TRANSIENT:
            return TransientOutboundError(text)
        return OutboundError(text)

    def call(
        self,
        method: str,
        op: str,
        path: str,
        data: bytes | None = None,
        missing_ok: bool = False,
        follow: bool = True,
        **params: str,
    ) -> Any:
        query = {"op": op, **params}
        if self.user:
            query["user.name"] = self.user
        url = f"{self.base}{quote(path, safe='/')}?{urlencode(query)}"
        what = f"{op} {self.show(path)}"
        return self._send(method, url, what, missing_ok, follow, content=data)

    def status(self, path: str) -> dict[str, Any] | None:
        """The ``FileStatus`` of ``path``; None when it does not exist."""
        found = self.call("GET", "GETFILESTATUS", path, missing_ok=True)
        return None if found is None else dict(found.json()["FileStatus"])

    def statuses(self, path: str) -> list[dict[str, Any]] | None:
        """The ``FileStatus`` of each child of a folder (of the file itself, with an empty
        ``pathSuffix``, for a file); None when ``path`` does not exist."""
        answer = self.call("GET", "LISTSTATUS", path, missing_ok=True)
        return None if answer is None else list(answer.json()["FileStatuses"]["FileStatus"])

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of a file from ``offset`` (OPEN, redirects followed)."""
        answer = self.call("GET", "OPEN", path, offset=str(offset), length=str(length))
        return bytes(answer.content)

    def kind(self, path: str) -> str | None:
        found = self.status(path)
        if found is None:
            return None
        return "dir" if found.get("type") == "DIRECTORY" else "file"

    def listdir(self, path: str) -> list[tuple[str, bool, float]]:
        """(name, is folder, modification time) of the children; none for a missing path."""
        found = []
        for item in self.statuses(path) or []:
            name = str(item.get("pathSuffix", ""))
            if not name:
                continue
            is_dir = item.get("type") == "DIRECTORY"
            found.append((name, is_dir, float(item.get("modificationTime", 0)) / 1000))
        return sorted(found)

    def _boolean(self, response: Any, what: str) -> bool:
        try:
            return bool(response.json()["boolean"])
        except (ValueError, KeyError, TypeError) as exc:
            raise OutboundError(f"{what}: unexpected answer {response.text[:200]!r}") from exc

    def mkdirs(self, path: str) -> None:
        if not self._boolean(self.call("PUT", "MKDIRS", path), f"MKDIRS {self.show(path)}"):
            raise OutboundError(f"MKDIRS {self.show(path)}: the namenode refused to create it")

    def put(self, path: str, data: bytes) -> None:
        what = f"CREATE {self.show(path)}"
        first = self.call("PUT", "CREATE", path, follow=False, overwrite="true")
        location = first.headers.get("Location")
        if location is None and first.status_code == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                location = first.json()["Location"]
        if first.status_code == 201:  # a server that took the (empty) body directly
            if data:
                raise OutboundError(f"{what}: the namenode did not redirect to a datanode")
            return
        if not location:
            raise OutboundError(f"{what}: the namenode did not say where to write")
        if not location.startswith(("http://", "https://")):
            raise OutboundError(f"{what}: unusable datanode address {location[:200]!r}")
        self._send(
            "PUT",
            location,
            what,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def rename(self, src: str, dst: str) -> None:
        what = f"RENAME {self.show(src)} to {dst}"
        if not self._boolean(self.call("PUT", "RENAME", src, destination=dst), what):
            raise OutboundError(f"{what}: the namenode refused (does the target exist?)")

    def replace_file(self, src: str, dst: str) -> None:
        self.delete(dst, recursive=False)
        self.rename(src, dst)

    def delete(self, path: str, recursive: bool) -> None:
        self.call("DELETE", "DELETE", path, recursive="true" if recursive else "false")


# ------------------------------------------------------------------ fsspec filesystem


def _entry(path: str, status: dict[str, Any]) -> dict[str, Any]:
    is_dir = status.get("type") == "DIRECTORY"
    return {
        "name": path,
        "size": 0 if is_dir else int(status.get("length", 0)),
        "type": "directory" if is_dir else "file",
        "mtime": float(status.get("modificationTime", 0)) / 1000,
    }


class WebHdfsFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """One NameNode, read-only, as an fsspec filesystem for DuckDB: paths are
    ``webhdfs:///absolute/path``; every call goes through the guarded :class:`WebHdfs`."""

    protocol = "webhdfs"
    cachable = False

    def __init__(self, client: WebHdfs) -> None:
        super().__init__()
        self.client = client
        self.read_error: Exception | None = None
        """Why the last failed read failed (DuckDB reports only that it did)."""

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = str(path)
        for prefix in ("webhdfs://", "hdfs://"):
            if text.startswith(prefix):
                text = text[len(prefix) :]
                break
        return "/" + text.strip("/")

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        found = self.client.statuses(path)
        if found is None:
            raise FileNotFoundError(path)
        entries = []
        for status in found:
            name = str(status.get("pathSuffix", ""))
            full = f"{path.rstrip('/')}/{name}" if name else path
            entries.append(_entry(full, status))
        entries.sort(key=lambda e: str(e["name"]))
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        status = self.client.status(path)
        if status is None:
            raise FileNotFoundError(path)
        return _entry(path, status)

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Only "not found" means absent: a refused or failed call raises."""
        try:
            self.info(path)
        except FileNotFoundError:
            return False
        return True

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> WebHdfsFile:
        if mode != "rb":
            raise OSError(f"webhdfs: {path} can only be read")
        try:
            return WebHdfsFile(
                self,
                self._strip_protocol(path),
                mode,
                block_size="default" if block_size is None else block_size,
                cache_options=cache_options,
                **kwargs,
            )
        except Exception as exc:
            self.read_error = exc
            raise


class WebHdfsFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file read by byte ranges (OPEN with offset and length)."""

    fs: WebHdfsFileSystem

    def _fetch_range(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            return self.fs.client.read(self.path, start, end - start)
        except Exception as exc:
            self.fs.read_error = exc
            raise
