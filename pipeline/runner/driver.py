"""`segpipe run` without the CLI: fingerprint once, build the task graph, run it with Luigi, publish.

Phases (each a `luigi.build(..., detailed_summary=True)`, all against the same scheduler):
1. convert: conversion shards + merge (+ audit). The label space (category names, semantic classes) is
   read from the merged dataset: it maps model outputs to dataset ids, so it is part of inference keys.
2. infer + evaluate every checkpoint. A failing checkpoint fails only its own tasks.
3. leaderboard over the checkpoints that succeeded, listing the failed ones.
Then the reports are copied from the cache into OUT (only files whose bytes changed).
"""

from __future__ import annotations

import csv
import glob
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from luigi.execution_summary import LuigiStatusCode

from segpipe.core.atomic_write import atomic_write_text
from segpipe.converters.report import EXIT_SKIPPED_ERRORS
from segpipe.core.layout import CONVERSION_REPORT_FILE as REPORT_FILE_NAME
from segpipe.cache.targets import EXECUTION_LOG, GROUP_LOG, CachedTask, execution_run_id, forget_verified, log_size, new_task
from segpipe.cache.fingerprints import (
    STAT_CACHE_FILE, StatCache, checkpoint_fingerprint, combine_keys, options_key, scan_dataset,
    package_version,
)
from segpipe.cache.input_check import share_stat_cache
from segpipe.inference.checkpoints import ModelCard, model_card_path
from segpipe.inference.images import inference_label_space, model_task, readable_card
from segpipe.inference.resolution import default_resolution_key
from segpipe.runner.config import RunConfigError, RunSettings
from segpipe.runner.phases import RunOutcome as RunOutcome, run_phase as run_phase, walk_graph as walk_graph  # the driver's API too
from segpipe.runner.phases import is_complete, preload_for_forked_workers, worker_count
from segpipe.runner.publish import publish_outputs
from segpipe.plan.shards import DatasetSpec, ShardPlan, plan_shards, plan_to_json, read_plan, write_plan
from segpipe.tasks.convert import ConvertMerge, convert_unit_keys, group_digest, spec_to_json
from segpipe.tasks.evaluate import read_gt_keys, read_label_space
from segpipe.tasks.report import EvalReport, Leaderboard, leaderboard_key

EXIT_TASKS_FAILED = 5
EXIT_SCHEDULING_FAILED = 6
OK_STATUSES = (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY)
RUN_LOG_FILE = "run_log.json"


@dataclass(frozen=True)
class CheckpointInput:
    name: str
    path: Path
    sha256: str  # of the file's bytes (the leaderboard column)
    key: str  # sha256 of the file, combined with its model card when there is one
    card_path: Path | None = None  # the model card beside it, found once
    card: ModelCard | None = None  # and read once (None: none, or unreadable: its inference task then fails saying why)


def expand_checkpoints(globs: Iterable[str]) -> list[Path]:
    """Checkpoint files matched by the globs, sorted and without duplicates (model cards excluded)."""
    found = {Path(p).resolve() for g in globs for p in glob.glob(g, recursive=True) if Path(p).is_file()}
    return sorted(p for p in found if p.suffix.lower() not in (".json", ".toml", ".md", ".txt"))


def checkpoint_names(paths: list[Path]) -> list[str]:
    """File stems, or `parent/stem` where stems collide, so every checkpoint has its own report folder."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}-{p.stem}" for p in paths]


def build_convert_tasks(*, spec: DatasetSpec, plan: ShardPlan, settings: RunSettings, version: str, cache: str) -> ConvertMerge:
    """The conversion graph: one ConvertGroup per scheduling group, one ConvertMerge. Writes the plan file."""
    plan_json = plan_to_json(plan, spec_json=spec_to_json(spec))
    plan_id = write_plan(plan_json, cache=Path(cache))
    options = dict(settings.convert)
    stored = read_plan(cache, plan_id)  # the typed plan every task reads (kept in memory by write_plan)
    keys = convert_unit_keys(stored, version=version, options=options)
    groups = [group_digest("convert-group", [keys[p] for p in g]) for g in stored.groups]
    digest = combine_keys("convert-merge", version, options_key({"format": spec.format, **options}), *keys)
    return new_task(ConvertMerge, cache=cache, digest=digest, groups=groups, plan=plan_id, options=options, version=version)


def build_checkpoint_tasks(*, ckpt: CheckpointInput, merge: ConvertMerge, settings: RunSettings, version: str,
                           inputs_date: str | None = None) -> EvalReport:
    """One EvalReport over the checkpoint's EvalGroups. Needs the merged dataset (label space, per-shard
    ground-truth digests): it is built after the conversion phase."""
    merged = merge.output().directory
    infer = settings.inference
    options = infer.key_items()  # the options that decide what inference writes: the inference key
    task = model_task(model=settings.model, card=ckpt.card)
    # A model's default resolution is spelled out in the key: predictions made at an older default are not reused.
    default = default_resolution_key(task=task, resize=infer.resize)
    params: dict[str, Any] = dict(
        cache=merge.cache, checkpoint=ckpt.name, checkpoint_digest=ckpt.key, model=settings.model,
        options_digest=options_key({"model": settings.model, **options, **({"resize": default} if default else {})}), iou_type=settings.iou_type,
        checkpoint_path=str(ckpt.path), checkpoint_sha256=ckpt.sha256, options=options,
        loader_workers=infer.workers,
        labels_digest=options_key(inference_label_space(read_label_space(merged), task=task)),
        plan=merge.plan, version=version, merge_digest=merge.digest, convert_groups=merge.groups, convert_options=merge.options,
        devices=list(settings.devices),
    )
    probe = new_task(EvalReport, **params, digest="", groups=[], html=settings.html)
    plan = read_plan(str(merge.cache), str(merge.plan))
    gt_keys = read_gt_keys(merged)
    groups = [group_digest("eval-group", [e.key for _, _, e in probe.shard_units(g, gt_keys=gt_keys)]) for g in plan.groups]
    digest = combine_keys("eval-report", version, ckpt.name, ckpt.sha256, str(merge.digest), plan.images_key,
                          settings.iou_type, str(settings.html), *groups)
    # `inputs_date` stays outside the key: touching a file changes its date, not what the report computes.
    return new_task(EvalReport, **params, digest=digest, groups=groups, html=settings.html, inputs_date=inputs_date)


def run_pipeline(settings: RunSettings) -> RunOutcome:
    """Fingerprint, build and run the whole graph; publish reports into OUT. Never prints."""
    with execution_run_id():
        return _run_pipeline(settings)


def check_before_work(settings: RunSettings) -> None:
    """What can be checked before any task runs is checked here (RunConfigError, a usage error in the CLI):
    the inference device exists on this host, the dataset folder has the layout --format expects, and the
    class list and list file it needs are there. Otherwise a run converts first, then fails every checkpoint."""
    _check_device(settings)
    _check_layout(settings)
    classes, num_classes = settings.inference.classes, settings.inference.num_classes
    if classes is not None and num_classes is not None and len(classes) != int(num_classes):
        raise RunConfigError("command line or run config", "infer.classes",
                             f"{len(classes)} model class name(s) given for {num_classes} model output(s)")


def _check_device(settings: RunSettings) -> None:
    device = settings.inference.device
    wanted = [name for name in ([f"cuda:{i}" for i in settings.devices] or [device]) if name.startswith("cuda")]
    if not wanted:  # auto falls back to the CPU; cpu needs no check
        return
    count = cuda_device_count()
    if count is None:  # the probe itself failed: inference reports the device when it opens it
        return
    for name in wanted:
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            field = "devices" if settings.devices else "infer.device"
            raise RunConfigError("command line or run config", field,
                                 f"{name} requested but torch sees {count} CUDA device(s) on this host; "
                                 + ("use --device cpu" if count == 0 else f"use an index below {count}")
                                 + " (checked before any task runs: nothing was converted)")


def cuda_device_count() -> int | None:
    """The GPUs torch sees on this host (0 without CUDA), None when that cannot be asked. Asked in a child
    interpreter: CUDA initialised in this process would be inherited broken by Luigi's forked workers
    (https://pytorch.org/docs/stable/notes/multiprocessing.html#cuda-in-multiprocessing)."""
    import subprocess
    import sys

    code = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        return int(done.stdout.split()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _check_layout(settings: RunSettings) -> None:
    from segpipe.converters.formats import FORMATS
    from segpipe.converters.layout_hints import describe_folder, is_pet_root

    root, fmt = settings.dataset, settings.format
    spec = FORMATS[fmt]
    if not root.exists():
        raise RunConfigError(str(root), "dataset", "no such folder")
    for name, path in (("images", settings.images), ("classes", settings.classes), ("list_file", settings.list_file)):
        if path is not None and not path.exists():
            raise RunConfigError(str(path), name, "no such file or folder")
    if spec.source_problem is not None:  # the folder check of `segpipe convert FMT`
        problem = spec.source_problem(root, {"images": settings.images})
        if problem is not None:
            raise RunConfigError(str(root), "format", problem)
        if spec.layout_root:
            return
    elif root.is_dir() and is_pet_root(root):
        raise RunConfigError(str(root), "format", f"--format {fmt}, but {root} is an Oxford-IIIT Pet root "
                             f"({describe_folder(root)}): use --format oxford-pet")
    if spec.find_classes is not None and settings.classes is None:
        from segpipe.core.errors import AnnotationError

        try:
            spec.find_classes(root)
        except AnnotationError as err:
            raise RunConfigError(str(root), "classes", f"{err.reason} (give --classes)") from err
    if settings.classes is not None and settings.classes.is_file() and spec.find_classes is None:  # a plain list of names
        from segpipe.core.dataset_layout import read_class_names_file

        try:
            names = read_class_names_file(settings.classes)
        except (OSError, UnicodeDecodeError) as err:
            raise RunConfigError(str(settings.classes), "classes", f"unreadable class list: {err}") from err
        if not names:
            raise RunConfigError(str(settings.classes), "classes", "no class names in the file")
        if len(set(names)) != len(names):
            raise RunConfigError(str(settings.classes), "classes", f"duplicate class names: {names}")


def _run_pipeline(settings: RunSettings) -> RunOutcome:
    from segpipe.core.out_manifest import RUN, check_output_folder, claim_output_folder

    check_before_work(settings)
    check_output_folder(settings.out, command=RUN)  # not a conversion's or a report's folder: refused before any work
    outcome = RunOutcome()
    cache = settings.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    settings = replace(settings, cache_dir=cache)
    version = package_version()
    stat_cache = StatCache(cache / "fingerprints" / STAT_CACHE_FILE, rehash=settings.rehash)
    spec = DatasetSpec(format=settings.format, root=settings.dataset.resolve(),
                       images=settings.images.resolve() if settings.images else None,
                       classes=settings.classes.resolve() if settings.classes else None,
                       list_file=settings.list_file.resolve() if settings.list_file else None)
    scan = scan_dataset(spec.roots(), stat_cache=stat_cache, exclude=[settings.out, cache])
    outcome.skipped_inputs = [f"{path}: {reason}" for path, reason in scan.skipped]
    plan = plan_shards(scan.manifest, spec=spec, shard_size=settings.shard_size)
    spec.refuse_empty(len(plan.images))
    paths = expand_checkpoints(settings.checkpoints)
    if not paths:
        raise RunConfigError(", ".join(settings.checkpoints), "checkpoints", "no checkpoint file matches (give files, folders or glob patterns)")
    claim_output_folder(settings.out, command=RUN, what="`segpipe run`", owns=())  # written once the dataset and checkpoints are known good
    checkpoints = []
    for name, path in zip(checkpoint_names(paths), paths):
        card_path = model_card_path(path)
        sha = stat_cache.sha256(path, stat=path.stat())
        checkpoints.append(CheckpointInput(name=name, path=path, sha256=sha, card_path=card_path, card=readable_card(path),
                                           key=checkpoint_fingerprint(path, card=card_path, stat_cache=stat_cache)))
    stat_cache.save()
    share_stat_cache(stat_cache)
    return run_graph(settings, spec=spec, plan=plan, checkpoints=checkpoints, version=version, outcome=outcome,
                     dataset_mtime=scan.latest_mtime)


def run_graph(settings: RunSettings, *, spec: DatasetSpec, plan: ShardPlan, checkpoints: list[CheckpointInput], version: str,
              outcome: RunOutcome, dataset_mtime: float | None = None) -> RunOutcome:
    """The three phases over a fingerprinted dataset (`plan`) and checkpoints; publishes into OUT."""
    cache = settings.cache
    forget_verified()
    if not outcome.log_start:
        outcome.log_start = {log: log_size(Path(cache), log=log) for log in (EXECUTION_LOG, GROUP_LOG)}
    merge = build_convert_tasks(spec=spec, plan=plan, settings=settings, version=version, cache=str(cache))
    phase1: list[CachedTask] = [merge]
    audit_task = None
    if settings.audit:
        from segpipe.tasks.audit import build_audit_task

        audit_task = build_audit_task(merge=merge, html=settings.html)
        phase1.append(audit_task)
    run_phase(phase1, settings=settings, outcome=outcome)
    if not is_complete(merge):
        outcome.exit_code = EXIT_TASKS_FAILED
        _write_run_log(settings=settings, outcome=outcome)
        return outcome

    reports = {c.name: build_checkpoint_tasks(ckpt=c, merge=merge, settings=settings, version=version,
                                              inputs_date=_inputs_date(dataset_mtime, c.path, card=c.card_path))
               for c in checkpoints}
    if worker_count(settings) > 1 and not all(is_complete(r) for r in reports.values()):
        preload_for_forked_workers()
    run_phase(list(reports.values()), settings=settings, outcome=outcome)

    rows: list[list[str]] = []
    for ckpt in checkpoints:
        report = reports[ckpt.name]
        if is_complete(report):
            rows.append([ckpt.name, ckpt.sha256, report.subdir(), ""])
        else:
            reason = outcome.failed_checkpoints.setdefault(ckpt.name, "not completed (see the luigi summary above)")
            rows.append([ckpt.name, ckpt.sha256, "", reason])
    leaderboard = new_task(Leaderboard, cache=str(cache), digest=leaderboard_key(rows, version=version), rows=rows)
    run_phase([leaderboard], settings=settings, outcome=outcome)

    if is_complete(leaderboard):
        outcome.leaderboard, changed = publish_outputs(
            out=settings.out, leaderboard_dir=leaderboard.output().directory,
            reports={r[0]: reports[r[0]].output().directory for r in rows if r[2]},
            merged_dir=merge.output().directory, audit_dir=audit_task.output().directory if audit_task is not None and is_complete(audit_task) else None,
        )
        outcome.published = changed
        if settings.html and (changed or not (settings.out / "leaderboard.html").is_file()):
            from segpipe.reports.html import render_leaderboard

            render_leaderboard(settings.out)
    outcome.conversion_errors = _count_conversion_errors(merge.output().directory / REPORT_FILE_NAME)
    outcome.exit_code = _exit_code(outcome)
    _write_run_log(settings=settings, outcome=outcome)
    return outcome


def _inputs_date(dataset_mtime: float | None, checkpoint: Path, *, card: Path | None) -> str | None:
    from segpipe.reports.data import format_mtime

    times = [t for t in (dataset_mtime, checkpoint.stat().st_mtime, card.stat().st_mtime if card else None) if t is not None]
    return format_mtime(max(times)) if times else None


def _count_conversion_errors(report: Path) -> int:
    if not report.is_file():
        return 0
    rows = csv.DictReader(io.StringIO(report.read_text(encoding="utf-8")))
    return sum(1 for row in rows if row.get("severity") == "error")


def _exit_code(outcome: RunOutcome) -> int:
    if outcome.failed or outcome.failed_checkpoints or outcome.leaderboard is None:
        return EXIT_TASKS_FAILED
    if any(s not in {c.name for c in OK_STATUSES} for s in outcome.statuses):
        return EXIT_SCHEDULING_FAILED
    return EXIT_SKIPPED_ERRORS if outcome.conversion_errors else 0


def _write_run_log(*, settings: RunSettings, outcome: RunOutcome) -> None:
    log = {"ran": outcome.ran, "cached": outcome.cached, "reused": outcome.reused, "groups": outcome.groups,
           "run_by_other_workers": outcome.by_others,
           "failed": outcome.failed, "failed_checkpoints": outcome.failed_checkpoints, "exit_code": outcome.exit_code}
    atomic_write_text(settings.out / RUN_LOG_FILE, json.dumps(log, indent=1, sort_keys=True) + "\n")
