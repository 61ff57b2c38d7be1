"""The exports page: one entry per exported interval, its validation status and its files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from marketstream.exports.layout import ExportedInterval
from marketstream.exports.validation import summarize_report


@dataclass
class ExportEntry:
    interval: ExportedInterval
    status: str = "not validated"  # passed | failed | not validated | unreadable report
    snapshots: int | None = None
    recovered_snapshots: int | None = None
    violations: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # format name -> bytes, files read

    @property
    def start(self) -> datetime:
        return self.interval.start

    @property
    def end(self) -> datetime:
        return self.interval.end

    @property
    def stem(self) -> str:
        return self.interval.stem

    def file(self, format_name: str) -> Path | None:
        return self.interval.files.get(format_name)


def export_entry(interval: ExportedInterval, report_text: str | None = None, report_error: str | None = None,
                 sizes: dict[str, int] | None = None) -> ExportEntry:
    """``report_text``: the validation report's content (``None``: not validated, or
    ``report_error`` says why it could not be read)."""
    entry = ExportEntry(interval, sizes=dict(sizes or {}))
    if report_text is None and report_error is None:
        return entry
    try:
        if report_error is not None:
            raise ValueError(report_error)
        summary = summarize_report(report_text)
    except ValueError as exc:
        name = interval.validation.name if interval.validation else f"{interval.stem}.validation.json"
        entry.status, entry.violations = "unreadable report", [f"{name}: {exc}"]
        return entry
    entry.status, entry.snapshots = summary.status, summary.snapshots
    entry.recovered_snapshots, entry.violations = summary.recovered_snapshots, summary.violations
    return entry


def file_size_text(size: int | None) -> str:
    if size is None:
        return "missing"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""
