"""Image degradations real images go through: JPEG re-compression, blur, down-then-up scaling.

Used twice: as a training augmentation (Wang et al. 2020, "CNN-generated images are surprisingly easy to
spot... for now": blur sigma in [0, 3] and JPEG quality in [30, 100], each with a probability) and to measure
how a finished detector degrades (robustness.py). Pure PIL/numpy; the fastai transform wraps them.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageFilter

# The robustness table's columns: name -> (kind, parameter)
DEGRADATIONS = {
    "jpeg90": ("jpeg", 90), "jpeg70": ("jpeg", 70), "jpeg50": ("jpeg", 50),
    "blur1": ("blur", 1.0), "blur2": ("blur", 2.0), "rescale0.5": ("rescale", 0.5),
}


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG at ``quality`` and decode again."""
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


def blur(img: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation ``sigma`` pixels (0 = unchanged)."""
    return img if sigma <= 0 else img.filter(ImageFilter.GaussianBlur(radius=sigma))


def rescale(img: Image.Image, factor: float) -> Image.Image:
    """Down-scale by ``factor`` then back up to the original size (bilinear both ways)."""
    w, h = img.size
    small = img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def apply(img: Image.Image, name: str) -> Image.Image:
    """One named degradation from DEGRADATIONS."""
    kind, value = DEGRADATIONS[name]
    return {"jpeg": jpeg, "blur": blur, "rescale": rescale}[kind](img, value)


def random_degrade(img: Image.Image, p: float, rng: random.Random) -> Image.Image:
    """Training augmentation: blur (sigma ~ U(0, 3)) with probability p, then JPEG (quality ~ U(30, 100)) with p."""
    if rng.random() < p:
        img = blur(img, rng.uniform(0.0, 3.0))
    if rng.random() < p:
        img = jpeg(img, rng.randint(30, 100))
    return img
