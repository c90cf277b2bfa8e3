"""What `segpipe run` knows of each dataset format, in one adapter per format: where its files are (the
folders a dataset is given as, where the images are, which files annotate one image and are sharded by
stem, the rest being global files every shard reads), which converter options it takes, and how to
convert a list of its files in memory (the converter module's `*_conversion` function).

Each adapter is derived from the format's entry in segpipe.converters.formats.FORMATS: a new format is one
converter module and one entry there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from segpipe.converters.conversion_output import Conversion
from segpipe.converters.formats import FORMATS as REGISTRY
from segpipe.converters.formats import FormatSpec
from segpipe.core.errors import SegpipeError

# (root, images, classes, list file, files or None for the whole folders, converter options) -> Conversion
Converter = Callable[[Path, Path | None, Path | None, Path | None, Iterable[Path] | None, Mapping[str, Any]], Conversion]


@dataclass(frozen=True)
class FormatAdapter:
    name: str
    options: tuple[str, ...]  # converter options accepted from run.toml / the command line
    is_annotation: Callable[[str], bool]  # a path relative to the dataset root: does it annotate one image stem?
    image_subdir: Callable[[Path], str]  # where the images are under the dataset root ("" = the root itself)
    convert: Converter
    # One file annotates every image (CVAT's annotations.xml): editing it changes every shard anyway, so the
    # dataset is one shard and no shard reports the others' images as missing.
    single_shard: bool = False
    # Only images with an annotation file are part of the dataset (VOC's JPEGImages holds 17,125 images, of
    # which 2,913 are segmented): the others are neither converted nor inferred.
    annotated_only: bool = False
    # A fixed layout under one root (Oxford-IIIT Pet): no separate image folder, classes or list file.
    layout_root: bool = False
    needs_images: bool = False  # the annotations' folder holds no images (trimaps): --images is required


@dataclass(frozen=True)
class DatasetSpec:
    """What `segpipe run` was pointed at. `root` is the Oxford-IIIT Pet root or the annotation source."""

    format: str
    root: Path
    images: Path | None = None
    classes: Path | None = None
    list_file: Path | None = None

    def adapter(self) -> FormatAdapter:
        if self.format not in ADAPTERS:
            raise SegpipeError(self.root, "format", f"unknown dataset format {self.format!r} (choose from {', '.join(ADAPTERS)})")
        return ADAPTERS[self.format]

    def root_label(self) -> str:
        """The manifest label of `root`: a manifest path is `<label>/<path under that folder>`."""
        return "root" if self.adapter().layout_root else "src"

    def roots(self) -> dict[str, Path]:
        adapter = self.adapter()
        if adapter.layout_root:
            return {"root": self.root}
        if adapter.needs_images and self.images is None:
            raise SegpipeError(self.root, "images", f"the {self.format} format needs the image folder as well as the annotations")
        out = {"src": self.root}
        if self.images is not None and self.images.resolve() != self.root.resolve():
            out["images"] = self.images
        if self.classes is not None:
            out["classes"] = self.classes
        if self.list_file is not None:
            out["list"] = self.list_file
        return out

    def image_prefix(self) -> str:
        """Manifest prefix of the image root; image file names are relative to it."""
        if "images" in self.roots():
            return "images/"
        sub = self.adapter().image_subdir(self.root)
        return f"{self.root_label()}/{sub}/" if sub else f"{self.root_label()}/"

    def image_root(self) -> Path:
        if self.images is not None and not self.adapter().layout_root:
            return self.images
        sub = self.adapter().image_subdir(self.root)
        return self.root / sub if sub else self.root

    def is_annotation(self, path: str) -> bool:
        """Does a manifest path (`<label>/<rel>`) annotate one image stem?"""
        label = self.root_label() + "/"
        return path.startswith(label) and self.adapter().is_annotation(path[len(label):])

    def refuse_empty(self, n_images: int) -> None:
        """Raise before any task runs when the dataset holds no image of its format: the one rule of `segpipe
        convert` (nothing converted is a usage error naming the layout looked for and what was found)."""
        if n_images:
            return
        from segpipe.converters.layout_hints import describe_folder

        looked = REGISTRY[self.format].layout if self.format in REGISTRY else f"a {self.format} dataset"
        raise SegpipeError(self.root, "dataset", f"nothing to convert (0 images): looked for {looked}; found {describe_folder(self.root)}")

    def convert(self, *, files: Iterable[Path] | None, options: Mapping[str, Any]) -> Conversion:
        """Convert the dataset (only `files` of it when given: one shard's own files and the global files) in
        memory; `options` outside the format's own are ignored."""
        adapter = self.adapter()
        kwargs = {k: v for k, v in options.items() if k in adapter.options and v is not None}
        return adapter.convert(self.root, self.images, self.classes, self.list_file, files, kwargs)


def _converter(spec: FormatSpec) -> Converter:
    """The registry's in-memory conversion, given the dataset inputs the format declares; a shard converts
    with one process (the runner runs shards side by side)."""

    def convert(root: Path, images: Path | None, classes: Path | None, list_file: Path | None, files: Iterable[Path] | None,
                options: Mapping[str, Any]) -> Conversion:
        given = {"images": images, "classes": classes, "list_file": list_file}
        inputs = {name: given[name] for name in spec.inputs}
        if spec.needs_images and images is None:
            raise SegpipeError(root, "images", f"the {spec.name} format needs the image folder as well as the annotations")
        return spec.convert(root, files=files, **inputs, **({"workers": 1} if spec.parallel else {}), **options)

    return convert


def adapter_of(spec: FormatSpec) -> FormatAdapter:
    return FormatAdapter(spec.name, spec.run_options, spec.is_annotation, spec.image_subdir, _converter(spec),
                         single_shard=spec.single_shard, annotated_only=spec.annotated_only, layout_root=spec.layout_root,
                         needs_images=spec.needs_images)


# Derived from the one declaration of each format (segpipe.converters.formats.FORMATS).
ADAPTERS: dict[str, FormatAdapter] = {name: adapter_of(spec) for name, spec in REGISTRY.items()}
FORMATS: tuple[str, ...] = tuple(ADAPTERS)
# Converter options each format accepts (run.toml / CLI pass-through); anything else is a usage error.
CONVERT_OPTIONS: dict[str, tuple[str, ...]] = {name: adapter.options for name, adapter in ADAPTERS.items()}
