"""Inference over a list of image files and a label space, without a converted dataset dir: what each
inference shard of `segpipe run` does.

Inference depends on the images and the checkpoint only, never on annotations: editing an XML or a trimap
must not rerun it. So a shard infers on *its own* image files (sizes from their headers, ids 1.. by sorted
file name, unreadable images listed rather than fatal) mapped onto the dataset's label space (category
names and semantic classes: what maps model outputs to dataset ids).

Nothing here imports torch at import time: the task graph imports this module, and a cached rerun must
not pay for torch (the engine is imported where a model runs).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from segpipe.core.layout import META_FILE

if TYPE_CHECKING:
    from segpipe.inference.checkpoints import ModelCard
    from segpipe.inference.engine import InferenceSession, InferenceSummary

# The process that imported this module: Luigi's worker processes (`--workers 2`) are forks of it.
_IMPORTED_IN = os.getpid()
# A process that imported torch only for the workers it forks to inherit, and ran none of it (see
# `torch_imported_for_forks`): its forks keep torch's threads.
_TORCH_IDLE_IN: int | None = None
# Model cards read by this process, by the card file's identity (path, inode, size, times): see `readable_card`.
_CARDS: dict[tuple[str, int, int, int, int], ModelCard] = {}


@dataclass(frozen=True)
class ImagesInference:
    """What `infer_images` did: the predicted images' file names in id order (id = position + 1, the ids
    of the results), the images left out as (file name, reason), the engine's summary (None when no image
    was readable: nothing ran)."""

    file_names: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...]
    summary: InferenceSummary | None


def open_session(*, model: str, checkpoint: Path, options: Mapping[str, Any], loader_workers: int | None,
                 checkpoint_sha256: str | None = None, card: ModelCard | None = None) -> InferenceSession:
    """A checkpoint loaded once for several image lists. `options`: run.toml `[infer]` keys (a task's
    InferenceOptions.run_items()); `checkpoint_sha256` is the caller's digest of the checkpoint and `card` the
    model card it read, so neither is read again. Imports torch."""
    from segpipe.inference.engine import InferenceSession
    from segpipe.inference.options import InferenceOptions

    _single_threaded_torch_after_fork()
    opts = InferenceOptions.from_mapping({**options, "loader_workers": loader_workers}, names="run")
    return InferenceSession(model=model, checkpoint=checkpoint, options=opts, checkpoint_sha256=checkpoint_sha256, card=card)


def _single_threaded_torch_after_fork() -> None:
    """In a fork of a process that had already imported torch (and may have run its OpenMP thread pool), run
    torch on one thread: GNU OpenMP's pool does not survive fork, and the child's first parallel operation
    would wait forever (https://github.com/pytorch/pytorch/issues/17199). `segpipe run` itself never imports
    torch before forking its workers; a Python session that ran inference before `segpipe.run(workers=2)` does."""
    torch = sys.modules.get("torch")
    if torch is not None and os.getpid() != _IMPORTED_IN and os.getppid() != _TORCH_IDLE_IN:
        torch.set_num_threads(1)


def torch_imported_for_forks() -> None:
    """Say that this process imported torch only so that the workers it forks start with it, and runs none of
    torch's work itself: importing starts no OpenMP pool, so its forks keep all of torch's threads."""
    global _TORCH_IDLE_IN
    _TORCH_IDLE_IN = os.getpid()


def infer_images(session: Callable[[], InferenceSession], *, image_root: Path, names: Sequence[str], label_space: Mapping[str, Any], out: Path,
                 progress: bool | Callable[[int, int], object] = False) -> ImagesInference:
    """Predict the images `names` (file names under `image_root`) into the predictions dir `out` (results.json
    with image ids by sorted file name, semantic/<stem>.png, meta.json), the model's classes mapped onto
    `label_space` ({"categories": [{"name", ...}], "semantic_classes": [...] or None}). `session` gives the
    loaded checkpoint (see `open_session`); it is called only when some image is readable."""
    from segpipe.inference.data import images_dataset

    info, unreadable = images_dataset(
        image_root=image_root, names=names, categories=[str(c["name"]) for c in label_space.get("categories", [])],
        semantic_classes=label_space.get("semantic_classes"),
    )
    summary = session().run(dataset=info, out=out, progress=progress) if info.images else None
    return ImagesInference(file_names=tuple(e.file_name for e in info.images), unreadable=tuple(unreadable), summary=summary)


def model_task(*, model: str, card: ModelCard | None) -> str | None:
    """"semantic" or "instance" for a model name (a TorchScript file's model card says which), without
    importing torch; None for an unknown name, or a TorchScript file whose card is unreadable (`card` None:
    see `readable_card`); inference then fails with the engine's message."""
    from segpipe.inference.checkpoints import InferenceError
    from segpipe.inference.models import SEMANTIC, TORCHSCRIPT, model_spec

    try:
        spec = model_spec(model)
    except InferenceError:
        return None
    if spec.name != TORCHSCRIPT:
        return spec.task
    return None if card is None else card.task or SEMANTIC


def readable_card(checkpoint: Path) -> ModelCard | None:
    """The checkpoint's model card, read once per process (the driver, then each task, which passes it to its
    inference session) while the card file stays the same file with the same size and times (as the stat
    cache of segpipe.cache.fingerprints decides); Luigi's forked workers inherit what the driver read. None
    when it is unreadable: the caller goes on, and the inference session, which then reads it itself, fails
    with the card's own error (so a bad card fails its checkpoint only, not the whole run)."""
    from segpipe.inference.checkpoints import InferenceError, ModelCard, model_card_path, read_model_card

    path = model_card_path(checkpoint)
    if path is None:
        return ModelCard()
    try:
        st = path.stat()
        stamp = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stamp not in _CARDS:
            _CARDS[stamp] = read_model_card(checkpoint)
        return _CARDS[stamp]
    except (InferenceError, OSError):
        return None


def inference_label_space(label_space: Mapping[str, Any], *, task: str | None) -> dict[str, Any]:
    """The part of a dataset's label space a model's outputs are mapped onto, hence what its inference is
    keyed on: a semantic model's classes map onto the semantic classes (its connected-component results
    are not scored by `segpipe run`, so the category list, e.g. `--categories breed|species`, does not
    matter to it); an instance model's classes map onto the categories."""
    if task == "semantic":
        return {"categories": [], "semantic_classes": label_space.get("semantic_classes")}
    if task == "instance":
        return {"categories": list(label_space.get("categories", [])), "semantic_classes": None}
    return dict(label_space)


def predictions_task(pred_dir: Path) -> str | None:
    """"semantic" or "instance", as the engine recorded it in the predictions' meta.json (None when absent)."""
    meta = pred_dir / META_FILE
    if not meta.is_file():
        return None
    task = json.loads(meta.read_text(encoding="utf-8")).get("task")
    return None if task is None else str(task)
