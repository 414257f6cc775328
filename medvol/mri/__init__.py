"""Radial MRI: trajectories, the NUFFT forward model (functions and the :class:`RadialNUFFT`
operator), k-space → sinogram, gridding. The ``medvol recon`` k-space job is
:func:`medvol.recon.kspace.reconstruct_kspace`."""
from .nufft import RadialNUFFT
from .radial import (GOLDEN_ANGLE, RadialTrajectory, default_n_det, density_compensation,
                     golden_angle_trajectory, gridding_recon, kspace_sinogram_operator,
                     kspace_to_sinogram, nufft_adjoint,
                     nufft_forward, radial_kspace, read_radial_kspace, sinogram_geometry,
                     uniform_trajectory)

__all__ = ["GOLDEN_ANGLE", "RadialTrajectory", "uniform_trajectory", "golden_angle_trajectory",
           "nufft_forward", "nufft_adjoint", "radial_kspace", "kspace_to_sinogram",
           "sinogram_geometry", "density_compensation", "gridding_recon", "read_radial_kspace",
           "default_n_det", "RadialNUFFT", "kspace_sinogram_operator"]
