"""Oxford-IIIT Pet `list.txt` / `trainval.txt` / `test.txt`: parsing and writing them
(the category levels built from them are segpipe.converters.pet_categories).

Each data line is `Image CLASS-ID SPECIES BREED-ID` (CLASS-ID 1..37, SPECIES 1 = cat, 2 = dog); `list.txt`
starts with 6 `#` header lines, the split files have none. The breed is the image stem without its trailing
`_<number>` (https://www.robots.ox.ac.uk/~vgg/data/pets/, README of the annotations archive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from segpipe.core.errors import AnnotationError

SPECIES_NAMES: Mapping[int, str] = {1: "cat", 2: "dog"}
# The header of the real list.txt, typos included; `parse_pet_list` skips any `#` line.
LIST_HEADER: tuple[str, ...] = (
    "#Image CLASS-ID SPECIES BREED ID",
    "#ID: 1:37 Class ids",
    "#SPECIES: 1:Cat 2:Dog",
    "#BREED ID: 1-25:Cat 1:12:Dog",
    "#All images with 1st letter as captial are cat images",
    "#images with small first letter are dog images",
)
_TRAILING_NUMBER = re.compile(r"_\d+$")


@dataclass(frozen=True)
class PetListEntry:
    image: str  # stem, e.g. "Abyssinian_1"
    class_id: int
    species: int
    breed_id: int

    @property
    def breed(self) -> str:
        return breed_of_stem(self.image)

    @property
    def species_name(self) -> str:
        return SPECIES_NAMES[self.species]


def breed_of_stem(stem: str) -> str:
    """The breed named by an image stem.

    >>> breed_of_stem("yorkshire_terrier_101")
    'yorkshire_terrier'
    """
    return _TRAILING_NUMBER.sub("", stem)


def species_of_stem(stem: str) -> str | None:
    """The Oxford-IIIT Pet naming rule, stated in list.txt's header (LIST_HEADER): a capital first letter is a cat,
    a small one a dog; None when the name does not start with a letter.

    >>> species_of_stem("Bengal_7"), species_of_stem("pug_2"), species_of_stem("_x")
    ('cat', 'dog', None)
    """
    first = stem[:1]
    if not first.isalpha():
        return None
    return SPECIES_NAMES[1] if first.isupper() else SPECIES_NAMES[2]


def _data_lines(text: str) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip() and not line.lstrip().startswith("#")]


def parse_pet_list(text: str, *, path: str) -> list[PetListEntry]:
    """Entries of a list.txt-style file, in file order. Raises AnnotationError naming the first bad line.

    >>> parse_pet_list("#h\\nAbyssinian_1 1 1 1\\n", path="list.txt")
    [PetListEntry(image='Abyssinian_1', class_id=1, species=1, breed_id=1)]
    """
    entries, problems = parse_pet_list_lines(text, path=path)
    if problems:
        raise problems[0]
    return entries


def parse_pet_list_lines(text: str, *, path: str) -> tuple[list[PetListEntry], list[AnnotationError]]:
    """The good entries of a list.txt-style file and one error per bad line: a typo on one line of a
    7,349-line list must not discard the other 7,348.

    >>> entries, problems = parse_pet_list_lines("Abyssinian_1 1 1 1\\nbeagle_1 x 2 1\\n", path="list.txt")
    >>> [e.image for e in entries], [p.field for p in problems]
    (['Abyssinian_1'], ['line 2'])
    """
    entries: list[PetListEntry] = []
    problems: list[AnnotationError] = []
    seen: dict[str, int] = {}
    for n, line in _data_lines(text):
        try:
            entry = _parse_line(line, n=n, path=path, seen=seen)
        except AnnotationError as err:
            problems.append(err)
            continue
        seen[entry.image] = n
        entries.append(entry)
    return entries, problems


def _parse_line(line: str, *, n: int, path: str, seen: Mapping[str, int]) -> PetListEntry:
    fields = line.split()
    if len(fields) != 4:
        raise AnnotationError(path, f"line {n}", f"expected 'Image CLASS-ID SPECIES BREED-ID', got {line!r}")
    try:
        class_id, species, breed_id = (int(v) for v in fields[1:])
    except ValueError as err:
        raise AnnotationError(path, f"line {n}", f"non-integer id in {line!r}") from err
    if class_id < 1:
        raise AnnotationError(path, f"line {n}.CLASS-ID", f"must be >= 1, got {class_id}")
    if species not in SPECIES_NAMES:
        raise AnnotationError(path, f"line {n}.SPECIES", f"must be 1 (cat) or 2 (dog), got {species}")
    if fields[0] in seen:
        raise AnnotationError(path, f"line {n}", f"image {fields[0]!r} already listed on line {seen[fields[0]]}")
    return PetListEntry(image=fields[0], class_id=class_id, species=species, breed_id=breed_id)


def parse_split_names(text: str) -> list[str]:
    """Image stems of a split file (first column of each data line), in file order."""
    return [line.split()[0] for _, line in _data_lines(text)]


def format_pet_list(entries: Sequence[PetListEntry], *, header: bool) -> str:
    """list.txt text (with the real 6-line header when `header`), the inverse of `parse_pet_list`."""
    lines = list(LIST_HEADER) if header else []
    lines += [f"{e.image} {e.class_id} {e.species} {e.breed_id}" for e in entries]
    return "\n".join(lines) + "\n"
