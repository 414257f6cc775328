"""De-identified metadata and safe labels for DICOM-derived volumes.

Only a whitelist of technical fields leaves a DICOM header: patient names, IDs, birth dates,
accession numbers and free-text descriptions are never copied, logged or used in file names.
UIDs are reduced to a short SHA-256 prefix so series can be told apart without revealing them.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

__all__ = ["uid_hash", "safe_token", "series_label", "safe_meta"]

_SAFE = re.compile(r"[^A-Za-z0-9 _-]+")


def uid_hash(uid: object, n: int = 16) -> str:
    """First ``n`` hex characters of the SHA-256 of ``str(uid)`` ('' for a missing UID)."""
    if uid is None or str(uid) == "":
        return ""
    return hashlib.sha256(str(uid).strip().encode("ascii", "replace")).hexdigest()[:n]


def safe_token(value: object, *, cap: int = 32, allow_space: bool = True) -> str:
    """Keep only ``[A-Za-z0-9 _-]`` (or no spaces), collapse runs, cap the length."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = _SAFE.sub(" " if allow_space else "_", str(value)).strip()
    if not allow_space:
        text = text.replace(" ", "_")
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"_+", "_", text).strip("_ ")
    return text[:cap]


def series_label(series_number: object, modality: object, series_hash: str) -> str:
    """``s003_CT_1a2b3c4d``: built only from SeriesNumber, Modality and the UID hash."""
    try:
        num = f"s{int(float(str(series_number))):03d}"
    except (TypeError, ValueError):
        num = "sNA"
    mod = re.sub(r"[^A-Z0-9]", "", str(modality or "").upper())[:8] or "OT"
    return f"{num}_{mod}_{(series_hash or '0' * 8)[:8]}"


def safe_meta(ds: Any, *, series_key_hash: str | None = None) -> dict[str, Any]:
    """Whitelisted, de-identified metadata from a pydicom header.

    Parameters
    ----------
    ds : pydicom.Dataset
        Any image header of the series (patient fields are ignored).
    series_key_hash : str, optional
        Hash to use when the series has no SeriesInstanceUID (fallback grouping key).

    Returns
    -------
    dict
        Keys follow :data:`medvol.io.formats.SAFE_META_KEYS` (lower case) so that writers keep
        them: ``modality``, ``manufacturer``, ``body_part``, ``series_number``,
        ``series_uid_hash``, ``study_uid_hash``, ``label``, ``source`` (and ``rescale_type``
        when present). SeriesDescription is deliberately *not* copied: it is free text that
        operators sometimes fill with patient details.
    """
    meta: dict[str, Any] = {"source": "dicom"}
    modality = safe_token(ds.get("Modality"), cap=16, allow_space=False)
    meta["modality"] = modality or "OT"
    for key, out in (("Manufacturer", "manufacturer"), ("BodyPartExamined", "body_part")):
        v = safe_token(ds.get(key), cap=48)
        if v:
            meta[out] = v
    sn = ds.get("SeriesNumber")
    try:
        if sn not in (None, ""):
            meta["series_number"] = int(float(str(sn)))
    except ValueError:
        pass
    s_hash = uid_hash(ds.get("SeriesInstanceUID")) or (series_key_hash or "")
    meta["series_uid_hash"] = s_hash
    st = uid_hash(ds.get("StudyInstanceUID"))
    if st:
        meta["study_uid_hash"] = st
    rt = safe_token(ds.get("RescaleType"), cap=16, allow_space=False)
    if rt:
        meta["rescale_type"] = rt
    meta["label"] = series_label(meta.get("series_number"), meta["modality"], s_hash)
    return meta
