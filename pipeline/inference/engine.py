"""`run_inference`: a checkpoint over a converted dataset, batched on the device, streamed to disk in shards.

Pipeline per batch: DataLoader workers decode (uint8, pinned when on CUDA) -> `non_blocking` copy ->
normalise on the device -> forward under `inference_mode` (+ bf16/fp16 autocast, channels_last for dense
models on CUDA) -> argmax / mask threshold on the device -> uint8 to the CPU -> a single encoder thread does
RLE, PNG and shard writing while the device runs the next batch. A shard file is written atomically once
all of its images are done, so an interrupted run resumes from the last finished shard.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from segpipe.inference.checkpoints import (
    OPTIONS,
    IMAGENET_MEAN, IMAGENET_STD, InferenceError, ModelCard, load_state_dict_into, parse_state_dict, read_checkpoint,
    read_model_card,
)
from segpipe.cache.fingerprints import file_sha256
from segpipe.inference.architectures import architecture_hint
from segpipe.inference.predictor import DevicePredictor, resolve_device, run_with_oom_backoff  # noqa: F401 (re-exported)
from segpipe.inference.class_maps import CLASS_OPTIONS, class_map_option, class_mapping_compute, class_table as table_of
from segpipe.inference.data import DatasetInfo, batches_plan, check_semantic_outputs, read_dataset, resized_size, shards_plan
from segpipe.inference.outputs import (
    prepare_out_dir, read_plan_fingerprint, shard_path, start_fresh_plan, write_final_outputs,
)
from segpipe.inference.models import (
    INSTANCE, SEMANTIC, TORCHSCRIPT, build_model, drop_training_only_keys, keep_box_coordinates_fp32, load_torchscript, model_spec,
    set_rcnn_resolution,
)
from segpipe.inference.options import PRECISIONS as PRECISIONS, InferenceOptions  # PRECISIONS: re-exported
from segpipe.inference.resolution import Resize, resolution_setting, semantic_short_side
from segpipe.inference.speed import few_input_shapes, set_cudnn_benchmark, usable_cores
from segpipe.inference.streaming import shard_needs_run, stream_shards

SHARD_IMAGES = 32  # images per shard file: an interrupted run redoes at most this many; 3,125 small files for 100k images
# Encoder threads (RLE, PNG, shard files). The RLE encoder is vectorised numpy and cv2.imencode releases the GIL,
# so a few threads overlap; more than 4 only compete with the DataLoader's decode workers for cores.
ENCODER_THREADS = max(1, min(4, usable_cores() // 2))


@dataclass(frozen=True)
class InferenceSummary:
    out: Path
    task: str
    n_images: int
    n_processed: int
    n_skipped: int
    images_per_second: float | None
    device: str
    precision: str
    batch_size: int  # after any OOM halving
    checkpoint_sha256: str
    dropped: tuple[str, ...] = ()  # model classes left out (not in the dataset, or dropped by the class map)
    scoring: str = ""  # what is scored against what
    n_resumed: int = 0  # images whose predictions came from an earlier, interrupted run into the same OUT
    mean_batch_size: float | None = None  # images per forward pass in this run (size grouping and OOM halving)


def load_model(*, name: str, task: str, checkpoint: Path, card: ModelCard, n_outputs: int, trust: bool,
               resize: Resize, mean: Sequence[float], std: Sequence[float], score_threshold: float) -> Any:
    if name == TORCHSCRIPT:
        return load_torchscript(checkpoint, trust=trust)
    model = build_model(name, num_classes=n_outputs, unet_depth=card.unet_depth, unet_width=card.unet_width,
                        unet_bilinear=card.unet_bilinear)
    state = parse_state_dict(read_checkpoint(checkpoint, trust=trust), path=checkpoint)
    state = drop_training_only_keys(state, model_keys=set(model.state_dict()))
    try:
        load_state_dict_into(model, state, path=checkpoint)
    except InferenceError as err:
        hint = architecture_hint(state, model=name)
        if hint is None:
            raise
        raise InferenceError(checkpoint, "state_dict", f"does not fit --model {name}; {hint} ({err.reason})") from err
    if task == INSTANCE:
        set_rcnn_resolution(model, resize=resize, mean=mean, std=std)
        # Filter inside the detector too: fewer boxes reach the (costly) mask head.
        model.roi_heads.score_thresh = score_threshold
        keep_box_coordinates_fp32(model)  # bf16/fp16 autocast must not round box coordinates
    return model.eval()


def plan_fingerprint(settings: dict[str, Any], shards: Sequence[Sequence[int]]) -> str:
    text = json.dumps({"settings": settings, "shards": [list(s) for s in shards]}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_inference(
    *, model: str, checkpoint: Path, dataset: Path, out: Path, options: InferenceOptions | None = None,
    image_ids: Sequence[int] | None = None, progress: bool | Callable[[int, int], object] = False,
    shard_size: int = SHARD_IMAGES, checkpoint_sha256: str | None = None, card: ModelCard | None = None, **option_values: Any,
) -> InferenceSummary:
    """Run `model` with `checkpoint` over the converted `dataset`; write results.json, semantic/<stem>.png,
    inference_report.csv and meta.json into `out`. How it runs is `options` (segpipe.inference.options), or
    its fields given as keywords (`batch_size=8, device="cpu"`). `image_ids` restricts the run to a subset
    (a shard); `progress`: True for a tqdm bar, or a `progress(done, total)` callback (segpipe run's reporter);
    `checkpoint_sha256`, when the caller already hashed the file, saves reading it again; `card`, when the
    caller already read the model card (segpipe.inference.checkpoints.read_model_card), saves reading it again."""
    session = InferenceSession(model=model, checkpoint=checkpoint, options=_options(options, option_values), shard_size=shard_size,
                               checkpoint_sha256=checkpoint_sha256, card=card)
    return session.run(dataset=dataset, out=out, image_ids=image_ids, progress=progress)


def _options(options: InferenceOptions | None, values: Mapping[str, Any]) -> InferenceOptions:
    if options is not None and values:
        raise InferenceError(OPTIONS, sorted(values)[0], "give the options either as InferenceOptions or as keywords, not both")
    return options if options is not None else InferenceOptions.from_mapping(values)


class InferenceSession:
    """One checkpoint, run over several datasets (the shards of a `segpipe run` task): the model is loaded at
    the first `run()` and reused while the class mapping stays the same. The model card is read once, here,
    unless the caller passes the one it read (`card`)."""

    def __init__(self, *, model: str, checkpoint: Path, options: InferenceOptions | None = None, shard_size: int = SHARD_IMAGES,
                 checkpoint_sha256: str | None = None, card: ModelCard | None = None, **option_values: Any) -> None:
        opts = _options(options, option_values)
        if shard_size < 1:
            raise InferenceError(OPTIONS, "batch_size", "batch size and shard size must be positive")
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise InferenceError(self.checkpoint, "", "checkpoint file not found")
        self.spec = model_spec(model)
        self.card = card if card is not None else read_model_card(self.checkpoint)
        self.options = opts
        self.task = (self.card.task or SEMANTIC) if self.spec.name == TORCHSCRIPT else self.spec.task
        self.names, self.names_source = model_class_names(classes=opts.classes, class_table=opts.class_table, card=self.card)
        self.class_map = opts.class_map
        self.cmap = class_map_option(opts.class_map, source=CLASS_OPTIONS) if opts.class_map is not None else self.card.class_map
        self.num_classes, self.device = opts.num_classes, opts.device
        self.batch_size, self.precision, self.score_threshold = opts.batch_size, opts.precision, opts.score_threshold
        self.resize: Resize = opts.resize if opts.resize is not None else self.card.resize
        if opts.size_bucket is not None and self.task != SEMANTIC:
            raise InferenceError(OPTIONS, "size_bucket", "size buckets batch semantic models; Mask R-CNN batches by aspect ratio")
        self.size_bucket, self.compile = opts.size_bucket, opts.compile
        self.trust, self.workers, self.shard_size = opts.trust_checkpoint, opts.workers, shard_size
        self.sha = checkpoint_sha256
        self._loaded: tuple[Any, DevicePredictor] | None = None  # (mapping key, predictor)

    def _predictor(self, mapping: Any, dev: Any) -> DevicePredictor:
        mean, std = self.card.mean or IMAGENET_MEAN, self.card.std or IMAGENET_STD
        key = (tuple(mapping.targets), tuple(mapping.output_names), tuple(mapping.component_categories), tuple(mapping.kept))
        if self._loaded is None or self._loaded[0] != key:
            net = load_model(name=self.spec.name, task=self.task, checkpoint=self.checkpoint, card=self.card,
                             n_outputs=len(mapping.targets), trust=self.trust, resize=self.resize, mean=mean, std=std,
                             score_threshold=self.score_threshold)
            self._loaded = (key, DevicePredictor(model=net, task=self.task, device=dev, precision=self.precision, mean=mean,
                                                 std=std, mapping=mapping, score_threshold=self.score_threshold,
                                                 compile=self.compile))
        return self._loaded[1]

    def run(self, *, dataset: Path | DatasetInfo, out: Path, image_ids: Sequence[int] | None = None,
            progress: bool | Callable[[int, int], object] = False) -> InferenceSummary:
        """Predict the images of a converted dataset dir, or of a DatasetInfo built from image files
        (segpipe.inference.data.images_dataset), into the predictions dir `out`."""
        import torch

        checkpoint, out, task, card, cmap = self.checkpoint, Path(out), self.task, self.card, self.cmap
        info = dataset if isinstance(dataset, DatasetInfo) else read_dataset(dataset, image_ids=image_ids)
        if out.resolve() == info.root.resolve():  # a fresh plan clears OUT/semantic/*.png: never the ground truth
            raise InferenceError(out, "out", "the predictions dir must not be the dataset dir")
        # Class names map onto the dataset before any image is read: an unknown name stops here.
        mapping = class_mapping_compute(task=task, names=self.names,
                                        num_classes=self.num_classes if self.num_classes is not None else card.num_classes,
                                        dataset=info, source=self.names_source, class_map=cmap,
                                        class_map_source=CLASS_OPTIONS if self.class_map is not None else str(card.path))
        if task == SEMANTIC:
            check_semantic_outputs(info.images, mapping=mapping, dataset=info.root)
        resize, precision, batch_size, score_threshold = self.resize, self.precision, self.batch_size, self.score_threshold
        mean, std = card.mean or IMAGENET_MEAN, card.std or IMAGENET_STD
        dev = resolve_device(self.device)
        if self.sha is None:
            self.sha = file_sha256(checkpoint)
        sha = self.sha
        predictor = self._predictor(mapping, dev)

        short_side = semantic_short_side(resize) if task == SEMANTIC else None
        batches = batches_plan(images=info.images, task=task, batch_size=batch_size, short_side=short_side, size_bucket=self.size_bucket)
        shards = shards_plan(batches, shard_size=self.shard_size)
        predictor.cudnn_benchmark = set_cudnn_benchmark(dev, fixed_sizes=task == SEMANTIC and few_input_shapes(
            [resized_size(width=b[0].width, height=b[0].height, short_side=short_side, size_bucket=self.size_bucket) for b in batches]))
        resolution: Any = resolution_setting(task=task, resize=resize, size_bucket=self.size_bucket)
        if self.spec.name == TORCHSCRIPT and task == INSTANCE:
            resolution = "the scripted model's own transform"  # segpipe cannot reach inside a TorchScript detector
        settings = {"model": self.spec.name, "sha256": sha, "task": task, "targets": list(mapping.targets), "resize": resolution,
                    "mean": list(mean), "std": list(std), "precision": precision, "device_type": dev.type,
                    "score_threshold": score_threshold, "outputs": list(mapping.output_names),
                    "kept_outputs": [int(k) for k in mapping.kept], **({"compile": True} if self.compile else {})}
        fingerprint = plan_fingerprint(settings, [[e.image_id for b in shard for e in b] for shard in shards])
        out = prepare_out_dir(out, dataset=info)
        if read_plan_fingerprint(out) != fingerprint:
            start_fresh_plan(out, fingerprint=fingerprint, n_shards=len(shards))
        pending = [i for i in range(len(shards)) if shard_needs_run(shard_path(out, i))]
        n_resumed = sum(len(b) for i in range(len(shards)) if i not in pending for b in shards[i])

        categories = {t: c for t, c in zip(mapping.targets, mapping.component_categories) if c is not None}
        started = time.perf_counter()
        if callable(progress):  # "0/N" once the model is loaded: the first batch of a large model can take a while
            progress(0, sum(len(b) for i in pending for b in shards[i]))
        processed_now, limit, forward_batches = stream_shards(
            predictor, out=out, shards=shards, pending=pending, short_side=short_side, size_bucket=self.size_bucket,
            workers=self.workers, batch_size=batch_size, categories=categories, score_threshold=score_threshold, progress=progress,
            encoder_threads=ENCODER_THREADS,
        )
        elapsed = time.perf_counter() - started
        ips = processed_now / elapsed if processed_now and elapsed > 0 else None
        unmapped = [n for n, t, c, k in zip(mapping.output_names, mapping.targets, mapping.component_categories, mapping.kept) if k and t != 0 and c is None]
        meta = {**settings, "checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": sha, "device": str(dev),
                "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                "images_per_second": ips, "images_this_run": processed_now, "seconds": elapsed, "batch_size": batch_size,
                "final_batch_size": limit, "dataset": str(info.root.resolve()), "n_images": len(info.images),
                # Images per forward pass: planned over the whole dataset, and reached by this run's passes.
                "planned_mean_batch": round(len(info.images) / len(batches), 3) if batches else None,
                "mean_batch_size": round(processed_now / forward_batches, 3) if forward_batches else None,
                "cudnn_benchmark": predictor.cudnn_benchmark,
                "unmapped_component_classes": unmapped if task == SEMANTIC else [],
                "dropped_model_classes": list(dict.fromkeys(mapping.dropped)), "n_dropped_model_outputs": len(mapping.dropped),
                "class_map": dict(sorted(cmap.items())) if cmap else None, "scoring": mapping.scoring,
                "empty_results_reason": None if task == INSTANCE or categories else mapping.scoring.split("; ")[-1],
                "torch": torch.__version__, "model_card": str(card.path) if card.path else None}
        n_processed, n_skipped = write_final_outputs(out, n_shards=len(shards), meta=meta)
        return InferenceSummary(out=out, task=task, n_images=len(info.images), n_processed=n_processed, n_skipped=n_skipped,
                                images_per_second=ips, device=str(dev), precision=precision, batch_size=limit, checkpoint_sha256=sha,
                                dropped=mapping.dropped, scoring=mapping.scoring, n_resumed=n_resumed,
                                mean_batch_size=processed_now / forward_batches if forward_batches else None)


def model_class_names(*, classes: Sequence[str] | None, class_table: str | None, card: ModelCard) -> tuple[Sequence[str] | None, str]:
    """The model's output class names and where they come from: options first, then the model card."""
    if classes is not None and class_table is not None:
        raise InferenceError(OPTIONS, "classes", "give either the class names or a class table, not both")
    if classes is not None:
        return classes, CLASS_OPTIONS
    if class_table is not None:
        return table_of(class_table, source=CLASS_OPTIONS, field="class_table"), CLASS_OPTIONS
    if card.class_table is not None:
        return table_of(card.class_table, source=str(card.path)), str(card.path)
    return card.class_names, str(card.path) if card.path else CLASS_OPTIONS
