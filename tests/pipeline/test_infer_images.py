"""Inference over a list of image files (what each inference shard of `segpipe run` does): ids by sorted file
name, sizes from the headers, unreadable images returned rather than fatal, no dataset dir and no
annotation read; and one resume mechanism, the content-addressed units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segpipe.inference.data import images_dataset
from segpipe.inference.images import infer_images, inference_label_space


def _image(path: Path, *, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(path)


def test_images_dataset_numbers_sorted_names_and_lists_unreadable_images(tmp_path: Path) -> None:
    _image(tmp_path / "b.png", width=5, height=3)
    _image(tmp_path / "sub" / "a.jpg", width=7, height=2)
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff not a whole JPEG")
    info, unreadable = images_dataset(image_root=tmp_path, names=["sub/a.jpg", "c.jpg", "b.png", "gone.png"],
                                      categories=["cat", "dog"], semantic_classes=None)
    assert [(e.image_id, e.file_name, e.width, e.height) for e in info.images] == [(1, "b.png", 5, 3), (2, "sub/a.jpg", 7, 2)]
    assert [e.path for e in info.images] == [tmp_path / "b.png", tmp_path / "sub" / "a.jpg"]
    assert [name for name, _ in unreadable] == ["c.jpg", "gone.png"]
    assert all(str(tmp_path / name) in reason for name, reason in unreadable)  # the reason names the file
    assert info.categories == ((1, "cat"), (2, "dog"))
    assert info.semantic_classes == ("background", "cat", "dog")  # as a dataset dir without semantic/classes.txt
    given, _ = images_dataset(image_root=tmp_path, names=["b.png"], categories=[], semantic_classes=["background", "pet"])
    assert given.semantic_classes == ("background", "pet")


def test_infer_images_opens_the_checkpoint_only_for_readable_images(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    opened: list[int] = []

    def session() -> Any:
        opened.append(1)
        raise AssertionError("no image to predict: the checkpoint must not be loaded")

    done = infer_images(session, image_root=tmp_path, names=["broken.png"], label_space={"categories": [], "semantic_classes": None},
                        out=tmp_path / "pred")
    assert done.file_names == () and [n for n, _ in done.unreadable] == ["broken.png"] and done.summary is None and not opened


def test_infer_images_gives_the_session_the_images_by_sorted_name(tmp_path: Path) -> None:
    for name in ("z.png", "a.png"):
        _image(tmp_path / name, width=4, height=4)
    seen: dict[str, Any] = {}

    class Session:
        def run(self, *, dataset: Any, out: Path, progress: Any = False) -> str:
            seen["names"] = [(e.image_id, e.file_name) for e in dataset.images]
            seen["out"] = out
            return "summary"

    label_space = {"categories": [{"name": "pet", "supercategory": ""}], "semantic_classes": ["background", "pet"]}
    done = infer_images(Session, image_root=tmp_path, names=["z.png", "a.png"], label_space=label_space, out=tmp_path / "pred")
    assert seen == {"names": [(1, "a.png"), (2, "z.png")], "out": tmp_path / "pred"}
    assert done.file_names == ("a.png", "z.png") and done.summary == "summary"


def test_the_inference_key_does_not_see_annotations() -> None:
    """A semantic model is keyed on the semantic classes only: the category list (breed vs species) is annotation
    detail it never maps onto."""
    breeds = {"categories": [{"name": "Abyssinian"}, {"name": "beagle"}], "semantic_classes": ["background", "pet"]}
    species = {"categories": [{"name": "cat"}, {"name": "dog"}], "semantic_classes": ["background", "pet"]}
    assert inference_label_space(breeds, task="semantic") == inference_label_space(species, task="semantic")
    assert inference_label_space(breeds, task="instance") != inference_label_space(species, task="instance")


def test_an_interrupted_unit_starts_clean_so_only_units_resume(tmp_path: Path) -> None:
    """The engine keeps finished shards in OUT/.shards/ to resume `segpipe infer`; inside `segpipe run` a unit
    folder without its completion marker is removed before the unit runs again, so nothing of a killed
    attempt (an engine shard included) is reused: the content-addressed units are the one resume mechanism."""
    from segpipe.tasks.units import Unit, ensure_unit, unit_directory

    unit = Unit("InferShard", "infer/ckpt/opts", "k" * 16, "ckpt_s00000")
    stale = unit_directory(tmp_path, unit.kind, unit.key) / "pred" / ".shards" / "000000.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"results": [{"image_id": 1, "planted": true}], "skipped": [], "image_ids": [1]}')
    found: list[list[str]] = []

    def compute(directory: Path) -> None:
        found.append(sorted(p.name for p in directory.rglob("*")))

    assert ensure_unit(tmp_path, unit, compute) == (unit, True)
    assert found == [[]] and not stale.exists()
    assert ensure_unit(tmp_path, unit, compute) == (unit, False) and len(found) == 1  # complete: reused, not run
