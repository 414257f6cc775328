"""Registry entries of medvol's built-in learned models (imported by the registry on first use).

=============  ==========================================  =======================================
name           network                                     task
=============  ==========================================  =======================================
``pdunet``     :class:`medvol.models.pdunet.PDUNet`         sparse-view CT / radial MRI (sinograms)
``lpd``        :class:`medvol.models.pdunet.LearnedPrimalDual`  same (baseline)
``micdir``     :class:`medvol.models.micdir.MICDIR`         deformable MRI registration
``voxelmorph`` :class:`medvol.models.voxelmorph.VoxelMorphNet`  same (baseline)
=============  ==========================================  =======================================
"""
from __future__ import annotations

from .registry import register_model


def _pdunet(cfg):
    from medvol.models.pdunet import PDUNet

    return PDUNet(**vars(cfg))


def _lpd(cfg):
    from medvol.models.pdunet import LearnedPrimalDual

    return LearnedPrimalDual(**vars(cfg))


def _micdir(cfg):
    from medvol.models.micdir import MICDIR

    return MICDIR(cfg)


def _voxelmorph(cfg):
    from medvol.models.voxelmorph import VoxelMorphNet

    return VoxelMorphNet(cfg)


def _diffusion(cfg):
    from medvol.models.diffusion import build_diffusion_unet

    return build_diffusion_unet(cfg)


def _register() -> None:
    from medvol.models.micdir import MICDIRConfig
    from medvol.models.pdunet import LPDConfig, PDUNetConfig
    from medvol.models.voxelmorph import VoxelMorphConfig

    register_model("pdunet", config_cls=PDUNetConfig, builder=_pdunet, task="sinogram-recon",
                   description="Primal-Dual UNet (Ernst et al. 2021), sparse-view CT / radial MRI")
    register_model("lpd", config_cls=LPDConfig, builder=_lpd, task="sinogram-recon",
                   description="Learned Primal-Dual (Adler & Öktem 2018) baseline")
    register_model("micdir", config_cls=MICDIRConfig, builder=_micdir, task="registration",
                   description="MICDIR deformable registration (Chatterjee et al. 2022)")
    register_model("voxelmorph", config_cls=VoxelMorphConfig, builder=_voxelmorph,
                   task="registration", description="VoxelMorph (MONAI) registration baseline")
    from medvol.models.diffusion import DiffusionConfig

    register_model("diffusion", config_cls=DiffusionConfig, builder=_diffusion,
                   task="ct-slice-prior", description="VP/DDPM ε-network on 2D CT slices "
                   "(MONAI DiffusionModelUNet), prior of DDS / DiffusionMBIR")


_register()
