"""Hostile sizes: pixel bombs, huge or special files. Each is a located row; the good files still convert,
and memory stays bounded (measured as the peak RSS of a fresh interpreter, never a timing: VmHWM from
/proc/self/status, since Linux carries getrusage's ru_maxrss of the spawning process across exec)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from segpipe.core.images import MAX_FILE_BYTES_ENV, MAX_IMAGE_PIXELS_ENV, read_image_size, read_input_bytes
from segpipe.core.errors import AnnotationError
from segpipe.converters.trimap import convert_trimap

REPO = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(width: int, height: int, *, fill: int = 2, rows: int | None = None) -> bytes:
    """A grey 8-bit PNG declaring width x height whose IDAT holds `rows` rows (all of them by default) of `fill`:
    zlib squeezes ~1000:1, so a few hundred megapixels fit in a few hundred KB."""
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes([fill]) * width
    parts = [comp.compress(row) for _ in range(height if rows is None else rows)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _pair(root: Path, stem: str, *, trimap: bytes, image: bytes) -> None:
    (root / "trimaps").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "trimaps" / f"{stem}.png").write_bytes(trimap)
    (root / "images" / f"{stem}.png").write_bytes(image)


def _good(root: Path, stem: str) -> None:
    t = np.full((20, 30), 2, np.uint8)
    t[5:15, 5:20] = 1
    _pair(root, stem, trimap=cv2.imencode(".png", t)[1].tobytes(), image=cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tobytes())


def test_an_image_over_the_pixel_limit_is_a_row_and_the_rest_converts(tmp_path: Path) -> None:
    _good(tmp_path, "Bengal_1")
    huge = bomb_png(20000, 20000, rows=1)  # 400 Mpx declared: over twice Pillow's threshold (it raises, not warns)
    _pair(tmp_path, "Bengal_2", trimap=bomb_png(20, 30), image=huge)
    report = convert_trimap(tmp_path / "trimaps", tmp_path / "out", images=tmp_path / "images")
    rows = {(Path(f.file).name, f.code) for f in report.findings if f.severity == "error"}
    assert rows == {("Bengal_2.png", "image_too_large")}
    coco = json.loads((tmp_path / "out" / "instances.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["Bengal_1.png"]


def test_pixel_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(cv2.imencode(".png", np.zeros((20, 30), np.uint8))[1].tobytes())
    assert read_image_size(path) == (30, 20)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "599")
    with pytest.raises(AnnotationError, match=f"30x20 = 600 pixels is over the limit of 599.*{MAX_IMAGE_PIXELS_ENV}") as info:
        read_image_size(path)
    assert info.value.code == "image_too_large" and info.value.path == str(path)


def test_a_trimap_pixel_bomb_costs_no_memory(tmp_path: Path) -> None:
    """A trimap declaring 20000x20000 (400 MB once decoded, ~400 KB on disk) beside a small image."""
    _good(tmp_path, "Bengal_1")
    _pair(tmp_path, "Bengal_2", trimap=bomb_png(20000, 20000),
          image=cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tobytes())
    assert (tmp_path / "trimaps" / "Bengal_2.png").stat().st_size < 1_000_000
    code = (
        "import json, resource, sys\nfrom pathlib import Path\nfrom segpipe.converters.trimap import convert_trimap\n"
        "root = Path(sys.argv[1])\n"
        "r = convert_trimap(root / 'trimaps', root / 'out', images=root / 'images', workers=1)\n"
        "print(json.dumps({'rss_kb': [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0],"
        " 'codes': sorted(f.code for f in r.findings if f.severity == 'error')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == ["image_too_large"]
    assert result["rss_kb"] < 300 * 1024, result  # decoding the bomb alone would take 400 MB


def test_only_regular_files_under_the_size_limit_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "hang.xml"
    os.mkfifo(fifo)  # reading a FIFO with no writer would block forever
    with pytest.raises(AnnotationError, match="not a regular file") as info:
        read_input_bytes(fifo)
    assert info.value.code == "not_regular_file"
    zero = tmp_path / "zero.xml"
    zero.symlink_to("/dev/zero")  # endless
    with pytest.raises(AnnotationError, match="not a regular file"):
        read_input_bytes(zero)
    big = tmp_path / "big.xml"
    big.write_bytes(b"<a>" + b" " * 2000 + b"</a>")
    monkeypatch.setenv(MAX_FILE_BYTES_ENV, "1000")
    with pytest.raises(AnnotationError, match=f"2007 bytes is over the limit of 1000.*{MAX_FILE_BYTES_ENV}") as info:
        read_input_bytes(big)
    assert info.value.code == "file_too_large"


def test_a_fifo_list_or_classes_file_is_a_row_not_a_hang(tmp_path: Path) -> None:
    """`--list` / `--classes` name a file directly: a FIFO there would block the converter forever."""
    _good(tmp_path, "Bengal_1")
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    code = ("import sys\nfrom pathlib import Path\nfrom segpipe.converters.trimap import convert_trimap\n"
            "from segpipe.converters.voc import read_classes_file\n"
            "root = Path(sys.argv[1])\n"
            "r = convert_trimap(root / 'trimaps', root / 'out', images=root / 'images', list_file=root / 'list.txt', workers=1)\n"
            "print([(f.code, f.message) for f in r.findings if f.severity == 'error'])\n"
            "try:\n    read_classes_file(root / 'list.txt')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "[('bad_list', 'unreadable list file: not a regular file (a device, FIFO or socket); only regular files are read')]"
    assert lines[1] == f"AnnotationError {fifo}: cannot read the classes file: not a regular file (a device, FIFO or socket); only regular files are read"
    assert json.loads((tmp_path / "out" / "instances.json").read_text())["images"][0]["file_name"] == "Bengal_1.png"
