"""Inference inputs: which images, how they are decoded, how they are batched, how classes are mapped.

Decoding and preprocessing run in DataLoader workers and hand uint8 CHW tensors to the engine (4x less to
copy to the device than float); scaling and mean/std normalisation happen on the device.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from segpipe.converters.coco import read_coco
from segpipe.core.dataset_layout import DatasetDir, class_names_option, read_class_names_file, resolve_image_path
from segpipe.inference.checkpoints import InferenceError
from segpipe.inference.class_maps import BACKGROUND_NAMES, ClassMapping, class_mapping_compute  # noqa: F401 (re-exported)

# Aspect-ratio (w/h) bins for detector batches, as torchvision's GroupedBatchSampler does: a portrait and a
# landscape image never share a batch, so Mask R-CNN pads little.
ASPECT_BIN_EDGES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.34, 2.0)


@dataclass(frozen=True)
class ImageEntry:
    image_id: int
    file_name: str
    path: Path | None  # None: file_name points outside the image root (skipped, never read)
    width: int
    height: int


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    images: tuple[ImageEntry, ...]  # sorted by image id
    categories: tuple[tuple[int, str], ...]  # (COCO id, name) in declared order
    semantic_classes: tuple[str, ...]  # index order; from semantic/classes.txt or background + categories


def read_dataset(dataset: str | os.PathLike[str], *, image_ids: Sequence[int] | None = None) -> DatasetInfo:
    layout = DatasetDir(Path(dataset))
    if not layout.instances.is_file():
        raise InferenceError(layout.instances, "", "dataset has no instances.json (run `segpipe convert` first)")
    try:
        coco = read_coco(layout.instances)
        image_root = layout.image_root
        images = sorted(
            (ImageEntry(int(im["id"]), str(im["file_name"]), resolve_image_path(image_root, str(im["file_name"])), int(im["width"]), int(im["height"]))
             for im in coco["images"]),
            key=lambda e: e.image_id,
        )
        categories = tuple((int(c["id"]), str(c["name"])) for c in coco["categories"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InferenceError(layout.instances, "images/categories", f"not a usable COCO dataset: {err}") from err
    if image_ids is not None:
        wanted = {int(i) for i in image_ids}
        unknown = sorted(wanted - {e.image_id for e in images})
        if unknown:
            raise InferenceError(layout.instances, "images.id", f"image_ids not in the dataset: {unknown[:10]}")
        images = [e for e in images if e.image_id in wanted]
    if layout.semantic_classes.is_file():
        try:
            semantic = tuple(read_class_names_file(layout.semantic_classes))
        except (OSError, UnicodeDecodeError) as err:
            raise InferenceError(layout.semantic_classes, "", f"unreadable classes file: {err}") from err
    else:  # a box/instance dataset: background, then the COCO categories in declared order
        semantic = ("background",) + tuple(name for _, name in categories)
    return DatasetInfo(root=layout.root, images=tuple(images), categories=categories, semantic_classes=semantic)


def parse_class_names(value: str | None) -> tuple[str, ...] | None:
    """`--classes`: a file with one name a line, or comma-separated names (any number of them)."""
    if value is None:
        return None
    try:
        return tuple(class_names_option(value))
    except (OSError, UnicodeDecodeError) as err:
        raise InferenceError(value, "classes", f"unreadable classes file: {err}") from err


def resized_size(*, width: int, height: int, short_side: int | None, size_bucket: int | None = None) -> tuple[int, int]:
    """(width, height) after scaling the short side to `short_side` (torchvision `Resize(int)` rule), then
    rounding each side to the nearest multiple of `size_bucket` (at least one bucket; halves round up).

    >>> resized_size(width=500, height=375, short_side=256), resized_size(width=500, height=375, short_side=256, size_bucket=32)
    ((341, 256), (352, 256))
    """
    if short_side is not None:
        if width <= height:
            width, height = short_side, int(short_side * height / width)
        else:
            width, height = int(short_side * width / height), short_side
    if size_bucket is not None:
        width, height = (max(size_bucket, (side + size_bucket // 2) // size_bucket * size_bucket) for side in (width, height))
    return width, height


def batches_plan(*, images: Sequence[ImageEntry], task: str, batch_size: int, short_side: int | None,
                 size_bucket: int | None = None) -> list[list[ImageEntry]]:
    """Deterministic batches. Semantic: only images of one (resized) size share a batch, because padding
    changes the output of global-pooling heads. Instance: within one aspect-ratio bin, sorted by ratio."""
    if task == "semantic":
        def key(e: ImageEntry) -> tuple[Any, ...]:
            w, h = resized_size(width=e.width, height=e.height, short_side=short_side, size_bucket=size_bucket)
            return (h, w, e.image_id)
    else:
        def key(e: ImageEntry) -> tuple[Any, ...]:
            ratio = e.width / max(e.height, 1)
            return (bisect.bisect(ASPECT_BIN_EDGES, ratio), ratio, e.image_id)
    ordered = sorted(images, key=key)
    same_group = 2 if task == "semantic" else 1  # semantic: equal (h, w); instance: equal aspect bin
    batches: list[list[ImageEntry]] = []
    for entry in ordered:
        if batches and len(batches[-1]) < batch_size and key(batches[-1][0])[:same_group] == key(entry)[:same_group]:
            batches[-1].append(entry)
        else:
            batches.append([entry])
    return batches


def shards_plan(batches: list[list[ImageEntry]], *, shard_size: int) -> list[list[list[ImageEntry]]]:
    """Consecutive whole batches grouped into shards of at most `shard_size` images (at least one batch)."""
    shards: list[list[list[ImageEntry]]] = []
    count = 0
    for batch in batches:
        if not shards or count + len(batch) > shard_size:
            shards.append([])
            count = 0
        shards[-1].append(batch)
        count += len(batch)
    return shards


def check_semantic_outputs(images: Sequence[ImageEntry], *, mapping: ClassMapping, dataset: Path) -> None:
    """semantic/<stem>.png must be unique per image, and class indices must fit a uint8 PNG below 255 (ignore)."""
    stems: dict[str, str] = {}
    for e in images:
        stem = Path(e.file_name).stem
        if stem in stems:
            raise InferenceError(dataset, "images.file_name", f"{e.file_name} and {stems[stem]} would both write semantic/{stem}.png")
        stems[stem] = e.file_name
    if max(mapping.targets, default=0) >= 255:
        raise InferenceError(dataset, "semantic/classes.txt", "more than 255 classes do not fit a uint8 label PNG (255 = ignore)")


def decode_image(path: str | os.PathLike[str]) -> Any:
    """RGB PIL image, EXIF orientation applied (as segpipe.core.images.read_image_size reports sizes);
    grayscale, palette and RGBA images become RGB (alpha dropped)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def resize_image(image: Any, *, short_side: int | None, size_bucket: int | None = None) -> Any:
    """Bilinear resize of a PIL image to short side `short_side`, then to the bucket (unchanged when the size is)."""
    from PIL import Image

    w, h = resized_size(width=image.width, height=image.height, short_side=short_side, size_bucket=size_bucket)
    if (w, h) == (image.width, image.height):
        return image
    return image.resize((w, h), resample=Image.Resampling.BILINEAR)


@dataclass(frozen=True)
class Sample:
    entry: ImageEntry
    image: Any  # uint8 CHW torch tensor, or None when decoding failed
    error: str | None
    code: str = ""  # report code when `error` is set

    def pin_memory(self) -> Sample:
        """Called by DataLoader(pin_memory=True): page-locked memory makes `non_blocking` copies truly async."""
        return self if self.image is None else Sample(self.entry, self.image.pin_memory(), self.error, self.code)


class ImageDataset:
    """Map-style dataset over `entries` for torch's DataLoader; a failed decode is returned, never raised."""

    def __init__(self, entries: Sequence[ImageEntry], *, short_side: int | None, size_bucket: int | None = None) -> None:
        self.entries = tuple(entries)
        self.short_side, self.size_bucket = short_side, size_bucket

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        import numpy as np
        import torch

        entry = self.entries[index]
        if entry.path is None:
            return Sample(entry, None, f"file_name {entry.file_name!r} points outside the image root: not read", "image_outside_root")
        try:
            image = decode_image(entry.path)
        except FileNotFoundError as err:
            return Sample(entry, None, f"image file not found: {err.filename}", "missing_image")
        except Exception as err:  # any decoder failure is a report row, never a crash of the dataset
            return Sample(entry, None, f"unreadable image: {type(err).__name__}: {err}", "unreadable_image")
        if image.size != (entry.width, entry.height):
            return Sample(entry, None, f"image is {image.width}x{image.height} but instances.json says {entry.width}x{entry.height}",
                          "size_mismatch")
        array = np.asarray(resize_image(image, short_side=self.short_side, size_bucket=self.size_bucket), dtype=np.uint8)
        return Sample(entry, torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), None)


def collate_samples(samples: list[Sample]) -> list[Sample]:
    return samples


class PlannedBatches:
    """A batch sampler over dataset positions, following a precomputed plan."""

    def __init__(self, batches: Sequence[Sequence[int]]) -> None:
        self.batches = [list(b) for b in batches]

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def images_dataset(*, image_root: Path, names: Sequence[str], categories: Sequence[str], semantic_classes: Sequence[str] | None,
                   ) -> tuple[DatasetInfo, list[tuple[str, str]]]:
    """What the engine infers on, from image file names under `image_root` and a label space (no dataset
    dir): sizes from the image headers, ids 1.. by sorted file name, categories 1.. in the given order,
    semantic classes as given (else background + the categories, as `read_dataset` does). An image whose
    header cannot be read is left out and returned as (file name, reason), never an error."""
    from segpipe.core.errors import AnnotationError
    from segpipe.core.images import read_image_size

    readable: list[tuple[str, int, int]] = []
    unreadable: list[tuple[str, str]] = []
    for name in sorted(names):
        path = resolve_image_path(image_root, name)
        try:
            if path is None:
                raise AnnotationError(name, "", f"leaves the image root {image_root}")
            width, height = read_image_size(path)
        except AnnotationError as err:
            unreadable.append((name, str(err)))
            continue
        readable.append((name, width, height))
    images = tuple(ImageEntry(i, name, resolve_image_path(image_root, name), w, h) for i, (name, w, h) in enumerate(readable, start=1))
    cats = tuple((i, str(n)) for i, n in enumerate(categories, start=1))
    semantic = tuple(semantic_classes) if semantic_classes else ("background",) + tuple(n for _, n in cats)
    return DatasetInfo(root=Path(image_root), images=images, categories=cats, semantic_classes=semantic), unreadable
