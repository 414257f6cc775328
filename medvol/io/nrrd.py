"""NRRD: header geometry and the Slicer-style writer, plus a guarded reader.

Reading goes through :func:`read_nrrd`: pynrrd parses the header, medvol checks the declared
size against the :mod:`medvol.io.budget` and resolves a detached ``data file`` inside the header's
folder *before* any voxel is read, then decompresses with a cap.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ..volume import Volume
from ._common import _SPACES

def _nrrd_geometry(vol: Volume) -> dict[str, Any]:
    a = vol.affine
    return {
        "space": "left-posterior-superior",
        # one row per NRRD axis (i, j, k) = direction column × spacing (mm)
        "space directions": a[:3, :3].T.copy(),
        "space origin": a[:3, 3].copy(),
    }


_NRRD_TYPES = {  # numpy dtype -> NRRD type name as Slicer/teem writes it
    "int8": "signed char", "uint8": "unsigned char", "int16": "short",
    "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int",
    "int64": "long long int", "uint64": "unsigned long long int",
    "float32": "float", "float64": "double",
}
_NRRD_STANDARD = ("dimension", "space", "space directions", "kinds", "endian", "encoding",
                  "space origin", "measurement frame")


def _num(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _vec(v) -> str:
    v = np.asarray(v, dtype=float).reshape(-1)
    if not np.all(np.isfinite(v)):
        return "none"
    return "(" + ",".join(_num(x) for x in v) + ")"


def _write_nrrd_file(tmp: Path, data: np.ndarray, header: dict[str, Any]) -> None:
    """Write an attached-header NRRD (NRRD0004, as Slicer does) from a C-ordered array.

    ``header`` holds the standard fields of :data:`_NRRD_STANDARD` (vectors as arrays, rows =
    per-axis vectors; NaN rows become ``none``) and custom ``key:=value`` string fields.
    ``type``, ``sizes`` and ``endian`` come from ``data``.

    Why not ``nrrd.write`` (pynrrd 1.1, which reads every file this writes —
    ``tests/io/test_formats.py::test_nrrd_header_means_what_pynrrd_writes`` checks that both
    headers parse to the same fields): (1) pynrrd copies the whole array (``tobytes``) before
    compressing, so writing an N-byte volume costs N more bytes of peak memory (measured: +68 MiB
    vs +32 MiB for a 64 MiB float32 volume; the budget of :mod:`medvol.io.budget` assumes no
    copy), while this streams 4 MiB chunks of a memoryview; (2) pynrrd stamps the wall-clock time
    into a header comment, so identical inputs would no longer give byte-identical files (the
    pipeline's Dask-vs-sequential test compares output hashes).
    """
    import zlib

    data = np.ascontiguousarray(data)
    dtype_name = data.dtype.newbyteorder("=").name
    if dtype_name not in _NRRD_TYPES:
        raise InputError(f"NRRD cannot hold voxel type {data.dtype}", path=tmp)
    if data.dtype.itemsize > 1:  # the header always says little endian
        data = data.astype(data.dtype.newbyteorder("<"), copy=False)
    lines = ["NRRD0004",
             "# Complete NRRD file format specification at:",
             "# http://teem.sourceforge.net/nrrd/format.html",
             f"type: {_NRRD_TYPES[dtype_name]}",
             f"dimension: {data.ndim}"]
    if "space" in header:
        lines.append(f"space: {header['space']}")
    lines.append("sizes: " + " ".join(str(n) for n in data.shape[::-1]))
    if "space directions" in header:
        lines.append("space directions: " + " ".join(_vec(r) for r in header["space directions"]))
    if "kinds" in header:
        lines.append("kinds: " + " ".join(header["kinds"]))
    if data.dtype.itemsize > 1:
        lines.append("endian: little")
    encoding = header.get("encoding", "gzip")
    lines.append(f"encoding: {encoding}")
    if "space origin" in header:
        lines.append(f"space origin: {_vec(header['space origin'])}")
    if "measurement frame" in header:
        lines.append("measurement frame: " + " ".join(_vec(r) for r in header["measurement frame"]))
    for key, value in header.items():
        if key in _NRRD_STANDARD:
            continue
        text = str(value)
        if "\n" in text or "\r" in text or ":=" in key or not (key + text).isascii():
            raise InputError(f"NRRD field {key!r} cannot be written (line break or non-ASCII)",
                             path=tmp)
        lines.append(f"{key}:={text}")
    if encoding not in ("raw", "gzip"):
        raise InputError(f"unsupported NRRD encoding {encoding!r}", path=tmp)
    raw = memoryview(data.reshape(-1).view(np.uint8))  # C order (z, y, x) = NRRD order, no copy
    step = 1 << 22
    with open(tmp, "wb") as fh:
        fh.write(("\n".join(lines) + "\n\n").encode("ascii"))
        if encoding == "raw":
            fh.write(raw)
        else:
            comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31 = gzip container
            for start in range(0, len(raw), step):
                fh.write(comp.compress(raw[start:start + step]))
            fh.write(comp.flush())



def _space_flip(header: Mapping[str, Any], path: Path) -> np.ndarray:
    space = header.get("space")
    if space is None:
        if "space dimension" in header and int(header["space dimension"]) != 3:
            raise InputError(f"space dimension {header['space dimension']} is not 3", path=path)
        return np.ones(3)  # Slicer assumes LPS when the file says nothing
    key = str(space).strip().lower()
    if key not in _SPACES:
        raise InputError(f"NRRD space {space!r} is not an anatomical 3D space", path=path,
                         hint="medvol reads left-posterior-superior, right-anterior-superior "
                              "or left-anterior-superior (LPS/RAS/LAS)")
    return np.asarray(_SPACES[key])


def _domain_geometry(header: Mapping[str, Any], domain_axes: list[int], path: Path):
    """Spacing, origin, direction (LPS) from a NRRD header for the given NRRD axes (i, j, k)."""
    flip = _space_flip(header, path)
    sd = header.get("space directions")
    if sd is not None:
        sd = np.asarray(sd, dtype=float)
        cols = np.stack([sd[a] for a in domain_axes], axis=1)  # 3×3, columns i, j, k
        if not np.all(np.isfinite(cols)):
            raise InputError("space directions of a spatial axis is 'none'", path=path)
    else:
        sp = header.get("spacings")
        sp = np.ones(len(header["sizes"])) if sp is None else np.asarray(sp, dtype=float)
        vals = np.array([sp[a] for a in domain_axes], dtype=float)
        vals = np.where(np.isfinite(vals), vals, 1.0)
        cols = np.diag(vals)
    cols = flip[:, None] * cols
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise InputError("a space direction has zero length", path=path)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float).reshape(-1)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        origin = np.zeros(3)
    return spacing, flip * origin, cols / spacing




# --------------------------------------------------------------------------- guarded reader
_HEADER_MAX_BYTES = 1 << 20  # a NRRD header is a few KB; refuse to scan megabytes for its end
_CHUNK = 1 << 20
_TEXT_ENCODINGS = ("ascii", "text", "txt")


def _read_header_lines(fh, path: Path) -> list[str]:
    lines: list[str] = []
    total = 0
    while True:
        line = fh.readline(_HEADER_MAX_BYTES)
        if not line:
            if not lines:
                raise InputError("empty file, not a NRRD", path=path)
            break  # header-only file (detached data)
        total += len(line)
        if total > _HEADER_MAX_BYTES:
            raise InputError("NRRD header is longer than 1 MiB (no blank line ends it)",
                             path=path, hint="is it a valid NRRD file?")
        text = line.decode("ascii", "replace")
        lines.append(text)
        if len(lines) > 1 and text.strip() == "":
            break
    if not lines[0].startswith("NRRD000"):
        raise InputError("not a NRRD file (no NRRD000x magic line)", path=path)
    return lines


def _decompress_capped(fh, encoding: str, nbytes: int, path: Path) -> bytes:
    """Stream-decompress gzip/zlib or bzip2 data, never producing more than ``nbytes`` + 1
    bytes: a small file that claims a small volume cannot expand into gigabytes."""
    import bz2
    import zlib

    dec = (zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "gz")  # gzip/zlib
           else bz2.BZ2Decompressor())
    out = bytearray()
    while not dec.eof:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        # at most ``room`` bytes come out; reaching it means more than declared: refuse
        out += dec.decompress(chunk, nbytes - len(out) + 1)
        if len(out) > nbytes:
            raise InputError(f"{encoding} data decompress to more than the {nbytes} bytes "
                             "the header declares", path=path,
                             hint="the file is corrupt or crafted; re-export it")
    return bytes(out)


def read_nrrd(path: str | os.PathLike, *, what: str = "NRRD volume"):
    """Read a NRRD (``.nrrd`` attached or ``.nhdr`` + detached data) safely.

    pynrrd parses the header; then, before any voxel is read, medvol checks the declared size
    against :mod:`medvol.io.budget` and resolves a detached ``data file`` inside the header's
    folder (no absolute path, no ``..`` or symlink escape, regular files only). raw/gzip/bzip2
    data are read with a cap of the declared size (pynrrd's reader decompresses everything
    first, so it is not used for the data); ASCII data go through pynrrd after a file-size check.

    Returns
    -------
    (numpy.ndarray in C order (reversed NRRD axes), header dict as pynrrd parses it)

    Raises
    ------
    InputError
        Not a NRRD, unsafe ``data file``, truncated data, more data than declared.
    LimitError
        The declared size is over the budget.
    """
    import nrrd
    from nrrd.reader import _determine_datatype

    from ._common import inside_folder, open_regular
    from .budget import check_volume

    path = Path(path)
    with open_regular(path) as fh:
        lines = _read_header_lines(fh, path)
        data_offset = fh.tell()
        try:
            header = nrrd.read_header(lines)
        except Exception as e:
            raise InputError(f"invalid NRRD header: {' '.join(str(e).split())[:200]}",
                             path=path) from None
        for req in ("type", "sizes", "encoding", "dimension"):
            if req not in header:
                raise InputError(f"NRRD header has no {req!r} field", path=path)
        sizes = [int(s) for s in np.asarray(header["sizes"]).reshape(-1)]
        if len(sizes) != int(header["dimension"]) or any(s <= 0 for s in sizes):
            raise InputError(f"NRRD sizes {sizes} do not match dimension "
                             f"{header['dimension']} or are not positive", path=path)
        encoding = str(header["encoding"]).lower()
        try:
            dtype = _determine_datatype(header)
        except Exception as e:
            raise InputError(f"invalid NRRD type/endian: {e}", path=path) from None
        nbytes = check_volume(sizes, dtype.itemsize, what=what, path=path)
        line_skip = int(header.get("line skip", header.get("lineskip", 0)) or 0)
        byte_skip = int(header.get("byte skip", header.get("byteskip", 0)) or 0)
        if line_skip < 0 or byte_skip < -1:
            raise InputError(f"invalid line skip {line_skip} / byte skip {byte_skip}", path=path)
        data_name = header.get("data file", header.get("datafile"))
        if data_name is not None:
            name = str(data_name).strip()
            if name.upper().startswith("LIST") or len(name.split()) > 1:
                raise InputError("multi-file NRRD data (data file: LIST or a file pattern) "
                                 "is not supported", path=path,
                                 hint="combine the data into one file")
            target = inside_folder(path.parent, name, what="data file", path=path)
            return _read_payload(open_regular(target), 0, header, dtype, sizes, nbytes,
                                 encoding, line_skip, byte_skip, target, close=True)
        return _read_payload(fh, data_offset, header, dtype, sizes, nbytes, encoding,
                             line_skip, byte_skip, path, close=False)


def _read_payload(fh, offset: int, header, dtype, sizes, nbytes: int, encoding: str,
                  line_skip: int, byte_skip: int, path: Path, *, close: bool):
    try:
        fh.seek(offset)
        for _ in range(line_skip):
            if len(fh.readline(_HEADER_MAX_BYTES)) >= _HEADER_MAX_BYTES:
                raise InputError("line skip runs over a line longer than 1 MiB", path=path)
        if encoding == "raw":
            if byte_skip == -1:
                fh.seek(-nbytes, os.SEEK_END) if os.fstat(fh.fileno()).st_size >= nbytes \
                    else fh.seek(0)
            else:
                fh.seek(byte_skip, os.SEEK_CUR)
            buf = fh.read(nbytes)
        elif encoding in ("gzip", "gz", "bzip2", "bz2"):
            skip = max(byte_skip, 0)
            buf = _decompress_capped(fh, encoding, nbytes + skip, path)
            buf = buf[skip:] if byte_skip >= 0 else buf[-nbytes:]
        elif encoding in _TEXT_ENCODINGS:
            size = os.fstat(fh.fileno()).st_size
            if size > 64 * nbytes + (1 << 20):
                raise InputError("ASCII NRRD data are far larger than the declared size",
                                 path=path)
            fh.seek(offset)
            for _ in range(line_skip):
                fh.readline(_HEADER_MAX_BYTES)
            text = fh.read().decode("ascii", "replace")
            arr = np.array(text.split()[:nbytes // dtype.itemsize + 1], dtype=float)
            buf = arr.astype(dtype).tobytes()
        else:
            raise InputError(f"unsupported NRRD encoding {encoding!r}", path=path,
                             hint="medvol reads raw, gzip, bzip2 and ascii")
    except ValueError as e:
        raise InputError(f"cannot parse the data: {e}", path=path) from None
    finally:
        if close:
            fh.close()
    if len(buf) < nbytes:
        raise InputError(f"data are truncated ({len(buf)} of {nbytes} bytes)", path=path,
                         hint="the file is incomplete; re-export it")
    data = np.frombuffer(buf[:nbytes], dtype=dtype).reshape(sizes[::-1])
    return data.copy() if not data.flags.writeable else data, header
