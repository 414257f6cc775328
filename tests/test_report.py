"""PNG panels and the HTML run report."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from medvol.errors import InputError, OutputExistsError
from medvol.report import (comparison_png, orthoslices_png, resolve_window, to_uint8,
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
    # coronal panel: 60 mm wide × 60 mm tall at 2 px/mm → 120 × 120, superior row at the top
    # find bright rows (the last z slice) — they must sit just below the title, not at the bottom
    bright_rows = np.where((im == 255).sum(axis=1) > 100)[0]
    assert bright_rows.size > 0 and bright_rows.min() < 40
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
