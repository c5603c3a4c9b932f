"""A WebHDFS client over ``requests`` whose every connection passes the outbound guard."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote, urlsplit

from datamill.connectors.outbound.errors import OutboundError, TransientOutboundError, first_line
from datamill.security.outbound import check_host

_HDFS_TRANSIENT = {
    "StandbyException",
    "RetriableException",
    "SafeModeException",
    "ConnectTimeoutException",
}


class WebHdfs:
    """The few WebHDFS operations a folder store needs, over ``requests``.

    Redirects (CREATE goes to a DataNode) are followed by hand so that the DataNode's
    address passes the outbound guard too.
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
        import requests

        check_host(host.strip("[]"), port, allow, field)
        self.allow = allow
        self.field = field
        self.user = user
        self.base = f"{'https' if https else 'http'}://{host}:{port}/webhdfs/v1"
        self.shown = f"hdfs://{host}:{port}"
        self.session = requests.Session()

    def show(self, path: str) -> str:
        return self.shown + path

    def _send(
        self, method: str, url: str, what: str, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """The response; None for a 404 when ``missing_ok``; errors as sink errors."""
        import requests

        try:
            response = self.session.request(
                method, url, allow_redirects=False, timeout=(5, 120), **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientOutboundError(f"{what}: {first_line(exc)}") from exc
        except requests.RequestException as exc:
            raise OutboundError(f"{what}: {first_line(exc)}") from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise self._error(response, what)
        return response

    @staticmethod
    def _error(response: Any, what: str) -> OutboundError:
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
        **params: str,
    ) -> Any:
        query = {"op": op, **params}
        if self.user:
            query["user.name"] = self.user
        url = self.base + quote(path, safe="/")
        what = f"{op} {self.show(path)}"
        return self._send(method, url, what, missing_ok, params=query, data=data)

    def kind(self, path: str) -> str | None:
        found = self.call("GET", "GETFILESTATUS", path, missing_ok=True)
        if found is None:
            return None
        return "dir" if found.json()["FileStatus"].get("type") == "DIRECTORY" else "file"

    def listdir(self, path: str) -> list[tuple[str, bool, float]]:
        """(name, is folder, modification time) of the children; none for a missing path."""
        answer = self.call("GET", "LISTSTATUS", path, missing_ok=True)
        if answer is None:
            return []
        found = []
        for item in answer.json()["FileStatuses"]["FileStatus"]:
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
        first = self.call("PUT", "CREATE", path, overwrite="true")
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
        target = urlsplit(location)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise OutboundError(f"{what}: unusable datanode address {location[:200]!r}")
        check_host(
            target.hostname,
            target.port or (443 if target.scheme == "https" else 80),
            self.allow,
            self.field,
        )
        self._send(
            "PUT",
            location,
            what,
            data=data,
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
