"""What a command does beyond its flags: the report files it writes, the conventions it states, the inputs it
refuses. `segpipe.cli` (the `segpipe` command), `segpipe.api` (the Python functions) and `segpipe.tasks` (the
pipeline's Luigi tasks) all call this layer, so the three write the same files and refuse the same inputs;
nothing here parses flags or prints. Each module imports what is heavy (numpy, pandas) only when called, so the
CLI's `--help` stays fast.
"""

from segpipe.commands.audit import FINDINGS_TABLE, PARTIAL_RESULTS_FILE, SUMMARY_TABLE, write_audit
from segpipe.commands.evaluate_instances import (
    INSTANCE_CONVENTIONS, located_warning, refuse_empty_by_construction, write_instance_report,
)
from segpipe.commands.evaluate_semantic import SEMANTIC_CONVENTIONS, label_map_dir, write_semantic_report

__all__ = [
    "FINDINGS_TABLE", "INSTANCE_CONVENTIONS", "PARTIAL_RESULTS_FILE", "SEMANTIC_CONVENTIONS", "SUMMARY_TABLE",
    "label_map_dir", "located_warning", "refuse_empty_by_construction", "write_audit", "write_instance_report",
    "write_semantic_report",
]
