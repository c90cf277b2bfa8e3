"""Is this the folder the format expects? Checked before converting, so a wrong folder is one clear message
(what was expected, what was found, what to type instead) rather than an empty dataset with the reason
buried in the conversion report.

Only folder names and file suffixes are looked at (one level, plus the few fixed sub-folders of the
Oxford-IIIT Pet layout, https://www.robots.ox.ac.uk/~vgg/data/pets/): nothing is parsed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

PET_IMAGES = "images"
PET_TRIMAPS = ("annotations", "trimaps")
PET_XMLS = ("annotations", "xmls")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def describe_folder(path: Path, *, limit: int = 4) -> str:
    """'3 folder(s) (annotations, images, misc); 12 file(s) (10 .jpg, 2 .mat)' — what a folder holds, briefly."""
    if not path.is_dir():
        return "not a folder" if path.exists() else "does not exist"
    entries = sorted(path.iterdir())
    folders = [p.name for p in entries if p.is_dir()]
    suffixes = Counter(p.suffix.lower() or "(no suffix)" for p in entries if p.is_file())
    parts = []
    if folders:
        shown = ", ".join(folders[:limit]) + (", ..." if len(folders) > limit else "")
        parts.append(f"{len(folders)} folder(s) ({shown})")
    if suffixes:
        shown = ", ".join(f"{n} {s}" for s, n in suffixes.most_common(limit))
        parts.append(f"{sum(suffixes.values())} file(s) ({shown})")
    return "; ".join(parts) or "nothing"


def is_pet_root(path: Path) -> bool:
    return (path / PET_IMAGES).is_dir() and (path.joinpath(*PET_TRIMAPS)).is_dir()


def _count(path: Path, suffixes: tuple[str, ...]) -> int:
    return sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes) if path.is_dir() else 0


def oxford_pet_root_problem(root: Path) -> str | None:
    """None when ROOT has the Oxford-IIIT Pet layout; else what is wrong and what to pass instead."""
    if is_pet_root(root):
        return None
    expected = (f"expected an Oxford-IIIT Pet root holding {PET_IMAGES}/ (the .jpg images) and "
                f"{'/'.join(PET_TRIMAPS)}/ (the trimap .png files); found {describe_folder(root)}")
    for parent in (root.parent, root.parent.parent):
        if parent != root and is_pet_root(parent):
            return f"{root}: {expected}. It lies inside the Oxford-IIIT Pet root {parent}: pass that folder instead"
    if _count(root, (".xml",)) or (root / "Annotations").is_dir():
        return f"{root}: {expected}. It looks like a Pascal VOC / LabelImg folder: use `segpipe convert voc`"
    if (root / "trimaps").is_dir():
        return f"{root}: {expected}. It looks like the annotations/ folder: pass its parent {root.parent}"
    return f"{root}: {expected}"


def voc_source_problem(src: Path, *, images: Path | None) -> str | None:
    """None unless SRC is an Oxford-IIIT Pet root given to the VOC converter without --images: the trimap PNGs
    would then be taken for the images of the head-box XMLs."""
    if images is None and is_pet_root(src):
        return (f"{src}: expected a Pascal VOC / LabelImg folder of .xml files (images beside them or under --images); "
                f"found an Oxford-IIIT Pet root ({describe_folder(src)}), whose trimap .png files would be taken for "
                f"images. Use `segpipe convert oxford-pet {src}`, or for the head boxes alone "
                f"`segpipe convert voc {src.joinpath(*PET_XMLS)} --images {src / PET_IMAGES}`")
    return None


def nothing_converted_message(format: str, src: Path, *, rows: int, report: Path) -> str:
    """The usage error of a conversion that converted no image: what was looked for and what SRC holds."""
    from segpipe.converters.formats import FORMATS  # each format's layout is declared with the format

    looked = FORMATS[format].layout if format in FORMATS else f"a {format} dataset"
    where = src if src.is_dir() else src.parent
    found = describe_folder(where)
    tail = f"; the {rows} row(s) of {report} say why each file was left out" if rows else "; no annotation file was found"
    return f"{src}: nothing converted (0 images): looked for {looked}; found {found}{tail}"
