"""Reading a user's files without blocking or exhausting memory.

- A path that is not a regular file (a FIFO, a device, a directory) is refused before it is
  opened: open() on a FIFO blocks until something writes to it, a device never ends.
- An .npz is a zip of .npy files. Each member's sizes are checked before anything is
  decompressed: what the zip header declares (bounded by MAX_NPZ_BYTES for the whole file) and
  what the .npy header inside declares (shape x itemsize, which must fit in its zip member).
  A 6 MB file of deflated zeros declaring 1.5 GB is refused in one line instead of read; what
  is read afterwards is bounded by the declared sizes (zipfile stops at a member's size).
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

#: everything an .npz of one bundle may hold once decompressed. A repro bundle's feeds and expected
#: outputs are far smaller: a twin's bundle holds a few MB, a hub model's expected logits for a
#: 262k vocabulary about 1 MB per token. ONNX_COMPAT_MAX_NPZ_BYTES raises it.
MAX_NPZ_BYTES = 256 << 20


def npz_limit() -> int:
    try:
        return int(os.environ.get("ONNX_COMPAT_MAX_NPZ_BYTES") or MAX_NPZ_BYTES)
    except ValueError:
        return MAX_NPZ_BYTES
#: arrays in one .npz: a zip of a million empty members is refused before it is walked
MAX_NPZ_ARRAYS = 100_000


class UnsafeInput(ValueError):
    """A file that would block, or declare more than the limits; the message names it and the fix."""


def require_regular(path: str | os.PathLike, what: str = "a file") -> None:
    """`path` exists and is a regular file (after links); else one line, without opening it."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        return  # the caller says what is missing, in its own words
    except OSError as e:
        raise UnsafeInput(f"{p}: cannot be read ({e.strerror}); pass {what}") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise UnsafeInput(f"{p}: is {kind}, not a regular file; pass {what} (a plain file, not a pipe or device)")


def _declared_nbytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> int:
    """The array size the member's .npy header declares (reads the header only)."""
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise UnsafeInput(f"{path}: member {info.filename!r} is not a .npy array ({e}); write the file with "
                              "numpy.savez(path, name=array, …)") from None
    if dtype.hasobject:
        raise UnsafeInput(f"{path}: array {info.filename!r} holds Python objects (dtype {dtype}); save numbers only")
    return math.prod(shape) * dtype.itemsize


def check_npz(path: str | os.PathLike, limit: int | None = None) -> None:
    """Refuse, before decompressing anything, an .npz whose declared sizes exceed `limit`."""
    limit = npz_limit() if limit is None else limit
    p = Path(path)
    require_regular(p, "an .npz written with numpy.savez")
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise UnsafeInput(f"{p}: not a readable .npz ({e}); write it with numpy.savez(path, name=array, …)") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_NPZ_ARRAYS:
            raise UnsafeInput(f"{p}: holds {len(infos)} members, over the limit of {MAX_NPZ_ARRAYS}; a bundle's .npz "
                              "holds one array per input or output and step")
        declared = sum(i.file_size for i in infos)
        if declared > limit:
            raise UnsafeInput(f"{p}: declares {declared / 2**20:.1f} MiB once decompressed ({p.stat().st_size / 2**20:.1f} "
                              f"MiB on disk), over the limit of {limit / 2**20:.0f} MiB; pass smaller arrays (or raise "
                              "ONNX_COMPAT_MAX_NPZ_BYTES)")
        total = 0
        for info in infos:
            nbytes = _declared_nbytes(zf, info, p)
            if nbytes > info.file_size:
                raise UnsafeInput(f"{p}: array {info.filename!r} declares {nbytes} bytes but its member holds "
                                  f"{info.file_size}; the file is cut short or forged: write it again with numpy.savez")
            total += nbytes
        if total > limit:  # unreachable while arrays fit their members; kept as the bound that matters
            raise UnsafeInput(f"{p}: its arrays declare {total / 2**20:.1f} MiB, over the limit of "
                              f"{limit / 2**20:.0f} MiB; pass smaller arrays")


def load_npz(path: str | os.PathLike, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an .npz, after check_npz; no pickles."""
    check_npz(path, limit)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
