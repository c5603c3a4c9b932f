"""Locked-down DuckDB connections.

Every connection that touches user data is locked down before its first statement: no
extension install or load, no access to any file but the exact ones allowed, a private temp
folder, bounded memory and threads, and the configuration locked so SQL cannot undo it.
Object storage and WebHDFS are reached through fsspec filesystems registered on the
connection (DuckDB cannot download its own extensions here); a registered filesystem is
only reachable for the exact paths in ``allowed_paths``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
from sqlglot import exp

from datamill.engines.base import Sandbox
from datamill.engines.duckdb.sql import QUERY, Template, literal, literal_list, render


def _statement(name: str, value: exp.Expression) -> exp.Set:
    return exp.Set(expressions=[exp.SetItem(this=exp.EQ(this=exp.column(name), expression=value))])


def _set(name: str, value: exp.Expression) -> str:
    return render(_statement(name, value))


_PER_SANDBOX = {
    name: Template(_statement(name, QUERY))
    for name in (
        "temp_directory",
        "memory_limit",
        "threads",
        "max_temp_directory_size",
        "allowed_directories",
        "allowed_paths",
    )
}
"""The settings that differ per sandbox, rendered once: only their values are rendered."""


def _set_value(name: str, value: exp.Expression) -> str:
    return _PER_SANDBOX[name].fill(render(value))


_PROFILING = [
    _set("enable_profiling", exp.Literal.string("no_output")),
    _set("profiling_coverage", exp.Literal.string("ALL")),
]
_NO_EXTENSIONS = [
    _set("autoinstall_known_extensions", exp.false()),
    _set("autoload_known_extensions", exp.false()),
    _set("allow_community_extensions", exp.false()),
    _set("allow_persistent_secrets", exp.false()),
    _set("TimeZone", exp.Literal.string("UTC")),
]
_LOCK = [
    _set("enable_external_access", exp.false()),
    _set("lock_configuration", exp.true()),
]


def _dir(path: Path) -> str:
    return str(path).rstrip("/") + "/"


def lockdown(sandbox: Sandbox, *, profiling: bool = False) -> list[str]:
    """The statements that lock a fresh connection into ``sandbox``, in the order DuckDB
    requires (external access and the configuration are locked last)."""
    limits = sandbox.limits
    return [
        *(_PROFILING if profiling else []),
        *_NO_EXTENSIONS,
        _set_value("temp_directory", literal(str(sandbox.temp_dir))),
        _set_value("memory_limit", literal(limits.memory_limit)),
        _set_value("threads", exp.Literal.number(int(limits.threads))),
        _set_value("max_temp_directory_size", literal(limits.max_temp_size)),
        _set_value("allowed_directories", literal_list(_dir(d) for d in sandbox.allowed_dirs)),
        _set_value("allowed_paths", literal_list(sandbox.allowed_paths)),
        *_LOCK,
    ]


def connect_locked(
    sandbox: Sandbox, *, profiling: bool = False, database: str = ":memory:"
) -> duckdb.DuckDBPyConnection:
    """A fresh connection (in memory, or to the ``database`` file), locked down.

    With ``profiling`` the connection records operator statistics (rows scanned, bytes
    read and written) that :meth:`get_profiling_information` returns after a query.
    The temp folder's parent must exist; DuckDB creates the folder itself when a query
    first spills, and removes it on close.
    """
    sandbox.temp_dir.parent.mkdir(parents=True, exist_ok=True)
    statements = lockdown(sandbox, profiling=profiling)
    con = duckdb.connect(database)
    try:
        for fs in sandbox.filesystems:
            con.register_filesystem(fs)
        for statement in statements:
            con.execute(statement)
    except Exception:
        con.close()
        raise
    return con
