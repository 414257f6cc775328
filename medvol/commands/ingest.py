"""``medvol ingest``: DICOM folder → one NRRD/NIfTI volume per series + manifest.json.

Parses options and calls :func:`medvol.io.ingest_study` (the job lives in the library)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


class _ConsoleHandler(logging.Handler):
    """Send ``medvol.io.dicom`` log records to the command's console (stdout)."""

    def __init__(self, console):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from .._text import sanitize

        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        self.console.print(f"  {sanitize(record.getMessage())}", style=style, markup=False,
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
    skip_unreadable: bool = typer.Option(
        False, "--skip-unreadable", help="Skip files and folders that cannot be read "
                                         "(permission denied …): each one is named in a "
                                         "warning and in the manifest. Default: an error."),
    follow_symlinks: bool = typer.Option(
        False, "--follow-symlinks", help="Follow symbolic links that point outside the input "
                                         "folder (default: skipped, with a warning naming "
                                         "them)."),
    split_repeats: bool = typer.Option(
        False, "--split-repeats", help="Write repeats of one series (time points, "
                                       "acquisitions of the same kind and grid) as separate "
                                       "3D volumes <label>_repNN instead of one 4D file."),
) -> None:
    """Convert a DICOM study into one volume per series, plus a manifest.

    Writes OUT/<label>/volume.nrrd for each series with a BIDS-style JSON
    sidecar OUT/<label>/volume.json (EchoTime, RepetitionTime, FlipAngle,
    MagneticFieldStrength, Manufacturer, ImageType, Units …; no identifiers),
    OUT/report.html (QC montage per series) and OUT/manifest.json
    (input hashes, per-series geometry decisions, warnings, versions).
    Labels such as s003_CT_1a2b3c4d come from SeriesNumber, Modality and a
    hash of the SeriesInstanceUID, never from patient data; volumes of one
    series are named by content and unit (…_magnitude, …_fieldmap_hz), and
    repeats are stacked into one 4D file (--split-repeats: one file each).
    Gantry tilt and uneven slice spacing are found from the slice positions
    and, by default, corrected by resampling; every decision is printed.
    Slice gaps that would make resampling invent far more slices than were
    acquired are refused (exit 8). An unreadable file or folder is an error
    (exit 2) unless --skip-unreadable. On any error nothing is written
    (exit code 3 for DICOM problems).

    Examples:

        medvol ingest study/ -o out/

        medvol ingest study/ -o out/ --resample never --format nii.gz
    """
    from rich.console import Console

    from .._text import sanitize
    from ..io import ingest_study

    console = Console(highlight=False, soft_wrap=True)
    handler = _ConsoleHandler(console)
    loggers = [logging.getLogger(n) for n in ("medvol.io.dicom", "medvol.atomic")]
    olds = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
        lg.setLevel(logging.INFO)
    try:
        res = ingest_study(dicom_dir, out, overwrite=overwrite, resample=resample, fmt=fmt,
                           fill_value=fill_value, skip_bad_series=skip_bad_series,
                           skip_unreadable=skip_unreadable, follow_symlinks=follow_symlinks,
                           split_repeats=split_repeats, progress=True,
                           on_volume=lambda line: console.print(sanitize(line), markup=False))
        n_skipped = sum(res.skipped.values())
        console.print(f"Found {len(res.series)} volume(s) in {res.n_files} file(s) "
                      f"({n_skipped} skipped: not DICOM images).", markup=False)
        console.print(sanitize(f"Wrote {len(res.series)} volume(s), manifest.json and report.html (QC) "
                               f"to {out}"),
                      markup=False)
    finally:
        for lg, (prop, level) in zip(loggers, olds):
            lg.removeHandler(handler)
            lg.propagate = prop
            lg.setLevel(level)
