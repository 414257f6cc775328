"""PNG panels and the HTML run report."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from medvol.errors import InputError, OutputExistsError
from medvol.report import (comparison_png, default_windows, human_header, ingest_report,
                           orthoslices_png, render_orthoslices, resolve_window, to_uint8,
                           write_html_report)


def test_window_presets_and_mapping():
    assert resolve_window("soft_tissue") == (-160.0, 240.0)
    assert resolve_window("lung") == (-1350.0, 150.0)
    assert resolve_window((0, 10)) == (0.0, 10.0)
    np.testing.assert_array_equal(to_uint8(np.array([-5.0, 0.0, 5.0, 10.0, 99.0]), (0.0, 10.0)),
                                  [0, 0, 128, 255, 255])
    with pytest.raises(InputError, match="preset"):
        resolve_window("rainbow")
    with pytest.raises(InputError, match="above"):
        resolve_window((5, 5))


def test_orthoslices_aspect_and_orientation(tmp_path):
    from medvol import Volume
    a = np.zeros((20, 40, 60), np.float32)       # z, y, x
    a[-1] = 1000.0                               # top slice (largest z = superior) bright
    vol = Volume(a, spacing=(1.0, 1.0, 3.0))      # x, y, z spacing → z extent 60 mm
    p = orthoslices_png(vol, tmp_path / "o.png", window=(0, 1000), size=120, title="demo")
    im = np.asarray(Image.open(p).convert("L"))
    assert im.ndim == 2 and im.shape[1] > 3 * 60  # three panels
    _, panels = render_orthoslices(vol, window=(0, 1000), size=120, title="demo")
    cor = next(q for q in panels if q.plane == "coronal")
    x0, y0, x1, y1 = cor.box
    # coronal panel: 60 mm wide × 60 mm tall at 2 px/mm → 120 × 120, superior row at the top
    assert (x1 - x0, y1 - y0) == (120, 120)
    # find bright rows (the last z slice) — they must sit at the top of the panel, not the bottom
    bright_rows = np.where((im[y0:y1, x0:x1] == 255).sum(axis=1) > 100)[0]
    assert bright_rows.size > 0 and bright_rows.max() < 4
    with pytest.raises(OutputExistsError):
        orthoslices_png(vol, p)
    orthoslices_png(vol, p, overwrite=True)


def test_orthoslices_2d_and_errors(tmp_path):
    img = np.linspace(0, 1, 64 * 32).reshape(32, 64)
    p = orthoslices_png(img, tmp_path / "i.png", spacing=(2.0, 1.0), size=64)
    w, h = Image.open(p).size
    assert w >= 64 and h >= 64                   # 32 rows × 2 mm = 64 mm tall, 64 mm wide
    with pytest.raises(InputError, match=".png"):
        orthoslices_png(img, tmp_path / "i.jpg")
    with pytest.raises(InputError, match="2D or 3D"):
        orthoslices_png(np.zeros(5), tmp_path / "x.png")


def test_comparison_png(tmp_path):
    ref = np.zeros((32, 32))
    ref[8:24, 8:24] = 1
    p = comparison_png([ref, ref * 0.5, ref + 0.1], ["reference", "FBP", "TV"], tmp_path / "c.png",
                       window=(0, 1))
    im = Image.open(p)
    assert im.size[0] > 3 * 32
    arr = np.asarray(im.convert("L"))
    assert arr.max() == 255 and (np.abs(arr.astype(int) - 128) <= 1).sum() > 100  # 0.5 → mid grey
    with pytest.raises(InputError, match="labels"):
        comparison_png([ref], ["a", "b"], tmp_path / "d.png")
    with pytest.raises(InputError, match="different shapes"):
        comparison_png([ref, ref[:5]], ["a", "b"], tmp_path / "e.png")


def test_html_report(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    png = orthoslices_png(np.random.default_rng(0).random((16, 16)), out / "fig" / "img.png")
    rep = write_html_report(out, title="Sparse-view <demo>",
                            images=[("FBP vs TV", png)],
                            tables={"metrics": [{"method": "FBP", "PSNR": 31.23456, "SSIM": 0.81234},
                                                {"method": "TV", "PSNR": 35.5, "SSIM": 0.9}]},
                            params={"n_views": 60, "lam": 0.01, "PatientName": "DOE^JOHN"})
    text = rep.read_text(encoding="utf-8")
    assert rep.name == "report.html"
    assert "Sparse-view &lt;demo&gt;" in text
    assert "<td>31.23</td>" in text and "<td>0.8123</td>" in text
    assert "src='fig/img.png'" in text
    assert "DOE" not in text and "[removed]" in text
    # every linked image resolves relative to the report
    for src in re.findall(r"src='([^']+)'", text):
        Image.open(out / src).verify()
    with pytest.raises(OutputExistsError):
        write_html_report(out, title="again")
    with pytest.raises(InputError, match="not found"):
        write_html_report(tmp_path / "r2", title="x", images=[("missing", tmp_path / "no.png")])
    assert not (tmp_path / "r2" / "report.html").exists()


# ---------------------------------------------------------------- patient-frame rendering
# Markers 40 mm from the volume centre towards the patient's left, anterior and superior (LPS mm
# offsets), and the side of each panel they must appear on in radiological convention: axial seen
# from the feet (patient left on the image right, anterior at the top), coronal from the front
# (left on the right, superior at the top), sagittal from the patient's left (anterior on the left).
_MARKERS = {"left": (40.0, 0.0, 0.0), "anterior": (0.0, -40.0, 0.0), "superior": (0.0, 0.0, 40.0)}
_EXPECT = {"left": {"axial": "right", "coronal": "right"},
           "anterior": {"axial": "top", "sagittal": "left"},
           "superior": {"coronal": "top", "sagittal": "top"}}
_N = 48          # voxels per axis, 2 mm


def _ball_ijk(world_lps, ijk_to_lps):
    """Boolean (i, j, k) array: a 3-voxel-radius ball at an LPS point, from an independent affine."""
    ijk = np.linalg.solve(ijk_to_lps[:3, :3], np.asarray(world_lps) - ijk_to_lps[:3, 3])
    i, j, k = np.ogrid[:_N, :_N, :_N]
    return (i - ijk[0]) ** 2 + (j - ijk[1]) ** 2 + (k - ijk[2]) ** 2 <= 3.2 ** 2


def _centre(aff):
    return aff[:3, :3] @ np.full(3, (_N - 1) / 2) + aff[:3, 3]


def _ras_nifti(tmp_path, offset):
    """RAS NIfTI (i → R, j → A, k → S) written with nibabel; marker placed from its affine."""
    import nibabel as nib
    import medvol.io as mio
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ras[:3, 3] = (-40.0, 10.0, -30.0)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    data = np.zeros((_N, _N, _N), np.float32)
    data[_ball_ijk(_centre(lps) + offset, lps)] = 1000.0
    nib.save(nib.Nifti1Image(data, ras), str(tmp_path / "ras.nii.gz"))
    return mio.read(tmp_path / "ras.nii.gz")


def _lps_nrrd(tmp_path, offset):
    """LPS NRRD of a sagittal-like grid (i → A, j → I, k → L) written with pynrrd."""
    import nrrd
    import medvol.io as mio
    lps = np.eye(4)
    lps[:3, :3] = np.array([[0.0, -2.0, 0.0], [0.0, 0.0, -2.0], [2.0, 0.0, 0.0]]).T
    lps[:3, 3] = (5.0, 60.0, 80.0)
    data = np.zeros((_N, _N, _N), np.float32)
    data[_ball_ijk(_centre(lps) + offset, lps)] = 1000.0
    nrrd.write(str(tmp_path / "lps.nrrd"), data, {
        "space": "left-posterior-superior", "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3], "kinds": ["domain"] * 3})
    return mio.read(tmp_path / "lps.nrrd")


def _oblique(tmp_path, offset):
    """In-memory Volume with a direction matrix 25° / 15° off the axes."""
    from medvol import Volume
    a, b = np.radians(25.0), np.radians(15.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    d = rz @ rx
    lps = np.eye(4)
    lps[:3, :3] = d * 2.0
    lps[:3, 3] = (-20.0, 15.0, 7.0)
    ijk = np.zeros((_N, _N, _N), np.float32)
    ijk[_ball_ijk(_centre(lps) + offset, lps)] = 1000.0
    return Volume(ijk.transpose(2, 1, 0).copy(), spacing=(2.0, 2.0, 2.0), origin=lps[:3, 3],
                  direction=d)


def _marker_side(rgb, box, side, what, tol=2):
    """Assert that the white marker inside ``box`` of ``rgb`` lies on ``side`` of that panel
    (white: every channel above 200 and within ``tol`` of each other)."""
    x0, y0, x1, y1 = box
    sub = rgb[y0:y1, x0:x1]
    bright = (sub.min(-1) > 200) & (np.ptp(sub, axis=-1) <= tol)
    assert bright.sum() > 10, f"{what}: marker not visible"
    ys, xs = np.nonzero(bright)
    cx, cy = xs.mean() / (x1 - x0), ys.mean() / (y1 - y0)
    where = {"right": cx > 0.65, "left": cx < 0.35, "top": cy < 0.35}[side]
    assert where, f"{what}: marker at ({cx:.2f}, {cy:.2f}), want {side}"
    other = {"right": abs(cy - 0.5), "left": abs(cy - 0.5), "top": abs(cx - 0.5)}[side]
    assert other < 0.15, f"{what}: marker off the centre line"


@pytest.mark.parametrize("marker", list(_MARKERS))
@pytest.mark.parametrize("make", [_ras_nifti, _lps_nrrd, _oblique], ids=["ras_nifti", "lps_nrrd",
                                                                          "oblique"])
def test_markers_on_the_correct_side_of_each_panel(tmp_path, make, marker):
    vol = make(tmp_path, np.asarray(_MARKERS[marker]))
    png = orthoslices_png(vol, tmp_path / "o.png", window=(0, 1000), size=192)
    _, panels = render_orthoslices(vol, window=(0, 1000), size=192)
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    by_plane = {q.plane: q for q in panels}
    assert set(by_plane) == {"axial", "coronal", "sagittal"}
    assert by_plane["axial"].letters == ("R", "L", "A", "P")
    for plane, side in _EXPECT[marker].items():
        _marker_side(rgb, by_plane[plane].box, side, f"{marker} marker, {plane} panel", tol=0)


@pytest.mark.parametrize("marker", list(_MARKERS))
@pytest.mark.parametrize("make", [_ras_nifti, _lps_nrrd, _oblique], ids=["ras_nifti", "lps_nrrd",
                                                                          "oblique"])
def test_registration_pngs_markers_on_the_correct_side(tmp_path, make, marker):
    """The register report's checkerboard, overlay and Jacobian panels are in the patient frame:
    a marker in fixed = moving (and a Jacobian bump at the marker) sits on the correct side of
    every panel, before and after."""
    from medvol.registration.run import registration_pngs

    vol = make(tmp_path, np.asarray(_MARKERS[marker]))
    a = vol.numpy().astype(np.float32)
    jac = 1.0 + a / 1000.0                    # 2 (white) at the marker, 1 (grey) elsewhere
    pics = registration_pngs(vol, vol, vol, jac, tmp_path)
    for name, (png, panels) in pics.items():
        rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
        rows = [panels[i:i + 3] for i in range(0, len(panels), 3)]
        assert len(rows) == (1 if name == "jacobian" else 2)
        for row in rows:
            by_plane = {q.plane: q for q in row}
            assert set(by_plane) == {"axial", "coronal", "sagittal"}
            assert by_plane["axial"].letters == ("R", "L", "A", "P")
            assert by_plane["sagittal"].letters == ("A", "P", "S", "I")
            for plane, side in _EXPECT[marker].items():
                _marker_side(rgb, by_plane[plane].box, side, f"{name} {plane} {marker}")


def test_slice_position_in_mm_and_windows(tmp_path):
    from medvol import Volume
    vol = Volume(np.zeros((11, 20, 30), np.float32), spacing=(1.0, 1.0, 2.0),
                 origin=(0.0, -20.0, 100.0), meta={"modality": "CT", "units": "HU",
                                                   "body_part": "HEAD"})
    _, panels = render_orthoslices(vol)
    axial = [q for q in panels if q.plane == "axial"]
    # head CT: a brain row and a bone row, windows as (low, high) = level ∓ width/2
    assert [q.window for q in axial] == [(0.0, 80.0), (-500.0, 1500.0)]
    assert axial[0].position == "S 110.0 mm"            # z index 5 × 2 mm + 100 mm
    cor = next(q for q in panels if q.plane == "coronal")
    assert cor.position in ("A 10.0 mm", "A 11.0 mm")     # y index 9 or 10 (centre 9.5) − 20 mm
    assert default_windows(vol.with_array(vol.array)) == default_windows(vol)
    body = Volume(np.zeros((4, 128, 128), np.float32), spacing=(3.0, 3.0, 3.0),
                  meta={"modality": "CT", "units": "HU"})       # 384 mm field of view, no body part
    assert default_windows(body) == [("soft tissue", (-160.0, 240.0))]
    mr = Volume(np.arange(1000, dtype=np.float32).reshape(10, 10, 10), meta={"modality": "MR"})
    (name, (lo, hi)), = default_windows(mr)
    np.testing.assert_allclose((lo, hi), np.percentile(np.arange(1000), [0.5, 99.5]))


def test_human_headers():
    assert human_header("psnr_db") == "PSNR (dB)"
    assert human_header("spacing_mm") == "Spacing x, y, z (mm)"
    assert human_header("dice_after") == "Dice after"
    assert human_header("max_shift_mm") == "Max shift (mm)"
    assert human_header("Already Human") == "Already Human"


def test_ingest_report(tmp_path):
    from medvol import Volume
    rng = np.random.default_rng(0)
    ct = Volume(rng.normal(40, 20, (12, 64, 64)).astype(np.float32), spacing=(0.5, 0.5, 2.0),
                meta={"modality": "CT", "units": "HU", "label": "s002_CT_1a2b3c4d",
                      "ingest": {"n_slices_in": 12, "resampled": False, "warnings": []}})
    mr = Volume(rng.random((20, 16, 16)).astype(np.float32), direction=np.diag([-1.0, -1.0, 1.0]),
                meta={"modality": "MR", "label": "s003/MR"})
    paths = ingest_report([ct, mr], tmp_path / "out")
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in paths)
    assert names == ["report.html", "s002_CT_1a2b3c4d/qc_montage.png",
                     "s002_CT_1a2b3c4d/qc_orthoslices.png", "s003_MR/qc_montage.png",
                     "s003_MR/qc_orthoslices.png"]
    text = (tmp_path / "out" / "report.html").read_text()
    assert "Spacing x, y, z (mm)" in text and "RAS" in text and "LPS" in text
    for src in re.findall(r"src='([^']+)'", text):
        Image.open(tmp_path / "out" / src).verify()
    # the CT montage has two rows (brain and bone windows): taller than the MR one's single row
    h_ct = Image.open(tmp_path / "out" / "s002_CT_1a2b3c4d" / "qc_montage.png").size[1]
    h_mr = Image.open(tmp_path / "out" / "s003_MR" / "qc_montage.png").size[1]
    assert h_ct > 1.5 * h_mr
    with pytest.raises(OutputExistsError):
        ingest_report([ct], tmp_path / "out")


def test_thin_oblique_slab_is_shown_in_its_acquisition_plane():
    """A 4-slice slab tilted 18.5° (gantry tilt): resampling would cut it to a strip in the axial
    panel, so ``auto`` keeps the acquisition plane (nearest axes) and prints the obliquity."""
    from medvol import Volume
    from medvol.report import to_lps_view
    t = np.radians(18.5)
    d = np.array([[1, 0, 0], [0, np.cos(t), np.sin(t)], [0, -np.sin(t), np.cos(t)]]).T
    slab = Volume(np.full((4, 64, 64), 1000.0, np.float32), spacing=(1.0, 1.0, 1.0), direction=d)
    view = to_lps_view(slab)
    assert not view.resampled and view.obliquity_deg == pytest.approx(18.5)
    assert view.array.shape == (4, 64, 64)
    # world positions stay exact: the view's affine maps the centre voxel where the Volume does
    np.testing.assert_allclose(view.center, slab.index_to_world([31.5, 31.5, 1.5]), atol=1e-9)
    img, panels = render_orthoslices(slab, window=(0, 1000))
    ax = next(q for q in panels if q.plane == "axial")
    x0, y0, x1, y1 = ax.box
    sub = np.asarray(img)[y0:y1, x0:x1]
    assert (sub.min(-1) > 200).mean() > 0.9 and "oblique 18°" in ax.position
    assert to_lps_view(slab, oblique="resample").resampled
