"""A checkpoint that does not load says why: broken (truncated zip, not a checkpoint at all) or a sound pickle
that needs code; --trust-checkpoint is suggested for the latter only, and never loads a broken file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from segpipe.inference.checkpoint_errors import diagnose_checkpoint
from segpipe.inference.checkpoints import InferenceError, read_checkpoint
from tests.pipeline.test_checkpoints import _Payload


def _state(tmp_path: Path) -> Path:
    path = tmp_path / "good.pt"
    torch.save(nn.Conv2d(3, 4, 3).state_dict(), path)
    return path


def _broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = _state(tmp_path).read_bytes()
    files = {
        "json": (json.dumps({"classes": ["a", "b"]}).encode(), "JSON file"),
        "text": (b"epoch 3, loss 0.12\n", "text file"),
        "random": (bytes(range(256)) * 8, "unknown binary format"),
        "truncated": (good[: len(good) // 2], "truncated or damaged zip"),
        "empty": (b"", "empty"),
    }
    out = {}
    for name, (data, expected) in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        out[name] = (path, expected)
    return out


def test_broken_checkpoints_are_called_broken_and_never_sent_to_trust(tmp_path: Path) -> None:
    for name, (path, expected) in _broken_files(tmp_path).items():
        for trust in (False, True):
            with pytest.raises(InferenceError) as info:
                read_checkpoint(path, trust=trust)
            message = str(info.value)
            assert str(path) in message, name
            assert "broken checkpoint" in message and expected in message, (name, message)
            assert "pass --trust-checkpoint" not in message, (name, message)


def test_a_pickle_with_code_is_the_only_case_that_suggests_trust(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"model": nn.Conv2d(3, 4, 3).state_dict(), "hook": _Payload(marker)}, evil)
    diagnosis = diagnose_checkpoint(evil)
    assert diagnosis.needs_trust and ".exec" in diagnosis.message  # named, so the user sees what would run
    with pytest.raises(InferenceError, match="pass --trust-checkpoint"):
        read_checkpoint(evil)
    assert not marker.exists()  # diagnosing reads opcodes, never unpickles


def test_a_legacy_pickle_with_code_names_the_code_before_trust_is_suggested(tmp_path: Path) -> None:
    """torch.save(..., _use_new_zipfile_serialization=False): the object is the fourth of five pickles; reading
    only the first (the magic number) called the payload harmless ("only torch/collections globals")."""
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"model": nn.Conv2d(3, 4, 3).state_dict(), "hook": _Payload(marker)}, evil, _use_new_zipfile_serialization=False)
    diagnosis = diagnose_checkpoint(evil)
    assert diagnosis.needs_trust and "needs arbitrary pickled code to load (__builtin__.exec)" in diagnosis.message  # protocol 2 spelling
    assert "only torch/collections" not in diagnosis.message
    with pytest.raises(InferenceError, match=r"\(__builtin__\.exec\).*pass --trust-checkpoint"):
        read_checkpoint(evil)
    assert not marker.exists()
    plain = tmp_path / "plain.pt"
    torch.save(nn.Conv2d(3, 4, 3).state_dict(), plain, _use_new_zipfile_serialization=False)
    assert set(read_checkpoint(plain)) == {"weight", "bias"}  # the weights-only loader reads legacy files
    cut = tmp_path / "cut.pt"
    cut.write_bytes(evil.read_bytes()[:120])
    assert not diagnose_checkpoint(cut).needs_trust


def test_a_sound_checkpoint_still_loads(tmp_path: Path) -> None:
    state = read_checkpoint(_state(tmp_path))
    assert set(state) == {"weight", "bias"}


def test_weights_of_another_model_are_called_a_wrong_model(tmp_path: Path) -> None:
    from segpipe.inference.checkpoints import load_state_dict_into

    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1)).state_dict()
    with pytest.raises(InferenceError) as info:
        load_state_dict_into(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), other, path=tmp_path / "other.pt")
    message = str(info.value)
    assert "wrong model" in message and "another --model" in message and "other.pt" in message
    assert "--trust-checkpoint" not in message
