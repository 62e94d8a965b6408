"""NPR: the network sees the up-sampling trace of an image instead of the image (``input: npr``).

Tan et al., CVPR 2024, "Rethinking the Up-Sampling Operations in CNN-based Generative Network for Generalizable
Deepfake Detection" (reference code: chuangchuangtan/NPR-DeepfakeDetection). Every up-sampling generator
(transposed conv, nearest or bilinear x2 then conv, pixel shuffle) makes the four pixels of each 2x2 cell
depend on each other; the "neighbouring pixel relationships" residual ``x - up(down(x))`` (nearest down-sampling
by 2, nearest up-sampling back: each pixel minus the top-left pixel of its cell) keeps exactly those relations and
removes the image content. It is only meaningful on the pixel grid the generator wrote: resampling (resize,
rotation, zoom) before it erases the trace, so ``input: npr`` crops instead of resizing, at even offsets
(``callbacks.GridCrop``).

Two ways in:
- ``input: npr`` on any timm model: ``with_npr_input`` puts ``NPRInput`` in front of the model's first
  convolution (its ``pretrained_cfg['first_conv']``), so the fastai body/head split, Grad-CAM hooks, TTA,
  precision, channels_last and export all see the model they know.
- ``arch: npr_resnet``: the paper's own network, registered with timm (``timm.create_model("npr_resnet")``).
"""

from __future__ import annotations

import timm
import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import Bottleneck
from torch import nn

from .config import NPR_ARCH

NPR_SCALE = 2.0 / 3.0  # the reference code feeds NPR * 2/3 to the first convolution


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """``x - up(down(x))`` with nearest re-sampling by 2: each pixel minus the top-left pixel of its 2x2 cell.

    Odd sides: the last row/column is compared with the cell it would start (its own value: residual 0).
    """
    h, w = x.shape[-2:]
    anchor = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return x - anchor[..., :h, :w]


class NPRInput(nn.Module):
    """The NPR residual as a parameter-free model prefix, scaled as in the reference code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return npr_residual(x) * NPR_SCALE


def with_npr_input(model: nn.Module) -> nn.Module:
    """Put NPRInput in front of ``model``'s first convolution (named by its timm pretrained config); in place."""
    name = model.pretrained_cfg.get("first_conv")
    if not name:
        raise ValueError(f"{type(model).__name__} names no first_conv in its pretrained config: "
                         "input: npr cannot find where the image enters")
    names = name if isinstance(name, (list, tuple)) else [name]
    parent_name, _, leaf = names[0].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    first = getattr(parent, leaf)
    if not isinstance(first, nn.Sequential) or not isinstance(first[0], NPRInput):
        setattr(parent, leaf, nn.Sequential(NPRInput(), first))
    return model


def for_input(model: nn.Module, input: str, arch: str) -> nn.Module:
    """``model`` as ``input`` asks: the NPR prefix for ``input: npr``, except on npr_resnet (built in)."""
    return with_npr_input(model) if input == "npr" and arch != NPR_ARCH else model


class NPRResNet(nn.Module):
    """The paper's detector: NPR input, ResNet-50 cut after layer2 (3x3 stride-2 stem, maxpool, 3 + 4
    bottlenecks), average pool, one linear layer; about 1.44 M parameters with one logit. timm's model
    interface (forward_features / forward_head / reset_classifier), so fastai's vision_learner builds it."""

    def __init__(self, num_classes: int = 1, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0):
        super().__init__()
        self.npr = NPRInput()
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _bottlenecks(64, 64, blocks=3, stride=1)
        self.layer2 = _bottlenecks(256, 128, blocks=4, stride=2)
        self.num_features = 128 * Bottleneck.expansion
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes, global_pool)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(self.npr(x)))))
        return self.layer2(self.layer1(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = nn.functional.dropout(self.global_pool(x), p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _bottlenecks(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    out = planes * Bottleneck.expansion
    down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride=stride, downsample=down)]
    layers += [Bottleneck(out, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


# timm reads these when the entry point below is registered: no weights (trained from scratch, as in the
# paper), ImageNet statistics (the reference normalises that way), pool_size so fastai pools the features.
default_cfgs = generate_default_cfgs({"npr_resnet": {
    "url": "", "num_classes": 1, "input_size": (3, 224, 224), "pool_size": (28, 28), "crop_pct": 1.0,
    "interpolation": "nearest", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
    "first_conv": "conv1", "classifier": "fc"}})


@register_model
def npr_resnet(pretrained: bool = False, **kwargs) -> NPRResNet:
    """timm entry point: ``timm.create_model("npr_resnet", num_classes=...)``."""
    if pretrained:
        raise ValueError("npr_resnet has no pretrained weights: it trains from scratch (set pretrained: false)")
    return timm.models.build_model_with_cfg(NPRResNet, "npr_resnet", pretrained=False, **kwargs)
