"""`segpipe convert FMT` (one command per format of segpipe.converters.formats.FORMATS): annotation folders in, a converted dataset directory out.

Every command writes OUT/conversion_report.csv and prints a one-line summary. Exit codes: 0 when the
report has no error row, 3 when some inputs were skipped as errors (the good ones are still written),
4 when --strict stopped at the first error; 2 is a usage error (click), and so is a conversion that
converted no image at all, whatever the format: the message says which layout was looked for and what
the folder holds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import click

from segpipe.core.errors import AnnotationError
from segpipe.converters.formats import BORDER_CHOICES as BORDER_CHOICES
from segpipe.converters.formats import CATEGORY_CHOICES as CATEGORY_CHOICES
from segpipe.converters.formats import DIFFICULT_CHOICES as DIFFICULT_CHOICES
from segpipe.converters.formats import FORMATS, FormatSpec
from segpipe.converters.report import EXIT_STRICT_ABORT, ConversionReport, StrictModeError
from segpipe.core.layout import CONVERSION_REPORT_FILE as REPORT_FILE_NAME

_out_option = click.option(
    "-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Output dataset directory (instances.json, conversion_report.csv, ...). Created if missing.",
)

# Fields of the converters' errors that are command-line options.
OPTION_FIELDS: tuple[str, ...] = ("classes", "images", "list_file")


def _refuse_wrong_folder(problem: str | None) -> None:
    """A folder that is not what the format expects stops here (usage error, exit 2), before OUT is touched."""
    if problem is not None:
        raise click.UsageError(problem)


# glibc gives the top of its heap back to the kernel whenever enough of it is free, and a converter frees its
# per-image arrays (about a megabyte for a 500x375 trimap) at the end of every image, so each image page-faults
# them in again: most of the extra system time of `segpipe convert trimap` over a bare loop, whose arrays
# happen to stay alive from one iteration to the next. Padding the heap top (mallopt M_TOP_PAD,
# https://man7.org/linux/man-pages/man3/mallopt.3.html) keeps that memory mapped for the process's lifetime.
M_TOP_PAD = -2
HEAP_TOP_PAD_BYTES = 16 * 2**20


def pad_heap_top() -> bool:
    """Ask glibc to keep HEAP_TOP_PAD_BYTES mapped at its heap top; False where the C library has no mallopt."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to tune
        return False
    return bool(mallopt(M_TOP_PAD, HEAP_TOP_PAD_BYTES))


def _finish(out: Path, run: Callable[[], ConversionReport], *, format: str = "", src: Path | None = None) -> None:
    pad_heap_top()
    try:
        report = run()
    except StrictModeError as err:
        click.echo(f"error (--strict): {err}", err=True)
        raise SystemExit(EXIT_STRICT_ABORT) from err
    except AnnotationError as err:
        # Raised before any file is converted: the source, or an option's file or folder (--classes, --images), is unusable.
        if err.field in OPTION_FIELDS:  # the library names the field; the command line says it with its flag
            raise click.BadParameter(f"{err.path}: {err.reason}", param_hint=f"--{err.field.replace('_', '-')}") from err
        raise click.UsageError(str(err)) from err
    if src is not None and (report.written is None or report.written[0] == 0):
        from segpipe.converters.layout_hints import nothing_converted_message

        raise click.UsageError(nothing_converted_message(format, src, rows=len(report.findings), report=out / REPORT_FILE_NAME))
    counts = ""
    if report.written is not None:
        counts = f"{report.written[0]} images, {report.written[1]} annotations, {report.written[2]} categories"
    click.echo(report.summary_line(what=f"converted {counts} -> {out}") + f" ({out / REPORT_FILE_NAME})")
    from segpipe.converters.coco import MIXED_BOX_MASK_CODE

    for finding in report.findings:
        if finding.code == MIXED_BOX_MASK_CODE:
            click.echo(finding.message)
    raise SystemExit(report.exit_code())


@click.group()
def convert() -> None:
    """Convert an annotation folder to a COCO dataset directory.

    OUT receives instances.json (COCO, masks as compressed RLE, ids from 1 in sorted-path order),
    dataset.json (where the images live), semantic/ label maps for trimap formats, and
    conversion_report.csv (file, severity, code, message: one row per problem found).
    """


def _click_option(f: dataclasses.Field[Any]) -> Callable[[Any], Any]:
    """The command-line option of one field of a format's options class (segpipe.converters.formats)."""
    meta = f.metadata
    flag = meta["cli"] or "--" + f.name.replace("_", "-")
    kwargs: dict[str, Any] = {"help": meta["help"]}
    if meta["show_default"]:
        kwargs["show_default"] = True
    if meta["required"]:
        kwargs["required"] = True
    else:
        kwargs["default"] = f.default
    if meta["flag"]:
        return click.option(flag, f.name, is_flag=True, help=meta["help"])
    if meta["negatable"]:
        flag = f"{flag}/--no-{flag[2:]}"
    elif meta["path"] is not None:
        kwargs["type"] = click.Path(exists=True, file_okay=meta["path"] != "dir", dir_okay=meta["path"] != "file", path_type=Path)
    elif meta["choices"] is not None:
        kwargs["type"] = click.Choice(meta["choices"])
    elif meta["min_value"] is not None:
        kwargs["type"] = click.IntRange(min=meta["min_value"])
    return click.option(flag, f.name, **kwargs)


def format_command(spec: FormatSpec) -> click.Command:
    """`segpipe convert FMT`, derived from the format's registry entry: SRC (or ROOT), -o/--out and one option
    per field of its options class."""

    def command(**options: Any) -> None:
        src, out = options.pop(spec.source_argument), options.pop("out")
        if spec.source_problem is not None:
            _refuse_wrong_folder(spec.source_problem(src, options))
        _finish(out, lambda: spec.write(src, out, **options), format=spec.name, src=src)

    decorators: list[Callable[[Any], Any]] = [_click_option(f) for f in spec.fields]
    decorators.insert(spec.out_after, _out_option)
    decorators.insert(0, click.argument(spec.source_argument, type=click.Path(
        exists=True, file_okay=spec.source_path != "dir", path_type=Path)))
    for decorate in reversed(decorators):  # as stacked decorators: the first one listed is the outermost
        command = decorate(command)
    params = list(reversed(getattr(command, "__click_params__", [])))  # click.command reverses them the same way
    return click.Command(spec.name, callback=command, params=params, help=spec.summary)


for _spec in FORMATS.values():
    convert.add_command(format_command(_spec))
