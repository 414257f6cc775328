"""``MedvolDicomReader``: MONAI's ``LoadImage`` gets medvol's tilt-corrected DICOM volume."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("monai")


def test_loadimage_gets_the_tilt_corrected_volume(shared_data, tmp_path):
    import SimpleITK as sitk
    from monai.transforms import LoadImage

    import medvol as mv
    from medvol.io.monai_reader import MedvolDicomReader

    d = shared_data / "dicom" / "ct_head_ge_tilt"
    img = LoadImage(reader=MedvolDicomReader(), image_only=True)(str(d))
    (vol,) = mv.io.read_dicom_series(d)
    assert vol.meta["ingest"]["resampled"] and vol.meta["tilt_deg"] > 18
    assert tuple(img.shape) == vol.size_xyz                      # MONAI order (x, y, z)
    np.testing.assert_array_equal(np.asarray(img), vol.numpy().transpose(2, 1, 0))
    # independent geometry: SimpleITK's index→LPS of the written volume, flipped to RAS
    mv.io.write(vol, tmp_path / "ct.nrrd")
    ref = sitk.ReadImage(str(tmp_path / "ct.nrrd"))
    aff = np.asarray(img.affine, float)
    for ijk in [(0, 0, 0), (511, 0, 0), (0, 610, 133), (200, 300, 50)]:
        lps = np.array(ref.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(aff @ np.r_[ijk, 1.0], np.r_[lps * [-1, -1, 1], 1.0],
                                   atol=1e-3)
    # 28 acquired slices → 134 resampled ones (tilt and uneven gaps corrected)
    assert img.shape[2] == 134


def test_reader_picks_a_labelled_volume(shared_data):
    from monai.transforms import LoadImage

    from medvol.io.monai_reader import MedvolDicomReader

    d = shared_data / "dicom" / "enhanced_multiframe"
    img = LoadImage(reader=MedvolDicomReader(series="fieldmap_hz"), image_only=True)(str(d))
    assert tuple(img.shape) == (64, 64, 32) and img.meta["medvol_units"] == "Hz"
