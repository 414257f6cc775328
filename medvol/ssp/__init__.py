"""SparseSSP: fluorescence prediction from sparse transmitted-light z-slices.

Modules: :mod:`.sparsify` (global slice set, prefix upsampling), :mod:`.infer` (Gaussian
sliding-window stitching, MONAI), :mod:`.metrics` (Pearson r, MSE, MAE, R², SSIM), :mod:`.data`
(ISL field, OME-TIFF, 3D SURROGATE), :mod:`.train` (training/export/evaluation),
:mod:`.predict` (stack → OME-TIFF + NRRD). Heavy libraries are imported inside functions.
"""
