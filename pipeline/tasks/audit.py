"""`segpipe run --audit`: the label audit of the converted dataset as a cached task (the same audit as
`segpipe audit DATASET_DIR`: carried-in conversion rows and the Oxford-IIIT Pet layout checks). Its key is the merged dataset's
digest: touching one annotation re-audits, a new checkpoint does not."""

from __future__ import annotations

from typing import Any

import luigi

from segpipe.cache.targets import CachedTask, new_task
from segpipe.reports.tables import write_table
from segpipe.tasks.convert import ConvertMerge


class AuditTask(CachedTask):
    kind = "audit"
    merge_digest = luigi.Parameter()
    html = luigi.BoolParameter(default=True)
    convert_groups = luigi.ListParameter(significant=False)
    plan = luigi.Parameter(significant=False)
    convert_options = luigi.DictParameter[dict[str, Any]](significant=False, default={})
    version = luigi.Parameter(significant=False)

    def subdir(self) -> str:
        return f"{self.merge_digest}-{'html' if self.html else 'tables'}"

    def requires(self) -> ConvertMerge:
        return new_task(ConvertMerge, cache=self.cache, digest=self.merge_digest, groups=self.convert_groups, plan=self.plan,
                        options=self.convert_options, version=self.version)

    def compute(self) -> None:
        # Imported here, not at the top: a cached rerun imports the task modules and runs none of this.
        from segpipe.evaluators.audit.dataset import audit_path
        from segpipe.reports.gallery import GallerySource
        from segpipe.reports.html import render_audit_report

        merged = self.requires().output().directory
        result = audit_path(merged)
        out = self.fresh_directory()
        write_table(out, "findings", result.findings)
        write_table(out, "summary", result.summary)
        if self.html:
            render_audit_report(out, gallery=GallerySource.from_dirs(dataset=merged))
        self.finish(findings=int(len(result.findings)))


def build_audit_task(*, merge: ConvertMerge, html: bool) -> AuditTask:
    return new_task(AuditTask, cache=merge.cache, merge_digest=merge.digest, html=html, convert_groups=merge.groups, plan=merge.plan,
                    convert_options=merge.options, version=merge.version)
