"""Embedded default data set: offline, seeded crops of packaged photos vs. synthetic up-sampling traces.

"real" images are random crops of colour photos that ship inside installed packages; "fake" images are the
same kind of crops pushed through a 2x down/up-sampling "generator" that leaves a periodic trace:

    fake = x + a_blur * (U(Dx) - x) + a_up * (G(Dx) - U(Dx))

with D a 2x2 average pool, U bilinear x2 and G one of five generator families (each with a few fixed random
kernel sets, like separately trained GANs). Everything is seeded per image, so the files are identical for
any worker count. See docs of `generate` for the folder layout.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from .progress import progress

log = logging.getLogger(__name__)

FAMILIES = ("tconv4", "tconv3", "nnconv", "bilconv", "pixshuf")
DIFFICULTY = {
    "easy": dict(a_up=3.0, a_blur=1.0),
    "default": dict(a_up=2.0, a_blur=0.5),
    "hard": dict(a_up=1.0, a_blur=0.3),
}
# Bump whenever the pixels change for the same spec: it is part of `SyntheticSpec.key()`, so stale caches
# in data/synthetic/ are not reused.
GENERATOR_VERSION = 1
SPLITS = ("train", "test", "unseen")
MIN_IMAGE_PX = 16
MIN_CROP_STD = 6.0  # grey levels; flat crops (black sky, retina border) carry no trace and no content
JPEG_QUALITY = (70, 95)  # inclusive range, drawn per image for both classes so quality is no shortcut
# The colour photos that ship inside installed packages, as (package, path inside it). skimage.data's
# astronaut(), chelsea(), ... and sklearn's load_sample_images() return exactly these pixels, but reading the
# files skips seconds of imports. Colour only: greyscale photos gave a perfect shortcut, because per-channel
# kernels colour the fakes.
PHOTOS = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/ihc.png"),  # immunohistochemistry()
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),  # a near-duplicate stereo pair with the next one
    ("skimage", "data/motorcycle_right.png"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)
CHUNK_SIZE = 64  # images per pool task: large enough to amortise pickling, small enough to balance load

# Per-tap noise std (rms over a channel's taps) of each family's kernels, calibrated on 240 crops so that
# a_up = 1 gives about 3.4 grey levels rms of G(Dx) - U(Dx) at 64 px (checked in tests/test_synthetic.py).
# Families whose taps set phase-dependent gains (tconv4, pixshuf) need far less noise than those that filter
# an already up-sampled image (nnconv, bilconv).
NOISE_STD = {"tconv4": 0.0166, "tconv3": 0.041, "nnconv": 0.076, "bilconv": 0.126, "pixshuf": 0.0115}
# tconv3's base kernel alone already deviates from U by 6.9 grey levels rms at 64 px: its output grid sits
# half an output pixel off U's, so even clean kernels leave a one-sided (shift/sharpening) trace. Its noise is
# set to match that, and its whole trace G - U is scaled to the common strength instead of twice as strong.
TRACE_GAIN = {"tconv3": 0.35}

_B4 = np.array([0.25, 0.75, 0.75, 0.25])
_B3 = np.array([0.5, 1.0, 0.5])
_PHASE = (np.array([0.25, 0.75, 0.0]), np.array([0.0, 0.75, 0.25]))  # bilinear x2 taps of even/odd outputs
_IDENTITY3 = np.pad(np.ones((1, 1)), 1)
BASE_KERNELS = {
    "tconv4": np.outer(_B4, _B4),  # transposed conv k4 s2 p1: with this base it *is* bilinear x2
    "tconv3": np.outer(_B3, _B3),  # transposed conv k3 s2 p1 op1: linear interp., half a pixel off
    "nnconv": np.outer(_B3, _B3) / 4,  # nearest x2 then this 3x3 conv is again bilinear x2
    "bilconv": _IDENTITY3,  # bilinear x2 then 3x3 identity
    "pixshuf": np.stack([np.outer(_PHASE[r], _PHASE[c]) for r in (0, 1) for c in (0, 1)]),  # 4 phases
}
_SPLIT_CODE = {split: i for i, split in enumerate(SPLITS)}
_LABEL_STREAM, _KERNEL_STREAM = 101, 202  # keep label/kernel RNG streams apart from per-image streams


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; every field is part of the cache key."""

    image_px: int = 64  # side of every square image, pixels
    n_labelled: int = 2500  # real+fake images in train/ (the data layer splits train/valid)
    n_test: int = 500  # unlabeled images in test/ (half fake, answers kept in test_labels.csv)
    families: tuple[str, ...] = FAMILIES  # generator families used for train/ and test/
    heldout_families: tuple[str, ...] = ()  # families used ONLY in unseen/ (generalisation eval)
    n_unseen: int = 500  # images in unseen/ when heldout_families is non-empty
    kernel_sets: int = 4  # fixed kernel sets per family ("separately trained GANs")
    a_up: float = 2.0  # strength of the periodic up-sampling trace
    a_blur: float = 0.5  # strength of the low-pass (down/up) component
    seed: int = 0

    def __post_init__(self) -> None:
        # YAML/CLI/spec.json hand in lists (or one name); store tuples so the spec stays hashable, key stable.
        for name in ("families", "heldout_families"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        _validate(self)

    def key(self) -> str:
        """Short stable name of this spec (and generator version), e.g. "syn64-0123456789"."""
        fields = dataclasses.asdict(self) | {"generator_version": GENERATOR_VERSION}
        digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
        return f"syn{self.image_px}-{digest}"


def _check_families(name: str, families: tuple[str, ...], allow_empty: bool) -> None:
    """Raise ValueError unless `families` are known, unique and (unless allowed) non-empty."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"SyntheticSpec.{name}: unknown {unknown}; choose from {list(FAMILIES)}")
    if len(set(families)) != len(families):
        raise ValueError(f"SyntheticSpec.{name}: duplicates in {list(families)}")
    if not families and not allow_empty:
        raise ValueError(f"SyntheticSpec.{name}: needs at least one of {list(FAMILIES)}")


def _check_types(spec: SyntheticSpec) -> None:
    """Raise ValueError unless count fields are ints and strengths are numbers."""
    # field.type is the annotation as a string here (from __future__ import annotations).
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if field.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"SyntheticSpec.{field.name}: {value!r} is not an int")
        if field.type == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ValueError(f"SyntheticSpec.{field.name}: {value!r} is not a number")


def _validate(spec: SyntheticSpec) -> None:
    """Raise ValueError naming the first bad field of `spec` and what is allowed."""
    _check_types(spec)
    _check_families("families", spec.families, allow_empty=False)
    _check_families("heldout_families", spec.heldout_families, allow_empty=True)
    overlap = sorted(set(spec.families) & set(spec.heldout_families))
    if overlap:
        raise ValueError(f"SyntheticSpec.heldout_families: {overlap} also in families; they must be disjoint")
    if spec.image_px < MIN_IMAGE_PX or spec.image_px % 2:
        raise ValueError(f"SyntheticSpec.image_px: {spec.image_px}; must be even and >= {MIN_IMAGE_PX}")
    minimum = {"n_labelled": 4, "n_test": 2, "kernel_sets": 1, "n_unseen": 2 if spec.heldout_families else 0}
    for name, low in minimum.items():
        if getattr(spec, name) < low:
            raise ValueError(f"SyntheticSpec.{name}: {getattr(spec, name)}; must be >= {low}")
    if spec.a_up < 0:
        raise ValueError(f"SyntheticSpec.a_up: {spec.a_up}; must be >= 0")
    if not 0 <= spec.a_blur <= 1:
        raise ValueError(f"SyntheticSpec.a_blur: {spec.a_blur}; must be in [0, 1]")


def spec_for(difficulty: str = "default", **overrides: object) -> SyntheticSpec:
    """Spec of a named difficulty (see DIFFICULTY), with any field overridden."""
    if difficulty not in DIFFICULTY:
        raise ValueError(f"difficulty {difficulty!r}: choose from {list(DIFFICULTY)}")
    names = [field.name for field in dataclasses.fields(SyntheticSpec)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"spec_for: unknown field(s) {unknown}; choose from {names}")
    return SyntheticSpec(**(DIFFICULTY[difficulty] | overrides))


# ---------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ImageJob:
    """One image to render: where it goes, its class and (for a fake) which generator made it."""

    split: str  # "train", "test" or "unseen"
    index: int  # index within the split; seeds the image's RNG
    relpath: str  # path under the data set root, e.g. "train/fake/img_000123.jpg"
    label: str  # "real" or "fake"
    family: str | None = None  # generator family of a fake, None for a real
    kernel_set: int = -1  # which fixed kernel set of the family, -1 for a real


def _split_size(spec: SyntheticSpec, split: str) -> int:
    """Number of images in `split` (0 for unseen/ without held-out families)."""
    sizes = {"train": spec.n_labelled, "test": spec.n_test, "unseen": spec.n_unseen}
    return sizes[split] if split != "unseen" or spec.heldout_families else 0


def _relpath(spec: SyntheticSpec, split: str, index: int, label: str) -> str:
    """File path of an image; the name is a neutral id that does not leak the class."""
    if split == "test":
        return f"test/test_{index:06d}.jpg"
    offset = spec.n_labelled if split == "unseen" else 0  # ids stay unique across train/ and unseen/
    return f"{split}/{label}/img_{offset + index:06d}.jpg"


def plan_split(spec: SyntheticSpec, split: str) -> tuple[ImageJob, ...]:
    """Every image of one split, in index order: exactly balanced classes, families cycled over fakes."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: choose from {list(SPLITS)}")
    n = _split_size(spec, split)
    # A shuffled alternation: exact balance, yet neither index parity nor order reveals the class.
    rng = np.random.default_rng([spec.seed, _SPLIT_CODE[split], _LABEL_STREAM])
    is_fake = rng.permutation(np.arange(n) % 2)
    families = spec.heldout_families if split == "unseen" else spec.families
    jobs, n_fake = [], 0
    for index, fake in enumerate(is_fake):
        label = "fake" if fake else "real"
        family, kset = None, -1
        if fake:
            family = families[n_fake % len(families)]
            kset = (n_fake // len(families)) % spec.kernel_sets
            n_fake += 1
        jobs.append(ImageJob(split, index, _relpath(spec, split, index, label), label, family, kset))
    return tuple(jobs)


def plan(spec: SyntheticSpec) -> tuple[ImageJob, ...]:
    """Every image of the data set."""
    return tuple(job for split in SPLITS for job in plan_split(spec, split))


def fake_family(spec: SyntheticSpec, split: str, index: int) -> str | None:
    """Generator family of image `index` (within `split`, not the file id) or None if it is real."""
    return plan_split(spec, split)[index].family


# --------------------------------------------------------------------------------------------- the photos
def photo_path(package: str, relpath: str) -> Path:
    """Path of a file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; it ships photos for synthetic data")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the synthetic data set needs the photos in PHOTOS")
    return path


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple[np.ndarray, ...]:
    """The twelve colour photos in PHOTOS as (H, W, 3) uint8 arrays."""
    photos = []
    for package, relpath in PHOTOS:
        with Image.open(photo_path(package, relpath)) as img:
            photos.append(np.asarray(img.convert("RGB")))
    return tuple(photos)


def _crop_once(photo: np.ndarray, rng: np.random.Generator, image_px: int) -> np.ndarray:
    """Random square crop (1-2x the output side), Lanczos-resized, flipped and colour-jittered."""
    h, w = photo.shape[:2]
    side = min(round(image_px * math.exp(rng.uniform(0.0, math.log(2.0)))), h, w)
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    img = Image.fromarray(photo[top : top + side, left : left + side])
    img = img.resize((image_px, image_px), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Color, ImageEnhance.Contrast, ImageEnhance.Brightness):
        img = enhancer(img).enhance(rng.uniform(0.85, 1.15))
    return np.asarray(img, dtype=np.float64)


def sample_crop(rng: np.random.Generator, image_px: int, max_tries: int = 100) -> np.ndarray:
    """A random crop of a random packaged photo as float (H, W, 3) grey levels; flat crops are redrawn."""
    photos = load_photos()
    for _ in range(max_tries):
        crop = _crop_once(photos[rng.integers(len(photos))], rng, image_px)
        if crop.std() >= MIN_CROP_STD:
            return crop
    raise RuntimeError(f"no crop with std >= {MIN_CROP_STD} in {max_tries} tries")


# ------------------------------------------------------------------------------------------ the generator
@functools.lru_cache(maxsize=256)
def kernel_set(seed: int, family: str, index: int) -> np.ndarray:
    """Fixed per-channel kernels (3, *base shape) of one "trained generator" of `family`."""
    base = BASE_KERNELS[family]
    rng = np.random.default_rng([seed, FAMILIES.index(family), index, _KERNEL_STREAM])
    noise = rng.standard_normal((3, *base.shape))
    # Zero-mean noise keeps each channel's average gain at 1: a global gain change would be undone by the
    # mean/std matching anyway, so all of the strength goes into the phase-dependent (periodic) trace.
    taps = tuple(range(1, noise.ndim))
    noise -= noise.mean(axis=taps, keepdims=True)
    # Unit rms per channel: the trace strength then depends on NOISE_STD, not on the luck of the draw.
    noise /= np.sqrt((noise**2).mean(axis=taps, keepdims=True))
    kernels = base + NOISE_STD[family] * noise
    kernels.setflags(write=False)  # cached and shared: guard against in-place edits
    return kernels


def avg_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 average pool of an (H, W, C) image with even sides."""
    h, w, c = x.shape
    return x.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))


def _tconv2(x: np.ndarray, kernel: np.ndarray, pad: int, out_pad: int) -> np.ndarray:
    """Stride-2 transposed convolution of a 2-d array, as torch.nn.ConvTranspose2d computes it."""
    (h, w), (kh, kw) = x.shape, kernel.shape
    full = np.zeros((2 * (h - 1) + kh, 2 * (w - 1) + kw))
    for a in range(kh):  # scatter: input pixel (i, j) adds kernel * x[i, j] at output (2i + a, 2j + b)
        for b in range(kw):
            full[a : a + 2 * h - 1 : 2, b : b + 2 * w - 1 : 2] += kernel[a, b] * x
    out_h, out_w = 2 * (h - 1) - 2 * pad + kh + out_pad, 2 * (w - 1) - 2 * pad + kw + out_pad
    return full[pad : pad + out_h, pad : pad + out_w]


def _correlate_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-d cross-correlation with an odd-sized kernel, zero-padded to keep the shape (like nn.Conv2d)."""
    (h, w), (kh, kw) = x.shape, kernel.shape
    padded = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2)))
    out = np.zeros((h, w))
    for a in range(kh):
        for b in range(kw):
            out += kernel[a, b] * padded[a : a + h, b : b + w]
    return out


def _bilinear2(x: np.ndarray) -> np.ndarray:
    """Bilinear x2 up-sampling (align_corners=False) of a 2-d array, exact away from the border."""
    return _tconv2(x, BASE_KERNELS["tconv4"], pad=1, out_pad=0)


def _generate_channel(family: str, low: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """G: x2 up-sampling of one 2-d channel by a generator family with one channel's kernel."""
    if family == "tconv4":
        return _tconv2(low, kernel, pad=1, out_pad=0)
    if family == "tconv3":
        return _tconv2(low, kernel, pad=1, out_pad=1)
    if family == "nnconv":
        return _correlate_same(low.repeat(2, axis=0).repeat(2, axis=1), kernel)
    if family == "bilconv":
        return _correlate_same(_bilinear2(low), kernel)
    if family == "pixshuf":
        out = np.empty((2 * low.shape[0], 2 * low.shape[1]))
        for phase, phase_kernel in enumerate(kernel):  # PixelShuffle(2): phase (r, c) fills out[r::2, c::2]
            out[phase // 2 :: 2, phase % 2 :: 2] = _correlate_same(low, phase_kernel)
        return out
    raise ValueError(f"family {family!r}: choose from {list(FAMILIES)}")


def upsample_pair(low: np.ndarray, family: str, kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U(low) and G(low) for an (h, w, 3) image, padded before and cropped after so borders are clean."""
    pad = 2
    padded = np.pad(low, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    h, w = low.shape[:2]
    crop = (slice(2 * pad, 2 * pad + 2 * h), slice(2 * pad, 2 * pad + 2 * w))
    up = np.stack([_bilinear2(padded[..., c])[crop] for c in range(3)], axis=-1)
    gen = np.stack([_generate_channel(family, padded[..., c], kernels[c])[crop] for c in range(3)], axis=-1)
    return up, up + TRACE_GAIN.get(family, 1.0) * (gen - up)


def match_moments(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`image` with each channel's mean and std set to those of `reference`."""
    mean, std = image.mean(axis=(0, 1)), image.std(axis=(0, 1))
    ref_mean, ref_std = reference.mean(axis=(0, 1)), reference.std(axis=(0, 1))
    return (image - mean) / np.maximum(std, 1e-6) * ref_std + ref_mean


def make_fake(x: np.ndarray, family: str, kernels: np.ndarray, a_up: float, a_blur: float) -> np.ndarray:
    """fake = x + a_blur (U(Dx) - x) + a_up (G(Dx) - U(Dx)), moment-matched to x (float, unclipped)."""
    up, gen = upsample_pair(avg_pool2(x), family, kernels)
    return match_moments(x + a_blur * (up - x) + a_up * (gen - up), x)


def render(spec: SyntheticSpec, job: ImageJob) -> bytes:
    """JPEG bytes of one image; depends only on (spec, job), never on which worker renders it."""
    rng = np.random.default_rng([spec.seed, _SPLIT_CODE[job.split], job.index])
    x = sample_crop(rng, spec.image_px)
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))  # drawn before the class matters
    if job.family is not None:
        kernels = kernel_set(spec.seed, job.family, job.kernel_set)
        x = make_fake(x, job.family, kernels, spec.a_up, spec.a_blur)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- the files
def _render_chunk(spec: SyntheticSpec, jobs: Sequence[ImageJob], out_dir: Path) -> int:
    """Render and write a chunk of images (runs in a worker process); returns how many."""
    for job in jobs:
        (out_dir / job.relpath).write_bytes(render(spec, job))
    return len(jobs)


def _render_all(spec: SyntheticSpec, jobs: Sequence[ImageJob], out_dir: Path, workers: int) -> None:
    """Render every job into `out_dir`, in `workers` processes (in this process when workers <= 1)."""
    chunks = [jobs[i : i + CHUNK_SIZE] for i in range(0, len(jobs), CHUNK_SIZE)]
    load_photos()  # load once here: forked workers inherit the cache instead of each decoding the photos
    if workers <= 1:
        for chunk in progress(chunks, len(chunks), min_items=0):
            _render_chunk(spec, chunk, out_dir)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_render_chunk, spec, chunk, out_dir) for chunk in chunks]
        for future in progress(as_completed(futures), len(futures), min_items=0):
            future.result()  # re-raise a worker's error here


def _write_csv(path: Path, rows: Iterable[tuple[str, object]]) -> None:
    """Write an `id,label` CSV."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("id", "label"))
        writer.writerows(rows)


def _write_tables(spec: SyntheticSpec, out_dir: Path, jobs: Sequence[ImageJob]) -> dict[str, dict[str, int]]:
    """Write test_labels.csv, sample_submission.csv and spec.json (last: the completeness marker)."""
    test = [job for job in jobs if job.split == "test"]
    _write_csv(out_dir / "test_labels.csv", ((Path(j.relpath).stem, j.label) for j in test))
    _write_csv(out_dir / "sample_submission.csv", ((Path(j.relpath).stem, 0.5) for j in test))
    counts: dict[str, dict[str, int]] = {}
    for job in jobs:
        counts.setdefault(job.split, {"real": 0, "fake": 0})[job.label] += 1
    meta = {
        "key": spec.key(),
        "generator_version": GENERATOR_VERSION,
        "spec": dataclasses.asdict(spec),
        "counts": counts,
    }
    (out_dir / "spec.json").write_text(json.dumps(meta, indent=2) + "\n")
    return counts


def is_complete(root: Path) -> bool:
    """True if `root` is a finished data set (spec.json is written last)."""
    return (Path(root) / "spec.json").is_file()


def read_spec(root: Path) -> SyntheticSpec:
    """The spec a complete data set at `root` was generated from."""
    return SyntheticSpec(**json.loads((Path(root) / "spec.json").read_text())["spec"])


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename the finished `tmp` folder to `root`, replacing an incomplete `root` but never a complete one."""
    if root.exists() and not is_complete(root):
        log.warning("removing incomplete data set %s", root)
        shutil.rmtree(root)
    try:
        os.replace(tmp, root)
    except OSError:
        if not is_complete(root):
            raise
        log.info("%s was completed by another process; keeping it", root)  # a concurrent generate() won


def generate(spec: SyntheticSpec, root: Path, workers: int = 2) -> Path:
    """Write the data set of `spec` to `root` atomically and return `root`.

    Layout: train/{real,fake}/img_NNNNNN.jpg, test/test_NNNNNN.jpg, test_labels.csv (id,label with the hidden
    answers), sample_submission.csv (id,label=0.5), unseen/{real,fake}/ (only with heldout_families) and
    spec.json, written last. Everything is built in a temporary sibling folder, then renamed into place.
    """
    root = Path(root)
    if is_complete(root):
        raise FileExistsError(f"{root} is a complete data set; use ensure_synthetic() to reuse it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the data set should be readable like any other folder
        jobs = plan(spec)
        for folder in sorted({Path(job.relpath).parent for job in jobs}):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        log.info("generating %d synthetic images (%s) in %s", len(jobs), spec.key(), root)
        _render_all(spec, jobs, tmp, workers)
        counts = _write_tables(spec, tmp, jobs)
        _move_into_place(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("synthetic data set ready: %s %s", root, counts)
    return root


def ensure_synthetic(spec: SyntheticSpec, data_dir: Path = Path("data"), workers: int = 2) -> Path:
    """data_dir/synthetic/<spec.key()>, generated first unless a complete copy is already there."""
    root = Path(data_dir) / "synthetic" / spec.key()
    if is_complete(root):
        log.info("reusing synthetic data set %s", root)
        return root
    return generate(spec, root, workers=workers)


# ---------------------------------------------------------------------------------------------- "videos"
def write_videos(root: Path, n_videos: int = 40, frames: int = 8, image_px: int = 48, a_up: float = 1.0,
                 a_blur: float = 0.3, seed: int = 0) -> Path:
    """A frame data set like DFDC face crops: ``<label>/<video id>_<frame>_0.png``, half the videos fake.

    Each video is one photo crop seen through small shifts (frames), with its own colour cast, so frames of one
    video look alike and unlike other videos; a fake video's frames carry the generator trace (make_fake with
    ``a_up``/``a_blur``). A model can score well on a random split by recognising videos: what group splits
    (data.group_from_name: '^([a-z]+)_') are for. Lossless PNGs, so the trace is not re-compressed away.
    """
    root = Path(root)
    shift = 8
    for v in range(n_videos):
        rng = np.random.default_rng([seed, v, 17])
        label = "fake" if v % 2 else "real"
        video = "".join(chr(ord("a") + c) for c in rng.integers(0, 26, 12))
        source = sample_crop(rng, image_px + shift) * rng.uniform(0.7, 1.3, 3)
        kernels = kernel_set(seed, "tconv4", v % 4)
        for f in range(frames):
            top, left = rng.integers(0, shift + 1, 2)
            x = source[top: top + image_px, left: left + image_px]
            if label == "fake":
                x = make_fake(x, "tconv4", kernels, a_up, a_blur)
            x = x + rng.normal(0.0, 2.0, x.shape)
            dest = root / label / f"{video}_{f}_0.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8)).save(dest)
    return root
