"""Few-label fine-tuning harness: Dice scoring at the native grid, the baseline's block mask."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medvol.pretrain.finetune import evaluate_dice  # noqa: E402
from medvol.pretrain.masked import block_mask  # noqa: E402


class _Fixed(torch.nn.Module):
    """Ignores its input and returns fixed 3-class logits."""

    def __init__(self, labels):
        super().__init__()
        self.logits = torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.int64), 3
                                                  ).permute(3, 0, 1, 2)[None].float() * 10

    def forward(self, x):
        return self.logits


def _pair(shape=(12, 16, 10), seed=0):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    lab[3:8, 4:9, 2:6] = 1
    lab[3:8, 9:14, 2:6] = 2
    return rng.random(shape).astype(np.float32), lab


def test_dice_is_one_for_the_truth_and_matches_a_hand_count():
    img, lab = _pair()
    assert evaluate_dice(_Fixed(lab), [(img, lab)], grid=lab.shape)[0] == pytest.approx(1.0)
    pred = lab.copy()
    pred[3:8, 4:6, 2:6] = 0                      # lose 2 of 5 columns of label 1
    d1 = 2 * 60 / (100 + 60)                     # |A∩B| = 60 of |A| = 100, |B| = 60
    got = evaluate_dice(_Fixed(pred), [(img, lab)], grid=lab.shape)[0]
    assert got == pytest.approx((d1 + 1.0) / 2)
    empty = np.zeros_like(lab)
    assert evaluate_dice(_Fixed(empty), [(img, lab)], grid=lab.shape)[0] == pytest.approx(0.0)


def test_block_mask_hides_whole_blocks_at_the_requested_rate():
    rng = np.random.default_rng(0)
    m = block_mask((32, 48, 32), 8, 0.5, rng)
    assert m.shape == (32, 48, 32)
    blocks = m.reshape(4, 8, 6, 8, 4, 8).transpose(0, 2, 4, 1, 3, 5).reshape(96, -1)
    assert np.all(blocks.all(1) | ~blocks.any(1))           # each 8³ block all or nothing
    rates = [block_mask((64, 64, 64), 8, 0.3, rng).mean() for _ in range(20)]
    assert np.mean(rates) == pytest.approx(0.3, abs=0.03)
