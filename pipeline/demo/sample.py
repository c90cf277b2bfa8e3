"""The embedded sample: a small, deterministic dataset in the Oxford-IIIT Pet layout (https://www.robots.ox.ac.uk/~vgg/data/pets/).

Every file is generated from a numpy Generator seeded by `seed` and encoded by cv2 at fixed settings, so
the same call writes byte-identical files. Each pet is a warm, striped or spotted blob on a cool, cluttered
background: a tiny U-Net separates them after seconds of training. Trimaps carry a border band (value 3)
around the blob's outline, like the real ones; the XML's head box lies inside the pet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from segpipe.core.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.core.pet_list import PetListEntry, format_pet_list
from segpipe.converters.trimap import TRIMAP_BACKGROUND, TRIMAP_BORDER, TRIMAP_PET

# The 37 breeds in CLASS-ID order (line n = CLASS-ID n); cat breeds are Capitalised, dog breeds lowercase.
OXFORD_PET_BREEDS: tuple[str, ...] = (
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "Bengal", "Birman",
    "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau", "english_cocker_spaniel", "english_setter",
    "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond", "leonberger", "Maine_Coon",
    "miniature_pinscher", "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard",
    "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx", "staffordshire_bull_terrier", "wheaten_terrier",
    "yorkshire_terrier",
)
SAMPLE_BREEDS: tuple[str, ...] = ("Abyssinian", "Bengal", "Persian", "beagle", "pug", "yorkshire_terrier")
# A handful of sizes (160-240 px sides) so that several images share one: semantic models batch equal sizes.
SAMPLE_SIZES: tuple[tuple[int, int], ...] = ((240, 180), (200, 200), (176, 224), (224, 160), (192, 240), (160, 208))
JPEG_QUALITY = 90
BORDER_BAND_PX = 2.0
TEST_EVERY = 4  # every 4th image of a breed goes to test.txt


def breed_ids(breed: str) -> tuple[int, int, int]:
    """(CLASS-ID, SPECIES, BREED-ID) of a breed, as list.txt numbers them."""
    class_id = OXFORD_PET_BREEDS.index(breed) + 1
    species = 1 if breed[0].isupper() else 2
    same = [b for b in OXFORD_PET_BREEDS if (b[0].isupper()) == (species == 1)]
    return class_id, species, same.index(breed) + 1


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Cool (blue/green/grey) clutter: a gradient, rectangles and noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.array(rng.uniform([90, 80, 40], [170, 150, 90]), dtype=np.float32)  # BGR: blue-green
    img = base + 30.0 * np.stack([np.sin(xx / rng.uniform(15, 40)), np.cos(yy / rng.uniform(15, 40)), np.zeros_like(xx)], axis=-1)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        colour = rng.uniform([100, 90, 30], [220, 200, 110])
        img[y0:y1, x0:x1] = 0.5 * img[y0:y1, x0:x1] + 0.5 * colour
    img += rng.normal(0.0, 8.0, size=img.shape)
    return img


def _pet_layer(rng: np.random.Generator, h: int, w: int, *, cat: bool) -> np.ndarray:
    """Warm fur: stripes for cats, spots for dogs."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.array(rng.uniform([20, 90, 170], [60, 150, 235]), dtype=np.float32)  # BGR: orange-brown
    if cat:
        angle = rng.uniform(0, np.pi)
        texture = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(2.5, 4.5))
    else:
        texture = np.sin(xx / rng.uniform(3, 6)) * np.sin(yy / rng.uniform(3, 6))
    img = base + 35.0 * texture[..., None] * np.array([0.4, 0.8, 1.0], dtype=np.float32)
    noisy: np.ndarray = img + rng.normal(0.0, 6.0, size=img.shape)
    return noisy


def render_pet(rng: np.random.Generator, *, width: int, height: int, cat: bool) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """(BGR uint8 image, trimap uint8, head box (xmin, ymin, xmax, ymax)) for one synthetic pet."""
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.45, 0.6)
    radius = min(width, height) * rng.uniform(0.24, 0.32)
    harmonics = [(k, rng.uniform(0.03, 0.07), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = np.arctan2(yy - cy, xx - cx)
    outline = radius * (1.0 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics))
    signed = np.hypot(xx - cx, yy - cy) - outline  # < 0 inside the pet
    trimap = np.full((height, width), TRIMAP_BACKGROUND, dtype=np.uint8)
    trimap[signed < -BORDER_BAND_PX] = TRIMAP_PET
    trimap[np.abs(signed) <= BORDER_BAND_PX] = TRIMAP_BORDER
    alpha = np.clip(0.5 - signed / 2.0, 0.0, 1.0)[..., None]  # soft 2-px edge, inside the border band
    image = alpha * _pet_layer(rng, height, width, cat=cat) + (1.0 - alpha) * _background(rng, height, width)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    # Head: upper part of the blob. Its corners stay within 0.61 radius of the centre while the outline never
    # comes closer than 0.79 radius (harmonic amplitudes sum to at most 0.21), so the box lies inside the pet.
    half = radius * 0.22
    hx, hy = cx + radius * rng.uniform(-0.1, 0.1), cy - radius * 0.3
    box = (int(np.floor(hx - half)), int(np.floor(hy - half)), int(np.ceil(hx + half)), int(np.ceil(hy + half)))
    return image, trimap, box


def format_head_xml(*, filename: str, width: int, height: int, species: str, box: tuple[int, int, int, int]) -> str:
    """A LabelImg-style annotation with one head box, tab-indented like LabelImg writes it."""
    xmin, ymin, xmax, ymax = box
    return (
        "<annotation>\n\t<folder>images</folder>\n"
        f"\t<filename>{escape(filename)}</filename>\n"
        "\t<source>\n\t\t<database>segpipe sample (Oxford-IIIT Pet layout)</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        "\t<segmented>0</segmented>\n"
        f"\t<object>\n\t\t<name>{species}</name>\n\t\t<pose>Frontal</pose>\n\t\t<truncated>0</truncated>\n"
        "\t\t<difficult>0</difficult>\n"
        f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n\t\t\t<xmax>{xmax}</xmax>\n"
        f"\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n</annotation>\n"
    )


@dataclass(frozen=True)
class SamplePet:
    """One generated image and its pet: what every format writes, each in its own way."""

    stem: str
    breed: str
    class_id: int
    species: int  # 1 cat, 2 dog (list.txt's SPECIES)
    breed_id: int
    jpg: bytes
    trimap: np.ndarray
    head: tuple[int, int, int, int]

    @property
    def width(self) -> int:
        return int(self.trimap.shape[1])

    @property
    def height(self) -> int:
        return int(self.trimap.shape[0])

    @property
    def species_name(self) -> str:
        return "cat" if self.species == 1 else "dog"

    @property
    def mask(self) -> np.ndarray:
        """The pet's pixels: the trimap's pet value (the border band is neither pet nor background)."""
        inside: np.ndarray = self.trimap == TRIMAP_PET
        return inside

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the pet mask, pixel corners (x1, y1 exclusive)."""
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def sample_pets(*, n_images: int = 24, seed: int = 0) -> list[SamplePet]:
    """The sample's images and pets, in generation order: the one generator every format's writer uses."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    rng = np.random.default_rng(seed)
    pets: list[SamplePet] = []
    for i in range(n_images):
        breed = SAMPLE_BREEDS[i % len(SAMPLE_BREEDS)]
        number = i // len(SAMPLE_BREEDS) + 1
        stem = f"{breed}_{number}"
        class_id, species, breed_id = breed_ids(breed)
        width, height = SAMPLE_SIZES[int(rng.integers(0, len(SAMPLE_SIZES)))]
        image, trimap, box = render_pet(rng, width=width, height=height, cat=species == 1)
        ok_jpg, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok_jpg:
            raise RuntimeError(f"cv2 could not encode the sample image {stem}")
        pets.append(SamplePet(stem, breed, class_id, species, breed_id, jpg.tobytes(), trimap, box))
    return pets


def _png(array: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("cv2 could not encode a sample PNG")
    return bytes(png.tobytes())


def generate_sample(root: Path, *, n_images: int = 24, seed: int = 0) -> Path:
    """Write the sample under `root` (images/, annotations/{trimaps,xmls,list.txt,trainval.txt,test.txt})."""
    root = Path(root)
    entries: list[PetListEntry] = []
    test: set[str] = set()
    for i, pet in enumerate(sample_pets(n_images=n_images, seed=seed)):
        atomic_write_bytes(root / "images" / f"{pet.stem}.jpg", pet.jpg)
        atomic_write_bytes(root / "annotations" / "trimaps" / f"{pet.stem}.png", _png(pet.trimap))
        xml = format_head_xml(filename=f"{pet.stem}.jpg", width=pet.width, height=pet.height, species=pet.species_name, box=pet.head)
        atomic_write_text(root / "annotations" / "xmls" / f"{pet.stem}.xml", xml)
        entries.append(PetListEntry(image=pet.stem, class_id=pet.class_id, species=pet.species, breed_id=pet.breed_id))
        if (i // len(SAMPLE_BREEDS) + 1) % TEST_EVERY == 0:
            test.add(pet.stem)
    # list.txt is sorted like the real one (by image name, case-insensitively).
    entries.sort(key=lambda e: (e.image.lower(), e.image))
    atomic_write_text(root / "annotations" / "list.txt", format_pet_list(entries, header=True))
    atomic_write_text(root / "annotations" / "trainval.txt", format_pet_list([e for e in entries if e.image not in test], header=False))
    atomic_write_text(root / "annotations" / "test.txt", format_pet_list([e for e in entries if e.image in test], header=False))
    return root


# The other formats describe the same pets with the species as the category (cat, dog: both also Pascal VOC
# classes): a box where the format holds boxes only (voc, yolo), the pet mask where it holds masks.
SPECIES_NAMES: tuple[str, ...] = ("cat", "dog")


def _voc_box_xml(pet: SamplePet, *, filename: str) -> str:
    """LabelImg's pixel-corner convention (xmax = x1), which `segpipe convert voc` reads by default."""
    return format_head_xml(filename=filename, width=pet.width, height=pet.height, species=pet.species_name, box=pet.box).replace(
        "<pose>Frontal</pose>", "<pose>Unspecified</pose>")


def _write_voc(root: Path, pets: list[SamplePet]) -> str:
    for pet in pets:  # LabelImg: each XML beside its image
        atomic_write_bytes(root / f"{pet.stem}.jpg", pet.jpg)
        atomic_write_text(root / f"{pet.stem}.xml", _voc_box_xml(pet, filename=f"{pet.stem}.jpg"))
    return f"segpipe convert voc {root} -o OUT"


def _write_yolo(root: Path, pets: list[SamplePet]) -> str:
    # Ultralytics layout (https://docs.ultralytics.com/datasets/detect/): images/ and labels/, class names in classes.txt
    atomic_write_text(root / "classes.txt", "".join(f"{n}\n" for n in SPECIES_NAMES))
    for pet in pets:
        x0, y0, x1, y1 = pet.box
        w, h = pet.width, pet.height
        line = f"{SPECIES_NAMES.index(pet.species_name)} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n"
        atomic_write_bytes(root / "images" / f"{pet.stem}.jpg", pet.jpg)
        atomic_write_text(root / "labels" / f"{pet.stem}.txt", line)
    return f"segpipe convert yolo {root} -o OUT"


def _write_labelme(root: Path, pets: list[SamplePet]) -> str:
    # labelme >= 5.5 `mask` shapes (https://github.com/wkentaro/labelme): the mask's PNG between two inclusive corners
    import base64
    import json

    for pet in pets:
        x0, y0, x1, y1 = pet.box
        crop = pet.mask[y0:y1, x0:x1].astype(np.uint8) * 255
        shape: dict[str, object] = {"label": pet.species_name, "points": [[x0, y0], [x1 - 1, y1 - 1]], "group_id": None, "description": "",
                                    "shape_type": "mask", "flags": {}, "mask": base64.b64encode(_png(crop)).decode("ascii")}
        doc: dict[str, object] = {"version": "5.5.0", "flags": {}, "shapes": [shape], "imagePath": f"{pet.stem}.jpg", "imageData": None,
               "imageHeight": pet.height, "imageWidth": pet.width}
        atomic_write_bytes(root / f"{pet.stem}.jpg", pet.jpg)
        atomic_write_text(root / f"{pet.stem}.json", json.dumps(doc, indent=2) + "\n")
    return f"segpipe convert labelme {root} -o OUT"


def cvat_rle(crop: np.ndarray) -> str:
    """CVAT's mask run-lengths (https://docs.cvat.ai/docs/manual/advanced/xml_format/): row-major, starting with
    a background run."""
    flat = crop.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0, *runs]
    return ", ".join(str(r) for r in runs)


def _write_cvat(root: Path, pets: list[SamplePet]) -> str:
    labels = "".join(f"<label><name>{n}</name><type>mask</type><attributes/></label>" for n in SPECIES_NAMES)
    parts = [f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n<meta><task><name>segpipe sample</name>'
             f"<labels>{labels}</labels></task></meta>\n"]
    for i, pet in enumerate(pets):
        x0, y0, x1, y1 = pet.box
        rle = cvat_rle(pet.mask[y0:y1, x0:x1])
        parts.append(f'<image id="{i}" name="{pet.stem}.jpg" width="{pet.width}" height="{pet.height}">\n'
                     f'<mask label="{pet.species_name}" source="manual" occluded="0" rle="{rle}" left="{x0}" top="{y0}" width="{x1 - x0}" '
                     f'height="{y1 - y0}" z_order="0"/>\n</image>\n')
        atomic_write_bytes(root / "images" / f"{pet.stem}.jpg", pet.jpg)
    parts.append("</annotations>\n")
    atomic_write_text(root / "annotations.xml", "".join(parts))
    return f"segpipe convert cvat {root} -o OUT"


def _palette_png(indices: np.ndarray) -> bytes:
    """A palette PNG whose indices are the labels, with the VOC colour map, as VOC ships them."""
    import io

    from PIL import Image

    from segpipe.converters.voc_segmentation import voc_colormap

    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(voc_colormap().reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _write_voc_seg(root: Path, pets: list[SamplePet]) -> str:
    # Pascal VOC segmentation: class and object index PNGs, 255 on the border band (VOC's own void outline)
    from segpipe.converters.voc_segmentation import VOC_CLASSES, VOID_INDEX

    for pet in pets:
        border = pet.trimap == TRIMAP_BORDER
        cls = np.where(pet.mask, VOC_CLASSES.index(pet.species_name), 0).astype(np.uint8)
        obj = pet.mask.astype(np.uint8)
        cls[border], obj[border] = VOID_INDEX, VOID_INDEX
        atomic_write_bytes(root / "JPEGImages" / f"{pet.stem}.jpg", pet.jpg)
        atomic_write_bytes(root / "SegmentationClass" / f"{pet.stem}.png", _palette_png(cls))
        atomic_write_bytes(root / "SegmentationObject" / f"{pet.stem}.png", _palette_png(obj))
        atomic_write_text(root / "Annotations" / f"{pet.stem}.xml", _voc_box_xml(pet, filename=f"{pet.stem}.jpg"))
    atomic_write_text(root / "ImageSets" / "Segmentation" / "trainval.txt", "".join(f"{p.stem}\n" for p in pets))
    return f"segpipe convert voc-seg {root} -o OUT"


SAMPLE_FORMATS: tuple[str, ...] = ("oxford-pet", "voc", "yolo", "labelme", "cvat", "voc-seg")


def write_sample(root: Path, *, format: str = "oxford-pet", n_images: int = 24, seed: int = 0) -> str:
    """Write the sample under `root` in `format`; returns the command that converts it."""
    root = Path(root)
    if format == "oxford-pet":
        generate_sample(root, n_images=n_images, seed=seed)
        return f"segpipe convert oxford-pet {root} -o OUT"
    writers = {"voc": _write_voc, "yolo": _write_yolo, "labelme": _write_labelme, "cvat": _write_cvat, "voc-seg": _write_voc_seg}
    if format not in writers:
        raise ValueError(f"format must be one of {SAMPLE_FORMATS}, got {format!r}")
    return writers[format](root, sample_pets(n_images=n_images, seed=seed))
