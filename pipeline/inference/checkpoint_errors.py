"""Why a checkpoint did not load with `torch.load(weights_only=True)`, said in words a user can act on.

torch reports every failure of its weights-only unpickler as an `UnpicklingError`, whether the file is a
truncated download, a JSON model card passed by mistake, random bytes, or a sound pickle that names a
class outside torch's allow-list. Only the last one may be fixed by `--trust-checkpoint`; suggesting it
for a broken file pushes users to unsafe loading for nothing. So the file is examined without running
any of it: the zip container torch.save writes since 1.6 (https://pytorch.org/docs/stable/notes/serialization.html),
then the pickle's opcodes with `pickletools.genops`, which parses a pickle without executing it
(https://docs.python.org/3/library/pickletools.html).
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"
# Globals a weights-only checkpoint legitimately names (torch rebuilds its tensors through these modules).
SAFE_MODULE_PREFIXES: tuple[str, ...] = ("torch.", "collections.", "_codecs.encode")
# Opcodes that name a global: the GLOBAL argument is "module name"; STACK_GLOBAL takes two pushed strings.
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
# torch.save(..., _use_new_zipfile_serialization=False) writes five pickles in a row (magic number, protocol
# version, system info, the object, the storage keys), then the raw tensor bytes; the object, the one that
# may carry code, is the fourth (torch/serialization.py `_legacy_save`).
LEGACY_PICKLES = 5
TRUST_ADVICE = ("If you trust where it came from, pass --trust-checkpoint (trust_checkpoint=True): that runs the "
                "code inside it on this machine")


@dataclass(frozen=True)
class CheckpointDiagnosis:
    needs_trust: bool  # a sound pickle that names code outside torch's allow-list
    message: str


def diagnose_checkpoint(path: Path) -> CheckpointDiagnosis:
    """Classify a file that `torch.load(weights_only=True)` refused; reads it, never unpickles it."""
    data = Path(path).read_bytes()
    if not data:
        return _broken("the file is empty (an interrupted copy or download?): copy it again")
    if data.startswith(ZIP_MAGIC):
        return _diagnose_zip(data)
    if data.startswith(PICKLE_PROTO):
        return _diagnose_pickle(data, what="legacy (pre-zip) torch pickle", pickles=LEGACY_PICKLES)
    return _broken(f"not a torch checkpoint: {_what_it_is(data)}")


def _broken(reason: str) -> CheckpointDiagnosis:
    return CheckpointDiagnosis(needs_trust=False, message=f"broken checkpoint: {reason} (--trust-checkpoint would not help)")


def _what_it_is(data: bytes) -> str:
    head = data[:4096]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"unknown binary format (first bytes {head[:8]!r}); torch.save writes a zip archive starting with {ZIP_MAGIC!r}"
    try:
        json.loads(text)
        return "it is a JSON file (a model card goes beside the checkpoint as <stem>.json, it is not the checkpoint)"
    except ValueError:
        pass
    return f"it is a text file (starts {text.strip()[:40]!r})"


def _diagnose_zip(data: bytes) -> CheckpointDiagnosis:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return _broken(f"a truncated or damaged zip archive ({err}): torch.save writes complete zips; copy the file again")
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pickles:
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return _broken("a TorchScript archive, not a state_dict: use --model torchscript")
        return _broken(f"a zip archive without data.pkl (holds {len(names)} file(s), e.g. {names[:3]}): not written by torch.save")
    try:
        payload = archive.read(pickles[0])
        if archive.testzip() is not None:
            raise zipfile.BadZipFile("a member fails its CRC check")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return _broken(f"a truncated or damaged zip archive ({err}): copy the file again")
    return _diagnose_pickle(payload, what="torch zip checkpoint")


def _diagnose_pickle(data: bytes, *, what: str, pickles: int = 1) -> CheckpointDiagnosis:
    """Every global the first `pickles` pickles of `data` name, read one after the other (never unpickled)."""
    names: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(pickles):
        strings: list[str] = []
        stopped = False
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif op.name in _STRING_OPS:
                    strings.append(str(arg))
                elif op.name == "STOP":
                    stopped = True
                    break
        except Exception as err:  # pickletools raises ValueError/struct errors on truncated or garbage input
            return _broken(f"a damaged or truncated {what} ({type(err).__name__}: {err}): copy the file again")
        if not stopped:
            return _broken(f"a truncated {what} (the pickle has no end): copy the file again")
    unsafe = sorted({n for n in names if not n.startswith(SAFE_MODULE_PREFIXES)})
    if unsafe:
        shown = ", ".join(unsafe[:5]) + (f" and {len(unsafe) - 5} more" if len(unsafe) > 5 else "")
        return CheckpointDiagnosis(needs_trust=True, message=(
            f"refused: this {what} needs arbitrary pickled code to load ({shown}), which could run anything on "
            f"this machine. {TRUST_ADVICE}"))
    shown = ", ".join(sorted(set(names))[:5]) + (f" and {len(set(names)) - 5} more" if len(set(names)) > 5 else "")
    return CheckpointDiagnosis(needs_trust=True, message=(
        f"refused by torch's weights-only loader although this {what} names only torch/collections globals "
        f"({shown or 'none'}: what full unpickling would call); a newer torch may load it. {TRUST_ADVICE}"))
