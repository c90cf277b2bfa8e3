"""`segpipe run --audit`: the label audit of the converted dataset as a cached task (issue 6's
audit_dataset, called through segpipe.tasks.stages). Its key is the merged dataset's key: touching one
annotation re-audits, a new checkpoint does not."""

from __future__ import annotations

from pathlib import Path

from segpipe.tasks import stages
from segpipe.cache.targets import CachedTask, store_payload
from segpipe.cache.fingerprints import combine_keys
from segpipe.reports.tables import write_table
from segpipe.tasks.convert import ConvertMerge


class AuditTask(CachedTask):
    kind = "audit"

    def requires(self) -> ConvertMerge:
        key, payload = self.data["merge"]
        return ConvertMerge(key=key, cache=self.cache, payload=payload)

    def compute(self) -> None:
        merged = self.requires().output().directory
        result = stages.audit(dataset_dir=merged)
        out = self.fresh_directory()
        write_table(out, "findings", result.findings)
        write_table(out, "summary", result.summary)
        if self.data.get("html", True):
            stages.render_audit_html(audit_dir=out, dataset_dir=merged)
        self.finish(findings=int(len(result.findings)))


def build_audit_task(*, merge: ConvertMerge, version: str, html: bool) -> AuditTask:
    key = combine_keys("audit", version, str(merge.key), str(html))
    return AuditTask(key=key, cache=merge.cache, payload=store_payload(merge.cache, {"merge": [merge.key, merge.payload], "html": html}))


def audit_dir(task: AuditTask) -> Path:
    return task.output().directory
