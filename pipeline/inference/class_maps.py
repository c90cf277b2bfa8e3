"""Model classes onto dataset classes: class tables, class maps, and what gets dropped.

A model's output classes are matched to the dataset by name, after an optional class map:

- many-to-one: `cat=pet, dog=pet` scores both model classes as the dataset's `pet`;
- explicit drop: `person=` (or `person=-`) leaves a model class out;
- background aliases: `__background__` and `background` are the dataset's background (semantic index 0;
  a detector's label 0, which it never predicts);
- every other model class whose (mapped) name the dataset does not have is dropped too, and counted.

Dropped classes are taken out of the prediction, not relabelled: a semantic model's argmax runs over the kept
classes only, a detector's detections of dropped classes are discarded. It is an error when no model class
maps onto a dataset class, since the predictions would be empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from segpipe.core.dataset_layout import is_existing_file, read_class_names_file
from segpipe.inference.checkpoints import InferenceError
from segpipe.inference.class_tables import CLASS_TABLE_NAMES, CLASS_TABLES, PLACEHOLDER_NAMES

# The COCO convention: label 0 of a detector is background and is never predicted.
BACKGROUND_NAMES: frozenset[str] = frozenset({"__background__", "background"})
DROP_TARGETS: frozenset[str] = frozenset({"", "-"})  # `name=` / `name=-` in a class map: drop the model class
# The path of errors about the class options (class names, class table, class map) given to inference rather
# than read from a file: values that do not fit the model or the dataset (the CLI names the flag).
CLASS_OPTIONS = "inference class options"
MAP_EXAMPLE = "--class-map 'cat=pet,dog=pet,person='"


@dataclass(frozen=True)
class ClassMapping:
    """Model output index -> dataset target (semantic class index, or COCO category id for instances)."""

    output_names: tuple[str, ...]  # index = model output index (0 = background)
    targets: tuple[int, ...]  # same length; semantic index, or category id (0 for background and dropped)
    component_categories: tuple[int | None, ...]  # semantic only: COCO category id of each output class, if any
    kept: tuple[bool, ...] = ()  # same length; False: the output is dropped (empty: all kept)
    scoring: str = ""  # what is scored against what, in words

    @property
    def dropped(self) -> tuple[str, ...]:
        """Names of the dropped model outputs, in output order (a name twice when two slots carry it)."""
        return tuple(n for n, k in zip(self.output_names, self.kept) if not k and n.lower() not in BACKGROUND_NAMES)


def class_table(name: str, *, source: str, field: str = "class_table") -> tuple[str, ...]:
    if name not in CLASS_TABLES:
        raise InferenceError(source, field, f"unknown class table {name!r}; built in: {', '.join(CLASS_TABLE_NAMES)}")
    return CLASS_TABLES[name]


def parse_class_map_text(text: str, *, source: str) -> dict[str, str]:
    """`cat=pet, dog=pet, person=` (or one `model = dataset` a line, `#` comments) -> {model: dataset}.

    >>> parse_class_map_text("cat=pet, dog = pet, person=", source=CLASS_OPTIONS)
    {'cat': 'pet', 'dog': 'pet', 'person': ''}
    """
    lines = text.splitlines() if "\n" in text.strip() else text.split(",")
    out: dict[str, str] = {}
    for item in (line.strip() for line in lines):
        if not item or item.startswith("#"):
            continue
        if "=" not in item:
            raise InferenceError(source, "class_map", f"{item!r} is not `model_class=dataset_class` (e.g. {MAP_EXAMPLE})")
        model, target = (part.strip() for part in item.split("=", 1))
        if model in out and out[model] != target:
            raise InferenceError(source, "class_map", f"{model!r} is mapped twice ({out[model]!r} and {target!r})")
        out[model] = target
    return out


def class_map_option(value: str | Mapping[str, Any] | None, *, source: str) -> dict[str, str] | None:
    """A class map given as a mapping (model card, run.toml), a file, or `a=b,c=d` text."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise InferenceError(source, "class_map", f"must map model class names to dataset class names (strings); bad entry {bad[0]!r}")
        return {str(k): str(v).strip() for k, v in value.items()}
    if is_existing_file(value):
        try:
            text = "\n".join(read_class_names_file(value)) + "\n"
        except (OSError, UnicodeDecodeError) as err:
            raise InferenceError(value, "class_map", f"unreadable class map file: {err}") from err
        return parse_class_map_text(text, source=value)
    return parse_class_map_text(value, source=source)


def _resolve(name: str, *, class_map: Mapping[str, str]) -> str | None:
    """The dataset name a model class maps to; None when dropped explicitly or a placeholder slot."""
    target = class_map.get(name, name)
    if target in DROP_TARGETS or (name in PLACEHOLDER_NAMES and name not in class_map):
        return None
    return target


def class_mapping_compute(
    *, task: str, names: Sequence[str] | None, num_classes: int | None, dataset: Any, source: str,
    class_map: Mapping[str, str] | None = None, class_map_source: str = CLASS_OPTIONS,
) -> ClassMapping:
    """Map the model's output classes onto the dataset (before any image is read)."""
    cmap = dict(class_map or {})
    cat_ids = {name: cid for cid, name in dataset.categories}
    if task == "instance":
        given = tuple(names) if names is not None else tuple(name for _, name in dataset.categories)
        if given and given[0].lower() in BACKGROUND_NAMES:
            given = given[1:]
        if num_classes is not None and num_classes != len(given) + 1:
            raise InferenceError(source, "num_classes", f"{num_classes} outputs but {len(given)} class names + background; give --classes in output order")
        outputs = ("__background__",) + given
        dataset_names, lookup = sorted(cat_ids), dict(cat_ids)
    else:
        outputs = tuple(names) if names is not None else tuple(dataset.semantic_classes)
        if num_classes is not None and num_classes != len(outputs):
            raise InferenceError(source, "num_classes",
                f"{num_classes} outputs but {len(outputs)} class names {list(outputs)[:30]}; give --classes in output order")
        dataset_names = list(dataset.semantic_classes)
        lookup = {name: i for i, name in enumerate(dataset.semantic_classes)}
    unknown_keys = sorted(set(cmap) - set(outputs))
    if unknown_keys:
        raise InferenceError(class_map_source, "class_map", f"{unknown_keys[:10]} are not model class names (the model's classes: "
                             f"{_shown(outputs)}); the keys of a class map are model classes, the values dataset classes")
    targets: list[int] = []
    kept: list[bool] = []
    for name in outputs:
        target = _resolve(name, class_map=cmap)
        if target is None:
            index = None
        elif target in lookup:
            index = lookup[target]
        elif target.lower() in BACKGROUND_NAMES:
            index = 0  # the dataset's background, whatever it is called there
        elif name in cmap:
            raise InferenceError(class_map_source, f"class_map.{name}", f"{target!r} is not a dataset class (dataset has {dataset_names[:30]}); "
                                 "map to one of those, or to '' to drop the model class")
        else:
            index = None  # a class this dataset does not have: dropped and counted
        if task == "instance" and index == 0:
            index = None  # a detector's background is never a detection
        targets.append(0 if index is None else index)
        kept.append(index is not None)
    if not any(k and t != 0 for k, t in zip(kept, targets)):
        raise InferenceError(source, "classes", f"no model class maps onto a dataset class, so the predictions would be empty: "
                             f"model classes {_shown(outputs)}, dataset classes {dataset_names[:30]}; give a class map "
                             f"(e.g. {MAP_EXAMPLE}) or the model's real classes (--classes, --class-table)")
    if task == "instance":
        kept[0] = False
        return ClassMapping(outputs, tuple(targets), (), tuple(kept), _instance_scoring(outputs, targets, kept, cat_ids))
    components = tuple(
        cat_ids.get(dataset.semantic_classes[t]) if k and t != 0 else None for t, k in zip(targets, kept)
    )
    mapping = ClassMapping(outputs, tuple(targets), components, tuple(kept))
    return ClassMapping(outputs, tuple(targets), components, tuple(kept), _semantic_scoring(mapping, dataset=dataset))


def _shown(names: Sequence[str]) -> str:
    unique = list(dict.fromkeys(names))
    return str(unique[:30]) + (f" and {len(unique) - 30} more" if len(unique) > 30 else "")


def _pairs(outputs: Sequence[str], targets: Sequence[int], kept: Sequence[bool], names: Mapping[int, str]) -> str:
    by_target: dict[str, list[str]] = {}
    for o, t, k in zip(outputs, targets, kept):
        if k:
            by_target.setdefault(names[t], []).append(o)
    return ", ".join(f"{'+'.join(src)} -> {dst}" for dst, src in by_target.items())


def _instance_scoring(outputs: Sequence[str], targets: Sequence[int], kept: Sequence[bool], cat_ids: Mapping[str, int]) -> str:
    names = {cid: name for name, cid in cat_ids.items()}
    return (f"results.json: detections of {_pairs(outputs, targets, kept, names)}, scored against instances.json "
            "(segpipe evaluate instances: mask/box mAP); a detector writes no semantic label maps")


def _semantic_scoring(mapping: ClassMapping, *, dataset: Any) -> str:
    names = dict(enumerate(dataset.semantic_classes))
    text = f"semantic/<stem>.png: {_pairs(mapping.output_names, mapping.targets, mapping.kept, names)} (segpipe evaluate semantic: mIoU, Dice)"
    if any(c is not None for c in mapping.component_categories):
        return text + "; results.json: connected components of the classes that are also COCO categories (evaluate instances)"
    return text + f"; results.json stays empty: no kept class is a COCO category of the dataset ({[n for _, n in dataset.categories][:10]})"
