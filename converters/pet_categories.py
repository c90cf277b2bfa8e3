"""The category levels of an Oxford-IIIT Pet conversion (breed, species, pet), built from its list file.

The list file itself (`list.txt` and the split files) is read by segpipe.core.pet_list, which the audit shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from segpipe.converters.coco import CategoryRecord
from segpipe.core.errors import AnnotationError, OptionError
from segpipe.core.pet_list import SPECIES_NAMES, PetListEntry, breed_of_stem, species_of_stem

CATEGORY_LEVELS: tuple[str, ...] = ("breed", "species", "pet")

PET_CATEGORY = "pet"



@dataclass(frozen=True)
class PetCategories:
    """How each image stem maps to a category at the chosen level, and the declared category order."""

    level: str
    categories: tuple[CategoryRecord, ...]
    by_stem: Mapping[str, PetListEntry]

    def breed_species(self, stem: str) -> tuple[str, str | None]:
        """Breed and species of an image; an image missing from a list gets its species from the file name's
        case (the list's own rule), and none at all when there is no list (the naming may not be the Pet's)."""
        entry = self.by_stem.get(stem)
        if entry is None:
            return breed_of_stem(stem), species_of_stem(stem) if self.by_stem else None
        return entry.breed, entry.species_name

    def category_of(self, stem: str) -> str | None:
        """Category name for an image, or None when the level needs a species the list does not give."""
        breed, species = self.breed_species(stem)
        if self.level == "breed":
            return breed
        if self.level == "species":
            return species
        return PET_CATEGORY



def pet_categories(entries: Sequence[PetListEntry] | None, *, stems: Sequence[str], level: str, path: str) -> PetCategories:
    """Categories at `level` for the images `stems`.

    breed: breeds ordered by CLASS-ID (supercategory = species), then breeds of unlisted images, sorted
    (supercategory ""); species: cat, dog; pet: one category. Raises AnnotationError when two breeds
    claim one CLASS-ID or one breed has two CLASS-IDs / species in the list.
    """
    if level not in CATEGORY_LEVELS:
        raise OptionError("categories", f"must be one of {CATEGORY_LEVELS}, got {level!r}")
    by_stem = {e.image: e for e in entries or ()}
    if level == "species":
        cats = tuple(CategoryRecord(name=name, supercategory="animal") for _, name in sorted(SPECIES_NAMES.items()))
        return PetCategories(level=level, categories=cats, by_stem=by_stem)
    if level == "pet":
        return PetCategories(level=level, categories=(CategoryRecord(name=PET_CATEGORY, supercategory="animal"),), by_stem=by_stem)
    breed_of_class: dict[int, str] = {}
    class_of_breed: dict[str, tuple[int, int]] = {}
    for e in entries or ():
        known = breed_of_class.setdefault(e.class_id, e.breed)
        if known != e.breed:
            raise AnnotationError(path, f"{e.image}.CLASS-ID", f"CLASS-ID {e.class_id} names both {known!r} and {e.breed!r}")
        prior = class_of_breed.setdefault(e.breed, (e.class_id, e.species))
        if prior != (e.class_id, e.species):
            raise AnnotationError(path, e.image, f"breed {e.breed!r} has CLASS-ID/SPECIES {prior} and {(e.class_id, e.species)}")
    listed = [CategoryRecord(name=breed_of_class[c], supercategory=SPECIES_NAMES[class_of_breed[breed_of_class[c]][1]]) for c in sorted(breed_of_class)]
    # Breeds of unlisted images come after the listed ones; their species is unknown.
    extra = sorted({breed_of_stem(s) for s in stems if s not in by_stem} - set(class_of_breed))
    cats = tuple(listed) + tuple(CategoryRecord(name=b, supercategory="") for b in extra)
    return PetCategories(level=level, categories=cats, by_stem=by_stem)
