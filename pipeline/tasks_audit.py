"""`segpipe run --audit`: the label audit of the converted dataset as a cached task (issue 6's
audit_dataset, called through pipeline.stages). Its key is the merged dataset's key: touching one
annotation re-audits, a new checkpoint does not."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from converters.dataset_layout import INSTANCES_FILE, SEMANTIC_DIR, DatasetDir
from converters.report import REPORT_FILE_NAME
from pipeline import stages
from pipeline.cache_targets import CachedTask
from pipeline.fingerprints import canonical_json, combine_keys
from pipeline.tables import write_table
from pipeline.tasks_convert import ConvertMerge


class AuditTask(CachedTask):
    kind = "audit"

    def requires(self) -> ConvertMerge:
        key, payload = self.data["merge"]
        return ConvertMerge(key=key, cache=self.cache, payload=payload)

    def compute(self) -> None:
        merged = self.requires().output().directory
        coco = json.loads((merged / INSTANCES_FILE).read_bytes())
        report = merged / REPORT_FILE_NAME
        findings = pd.read_csv(io.StringIO(report.read_text(encoding="utf-8"))) if report.is_file() else None
        semantic = merged / SEMANTIC_DIR
        result = stages.audit(
            coco=coco, image_root=DatasetDir(merged).image_root, conversion_findings=findings, predictions=None,
            semantic_dir=semantic if semantic.is_dir() else None,
        )
        out = self.fresh_directory()
        write_table(out, "findings", result.findings)
        write_table(out, "summary", result.summary)
        if self.data.get("html", True):
            stages.render_audit_html(audit_dir=out)
        self.finish(findings=int(len(result.findings)))


def build_audit_task(*, merge: ConvertMerge, version: str, html: bool) -> AuditTask:
    key = combine_keys("audit", version, str(merge.key), str(html))
    return AuditTask(key=key, cache=merge.cache, payload=canonical_json({"merge": [merge.key, merge.payload], "html": html}))


def audit_dir(task: AuditTask) -> Path:
    return task.output().directory
