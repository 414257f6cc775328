"""``medvol ingest``: DICOM folder → one NRRD/NIfTI volume per series + manifest.json."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from ..errors import DicomError, InputError

_FORMATS = {"nrrd": "volume.nrrd", "nii.gz": "volume.nii.gz"}


class _ConsoleHandler(logging.Handler):
    """Send ``medvol.io.dicom`` log records to the command's console (stdout)."""

    def __init__(self, console):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        self.console.print(f"  {record.getMessage()}", style=style, markup=False,
                           highlight=False)


def ingest(
    dicom_dir: Path = typer.Argument(
        ..., help="Folder with the DICOM files (searched recursively; any file names; "
                  "DICOMDIR and non-DICOM files are ignored), or a single DICOM file."),
    out: Path = typer.Option(
        ..., "-o", "--out", help="Output folder; built in a temporary sibling and moved into "
                                 "place only when every series succeeded."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    resample: str = typer.Option(
        "auto", "--resample", help="Gantry-tilted / unevenly spaced series: 'auto' resamples "
                                   "them onto a regular grid, 'never' refuses them, 'always' "
                                   "resamples every series."),
    fmt: str = typer.Option("nrrd", "--format", "-f", help="Volume format: nrrd or nii.gz."),
    fill_value: Optional[float] = typer.Option(
        None, "--fill-value", help="Value outside the acquired region after resampling "
                                   "(default -1024 for CT, else the data minimum)."),
    skip_bad_series: bool = typer.Option(
        False, "--skip-bad-series", help="Skip series that cannot be ingested (recorded in the "
                                         "manifest) instead of failing the whole run."),
) -> None:
    """Convert a DICOM study into one volume per series, plus a manifest.

    Writes OUT/<label>/volume.nrrd for each series and OUT/manifest.json
    (input hashes, per-series geometry decisions, warnings, versions).
    Labels such as s003_CT_1a2b3c4d come from SeriesNumber, Modality and a
    hash of the SeriesInstanceUID, never from patient data.
    Gantry tilt and uneven slice spacing are found from the slice positions
    and, by default, corrected by resampling; every decision is printed.
    On any error nothing is written (exit code 3 for DICOM problems).

    Examples:

        medvol ingest study/ -o out/

        medvol ingest study/ -o out/ --resample never --format nii.gz
    """
    from rich.console import Console

    from .._atomic import atomic_dir, check_writable
    from ..io import dicom as mdicom
    from ..io import write
    from ..manifest import Manifest, sha256_file
    from ..report import ingest_report

    if resample not in ("auto", "never", "always"):
        raise InputError(f"--resample must be auto, never or always, got {resample!r}")
    fmt = fmt.lower().lstrip(".")
    if fmt not in _FORMATS:
        raise InputError(f"--format must be nrrd or nii.gz, got {fmt!r}")
    check_writable(out, overwrite, inputs=[dicom_dir])
    console = Console(highlight=False, soft_wrap=True)
    logger = logging.getLogger("medvol.io.dicom")
    handler = _ConsoleHandler(console)
    old = (logger.propagate, logger.level)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        errors = "skip" if skip_bad_series else "raise"
        scan = mdicom.scan_dicom(dicom_dir, progress=True, errors=errors)
        console.print(f"Found {len(scan)} series in {scan.n_files} file(s) "
                      f"({len(scan.skipped)} skipped: not DICOM images).", markup=False)
        items: list[tuple[object, object]] = []
        failed: list[str] = []
        for group in scan:
            try:
                vols = mdicom.load_series(group, resample=resample, fill_value=fill_value,
                                          progress=True)
            except DicomError as e:
                if not skip_bad_series:
                    raise
                failed.append(str(e))
                console.print(f"  skipped a series: {e}", style="yellow", markup=False)
                continue
            items.extend((group, v) for v in vols)
        if not items:
            raise DicomError("no series could be ingested", path=dicom_dir,
                             hint="run without --skip-bad-series to see the first error")
        vols = mdicom._unique_labels([v for _, v in items])
        items = [(g, v) for (g, _), v in zip(items, vols)]

        manifest = Manifest("ingest", parameters={
            "resample": resample, "format": fmt, "fill_value": fill_value,
            "skip_bad_series": skip_bad_series})
        root = Path(dicom_dir)
        base = root if root.is_dir() else root.parent
        seen: set[Path] = set()
        for group, _ in items:
            for f in group.files:
                if f in seen:
                    continue
                seen.add(f)
                manifest.add_input(str(Path(f).relative_to(base)), hash=False,
                                   sha256=sha256_file(f))
        skipped: dict[str, int] = {}
        for _, why in scan.skipped:
            skipped[why] = skipped.get(why, 0) + 1
        manifest.data["skipped_files"] = skipped
        for msg in failed:
            manifest.warn(f"series skipped: {msg}")

        with atomic_dir(out, overwrite=overwrite) as tmp:
            for group, vol in items:
                label = vol.meta["label"]
                dest = tmp / label / _FORMATS[fmt]
                write(vol, dest)
                ing = dict(vol.meta["ingest"])
                for d in ing.get("decisions", []):
                    manifest.decide(d, series=label)
                for m in ing.get("messages", []):
                    manifest.decide(m, series=label)
                for w in ing.get("warnings", []):
                    manifest.warn(f"{label}: {w}")
                safe = {k: v for k, v in vol.meta.items() if k != "ingest"}
                manifest.add_output(dest, root=tmp, series=label, shape_zyx=list(vol.shape),
                                    dtype=str(vol.array.dtype),
                                    spacing_mm=list(vol.spacing), origin_lps_mm=list(vol.origin),
                                    direction=vol.direction.tolist(), meta=safe, geometry=ing)
                note = "; ".join(ing.get("messages", [])[:-1]) if ing.get("resampled") else ""
                sp = "×".join(f"{s:.3g}" for s in vol.spacing)
                console.print(f"{label}: {ing['n_slices_in']} slice(s) → {vol.shape} "
                              f"(z, y, x), spacing {sp} mm" + (f" — {note}" if note else ""),
                              markup=False)
            ingest_report([v for _, v in items], tmp, manifest=manifest)
            manifest.write(tmp / "manifest.json")
        console.print(f"Wrote {len(items)} volume(s), manifest.json and report.html (QC) to {out}", markup=False)
    finally:
        logger.removeHandler(handler)
        logger.propagate, _ = old
        logger.setLevel(old[1])
