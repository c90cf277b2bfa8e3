"""Label maps as real datasets store them: segpipe's reader (`read_label_map`) and the trimap converter's
decoder against `cv2.imread(IMREAD_UNCHANGED)` in the same process, on 8-bit grey maps whose rows use the
Up/Average/Paeth filters (Pillow's and libpng's adaptive choice, as in the Oxford-IIIT Pet trimaps) and on
OpenCV-written maps (Sub rows only). PNG filter types: https://www.w3.org/TR/png/#9Filter-types

    .venv/bin/python benchmarks/label_map_filters.py           # 300 trimap-shaped maps (the sample's pets)
    .venv/bin/python benchmarks/label_map_filters.py --quick   # smoke run

Prints the filter types found in each set and ms per map, medians of repeats, with the ratio to cv2.imread.
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segpipe.converters.trimap import decode_trimap  # noqa: E402
from segpipe.demo.sample import sample_pets  # noqa: E402
from segpipe.core.label_maps import read_label_map  # noqa: E402


def row_filters(data: bytes) -> set[int]:
    """The filter byte of every row of an 8-bit grey, non-interlaced PNG."""
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[pos + 8 : pos + 16])
        elif kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return {raw[r * (width + 1)] for r in range(height)}


def median_ms(fn: Callable[[Path], object], paths: list[Path], *, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            fn(p)
        times.append((time.perf_counter() - start) / len(paths) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, repeats = (30, 3) if args.quick else (300, 5)
    trimaps = [p.trimap for p in sample_pets(n_images=count, seed=7)]
    with tempfile.TemporaryDirectory() as tmp:
        sets: dict[str, list[Path]] = {"adaptive (Pillow)": [], "Sub only (OpenCV)": []}
        for i, t in enumerate(trimaps):
            buf = io.BytesIO()
            Image.fromarray(t).save(buf, format="PNG")
            for name, data in (("adaptive (Pillow)", buf.getvalue()), ("Sub only (OpenCV)", cv2.imencode(".png", t)[1].tobytes())):
                path = Path(tmp) / f"{len(sets[name])}-{i}-{name[0]}.png"
                path.write_bytes(data)
                sets[name].append(path)
        for name, paths in sets.items():
            found = sorted(set().union(*(row_filters(p.read_bytes()) for p in paths)))
            for p in paths:  # every decoder gives libpng's answer
                assert np.array_equal(read_label_map(p), cv2.imread(str(p), cv2.IMREAD_UNCHANGED)), p
            anchor = median_ms(lambda p: cv2.imread(str(p), cv2.IMREAD_UNCHANGED), paths, repeats=repeats)
            ours = median_ms(read_label_map, paths, repeats=repeats)
            trimap = median_ms(lambda p: decode_trimap(p.read_bytes(), path=str(p)), paths, repeats=repeats)
            print(f"{name}: {count} maps, row filters {found}; cv2.imread {anchor:.3f} ms/map; read_label_map {ours:.3f} ms/map "
                  f"({ours / anchor:.2f}x); trimap decoder {trimap:.3f} ms/map ({trimap / anchor:.2f}x); median of {repeats}")


if __name__ == "__main__":
    main()
