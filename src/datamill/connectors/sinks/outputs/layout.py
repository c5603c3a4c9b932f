"""Where a batch's output goes: its location, names and markers, and retention."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from datamill.connectors.sinks.base import ExportBatch, ExportContext, ExportOutcome
from datamill.connectors.sinks.outputs.formats import FileExportOptions
from datamill.domain.variables import REFERENCE, java_format, referenced_names
from datamill.errors import DatamillError, E

TIMESTAMP_FORMAT = "yyyy-MM-dd-HH-mm-ss"
SUCCESS = "_SUCCESS"
_TIMESTAMP_RE = r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}"
_SYSTEM_RES = {
    "year": r"\d{4}",
    "mon": r"\d{2}",
    "day": r"\d{2}",
    "hour": r"\d{2}",
    "min": r"\d{2}",
    "sec": r"\d{2}",
    "date": r"\d{4}-\d{2}-\d{2}",
    "now": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
}
TEMP_NAME = re.compile(r"\..*\.(tmp|old)-[0-9a-f]+")
PARTITION_DIR = re.compile(r"[^/=]+=[^/]*")
OUTPUT_FILE = re.compile(r"(part-[^/]*|_SUCCESS[^/]*)")


def output_location(template: str, batch: ExportBatch, field: str) -> str:
    """The batch's location: variables expanded at the batch time, or the time appended."""
    if referenced_names(template):
        location = batch.resolver.expand(template, field)
    else:
        location = template + java_format(batch.batch_time, TIMESTAMP_FORMAT)
    location = location.rstrip("/")
    if not location:
        raise DatamillError(
            E.INVALID_PARAMETER, f"{field}: '{template}' expands to an empty location", field=field
        )
    return location


def location_pattern(template: str) -> tuple[str, list[re.Pattern[str]]]:
    """(the literal folder outputs live under, one regex per location segment below it).

    ``out/$(year)/$(mon)/sales`` -> (``out``, [``\\d{4}``, ``\\d{2}``, ``sales``]);
    ``exports/sales-`` (no variable) -> (``exports``, [``sales-<timestamp>``]).
    """
    tokens: list[tuple[bool, str]] = []  # (is_regex, text)
    if referenced_names(template):
        pos = 0
        for match in REFERENCE.finditer(template):
            tokens.append((False, template[pos : match.start()]))
            tokens.append((True, _SYSTEM_RES.get(match.group(1), r"[^/]*")))
            pos = match.end()
        tokens.append((False, template[pos:]))
    else:
        tokens = [(False, template), (True, _TIMESTAMP_RE)]
    # per segment: (has a variable, the literal text, the regex)
    segments: list[tuple[bool, str, str]] = [(False, "", "")]
    for is_regex, text in tokens:
        if is_regex:
            _, literal, regex = segments[-1]
            segments[-1] = (True, literal, regex + text)
            continue
        for j, piece in enumerate(text.split("/")):
            if j > 0:
                segments.append((False, "", ""))
            variable, literal, regex = segments[-1]
            segments[-1] = (variable, literal + piece, regex + re.escape(piece))
    while len(segments) > 1 and segments[-1] == (False, "", ""):
        segments.pop()
    base: list[str] = []
    while segments and not segments[0][0]:
        base.append(segments.pop(0)[1])
    return "/".join(b for b in base if b), [re.compile(regex) for _, _, regex in segments]


def is_output_path(parts: list[str], patterns: list[re.Pattern[str]]) -> bool:
    """Whether ``parts`` (below the literal base) name a file this export's naming makes."""
    n = len(patterns)
    if len(parts) < n + 1:
        return False
    if not all(p.fullmatch(part) for p, part in zip(patterns, parts, strict=False)):
        return False
    if not all(PARTITION_DIR.fullmatch(part) for part in parts[n:-1]):
        return False
    return OUTPUT_FILE.fullmatch(parts[-1]) is not None


def append_marker(run_id: int, seq: int) -> str:
    return f"{SUCCESS}-r{run_id}-a{seq}"


def append_seq(ctx: ExportContext, names: list[str], run_id: int) -> int:
    """The number of this append of the run's batch (see "Save modes" in the package docs):
    the rerun count when the framework gives one, else one more than the markers in
    ``names`` (the location's top-level files)."""
    given = ctx.extra.get("rerun_count")
    if isinstance(given, int) and not isinstance(given, bool):
        return given
    pattern = re.compile(rf"{SUCCESS}-r{run_id}-a(\d+)")
    found = [int(m.group(1)) for n in names if (m := pattern.fullmatch(n))]
    return max(found) + 1 if found else 0


@dataclass
class Written:
    """What writing one output did: files and bytes written, or skipped (saveMode ignore)."""

    files: int = 0
    bytes: int = 0
    skipped: bool = False


def outcome(written: Written, rows: int, where: str, spec: FileExportOptions) -> ExportOutcome:
    """The export run's outcome and the line its log shows."""
    if written.skipped:
        return ExportOutcome(
            rows=0, bytes=0, detail=f"{where} already has files; nothing written (saveMode ignore)"
        )
    return ExportOutcome(
        rows=rows,
        bytes=written.bytes,
        detail=(
            f"wrote {rows} rows in {written.files} {spec.format} files "
            f"({written.bytes} bytes) to {where} (saveMode {spec.saveMode})"
        ),
    )


def retention_cutoff(spec: FileExportOptions) -> float | None:
    if spec.retention is None or spec.retention <= 0:
        return None
    return (datetime.now(UTC) - timedelta(days=spec.retention)).timestamp()


def retention_note(ctx: ExportContext, deleted: int, spec: FileExportOptions) -> None:
    if deleted:
        ctx.log(f"retention: deleted {deleted} files older than {spec.retention} days")


def part_prefix(append: tuple[int, int] | None) -> str:
    """How the output files' names start: ``part-``, or ``part-r<runId>-a<n>-`` to append."""
    return f"part-r{append[0]}-a{append[1]}-" if append else "part-"
