"""Building: frames of one stack → a Volume (sort, duplicates, spacing, resampling)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import DicomError, InputError, MedvolError
from ...volume import Volume
from . import geometry as geo
from .acquisition import acquisition_params
from .meta import safe_meta
from .frames import _Frame, _classic_frames, _enhanced_stacks
from .pixels import decode_pixels
from .scan import SeriesGroup, _progress, scan_dicom

log = logging.getLogger("medvol.io.dicom")

_RESAMPLE_CHOICES = ("auto", "never", "always")


# ----------------------------------------------------------------------------- building
def _check_consistent(frames: Sequence[_Frame]) -> None:
    ref = frames[0]
    for fr in frames[1:]:
        if (fr.rows, fr.cols) != (ref.rows, ref.cols):
            raise DicomError(
                f"{fr.name()}: mixed geometry in one series — Rows×Columns {fr.rows}×{fr.cols} "
                f"vs {ref.rows}×{ref.cols} in {ref.name()}; split the series into separate "
                "folders or remove the odd file")
        if np.max(np.abs(fr.iop - ref.iop)) > 1e-4:
            raise DicomError(
                f"{fr.name()}: mixed geometry in one series — ImageOrientationPatient "
                f"{np.round(fr.iop, 5).tolist()} vs {np.round(ref.iop, 5).tolist()} in "
                f"{ref.name()} (several stacks or a localizer in one series); split the series")
        if np.max(np.abs(np.subtract(fr.spacing, ref.spacing))) > 1e-4 * max(ref.spacing):
            raise DicomError(
                f"{fr.name()}: mixed geometry in one series — PixelSpacing {list(fr.spacing)} "
                f"vs {list(ref.spacing)} in {ref.name()}; split the series")


def _values_dtype(raw: np.ndarray, frames: Sequence[_Frame]) -> np.ndarray:
    """Apply per-frame rescale; keep int16 where exact, else float32."""
    if not any(f.rescaled and (f.slope != 1.0 or f.intercept != 0.0) for f in frames):
        return raw
    slopes = np.array([f.slope for f in frames])
    inters = np.array([f.intercept for f in frames])
    if np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters)) \
            and np.issubdtype(raw.dtype, np.integer):
        # int64: slope and intercept are bounded (values.RANGES), so this cannot overflow
        vals = raw.astype(np.int64) * slopes.astype(np.int64)[:, None, None] \
            + inters.astype(np.int64)[:, None, None]
        if vals.min() >= np.iinfo(np.int16).min and vals.max() <= np.iinfo(np.int16).max:
            return vals.astype(np.int16)
        return vals.astype(np.float32)
    return (raw.astype(np.float32) * slopes.astype(np.float32)[:, None, None]
            + inters.astype(np.float32)[:, None, None])


def _decode_frames(frames: Sequence[_Frame], advance: Callable[[], None]) -> np.ndarray:
    cache: dict[Path, np.ndarray] = {}
    out = None
    for n, fr in enumerate(frames):
        arr = cache.get(fr.path)
        if arr is None:
            arr = decode_pixels(fr.path)
            if arr.shape[0] > 1:
                cache[fr.path] = arr
            advance()
        img = arr[fr.index or 0]
        if out is None:
            out = np.empty((len(frames),) + img.shape, dtype=img.dtype)
        elif img.dtype != out.dtype:
            out = out.astype(np.result_type(out.dtype, img.dtype))
        out[n] = img
    return out


def _axes(ref: _Frame):
    """Row, column and normal cosines of the stack, and the in-plane spacing (si, sj)."""
    try:
        r, c, n = geo.orientation(ref.iop)
    except ValueError as e:
        raise DicomError(f"{ref.name()}: {e} — the header is corrupt") from None
    si, sj = float(ref.spacing[1]), float(ref.spacing[0])
    if si <= 0 or sj <= 0:
        raise DicomError(f"{ref.name()}: PixelSpacing {list(ref.spacing)} must be positive")
    return r, c, n, si, sj


def _sort_along_normal(frames: list[_Frame], n: np.ndarray):
    """Frames sorted by their position along the slice normal (never InstanceNumber)."""
    w = np.array([f.ipp @ n for f in frames])
    order = np.argsort(w, kind="stable")
    return [frames[i] for i in order], w[order]


def _check_extent(frames: list[_Frame], w: np.ndarray, r, c, si: float, sj: float,
                  itemsize: int = 4) -> None:
    """Before decoding anything: refuse stacks whose resampling would invent far more slices
    than were acquired (absurd gaps) or whose in-plane extent (shifts between slices in units
    of PixelSpacing) would make a grid over the budget."""
    from ..budget import check_resampled_slices, check_volume

    if len(frames) < 2:
        return
    gaps = np.diff(w)
    pos = gaps[gaps >= geo.DUPLICATE_TOL_MM]
    if len(pos):
        n_out = int(np.floor((w[-1] - w[0]) / float(pos.min()) + 1e-6)) + 1
        check_resampled_slices(len(frames), n_out, what=f"{frames[0].path.parent}",
                               path=None)
    else:
        n_out = len(frames)
    ipp = np.stack([f.ipp for f in frames])
    du = (ipp - ipp[0]) @ r / si
    dv = (ipp - ipp[0]) @ c / sj
    ref = frames[0]
    cols = float(np.ptp(du)) + ref.cols + 1
    rows = float(np.ptp(dv)) + ref.rows + 1
    check_volume((max(n_out, len(frames)), int(min(rows, 2**62)), int(min(cols, 2**62))),
                 itemsize, what="the series on its resampled grid", path=ref.path.parent)


def _drop_duplicates(frames: list[_Frame], values: np.ndarray, w: np.ndarray):
    """Drop exact duplicate slices (same position, same pixels) with a warning; two different
    slices at one position are an error naming both files."""
    warn: list[str] = []
    keep = np.ones(len(frames), dtype=bool)
    for a in range(len(frames) - 1):
        b = a + 1
        if w[b] - w[a] >= geo.DUPLICATE_TOL_MM:
            continue
        fa = next(i for i in range(b - 1, -1, -1) if keep[i])
        same = (np.allclose(frames[fa].ipp, frames[b].ipp, atol=geo.DUPLICATE_TOL_MM)
                and np.array_equal(values[fa], values[b]))
        if not same:
            raise DicomError(
                f"{frames[fa].name()} and {frames[b].name()}: two slices at the same position "
                f"({w[b]:.3f} mm along the slice normal) with different pixel data — the series "
                "mixes acquisitions (echoes, phases, repeats); split them into separate folders "
                "or remove one")
        keep[b] = False
        warn.append(f"exact duplicate slice dropped: {frames[b].path.name}"
                    f"{'' if frames[b].index is None else f' frame {frames[b].index + 1}'} "
                    f"repeats {frames[fa].path.name}")
    if not keep.all():
        frames = [f for f, k in zip(frames, keep) if k]
        values = values[keep]
        w = w[keep]
    return frames, values, w, warn


def _ingest_record(n_in: int, n, an, resample: str, extra: dict | None,
                   positions: np.ndarray, r, c, si: float, sj: float) -> dict[str, Any]:
    """The ``meta["ingest"]`` decisions record (geometry analysis, policy)."""
    ingest: dict[str, Any] = {
        "n_slices_in": int(n_in),
        "sort": "ImagePositionPatient projected on the slice normal (row x column cosine)",
        "slice_normal_lps": n.round(6).tolist(),
        "tilt_deg": round(an.tilt_deg, 4),
        "max_inplane_shift_mm": round(an.max_shift_mm, 4),
        "gaps_mm": np.round(an.gaps, 4).tolist(),
        "ipp_steps_mm": np.round(an.ipp_steps, 4).tolist(),
        "gap_histogram_mm": an.gap_histogram(),
        "gap_max_deviation_mm": round(an.gap_max_deviation_mm, 4),
        "uniform": an.uniform,
        "sheared": an.sheared,
        "resample_policy": resample,
    }
    if extra:
        ingest.update(extra)
    if len(positions) >= 2:
        raw_aff = np.eye(4)
        raw_aff[:3, 0], raw_aff[:3, 1] = r * si, c * sj
        raw_aff[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
        raw_aff[:3, 3] = positions[0]
        ingest["raw_affine_lps"] = raw_aff.round(6).tolist()
    return ingest


def _resample_decision(an, resample: str, ref: _Frame, label: str) -> bool:
    """Whether to resample; with ``resample="never"`` an irregular stack is an error."""
    need = an.sheared or not an.uniform
    if need and resample == "never":
        what = []
        if an.sheared:
            what.append(f"gantry tilt / shear of {an.tilt_deg:.2f}° (slices shifted in-plane "
                        f"by up to {an.max_shift_mm:.2f} mm)")
        if not an.uniform:
            what.append(f"non-uniform slice spacing ({an.gaps.min():.3f}–{an.gaps.max():.3f} mm)")
        raise DicomError(f"{ref.path.parent}: series {label} has " + " and ".join(what)
                         + " — it cannot be stored on a regular grid without resampling; use "
                         "resample='auto' (CLI: --resample auto) to resample it")
    return resample == "always" or need


def _slice_spacing(frames: list[_Frame], an, do_resample: bool, warn: list[str]) -> float:
    """Spacing along the normal: the smallest gap when resampling, the mean step otherwise,
    SliceThickness/SpacingBetweenSlices for a single slice."""
    ref = frames[0]
    if len(frames) == 1:
        th = ref.thickness
        if th is None or th <= 0:
            raise DicomError(f"{ref.name()}: single-slice series without SliceThickness or "
                             "SpacingBetweenSlices — the slice spacing cannot be derived; add "
                             "the other slices of the series")
        warn.append(f"single-slice series: slice spacing taken from SliceThickness/"
                    f"SpacingBetweenSlices = {th:g} mm")
        return th
    if do_resample:
        return float(an.gaps.min())
    return float((an.w[-1] - an.w[0]) / (len(frames) - 1))


def _resample_onto_grid(values, an, positions, r, c, si, sj, spacing_k, fill, need: bool,
                        n_frames: int, msgs: list[str], warn: list[str]):
    """Resample a sheared / unevenly spaced stack; returns (array, origin) and records what
    was done in ``msgs``/``warn``."""
    array, (i0, j0) = geo.resample_stack(values, an, (si, sj), spacing_k, fill)
    origin = positions[0] + i0 * si * r + j0 * sj * c
    if an.sheared:
        msgs.append(f"Gantry tilt {an.tilt_deg:.1f}° (from ImagePositionPatient/"
                    f"ImageOrientationPatient) corrected by resampling onto an orthogonal grid")
    if not an.uniform and an.gaps.max() > 2.5 * float(np.median(an.gaps)):
        warn.append(f"largest slice gap {an.gaps.max():.2f} mm is "
                    f"{an.gaps.max() / np.median(an.gaps):.1f}x the median gap "
                    f"({np.median(an.gaps):.2f} mm): slices may be missing and values in "
                    "that gap are interpolated")
    if not an.uniform:
        msgs.append(f"Non-uniform slice spacing ({an.gaps.min():.2f}–{an.gaps.max():.2f} mm "
                    f"along the slice normal) equalised to {spacing_k:.2f} mm")
    if not need:
        msgs.append(f"Resampled on request (resample='always') to {spacing_k:.3f} mm slices")
    msgs.append(f"Resampled {n_frames} slices to {array.shape[0]} slices of "
                f"{array.shape[1]}×{array.shape[2]} (spacing {si:.4g}×{sj:.4g}×"
                f"{spacing_k:.4g} mm; linear interpolation; outside the acquired region "
                f"filled with {fill:g})")
    return array, origin


def _build_volumes(frames: list[_Frame], header, *, resample: str, fill_value: float | None,
                   advance: Callable[[], None], decisions: list[str],
                   extra: dict | None = None, group_key: str | None = None) -> Volume:
    """Frames of one stack → a Volume: check consistency, sort along the normal, check the
    extent against the budget, decode, drop exact duplicates, analyse the stack, decide on
    resampling, place the voxels on a regular grid, and record every decision."""
    _check_consistent(frames)
    extra = dict(extra or {})
    acq = extra.pop("acquisition", None)
    ref = frames[0]
    r, c, n, si, sj = _axes(ref)
    frames, w = _sort_along_normal(frames, n)
    n_in = len(frames)
    _check_extent(frames, w, r, c, si, sj)
    values = _values_dtype(_decode_frames(frames, advance), frames)
    _check_finite(values, ref)
    frames, values, w, warn = _drop_duplicates(frames, values, w)
    positions = np.stack([f.ipp for f in frames])
    an = geo.analyse_stack(positions, r, c, n, (si, sj))
    meta = safe_meta(header, series_key_hash=group_key)
    if ref.rescaled and meta["modality"] == "CT" and meta.get("rescale_type", "HU") == "HU":
        meta["units"] = "HU"
    meta["tilt_deg"] = round(an.tilt_deg, 4)
    meta["max_spacing_deviation_mm"] = round(an.gap_max_deviation_mm, 4)
    _kind_and_units(meta, acq if acq is not None else acquisition_params(header), frames)
    ingest = _ingest_record(n_in, n, an, resample, extra, positions, r, c, si, sj)
    need = an.sheared or not an.uniform
    do_resample = _resample_decision(an, resample, ref, meta["label"])
    spacing_k = _slice_spacing(frames, an, do_resample, warn)
    msgs: list[str] = []
    origin = positions[0]
    if do_resample and len(frames) >= 2:
        if fill_value is None:
            fill = -1024.0 if meta.get("units") == "HU" else float(np.min(values))
        else:
            fill = float(fill_value)
        array, origin = _resample_onto_grid(values, an, positions, r, c, si, sj, spacing_k,
                                            fill, need, len(frames), msgs, warn)
        ingest["fill_value"] = fill
    else:
        array = values
    ingest.update({
        "resampled": bool(do_resample and len(frames) >= 2),
        "target_slice_spacing_mm": round(spacing_k, 6),
        "n_slices_out": int(array.shape[0]),
        "warnings": warn,
        "messages": msgs,
        "decisions": list(decisions),
    })
    meta["ingest"] = ingest
    level = logging.WARNING if (an.sheared or not an.uniform) else logging.INFO
    for m in msgs:
        log.log(level, "%s: %s", meta["label"], m)
    for m in warn:
        log.warning("%s: %s", meta["label"], m)
    return Volume(array, spacing=(si, sj, spacing_k), origin=origin,
                  direction=np.stack([r, c, n], axis=1), meta=meta)


def _kind_and_units(meta: dict, acq: dict, frames: Sequence[_Frame]) -> None:
    """``meta["acquisition"]`` (BIDS-style sidecar values), ``meta["image_kind"]`` and the
    value units: a RealWorldValueMapping's units are the volume's units only when its slope and
    intercept are the rescale that was applied (then the stored values ARE in those units)."""
    acq = dict(acq)
    rw = acq.get("RealWorldValueMapping")
    if rw is not None:
        f0 = frames[0]
        slope, inter = (f0.slope, f0.intercept) if f0.rescaled else (1.0, 0.0)
        if abs(rw["slope"] - slope) <= 1e-6 * max(1.0, abs(slope)) and \
                abs(rw["intercept"] - inter) <= 1e-6 * max(1.0, abs(inter)):
            meta.setdefault("units", rw["units"])
        else:
            acq.pop("Units", None)      # values are rescaled values, not the mapped units
            rw["applied"] = False
    if "units" in meta:
        acq["Units"] = meta["units"]
    if acq.get("ImageKind"):
        meta["image_kind"] = acq["ImageKind"]
    acq.setdefault("Modality", meta.get("modality"))
    acq["GantryTiltMeasured"] = meta.get("tilt_deg")
    meta["acquisition"] = acq


def _check_finite(values: np.ndarray, ref: _Frame) -> None:
    """Rescaled values must be finite (float pixel data or a huge slope can give inf/NaN)."""
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise DicomError(f"{ref.name()}: pixel values are not finite after applying "
                         f"RescaleSlope {ref.slope:g} / RescaleIntercept {ref.intercept:g} — the "
                         "header or data are corrupt; re-export the series")


def load_series(group: SeriesGroup, *, resample: str = "auto", fill_value: float | None = None,
                progress: bool = False) -> list[Volume]:
    """Decode one :class:`SeriesGroup` into Volumes (one per stack; classic series give one).

    Parameters
    ----------
    group : SeriesGroup
        From :func:`scan_dicom`.
    resample : {"auto", "never", "always"}
        Gantry-tilted or unevenly spaced stacks: resample onto an orthogonal, uniform grid
        (``"auto"``), refuse with :class:`DicomError` (``"never"``), or resample every stack
        (``"always"``).
    fill_value : float, optional
        Value outside the acquired region after resampling; default −1024 for CT in HU,
        else the data minimum.
    progress : bool
        Show a progress bar while decoding.

    Returns
    -------
    list of Volume
        Arrays ``(z, y, x)`` = (slices, rows, columns); geometry in LPS; ``meta["ingest"]`` holds
        the decisions (tilt, gaps, resampling, warnings).
    """
    if resample not in _RESAMPLE_CHOICES:
        raise InputError(f"resample must be one of {_RESAMPLE_CHOICES}, got {resample!r}")
    header = group.headers[0]
    if group.enhanced:
        stacks = _enhanced_stacks(group)
    else:
        stacks = [({}, _classic_frames(group))]
    n_decode = len(group.files)
    vols = []
    with _progress(progress, "Reading pixels", n_decode) as advance:
        for info, frames in stacks:
            try:
                vols.append(_build_volumes(frames, header, resample=resample,
                                           fill_value=fill_value, advance=advance,
                                           decisions=group.decisions, extra=info,
                                           group_key=group.key))
            except (MedvolError, MemoryError):
                raise
            except Exception as e:  # any library error on a malformed value: one line
                raise DicomError(f"{frames[0].path}: cannot build a volume from this series "
                                 f"({type(e).__name__}: {e}) — a header value is corrupt; "
                                 "re-export or remove it") from None
    if len(vols) > 1:
        for k, v in enumerate(vols):
            v.meta["ingest"]["stack_index"] = k + 1
    return vols


def _repeat_order(v: Volume) -> tuple:
    acq = v.meta.get("acquisition") or {}
    ing = v.meta.get("ingest") or {}
    return (acq.get("AcquisitionNumber") or 0, ing.get("temporal_position_index") or 0)


def _unique_labels(vols: list[Volume]) -> list[Volume]:
    """Unique, meaningful labels for volumes that share a series label.

    Volumes of one series that differ in content get the kind as a suffix
    (``s801_MR_1a2b3c4d_magnitude``, ``…_fieldmap_hz``; from ImageType / FrameType /
    ComplexImageComponent / RealWorldValueMapping units, :func:`~.acquisition.image_kind`).
    Volumes left with the same label and the same grid are *repeats* (time points,
    acquisitions): they get ``_repNN`` in AcquisitionNumber / TemporalPositionIndex order and
    ``meta["repeat_of"]`` (the shared label) so that the ingest job can stack them into one 4D
    file. Only what remains ambiguous falls back to ``_vNN``.
    """
    from collections import defaultdict
    from dataclasses import replace

    def relabel(vs: list[Volume], suffix) -> list[Volume]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, v in enumerate(vs):
            groups[v.meta["label"]].append(i)
        out = list(vs)
        for lab, idx in groups.items():
            if len(idx) > 1:
                for n, i in enumerate(idx):
                    new = suffix(vs[i], lab, n, idx)
                    if new is not None:
                        out[i] = replace(vs[i], meta={**vs[i].meta, **new})
        return out

    def by_kind(v, lab, n, idx):
        kind = v.meta.get("image_kind")
        return {"label": f"{lab}_{kind}"} if kind else None

    vols = relabel(vols, by_kind)

    def by_repeat(v, lab, n, idx):
        members = [vols[i] for i in idx]
        if not all(m.same_grid(members[0]) for m in members):
            return None
        order = sorted(range(len(idx)), key=lambda k: _repeat_order(members[k]))
        rank = order.index(n)
        return {"label": f"{lab}_rep{rank + 1:02d}", "repeat_of": lab,
                "repeat_index": rank + 1, "repeat_count": len(idx)}

    vols = relabel(vols, by_repeat)

    def by_number(v, lab, n, idx):
        return {"label": f"{lab}_v{n + 1:02d}"}

    return relabel(vols, by_number)


def read_dicom_series(path: str | os.PathLike, *, resample: str = "auto",
                      fill_value: float | None = None, progress: bool = False,
                      errors: str = "raise") -> list[Volume]:
    """Read every DICOM image series under ``path`` into Volumes.

    Parameters
    ----------
    path : str or Path
        Folder (searched recursively; any file names, DICOMDIR ignored) or a single file.
    resample : {"auto", "never", "always"}
        Policy for gantry-tilted or unevenly spaced stacks (see :func:`load_series`).
    fill_value : float, optional
        Value outside the acquired region after resampling (default −1024 for CT, else min).
    progress : bool
        Show rich progress bars on a terminal.
    errors : {"raise", "skip"}
        ``"skip"`` logs and skips series (and unreadable files) that cannot be ingested instead
        of raising; the default raises on the first problem.

    Returns
    -------
    list of Volume
        One per series (enhanced multi-frame objects: one per stack), ordered by SeriesNumber.
        ``meta["label"]`` (e.g. ``s003_CT_1a2b3c4d``) is unique and safe as a folder name.

    Raises
    ------
    InputError, DicomError
        One-line messages naming the file and what to do.

    Examples
    --------
    >>> vols = read_dicom_series("study/")                     # doctest: +SKIP
    >>> vols[0].meta["ingest"]["tilt_deg"]                      # doctest: +SKIP
    18.5
    """
    if resample not in _RESAMPLE_CHOICES:
        raise InputError(f"resample must be one of {_RESAMPLE_CHOICES}, got {resample!r}")
    if errors not in ("raise", "skip"):
        raise InputError(f"errors must be 'raise' or 'skip', got {errors!r}")
    scan = scan_dicom(path, progress=progress, errors=errors)
    vols: list[Volume] = []
    for g in scan:
        try:
            vols.extend(load_series(g, resample=resample, fill_value=fill_value,
                                    progress=progress))
        except DicomError as e:
            if errors == "raise":
                raise
            log.warning("series skipped: %s", e)
    if not vols:
        raise DicomError("no series could be ingested", path=path,
                         hint="see the warnings above, or run with errors='raise'")
    return _unique_labels(vols)
