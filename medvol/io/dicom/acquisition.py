"""What a DICOM image *is* (kind, units) and how it was acquired (a BIDS-style sidecar).

* :func:`image_kind` — a short name for the volume's content from ImageType / FrameType,
  ComplexImageComponent and the RealWorldValueMapping units: ``fieldmap_hz``, ``magnitude``,
  ``phase``, ``real``, ``imaginary`` … (``""`` when nothing says more than the modality). It
  becomes a label suffix when one series holds several volumes (``s801_MR_1a2b3c4d_fieldmap_hz``
  instead of ``_v02``).
* :func:`acquisition_params` — acquisition parameters under their BIDS names (EchoTime and
  RepetitionTime in **seconds**, FlipAngle in degrees, MagneticFieldStrength in tesla …) from
  the top-level header and, for enhanced objects, the shared / per-frame functional groups.

Only a whitelist of technical tags is read. No identifiers leave the header: no names, IDs,
dates, times, UIDs, institution/station/device-serial fields and no free text (Series/Protocol
descriptions). Values that are missing, non-numeric or non-finite are simply left out: the
sidecar describes, it never decides geometry (that is :mod:`medvol.io.dicom.values`' job).
"""
from __future__ import annotations

import math
import re
from typing import Any

from .meta import safe_token

__all__ = ["image_kind", "acquisition_params", "real_world_units", "SIDECAR_KEYS"]

#: (BIDS key, DICOM keyword, scale) for numbers; EchoTime/RepetitionTime ms → s as BIDS asks
_NUMBERS = (
    ("MagneticFieldStrength", "MagneticFieldStrength", 1.0),
    ("EchoTime", "EchoTime", 1e-3),
    ("RepetitionTime", "RepetitionTime", 1e-3),
    ("InversionTime", "InversionTime", 1e-3),
    ("FlipAngle", "FlipAngle", 1.0),
    ("EchoTrainLength", "EchoTrainLength", 1.0),
    ("ImagingFrequency", "ImagingFrequency", 1.0),
    ("PixelBandwidth", "PixelBandwidth", 1.0),
    ("SliceThickness", "SliceThickness", 1.0),
    ("SpacingBetweenSlices", "SpacingBetweenSlices", 1.0),
    ("KVP", "KVP", 1.0),
    ("XRayTubeCurrent", "XRayTubeCurrent", 1.0),
    ("ExposureTime", "ExposureTime", 1e-3),
    ("SeriesNumber", "SeriesNumber", 1.0),
    ("AcquisitionNumber", "AcquisitionNumber", 1.0),
)
#: (BIDS key, DICOM keyword) for short coded strings (sanitised; never free text)
_CODES = (
    ("Modality", "Modality"),
    ("Manufacturer", "Manufacturer"),
    ("ManufacturersModelName", "ManufacturerModelName"),
    ("SoftwareVersions", "SoftwareVersions"),
    ("MRAcquisitionType", "MRAcquisitionType"),
    ("PulseSequenceName", "PulseSequenceName"),
    ("ScanningSequence", "ScanningSequence"),
    ("SequenceVariant", "SequenceVariant"),
    ("BodyPartExamined", "BodyPartExamined"),
    ("PatientPosition", "PatientPosition"),
    ("ConvolutionKernel", "ConvolutionKernel"),
)
SIDECAR_KEYS = frozenset(k for k, _, _ in _NUMBERS) | frozenset(k for k, _ in _CODES) | {
    "ImageType", "ImageKind", "ComplexImageComponent", "Units", "RealWorldValueMapping",
    "TemporalPositionIndex", "ConversionSoftware", "ConversionSoftwareVersion",
    "GantryTiltMeasured", "Repetitions", "RepetitionAxis", "AcquisitionNumbers"}
"""Every key a sidecar may hold (tests check that nothing else appears)."""

_KIND_WORDS = {"M": "magnitude", "MAGNITUDE": "magnitude", "P": "phase", "PHASE": "phase",
               "R": "real", "REAL": "real", "I": "imaginary", "IMAGINARY": "imaginary"}


_CODE = re.compile(r"[^A-Za-z0-9 ._+-]+")


def _code(v, cap: int = 64) -> str:
    """A coded string value: multi-values joined by ``\\`` (as dcm2niix writes them), only
    ``[A-Za-z0-9 ._+-]`` kept, length capped."""
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        parts = [_CODE.sub(" ", str(x)).strip() for x in v]
        text = "\\".join(p for p in parts if p)
    else:
        text = _CODE.sub(" ", str(v)).strip()
    return re.sub(r"\s+", " ", text)[:cap]


def _get(src, keyword: str):
    try:
        return src.get(keyword) if src is not None else None
    except Exception:  # pydicom conversion errors on malformed values: leave the value out
        return None


def _num(v) -> float | None:
    try:
        if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            v = v[0]
        f = float(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _item(src, seq: str):
    try:
        if src is not None and seq in src and len(src[seq].value):
            return src[seq].value[0]
    except Exception:
        return None
    return None


def _sources(ds, frame=None, shared=None) -> list:
    """Where to look for a keyword, most specific first: the frame's and the shared functional
    groups' MR/CT parameter sequences, then the top-level header."""
    out = []
    for grp in (frame, shared):
        if grp is None:
            continue
        for seq in ("MREchoSequence", "MRTimingAndRelatedParametersSequence",
                    "MRModifierSequence", "MRImagingModifierSequence", "CTAcquisitionDetailsSequence",
                    "CTExposureSequence", "CTReconstructionSequence", "PixelMeasuresSequence"):
            it = _item(grp, seq)
            if it is not None:
                out.append(it)
    out.append(ds)
    return out


def real_world_units(frame=None, shared=None, ds=None) -> tuple[str, float, float] | None:
    """``(units, slope, intercept)`` of the first RealWorldValueMapping item (frame, shared or
    top level) with MeasurementUnitsCodeSequence, or None. Units are the UCUM code (``Hz``)."""
    for src in (frame, shared, ds):
        rw = _item(src, "RealWorldValueMappingSequence")
        if rw is None:
            continue
        code = _item(rw, "MeasurementUnitsCodeSequence")
        unit = safe_token(_get(code, "CodeValue"), cap=16, allow_space=False) if code else ""
        slope = _num(_get(rw, "RealWorldValueSlope"))
        inter = _num(_get(rw, "RealWorldValueIntercept"))
        if unit and unit not in ("1", "no_units") and slope is not None:
            return unit, slope, 0.0 if inter is None else inter
    return None


def image_kind(image_type, complex_component=None, units: str | None = None) -> str:
    """Short content name of a volume: ``fieldmap_hz`` (FIELD_MAP / B0 in the image or frame
    type, or Hz units), else the complex component (``magnitude``, ``phase``, ``real``,
    ``imaginary``) from ComplexImageComponent or ImageType's third value; ``""`` otherwise.
    A unit other than Hz is appended (``phase_rad``)."""
    words = [str(w).upper() for w in (image_type or ())]
    u = (units or "").strip()
    if any(w in ("FIELD_MAP", "B0", "B0MAP", "FIELDMAP") for w in words) or u.lower() == "hz":
        return "fieldmap_hz" if u.lower() in ("hz", "") else f"fieldmap_{safe_token(u, cap=8, allow_space=False).lower()}"
    kind = _KIND_WORDS.get(str(complex_component or "").upper(), "")
    if not kind and len(words) > 2:
        kind = _KIND_WORDS.get(words[2], "")
    if kind and u and u.lower() not in ("1", "us", "no_units"):
        kind += "_" + safe_token(u, cap=8, allow_space=False).lower()
    return kind


def acquisition_params(ds, frame=None, shared=None) -> dict[str, Any]:
    """BIDS-style acquisition parameters of one volume (see the module docstring).

    Parameters
    ----------
    ds : pydicom.Dataset — the (first) header of the series.
    frame, shared : the per-frame and shared functional-group items of an enhanced object (the
        stack's first frame), or None for classic series.
    """
    out: dict[str, Any] = {}
    srcs = _sources(ds, frame, shared)
    for key, kw, scale in _NUMBERS:
        for src in srcs:
            v = _num(_get(src, kw))
            if v is None and kw == "EchoTime":
                v = _num(_get(src, "EffectiveEchoTime"))
            if v is not None:
                v = v * scale
                out[key] = int(v) if key in ("SeriesNumber", "AcquisitionNumber",
                                              "EchoTrainLength") else round(v, 9)
                break
    for key, kw in _CODES:
        v = _code(_get(ds, kw))
        if v:
            out[key] = v
    ftype = None
    for grp in (frame, shared):
        for el in (grp or ()):
            try:
                if el.keyword.endswith("FrameTypeSequence") and len(el.value):
                    ftype = el.value[0]
            except Exception:
                continue
        if ftype is not None:
            break
    itype = _get(ftype, "FrameType") if ftype is not None else _get(ds, "ImageType")
    if itype:
        words = [safe_token(w, cap=24, allow_space=False) for w in
                 (itype if not isinstance(itype, str) else itype.split("\\"))]
        out["ImageType"] = [w for w in words if w][:8]
    cic = safe_token(_get(ftype, "ComplexImageComponent"), cap=16, allow_space=False) \
        if ftype is not None else ""
    if cic:
        out["ComplexImageComponent"] = cic
    rw = real_world_units(frame, shared, ds)
    if rw is not None:
        out["Units"] = rw[0]
        out["RealWorldValueMapping"] = {"units": rw[0], "slope": rw[1], "intercept": rw[2]}
    kind = image_kind(out.get("ImageType"), cic, rw[0] if rw else None)
    if kind:
        out["ImageKind"] = kind
    return out
