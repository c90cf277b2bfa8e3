"""Safe checkpoint loading, state_dict unwrapping, model cards, sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from segpipe.inference.checkpoints import (
    IMAGENET_MEAN, InferenceError, ModelCard, UntrustedCheckpointWarning, load_state_dict_into, model_card_path,
    parse_state_dict, read_checkpoint, read_model_card, strip_prefixes,
)
from segpipe.cache.fingerprints import file_sha256

torch.set_num_threads(1)


class _Payload:
    """Unpickling this runs `exec`, which writes a marker file: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    ckpt = tmp_path / "evil.pt"
    torch.save({"model": _tiny().state_dict(), "extra": _Payload(marker)}, ckpt)
    with pytest.raises(InferenceError, match="--trust-checkpoint") as info:
        read_checkpoint(ckpt)
    assert str(ckpt) in str(info.value)
    assert not marker.exists()


def test_trust_checkpoint_loads_pickled_code_with_a_loud_warning(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    ckpt = tmp_path / "evil.pt"
    torch.save({"model": _tiny().state_dict(), "extra": _Payload(marker)}, ckpt)
    with pytest.warns(UntrustedCheckpointWarning, match="FULL UNPICKLING"):
        obj = read_checkpoint(ckpt, trust=True)
    assert marker.exists()  # trusting really means running it
    assert set(parse_state_dict(obj, path=ckpt)) == set(_tiny().state_dict())


@pytest.mark.parametrize("key", [None, "model", "state_dict", "model_state_dict"])
@pytest.mark.parametrize("prefix", ["", "module.", "model.", "module.model."])
def test_state_dict_found_and_prefixes_stripped(tmp_path: Path, key: str | None, prefix: str) -> None:
    src = _tiny()
    state = {prefix + k: v for k, v in src.state_dict().items()}
    obj = state if key is None else {key: state, "epoch": 3, "optimizer": {"lr": 0.1}}
    ckpt = tmp_path / "c.pth"
    torch.save(obj, ckpt)
    parsed = parse_state_dict(read_checkpoint(ckpt), path=ckpt)
    dst = _tiny()
    load_state_dict_into(dst, parsed, path=ckpt)
    for name, tensor in src.state_dict().items():
        assert torch.equal(dst.state_dict()[name], tensor)


def test_strip_prefixes_only_leading() -> None:
    assert strip_prefixes("module.backbone.model.x") == "backbone.model.x"


def test_shape_mismatch_reported_by_parameter_name(tmp_path: Path) -> None:
    state = dict(_tiny().state_dict())
    state["0.weight"] = torch.zeros(5, 3, 3, 3)
    del state["1.bias"]
    state["head.weight"] = torch.zeros(1)
    with pytest.raises(InferenceError) as info:
        load_state_dict_into(_tiny(), state, path=tmp_path / "c.pt")
    msg = str(info.value)
    assert "0.weight: checkpoint shape (5, 3, 3, 3) != model shape (4, 3, 3, 3)" in msg
    assert "missing 1.bias" in msg and "unexpected head.weight" in msg and "c.pt" in msg


def test_no_state_dict_inside(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    torch.save({"epoch": 3, "lr": 0.1}, ckpt)
    with pytest.raises(InferenceError, match="no state_dict found"):
        parse_state_dict(read_checkpoint(ckpt), path=ckpt)


def test_unreadable_and_missing_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InferenceError, match="bad.pt"):
        read_checkpoint(bad)
    with pytest.raises(InferenceError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    f = tmp_path / "c.pt"
    f.write_bytes(b"x" * 3_000_000)
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_model_card_json_and_toml(tmp_path: Path) -> None:
    ckpt = tmp_path / "net.pt"
    ckpt.write_bytes(b"")
    assert read_model_card(ckpt) == ModelCard()
    (tmp_path / "net.toml").write_text(
        'class_names = ["background", "pet"]\nnum_classes = 2\nmean = [0.5, 0.5, 0.5]\nstd = [0.2, 0.2, 0.2]\n'
        'resize = 128\ntask = "semantic"\n[unet]\ndepth = 2\nwidth = 8\nbilinear = false\n'
    )
    card = read_model_card(ckpt)
    assert card.class_names == ("background", "pet") and card.num_classes == 2 and card.resize == 128
    assert card.mean == (0.5, 0.5, 0.5) and card.std == (0.2, 0.2, 0.2)
    assert (card.unet_depth, card.unet_width, card.unet_bilinear, card.task) == (2, 8, False, "semantic")
    # JSON wins over TOML when both exist.
    (tmp_path / "net.json").write_text(json.dumps({"classes": ["a", "b", "c"], "unet_depth": 3}))
    assert model_card_path(ckpt) == tmp_path / "net.json"
    card = read_model_card(ckpt)
    assert card.class_names == ("a", "b", "c") and card.unet_depth == 3 and card.mean is None
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)


@pytest.mark.parametrize(
    ("card", "field"),
    [({"num_classes": 0}, "num_classes"), ({"mean": [1, 2]}, "mean"), ({"std": [1, 0, 1]}, "std"),
     ({"class_names": "pet"}, "class_names"), ({"task": "detect"}, "task"), ({"unet": {"depth": "4"}}, "unet.depth"),
     ({"mean": [0.5, float("nan"), 0.5]}, "mean"), ({"std": [0.2, float("inf"), 0.2]}, "std"),
     ({"std": [0.2, 0.2, float("nan")]}, "std"), ({"unet": {"depth": 40}}, "unet.depth"), ({"unet_width": 100000}, "unet.width"),
     ({"resize": 100000}, "resize"), ({"num_classes": 10**9}, "num_classes")],
)
def test_bad_model_card_names_the_field(tmp_path: Path, card: dict[str, object], field: str) -> None:
    ckpt = tmp_path / "net.pt"
    (tmp_path / "net.json").write_text(json.dumps(card))
    with pytest.raises(InferenceError, match=field) as info:
        read_model_card(ckpt)
    assert "net.json" in str(info.value)


def test_nan_in_a_toml_card_is_refused(tmp_path: Path) -> None:
    (tmp_path / "net.toml").write_text("mean = [0.5, nan, 0.5]\n")
    with pytest.raises(InferenceError, match="net.toml: mean: must be finite"):
        read_model_card(tmp_path / "net.pt")


def test_a_zip_bomb_checkpoint_is_refused_before_torch_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200 MB entry deflated into a few hundred KB: torch would inflate it whole; the central directory says so first."""
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("bomb/data.pkl", "w", force_zip64=True) as entry:
            block = bytes(1 << 20)
            for _ in range(200):
                entry.write(block)
    assert path.stat().st_size < 1_000_000
    loads: list[object] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(InferenceError, match=r"bomb.pt: refused: its entries inflate to 209715200 bytes"):
        read_checkpoint(path)
    assert loads == []
    ok = tmp_path / "ok.pt"
    torch.save({"w": torch.zeros(3)}, ok)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(ok)["w"], torch.zeros(3))
