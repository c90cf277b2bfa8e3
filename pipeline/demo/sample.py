"""The embedded sample: a small, deterministic dataset in the Oxford-IIIT Pet layout (https://www.robots.ox.ac.uk/~vgg/data/pets/).

Every file is generated from a numpy Generator seeded by `seed` and encoded by cv2 at fixed settings, so
the same call writes byte-identical files. Each pet is a warm, striped or spotted blob on a cool, cluttered
background: a tiny U-Net separates them after seconds of training. Trimaps carry a border band (value 3)
around the blob's outline, like the real ones; the XML's head box lies inside the pet.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from segpipe.converters.atomic_write import atomic_write_bytes, atomic_write_text
from segpipe.converters.pet_list import PetListEntry, format_pet_list
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


def generate_sample(root: Path, *, n_images: int = 24, seed: int = 0) -> Path:
    """Write the sample under `root` (images/, annotations/{trimaps,xmls,list.txt,trainval.txt,test.txt})."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    entries: list[PetListEntry] = []
    test: set[str] = set()
    for i in range(n_images):
        breed = SAMPLE_BREEDS[i % len(SAMPLE_BREEDS)]
        number = i // len(SAMPLE_BREEDS) + 1
        stem = f"{breed}_{number}"
        class_id, species, breed_id = breed_ids(breed)
        width, height = SAMPLE_SIZES[int(rng.integers(0, len(SAMPLE_SIZES)))]
        image, trimap, box = render_pet(rng, width=width, height=height, cat=species == 1)
        ok_jpg, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        ok_png, png = cv2.imencode(".png", trimap, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not (ok_jpg and ok_png):
            raise RuntimeError(f"cv2 could not encode the sample image {stem}")
        atomic_write_bytes(root / "images" / f"{stem}.jpg", jpg.tobytes())
        atomic_write_bytes(root / "annotations" / "trimaps" / f"{stem}.png", png.tobytes())
        xml = format_head_xml(filename=f"{stem}.jpg", width=width, height=height, species="cat" if species == 1 else "dog", box=box)
        atomic_write_text(root / "annotations" / "xmls" / f"{stem}.xml", xml)
        entries.append(PetListEntry(image=stem, class_id=class_id, species=species, breed_id=breed_id))
        if number % TEST_EVERY == 0:
            test.add(stem)
    # list.txt is sorted like the real one (by image name, case-insensitively).
    entries.sort(key=lambda e: (e.image.lower(), e.image))
    atomic_write_text(root / "annotations" / "list.txt", format_pet_list(entries, header=True))
    atomic_write_text(root / "annotations" / "trainval.txt", format_pet_list([e for e in entries if e.image not in test], header=False))
    atomic_write_text(root / "annotations" / "test.txt", format_pet_list([e for e in entries if e.image in test], header=False))
    return root
