"""The device loop of an inference run: decode (DataLoader) -> predict (the device) -> encode (threads) -> shard files.

The device runs batch k+1 while encoder threads turn batch k into RLE, PNGs and shard files. A shard file is
written once all of its images are done (atomically), so an interrupted run resumes from the last finished shard.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from segpipe.inference.data import ImageDataset, PlannedBatches, collate_samples
from segpipe.inference.outputs import (
    SemanticPrediction, SkippedImage, component_results, instance_results, read_shard, skipped_row, shard_path, write_semantic_png,
    write_shard,
)
from segpipe.inference.predictor import DevicePredictor, run_with_oom_backoff
from segpipe.inference.speed import default_loader_workers

MAX_BATCHES_IN_FLIGHT = 4  # encoder backlog per encoder thread before the device loop waits (bounds memory)


def shard_needs_run(path: Path) -> bool:
    """A shard runs when it has no file yet, and again when it skipped an image: a rerun retries every
    skipped image (the user may have fixed the file in place; an unchanged broken file costs one shard)."""
    if not path.is_file():
        return True
    try:
        return bool(read_shard(path).get("skipped"))
    except (OSError, ValueError):  # unreadable shard file: redo it
        return True


def stream_shards(predictor: DevicePredictor, *, out: Path, shards: list[list[list[Any]]], pending: list[int], short_side: int | None,
            size_bucket: int | None, workers: int | None, batch_size: int, categories: dict[int, int], score_threshold: float,
            progress: bool | Callable[[int, int], object], encoder_threads: int) -> tuple[int, int, int]:
    """The device loop over the pending shards; returns (images predicted, final batch-size limit, forward passes)."""
    import torch
    from tqdm import tqdm

    entries = [e for i in pending for b in shards[i] for e in b]
    position = {e.image_id: k for k, e in enumerate(entries)}
    batch_shard = [(i, [position[e.image_id] for e in b]) for i in pending for b in shards[i]]
    n_workers = default_loader_workers(predictor.device.type) if workers is None else workers
    dataset: Any = ImageDataset(entries, short_side=short_side, size_bucket=size_bucket)  # map-style; torch's generics do not say so
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=PlannedBatches([b for _, b in batch_shard]),
        collate_fn=collate_samples, num_workers=n_workers, pin_memory=predictor.device.type == "cuda",
    )
    on_oom = torch.cuda.empty_cache if predictor.device.type == "cuda" else (lambda: None)
    limit, processed, seen, passes = batch_size, 0, 0, [0]

    def forward(chunk: list[Any]) -> list[Any]:
        preds = predictor(chunk)
        passes[0] += predictor.forward_passes(len(chunk))  # counted once it succeeded: an out-of-memory attempt is retried smaller
        return preds

    shard_futures: dict[int, list[Future[Any]]] = {i: [] for i in pending}
    remaining = {i: sum(len(b) for b in shards[i]) for i in pending}
    in_flight: deque[Future[Any]] = deque()
    threads = max(1, encoder_threads)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="segpipe-encode") as encoder, \
            tqdm(total=len(entries), unit="img", disable=progress is not True) as bar:
        for (shard_index, _), samples in zip(batch_shard, loader):
            good = [s for s in samples if s.error is None]
            skipped = [SkippedImage(s.entry, s.code, s.error) for s in samples if s.error is not None]
            preds, failed, limit = run_with_oom_backoff(forward, good, limit=limit, on_oom=on_oom)
            processed += len(preds)
            in_flight.append(encoder.submit(_encode_batch, out, preds, skipped + failed, categories, score_threshold))
            shard_futures[shard_index].append(in_flight[-1])
            remaining[shard_index] -= len(samples)
            if remaining[shard_index] == 0:  # queued after the shard's batches (FIFO): it only waits on started ones
                ids = [e.image_id for b in shards[shard_index] for e in b]
                in_flight.append(encoder.submit(_finish_shard, shard_path(out, shard_index), shard_futures.pop(shard_index), ids))
            while in_flight and (len(in_flight) > MAX_BATCHES_IN_FLIGHT * threads or in_flight[0].done()):
                in_flight.popleft().result()  # re-raises encoder errors here, early; bounds the backlog
            bar.update(len(samples))
            seen += len(samples)
            if callable(progress):
                progress(seen, len(entries))
        for fut in in_flight:
            fut.result()
    return processed, limit, passes[0]


def _encode_batch(out: Path, preds: list[Any], skipped: list[SkippedImage], categories: dict[int, int],
                  score_threshold: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    for pred in preds:
        if isinstance(pred, SemanticPrediction):
            write_semantic_png(out, pred)
            results.extend(component_results(pred, categories=categories, score_threshold=score_threshold))
        else:
            results.extend(instance_results(pred))
    return results, [skipped_row(s) for s in skipped]


def _finish_shard(path: Path, futures: list[Future[Any]], image_ids: list[int]) -> None:
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for fut in futures:  # started before this (FIFO queue): done or running on another encoder thread
        r, s = fut.result()
        results.extend(r)
        skipped.extend(s)
    write_shard(path, results=results, skipped=skipped, image_ids=image_ids)
