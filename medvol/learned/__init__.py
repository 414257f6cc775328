"""Learned sinogram-domain reconstruction: PD-UNet and Learned Primal-Dual.

Data (real CT/MRI slices, the ×16 tasks), resumable training, safetensors weights and inference
for CT sinograms and radial MRI k-space. Networks live in :mod:`medvol.models.pdunet`.
"""
from .inference import kspace_to_model_input, pdunet_reconstruct, pdunet_reconstruct_kspace
from .operator import TomoOperator
from .weights import PRETRAINED, build_model, load_pretrained, load_weights, save_weights

__all__ = ["TomoOperator", "pdunet_reconstruct", "pdunet_reconstruct_kspace",
           "kspace_to_model_input", "load_pretrained", "load_weights", "save_weights",
           "build_model", "PRETRAINED"]
