"""Small fastai callbacks. Anything pickled into an exported learner must live in an importable module."""

from __future__ import annotations

import random

import torch
from fastai.callback.core import Callback
from fastai.vision.augment import RandTransform
from fastai.vision.core import PILImage
from fastcore.basics import fastuple
from fasttransform import Transform
from PIL import Image


class CPUAutocast(Callback):
    """bf16 autocast for the forward pass and loss on CPU.

    Why: fastai's ``to_fp16`` hard-codes CUDA autocast and on a CPU only warns and runs fp32. On CPUs with
    AVX-512 BF16 / AMX, bf16 autocast trained resnet18 at 128 px 1.7x faster than fp32 here. bf16 keeps
    fp32's exponent range, so no loss scaling is needed.
    """

    order = 10

    def before_batch(self) -> None:
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        self.autocast.__enter__()

    def after_cancel_batch(self) -> None:
        self._exit()

    def _exit(self) -> None:
        if getattr(self, "autocast", None) is not None:
            self.autocast.__exit__(None, None, None)
            self.autocast = None

    def after_pred(self) -> None:
        # The loss is computed outside autocast on fp32 predictions (as fastai's MixedPrecision does),
        # so metrics and TTA probabilities are full precision.
        self._exit()
        self.learn.pred = _to_float(self.learn.pred)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: training diverged. ``reason`` keeps the message fastai rewrites."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StopOnNonFinite(Callback):
    """Fail the run, with where and what to try, as soon as the loss is NaN or infinite.

    Why: fastai's TerminateOnNaN only cancels the fit quietly, and the run would then be exported and scored
    as if it had trained.
    """

    order = 95  # after the loss and any callback that changes it

    def after_loss(self) -> None:
        loss = self.learn.loss
        if not torch.isfinite(loss).all():
            phase = "training" if self.training else "validation"
            raise NonFiniteLoss(f"loss became {float(loss.detach().float().mean())} at epoch {self.epoch} batch "
                                f"{self.iter} ({phase}); lower lr or use precision fp32")


def _to_float(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.float()
    if isinstance(x, tuple | list):
        return type(x)(_to_float(t) for t in x)
    return x


def bf16_supported() -> bool:
    """True if this CPU runs bf16 matmuls natively (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class RandomDegrade(Transform):
    """Item transform: random blur + JPEG re-compression on training images only (split_idx 0).

    Lives here (an importable module) because it is pickled into exported learners.
    """

    split_idx = 0
    order = 1  # after PIL loading, before Resize (order 1 in fastai) sees the image

    def __init__(self, p: float = 0.5):
        self.p = p

    def encodes(self, img: PILImage) -> PILImage:
        from .degrade import random_degrade

        return PILImage(random_degrade(img, self.p, random))  # fastai's set_seed seeds `random`


class GridCrop(RandTransform):
    """Crop to ``size`` without resampling, at even offsets (random in training, central in validation).

    Even offsets keep the phase of the 2x2 cells NPR compares, so training and validation crops see the
    generator's grid the same way. Images smaller than ``size`` are padded with zeros (NPR 0 there).
    """

    split_idx, order = None, 1

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def before_call(self, b, split_idx: int) -> None:
        w, h = b.size if isinstance(b, Image.Image) else b[0].size
        spare_w, spare_h = max(w - self.size, 0) // 2, max(h - self.size, 0) // 2  # in cells of 2 px
        if split_idx:  # validation / test
            self.tl = fastuple(2 * (spare_w // 2), 2 * (spare_h // 2))
        else:
            self.tl = fastuple(2 * random.randint(0, spare_w), 2 * random.randint(0, spare_h))

    def encodes(self, x: Image.Image) -> Image.Image:
        if x.size == (self.size, self.size):
            return x
        return x.crop_pad(self.size, self.tl, orig_sz=fastuple(*x.size))


class AutoAugmentTfm(Transform):
    """torchvision's AutoAugment (ImageNet policy) on training images only."""

    split_idx = 0
    order = 2

    def __init__(self):
        from torchvision.transforms import AutoAugment, AutoAugmentPolicy

        self.aug = AutoAugment(AutoAugmentPolicy.IMAGENET)

    def encodes(self, img: PILImage) -> PILImage:
        return PILImage(self.aug(img))


class TruncatedCosine:
    """lr = lr0 * (1 + cos(pi * t * frac)) / 2 over the run's progress t in [0, 1]: cosine annealing with
    T_max = run length / frac. ``begin`` is where a resumed fit starts (fastai's pos restarts at 0).

    A class, not a lambda, so a learner holding it can be pickled.
    """

    def __init__(self, lr: float, frac: float, begin: float = 0.0):
        self.lr, self.frac, self.begin = lr, frac, begin

    def __call__(self, pos: float) -> float:
        import math

        t = self.begin + pos * (1 - self.begin)
        return self.lr * (1 + math.cos(math.pi * t * self.frac)) / 2
