"""The ingest job: a DICOM study → one volume file per series + ``manifest.json``.

Used by ``medvol ingest`` and by the pipeline's ingest task; both only parse options and call
:func:`ingest_study`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import DicomError, InputError

__all__ = ["ingest_study", "IngestResult", "VOLUME_FORMATS", "RESAMPLE_CHOICES"]

#: output format -> file name inside ``OUT/<label>/``
VOLUME_FORMATS = {"nrrd": "volume.nrrd", "nii.gz": "volume.nii.gz"}
RESAMPLE_CHOICES = ("auto", "never", "always")


@dataclass
class IngestResult:
    """What :func:`ingest_study` wrote.

    Attributes
    ----------
    out : Path
        The output folder.
    series : list of dict
        Per volume: ``label``, ``path`` (relative to ``out``), ``shape_zyx``, ``spacing_mm``,
        ``resampled``, ``messages``.
    n_files : int
        Files found under the input.
    skipped : dict
        Reason → count of files that were not ingested (non-DICOM, DICOMDIR …).
    failed : list of str
        One line per series skipped with ``skip_bad_series``.
    """

    out: Path
    series: list[dict] = field(default_factory=list)
    n_files: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"


def ingest_study(dicom_dir: str | os.PathLike, out: str | os.PathLike, *,
                 overwrite: bool = False, resample: str = "auto", fmt: str = "nrrd",
                 fill_value: float | None = None, skip_bad_series: bool = False,
                 skip_unreadable: bool = False, follow_symlinks: bool = False, split_repeats: bool = False,
                 progress: bool = False,
                 on_volume: Callable[[str], None] | None = None) -> IngestResult:
    """Convert a DICOM study into ``out/<label>/volume.<fmt>`` per series + ``out/manifest.json``.

    Parameters
    ----------
    dicom_dir : folder (searched recursively) or a single DICOM file.
    out : output folder; built in a hidden sibling and moved into place only when every series
        succeeded (create-or-fail: a folder that appears meanwhile is never replaced).
    overwrite : replace an existing ``out``.
    resample : ``"auto"`` | ``"never"`` | ``"always"`` (see :func:`medvol.io.dicom.load_series`).
    fmt : ``"nrrd"`` or ``"nii.gz"``.
    fill_value : value outside the acquired region after resampling.
    skip_bad_series : skip series that cannot be ingested (recorded in the manifest).
    skip_unreadable : skip unreadable files/folders (named in the manifest and the log) instead
        of failing.
    follow_symlinks : follow symbolic links that point outside ``dicom_dir`` (default: skipped
        with a warning naming them).
    split_repeats : write repeats as separate 3D volumes instead of one 4D file.
    progress : rich progress bars on a terminal.
    on_volume : called with one line per written volume (the CLI prints it).

    Returns
    -------
    IngestResult

    Raises
    ------
    InputError, DicomError, LimitError, OutputExistsError, OutputError
    """
    from .._atomic import atomic_dir, check_writable
    from ..manifest import Manifest, sha256_file
    from . import dicom as mdicom
    from .dicom.build import _unique_labels
    from .volumes import write, write_repeats

    if resample not in RESAMPLE_CHOICES:
        raise InputError(f"resample must be auto, never or always, got {resample!r}")
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in VOLUME_FORMATS:
        raise InputError(f"format must be nrrd or nii.gz, got {fmt!r}")
    check_writable(out, overwrite, inputs=[dicom_dir])
    src, dst = Path(dicom_dir).resolve(), Path(out).resolve()
    if src.is_dir() and src in dst.parents:
        raise InputError("the output folder lies inside the input folder", path=out,
                         hint="choose an output folder outside the input (a rerun would scan "
                              "the outputs as input)")
    errors = "skip" if skip_bad_series else "raise"
    scan = mdicom.scan_dicom(dicom_dir, progress=progress, errors=errors,
                             skip_unreadable=skip_unreadable, follow_symlinks=follow_symlinks)
    items: list[tuple[object, object]] = []
    failed: list[str] = []
    for group in scan:
        try:
            vols = mdicom.load_series(group, resample=resample, fill_value=fill_value,
                                      progress=progress)
        except DicomError as e:
            if not skip_bad_series:
                raise
            failed.append(str(e))
            mdicom.log.warning("skipped a series: %s", e)
            continue
        items.extend((group, v) for v in vols)
    if not items:
        raise DicomError("no series could be ingested", path=dicom_dir,
                         hint="run without --skip-bad-series to see the first error")
    vols = _unique_labels([v for _, v in items])

    manifest = Manifest("ingest", parameters={
        "resample": resample, "format": fmt, "fill_value": fill_value,
        "skip_bad_series": skip_bad_series})
    root = Path(dicom_dir)
    base = root if root.is_dir() else root.parent
    # input files by position and hash only: a DICOM file name may carry patient identifiers
    files = sorted({Path(f) for group, _ in items for f in group.files})
    for i, f in enumerate(files):
        manifest.add_input(f, name=f"file/{i:05d}", hash=False, sha256=sha256_file(f))
    skipped: dict[str, int] = {}
    for _, why in scan.skipped:
        skipped[why] = skipped.get(why, 0) + 1
    manifest.data["skipped_files"] = skipped
    for p, why in scan.skipped:
        if why.startswith(("unreadable", "symlink")):
            manifest.warn(f"{why}: {Path(p).relative_to(base) if base in Path(p).parents else p}")
    for msg in failed:
        manifest.warn(f"series skipped: {msg}")

    result = IngestResult(out=Path(out), n_files=scan.n_files, skipped=skipped, failed=failed)
    outputs = _outputs(vols, split_repeats)
    manifest.data["parameters"]["split_repeats"] = split_repeats
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for label, members in outputs:
            vol = members[0]
            dest = tmp / label / VOLUME_FORMATS[fmt]
            if len(members) > 1:
                write_repeats(members, dest)
            else:
                write(vol, dest)
            sidecar = dest.parent / "volume.json"
            write_sidecar(members, sidecar)
            ing = dict(vol.meta["ingest"])
            for d in ing.get("decisions", []):
                manifest.decide(d, series=label)
            for m in ing.get("messages", []):
                manifest.decide(m, series=label)
            for w in ing.get("warnings", []):
                manifest.warn(f"{label}: {w}")
            if len(members) > 1:
                manifest.decide(f"{len(members)} repeats (same kind and grid) stacked into one "
                                "4D file, 4th axis = repeat", series=label)
            safe = {k: v for k, v in vol.meta.items() if k not in ("ingest", "acquisition")}
            shape = ([len(members)] if len(members) > 1 else []) + list(vol.shape)
            manifest.add_output(dest, root=tmp, series=label, shape_zyx=list(vol.shape),
                                repeats=len(members), dtype=str(vol.array.dtype),
                                sidecar={"path": f"{label}/volume.json",
                                         "sha256": sha256_file(sidecar)},
                                spacing_mm=list(vol.spacing), origin_lps_mm=list(vol.origin),
                                direction=vol.direction.tolist(), meta=safe, geometry=ing)
            result.series.append({
                "label": label, "path": f"{label}/{VOLUME_FORMATS[fmt]}",
                "sidecar": f"{label}/volume.json", "shape_zyx": list(vol.shape),
                "repeats": len(members), "spacing_mm": list(vol.spacing),
                "kind": vol.meta.get("image_kind", ""), "units": vol.meta.get("units", ""),
                "resampled": bool(ing.get("resampled")), "messages": ing.get("messages", [])})
            if on_volume is not None:
                note = "; ".join(ing.get("messages", [])[:-1]) if ing.get("resampled") else ""
                sp = "×".join(f"{s:.3g}" for s in vol.spacing)
                what = f"{len(members)} repeats × " if len(members) > 1 else ""
                units = f", values in {vol.meta['units']}" if vol.meta.get("units") else ""
                on_volume(f"{label}: {ing['n_slices_in']} slice(s) → {what}{tuple(vol.shape)} "
                          f"(z, y, x), spacing {sp} mm{units}" + (f" — {note}" if note else ""))
        from dataclasses import replace as _replace

        report_vols = [_replace(m[0], meta={**m[0].meta, "label": lab}) for lab, m in outputs]
        from ..report import ingest_report

        ingest_report(report_vols, tmp, manifest=manifest)   # QC montage per series
        manifest.write(tmp / "manifest.json")
    return result


def _outputs(vols: list, split_repeats: bool) -> list[tuple[str, list]]:
    """``(label, volumes)`` per output file: repeats (``meta["repeat_of"]``) share one 4D file
    unless ``split_repeats``; order follows the first member."""
    out: list[tuple[str, list]] = []
    where: dict[str, int] = {}
    for v in vols:
        group = v.meta.get("repeat_of")
        if group is None or split_repeats:
            out.append((v.meta["label"], [v]))
            continue
        if group not in where:
            where[group] = len(out)
            out.append((group, []))
        out[where[group]][1].append(v)
    return [(lab, sorted(m, key=lambda v: v.meta.get("repeat_index", 0))) for lab, m in out]


def write_sidecar(vols: list, path) -> Path:
    """The BIDS-style JSON sidecar of one output volume (or of stacked repeats): the values of
    ``meta["acquisition"]`` (whitelisted technical tags, no identifiers) plus the converter.
    Repeats list their AcquisitionNumbers and the repeat axis. Written atomically."""
    import json

    import medvol

    from .._atomic import atomic_write_text
    from .dicom.acquisition import SIDECAR_KEYS

    first = vols[0]
    side = {k: v for k, v in dict(first.meta.get("acquisition") or {}).items()
            if k in SIDECAR_KEYS and v is not None}
    side["ConversionSoftware"] = "medvol"
    side["ConversionSoftwareVersion"] = medvol.__version__
    if len(vols) > 1:
        side.pop("AcquisitionNumber", None)
        side["Repetitions"] = len(vols)
        side["RepetitionAxis"] = "4th axis (NRRD list axis / NIfTI t)"
        nums = [(v.meta.get("acquisition") or {}).get("AcquisitionNumber") for v in vols]
        if all(n is not None for n in nums):
            side["AcquisitionNumbers"] = nums
    path = Path(path)
    atomic_write_text(path, json.dumps(side, indent=2, sort_keys=True) + "\n")
    return path
