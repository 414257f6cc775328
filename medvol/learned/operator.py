"""The operator object PD-UNet / LPD call: forward projection, adjoint, Hann FBP, norm."""
from __future__ import annotations

__all__ = ["TomoOperator"]


class TomoOperator:
    """Wrap a :class:`medvol.kernels.Projector` for ``model(sinogram, operator)``.

    ``op(x)``: ``(B, ny, nx) → (B, views, n_det)``; ``op.T(y)``: adjoint; ``op.fbp(y)``:
    Hann-filtered back-projection (:func:`medvol.recon.fbp`, pixel-driven, torch and therefore
    differentiable w.r.t. ``y``) in image units; ``op.norm()``: ‖A‖ (power method, cached).
    """

    def __init__(self, projector, *, filter: str = "hann"):
        self.A = projector
        self.filter = filter
        self.geometry = projector.geometry
        self.domain_shape = tuple(projector.domain_shape)
        self.range_shape = tuple(projector.range_shape)
        self._norm = None

    @classmethod
    def from_geometry(cls, geometry, image_shape, spacing=(1.0, 1.0)) -> "TomoOperator":
        from medvol.kernels import Projector

        return cls(Projector(geometry, tuple(image_shape), tuple(spacing), backend="torch",
                             check_finite=False))

    def __call__(self, x):
        return self.A(x)

    @property
    def T(self):
        return self.A.T

    def fbp(self, y):
        from medvol.recon.fbp import fbp

        return fbp(self.A, y, filter=self.filter)

    def norm(self) -> float:
        if self._norm is None:
            self._norm = float(self.A.norm(n_iter=30))
        return self._norm
