"""SparseSSP: fluorescence prediction from sparse transmitted-light z-slices.

Modules: :mod:`.sparsify` (global slice set, prefix upsampling), :mod:`.patches` (training crops
inside a split), :mod:`.infer` (Gaussian
sliding-window stitching, MONAI), :mod:`.metrics` (Pearson r, MSE, MAE, R², SSIM), :mod:`.data`
(ISL field, OME-TIFF, 3D SURROGATE), :mod:`.train` (training/export/evaluation),
:mod:`.predict` (stack → OME-TIFF + NRRD), :mod:`.models` (registry entries ``sparsessp``,
``fnet3d``; networks in :mod:`medvol.models.sparsessp`). Heavy libraries are imported inside functions.
"""
