"""Conversion report: one row per finding, `file, severity, code, message`.

A bad input file never aborts a dataset: it becomes a row here and the command's exit code says so.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sized

from segpipe.core.atomic_write import atomic_write_text
from segpipe.core.layout import CONVERSION_REPORT_FILE

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
REPORT_COLUMNS: tuple[str, ...] = ("file", "severity", "code", "message")
REPORT_FILE_NAME = CONVERSION_REPORT_FILE

# Exit codes of the convert commands: 0 clean, EXIT_SKIPPED_ERRORS when some inputs were skipped as
# errors (the good inputs were still written). 1 and 2 are click's (abort, usage).
EXIT_OK = 0
EXIT_SKIPPED_ERRORS = 3
EXIT_STRICT_ABORT = 4  # --strict: stopped at the first error row, outputs not written


@dataclass(frozen=True, order=True)
class Finding:
    file: str
    severity: Severity
    code: str
    message: str


@dataclass
class ConversionReport:
    """Findings collected while converting; `strict` turns the first error into an exception."""

    strict: bool = False
    findings: list[Finding] = field(default_factory=list)
    # (images, annotations, categories) of the instances.json this conversion wrote, for the command's summary
    # line: counted from the dict in memory rather than by parsing the file again.
    written: tuple[int, int, int] | None = None

    def note_written(self, coco: Mapping[str, Sized]) -> None:
        self.written = (len(coco["images"]), len(coco["annotations"]), len(coco["categories"]))

    def add(self, *, file: str | os.PathLike[str], severity: Severity, code: str, message: str) -> None:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        finding = Finding(file=display_path(file), severity=severity, code=code, message=message)
        self.findings.append(finding)
        if self.strict and severity == "error":
            raise StrictModeError(finding)

    def extend(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            self.add(file=f.file, severity=f.severity, code=f.code, message=f.message)

    def counts(self) -> Counter[str]:
        return Counter(f.severity for f in self.findings)

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def exit_code(self) -> int:
        return EXIT_SKIPPED_ERRORS if self.has_errors else EXIT_OK

    def summary_line(self, *, what: str) -> str:
        c = self.counts()
        return f"{what}; {c['error']} error(s), {c['warning']} warning(s), {c['info']} info row(s) in the report"


class StrictModeError(Exception):
    """Raised by `ConversionReport.add` under `--strict` at the first error row."""

    def __init__(self, finding: Finding) -> None:
        self.finding = finding
        super().__init__(f"{finding.file}: [{finding.code}] {finding.message}")


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as text that survives CSV/UTF-8 even when the file name is not valid UTF-8."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    # Undecodable bytes arrive as lone surrogates (PEP 383); make them visible, not fatal.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def format_report_csv(findings: Iterable[Finding]) -> str:
    """Rows in a stable order (file, then severity, code, message) so reruns give the same bytes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for f in sorted(findings):
        writer.writerow([f.file, f.severity, f.code, f.message])
    return buf.getvalue()


def write_report(path: str | os.PathLike[str], findings: Iterable[Finding]) -> Path:
    return atomic_write_text(path, format_report_csv(findings))
