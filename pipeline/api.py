"""segpipe from Python: each command of the CLI as a function returning the tables the CLI writes.

`import segpipe` re-exports these names lazily (nothing heavy is imported until one is called). Every
function takes paths, reads and writes the same files as the command of the same name, and returns the
same pandas DataFrames the command writes as CSV/Parquet:

- `sample(out)` -> Path: the embedded Oxford-IIIT-Pet-style sample (`segpipe sample`);
- `convert(fmt, src, out, **options)` -> DataFrame: the conversion report rows (`segpipe convert FMT`);
- `evaluate_instances(gt, pred, out=None)` -> InstanceReport: `.summary`, `.per_class`, `.per_image`, `.pr_curves`;
- `evaluate_semantic(gt, pred, out=None)` -> SemanticReport: `.summary`, `.per_class`, `.per_image`, `.confusion`;
- `infer(model=, checkpoint=, dataset=, out=)` -> InferenceSummary (`segpipe infer`);
- `audit(dataset, pred=None, out=None)` -> AuditResult: `.findings`, `.summary` (`segpipe audit`);
- `run(dataset=, format=, model=, checkpoints=, out=)` -> RunResult: `.leaderboard` DataFrame, `.exit_code`.

Errors are `segpipe.SegpipeError` subclasses naming the file and the field.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from segpipe.core.layout import RESULTS_FILE, SEMANTIC_CLASSES_FILE

if TYPE_CHECKING:  # imported lazily at call time: `import segpipe` must stay cheap
    import pandas as pd

    from segpipe.evaluators.audit.dataset import AuditResult
    from segpipe.evaluators.instance.evaluation import InstanceReport
    from segpipe.evaluators.semantic.tables import SemanticReport
    from segpipe.inference.engine import InferenceSummary
    from segpipe.runner.driver import RunOutcome

PathLike = str | os.PathLike[str]


def sample(out: PathLike, *, n_images: int = 24, seed: int = 0) -> Path:
    """Write the embedded sample dataset (Oxford-IIIT Pet layout) under `out`; returns `out`."""
    from segpipe.demo.sample import generate_sample

    return generate_sample(Path(out), n_images=n_images, seed=seed)


def convert(fmt: str, src: PathLike, out: PathLike, **options: Any) -> pd.DataFrame:
    """Convert the annotation folder `src` (format `fmt`) into the dataset dir `out`, as `segpipe convert FMT`.

    `fmt` is any format of `segpipe.converters.formats.FORMATS`; `options` are exactly the CLI's options of that
    command, `-` written `_` (for example `categories="pet"` for oxford-pet, `images=`, `classes=`,
    `one_based=True` for voc, `list_file=` for trimap's --list); an unknown one is a SegpipeError naming the
    allowed ones. Returns the rows of OUT/conversion_report.csv (file, severity, code, message); bad input
    files are rows, not exceptions, exactly as in the CLI.
    """
    import pandas as pd

    from segpipe.converters.formats import format_spec
    from segpipe.core.layout import CONVERSION_REPORT_FILE as REPORT_FILE_NAME

    format_spec(fmt, where=Path(src)).write(Path(src), Path(out), **options)
    return pd.read_csv(Path(out) / REPORT_FILE_NAME, dtype=str, keep_default_na=False)


def evaluate_instances(gt: PathLike, pred: PathLike, *, out: PathLike | None = None, iou_type: str | None = None,
                       drop_invalid: bool = False, allow_label_mismatch: bool = False, allow_partial: bool = False) -> InstanceReport:
    """Score a COCO results file against a COCO ground truth (pycocotools' numbers); with `out`, write the
    report folder `segpipe evaluate instances` writes (tables + header.json, no HTML page).

    Predictions of `segpipe infer` made on other category names, or of an unfinished inference, raise
    segpipe.prediction_checks.PredictionCheckError unless `allow_label_mismatch` / `allow_partial`."""
    from segpipe.commands.evaluate_instances import INSTANCE_CONVENTIONS as CONVENTIONS, write_instance_report
    from segpipe.evaluators.instance.coco_ground_truth import GT_PATH
    from segpipe.evaluators.instance.coco_results import RESULTS_PATH
    from segpipe.core.errors import EvaluationError
    from segpipe.evaluators.instance.evaluation import default_iou_type
    from segpipe.evaluators.instance.evaluation import evaluate_instances as evaluate
    from segpipe.evaluators.json_files import read_json_file

    from segpipe.core.out_manifest import is_partial_prediction
    from segpipe.prediction_checks import guard_instance_predictions

    gt_path, pred_path = Path(gt), Path(pred)
    if pred_path.is_dir():
        pred_path = pred_path / RESULTS_FILE
    gt_data = read_json_file(gt_path, what="ground truth")
    results = [] if is_partial_prediction(pred_path) else read_json_file(pred_path, what="results")
    guard_warnings: list[str] = []
    if isinstance(gt_data, dict):
        results, guard_warnings = guard_instance_predictions(gt_data, results, gt_path=gt_path, pred_path=pred_path,
                                                             allow_label_mismatch=allow_label_mismatch, allow_partial=allow_partial)
    for message in guard_warnings:
        warnings.warn(message, stacklevel=2)
    kind = iou_type or default_iou_type(results if isinstance(results, list) else [])
    try:
        report = evaluate(gt_data, results, iou_type=kind, drop_invalid=drop_invalid)
    except EvaluationError as err:  # the evaluator names in-memory inputs; here they are files
        path = {GT_PATH: str(gt_path), RESULTS_PATH: str(pred_path)}.get(err.path, err.path)
        raise EvaluationError(path, err.field, err.reason) from err
    if out is not None:
        header = {"command": "evaluate instances", "gt": str(gt_path.resolve()), "pred": str(pred_path.resolve()),
                  "n_images": int(len(report.per_image)), "n_results": len(results) if isinstance(results, list) else 0,
                  "drop_invalid": drop_invalid, "conventions": CONVENTIONS}
        write_instance_report(report, Path(out), header=header)
    return report


def evaluate_semantic(gt: PathLike, pred: PathLike, *, out: PathLike | None = None,
                      classes: Sequence[str] | None = None, ignore_index: int | None = None,
                      allow_label_mismatch: bool = False, allow_partial: bool = False) -> SemanticReport:
    """Score predicted label maps against ground-truth label maps, matched by stem (mIoU, Dice, accuracy).

    `gt`/`pred` are folders of PNGs or dataset/prediction dirs holding them under semantic/; `classes`
    defaults to the GT folder's classes.txt. With `out`, write the report folder (tables + header.json).
    """
    from segpipe.commands.evaluate_semantic import SEMANTIC_CONVENTIONS as CONVENTIONS, label_map_dir, write_semantic_report
    from segpipe.core.dataset_layout import read_class_names_file
    from segpipe.evaluators.semantic.confusion import IGNORE_INDEX
    from segpipe.core.errors import EvaluationError
    from segpipe.evaluators.semantic.evaluation import evaluate_semantic_dirs

    gt_dir, pred_dir = label_map_dir(Path(gt)), label_map_dir(Path(pred))
    ignore = IGNORE_INDEX if ignore_index is None else ignore_index
    if classes is None:
        classes_file = gt_dir / SEMANTIC_CLASSES_FILE
        if not classes_file.is_file():
            raise EvaluationError(classes_file, "", "no classes.txt beside the label maps: pass classes=[...]")
        classes = read_class_names_file(classes_file)
    names = list(classes)
    from segpipe.prediction_checks import guard_label_maps

    for message in guard_label_maps(gt_dir, pred_dir, class_names=names, allow_label_mismatch=allow_label_mismatch,
                                    allow_partial=allow_partial):
        warnings.warn(message, stacklevel=2)
    report = evaluate_semantic_dirs(gt_dir, pred_dir, class_names=names, ignore_index=ignore)
    if out is not None:
        header = {"command": "evaluate semantic", "gt": str(gt_dir.resolve()), "pred": str(pred_dir.resolve()),
                  "classes": names, "ignore_index": ignore, "n_images": len(report.per_image),
                  "conventions": CONVENTIONS}
        write_semantic_report(report, Path(out), header=header)
    return report


def infer(*, model: str, checkpoint: PathLike, dataset: PathLike, out: PathLike, progress: bool = False,
          **options: Any) -> InferenceSummary:
    """Run `checkpoint` (architecture `model`, e.g. "unet", "deeplabv3_resnet50", "maskrcnn_resnet50_fpn") over
    a converted `dataset` into the predictions dir `out` (`segpipe infer`). `options` are exactly the options of
    `segpipe infer`, `-` written `_`: the fields of segpipe.inference.options.InferenceOptions (for example
    device, batch_size, precision, resize, classes, workers), checked as the command line checks them; an
    unknown one is an InferenceError naming the known ones. `progress`: a progress bar (the command line's is on unless -q)."""
    from segpipe.inference.engine import run_inference
    from segpipe.inference.options import InferenceOptions

    return run_inference(model=model, checkpoint=Path(checkpoint), dataset=Path(dataset), out=Path(out),
                         options=InferenceOptions.from_mapping(options), progress=progress)


def audit(dataset: PathLike, *, pred: PathLike | None = None, out: PathLike | None = None) -> AuditResult:
    """Audit label quality of a converted dataset dir (or a COCO file); `pred` adds the model-assisted checks.
    With `out`, write findings.csv and summary.csv (+ Parquet) as `segpipe audit` does."""
    from segpipe.commands.audit import write_audit
    from segpipe.evaluators.audit.dataset import audit_path

    result = audit_path(Path(dataset), pred=Path(pred) if pred is not None else None)
    if out is not None:
        write_audit(Path(out), findings=result.findings, summary=result.summary)
    return result


@dataclass(frozen=True)
class RunResult:
    """What `segpipe run` leaves: the leaderboard table and the run's bookkeeping (tasks run, cached, failed)."""

    leaderboard: pd.DataFrame
    outcome: RunOutcome

    @property
    def exit_code(self) -> int:
        """The exit code `segpipe run` would end with (0 all done; see the README)."""
        return self.outcome.exit_code


def run(**settings: Any) -> RunResult:
    """The whole cached pipeline (`segpipe run`): `dataset`, `format`, `model`, `checkpoints` (a glob or a list)
    and `out` are required; every other setting of run.toml is accepted by its name (`workers`, `audit`,
    `cache_dir`, `html`, `convert={...}`, `infer={...}`...). Returns a `RunResult`: `.leaderboard` is
    OUT/leaderboard.csv as a DataFrame (best first), `.exit_code` what `segpipe run` would exit with, and
    `.outcome` what ran, came from the cache or failed.

    >>> import tempfile, segpipe
    >>> from segpipe.demo.checkpoints import SHIPPED_DIR
    >>> tmp = tempfile.mkdtemp()
    >>> _ = segpipe.sample(f"{tmp}/sample", n_images=4)
    >>> result = segpipe.run(dataset=f"{tmp}/sample", format="oxford-pet", model="unet", out=f"{tmp}/nightly",
    ...                      checkpoints=[SHIPPED_DIR / "unet_e01.pt", SHIPPED_DIR / "unet_e03.pt"], html=False,
    ...                      infer={"device": "cpu"})
    >>> result.exit_code, list(result.leaderboard["checkpoint"])
    (0, ['unet_e03', 'unet_e01'])
    """
    import pandas as pd

    from segpipe.runner.config import parse_run_settings
    from segpipe.runner.driver import run_pipeline

    if isinstance(settings.get("checkpoints"), (list, tuple)):
        settings["checkpoints"] = [str(c) for c in settings["checkpoints"]]
    parsed = parse_run_settings({}, overrides=settings, source="segpipe.run()")
    outcome = run_pipeline(parsed)
    board = pd.read_csv(outcome.leaderboard) if outcome.leaderboard is not None else pd.DataFrame()
    return RunResult(leaderboard=board, outcome=outcome)
