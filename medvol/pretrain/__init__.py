"""medvol.pretrain — self-supervised pre-training of MONAI backbones on unlabelled volumes.

* :mod:`.voco` — VoCo volume-contrastive pre-training (Wu et al., CVPR 2024; v1 repository
  recipe): base-crop grid, overlap labels, ReLU-cosine logits, the pos/neg/reg losses, EMA
  teacher, the resumable job :func:`~.voco.pretrain_voco` (``medvol pretrain voco``).
* :mod:`.masked` — masked-volume reconstruction, the simple baseline.
* :mod:`.finetune` — few-label hippocampus segmentation (BasicUNet) used to score both.
* :mod:`.data` — the unlabelled pool and the labelled subjects (``splits.json``).
* :mod:`.models` — registry entries ``voco_cnn``, ``voco_swin``, ``mvr_cnn``.

Importing this package is cheap (torch and MONAI load inside the functions).
"""
