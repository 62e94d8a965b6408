"""Typed configuration: frozen dataclasses loaded from YAML that reject unknown keys.

A run is fully described by a ``TrainConfig`` (which holds its ``DataConfig``); the resolved config is
written into every run folder, so a run can be reproduced from its folder alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "folder", "csv", "kaggle_competition", "kaggle_dataset")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
RECIPES = ("fine_tune", "effnetv2_bce")  # see learner.py (fastai fine_tune) and bce_recipe.py
AUGMENTS = ("flip", "fastai", "none")
TRACES_ARCH = "em_traces"  # not a timm model: EM convolutional traces + a scikit-learn classifier (traces.py)
CLASSIFIERS = ("svc", "rf", "logreg", "hgb")  # em_traces: SVC, random forest, logistic regression, hist. boosting
EM_MODES = ("gaussian", "mixture")  # em_traces: Gaussian weights | Gaussian + uniform outlier mixture (the paper)
INPUTS = ("rgb", "npr")  # what the network sees: the image | its NPR up-sampling residual (npr.py)
NPR_ARCH = "npr_resnet"  # the NPR paper's own network (npr.py): NPR input built in


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled images come from and which class is the positive ("fake") one."""

    source: str = "synthetic"  # one of SOURCES
    path: str | None = None  # folder root (class sub-folders, optional test/) or CSV file
    images_dir: str | None = None  # csv source: folder the CSV's file names are relative to
    fn_col: str = "filename"  # csv source: column with image file names
    label_col: str = "label"  # csv source: column with class names
    competition: str | None = None  # kaggle_competition: slug, e.g. "deepfake-detection"
    dataset: str | None = None  # kaggle_dataset: handle "owner/name"
    subdir: str | None = None  # kaggle sources: folder inside the download holding the classes
    label_from_name: str | None = None  # folder source: a regex whose first group, searched in each file's
    # stem, is its class (e.g. "(.)$": the last character, as in the reference report); None: sub-folder names
    positive_class: str = "fake"  # class whose probability is predicted and scored
    valid_pct: float = 0.2  # fraction of labelled images held out for validation, stratified
    test_pct: float = 0.0  # fraction held out as a labelled test set, scored once after training and never
    # used to pick anything (the reference report's 70/15/15: valid_pct 0.15, test_pct 0.15)
    split_seed: int = 42  # seed of the one fixed split every run of this data set shares
    group_from_name: str | None = None  # a regex whose first group, searched in each file's stem, is the image's
    # group (e.g. "^([^_]+)_" for <video id>_<frame>_<face>.jpg): every split keeps a group on one side
    group_col: str | None = None  # csv source: the column holding each image's group (video, identity, source)
    folds: int = 0  # K >= 2: K-fold cross-validation (a run trains K models; its validation predictions are
    # out-of-fold over every labelled image, its test predictions the mean of the K); 0: one fixed split
    fold: int | None = None  # with folds: the one fold this run validates on (set by the fold runner per fold)
    difficulty: str = "default"  # synthetic: easy | default | hard
    synthetic_n: int = 2500  # synthetic: labelled images to generate
    synthetic_px: int = 64  # synthetic: image side, pixels
    synthetic_heldout: list = field(default_factory=list)  # synthetic: generator families kept out of
    # training and used only in unseen/ (generalisation to unseen generators), e.g. [nnconv, bilconv]
    data_dir: str = "data"  # where generated data, caches and splits live

    def __post_init__(self) -> None:
        _check_choice("source", self.source, SOURCES)
        if not 0.0 < self.valid_pct < 1.0:
            raise ConfigError(f"data.valid_pct must be between 0 and 1, got {self.valid_pct}")
        if not 0.0 <= self.test_pct < 1.0 - self.valid_pct:
            raise ConfigError(f"data.test_pct must be at least 0 and leave training images "
                              f"(valid_pct + test_pct < 1), got {self.test_pct}")
        need = {"folder": "path", "csv": "path", "kaggle_competition": "competition",
                "kaggle_dataset": "dataset"}.get(self.source)
        if self.label_from_name is not None:
            _check_group_regex("data.label_from_name", self.label_from_name, "the class")
        if need and not getattr(self, need):
            raise ConfigError(f"data.source '{self.source}' needs data.{need}")
        self._check_groups_and_folds()

    def _check_groups_and_folds(self) -> None:
        if self.group_from_name is not None:
            _check_group_regex("data.group_from_name", self.group_from_name, "the group (e.g. the video id)")
        if self.group_col is not None and self.source != "csv":
            raise ConfigError(f"data.group_col is for data.source: csv; with a folder source use "
                              f"data.group_from_name (a regex on the file name), got source '{self.source}'")
        if self.group_col is not None and self.group_from_name is not None:
            raise ConfigError("set data.group_col or data.group_from_name, not both")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"data.folds must be 0 (one fixed split) or a number of folds >= 2, got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < max(self.folds, 1):
            raise ConfigError(f"data.fold must be in 0..{self.folds - 1} with data.folds {self.folds}, got "
                              f"{self.fold}" if self.folds else "data.fold needs data.folds >= 2")

    @property
    def grouped(self) -> bool:
        return self.group_from_name is not None or self.group_col is not None


@dataclass(frozen=True)
class TrainConfig:
    """One training run: architecture, resolutions, optimisation and output."""

    arch: str = "resnet18"  # any timm model name
    size: int = 64  # final (batch-transform) image side, pixels; em_traces: no batch, only item_resize_px counts
    item_resize_px: int | None = None  # per-item side, pixels: the data cache's images (max side) and the per-item
    # Resize before batching; None: = size (resolved when the config is built, so config.yaml records it).
    # train()'s keyword is item_tfms. effnetv2_bce: the cache side only (its items are RandomResizedCrop'd to size)
    bs: int = 64  # effective batch size (images per optimizer step)
    accum: int = 1  # micro-batches per optimizer step: micro-batch = bs // accum
    epochs: int = 3
    lr: float = 2e-3  # base learning rate
    pretrained: bool = False  # load timm weights (hub, HF cache, or weights_file)
    weights_file: str | None = None  # local weights for offline pretrained runs
    recipe: str = "fine_tune"  # one of RECIPES: fine_tune (fastai) | effnetv2_bce (one logit, BCE, mixup; lr ~1e-4)
    input: str = "rgb"  # one of INPUTS; npr: the model sees x - up(down(x)) and the data path keeps the pixel
    # grid (crops at even offsets instead of resizes; item_resize_px is the side images are cached at first)
    aug: str = "flip"  # flip: pixel-exact flips only (keeps generator traces) | fastai | none
    degrade_p: float = 0.0  # training images: probability of a random blur and, separately, of a JPEG
    # re-compression (Wang et al. 2020), so the detector survives what real images go through
    precision: str = "auto"  # auto: fp16 on CUDA, bf16 autocast on a CPU that has it, else fp32
    tta_n: int = 4  # TTA augmented passes
    tta_beta: float = 0.25  # weight of the plain pass in TTA
    seed: int = 42
    num_workers: int | str = "auto"  # DataLoader worker processes, or auto: 0 on CPU, one per core (<= 8) on
    # CUDA, with persistent workers and pinned memory (loaders.py)
    runs_dir: str = "runs"  # parent of the run folder
    name: str | None = None  # run folder name (None: derived from the config)
    classifier: str = "svc"  # em_traces: one of CLASSIFIERS, fitted on the EM features after a StandardScaler
    em_mode: str = "gaussian"  # em_traces: one of EM_MODES
    em_iter: int = 10  # em_traces: EM iterations after the least-squares start
    kernel: int = 3  # em_traces: odd side of the neighbourhood window, pixels (3: 24 features per image)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        _check_choice("recipe", self.recipe, RECIPES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("aug", self.aug, AUGMENTS)
        _check_choice("classifier", self.classifier, CLASSIFIERS)
        _check_choice("em_mode", self.em_mode, EM_MODES)
        _check_choice("input", self.input, INPUTS)
        if self.em_iter < 1 or self.kernel < 3 or self.kernel % 2 == 0:
            raise ConfigError(f"need em_iter >= 1 and an odd kernel >= 3, got {self.em_iter} and {self.kernel}")
        for key in ("size", "bs", "accum", "epochs", "tta_n"):
            if getattr(self, key) < (0 if key == "tta_n" else 1):
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise ConfigError(f"name must be a plain folder name, got '{self.name}'")
        if not 0.0 <= self.degrade_p <= 1.0:
            raise ConfigError(f"degrade_p must be between 0 and 1, got {self.degrade_p}")
        if self.bs % self.accum:
            raise ConfigError(f"bs ({self.bs}) must be divisible by accum ({self.accum})")
        if self.item_resize_px is None:  # resolved here, so every reader sees the one number the run used
            object.__setattr__(self, "item_resize_px", self.size)
        if self.item_resize_px < 1:
            raise ConfigError(f"item_resize_px must be positive, got {self.item_resize_px}")
        if self.keeps_grid:
            _check_grid_settings(self)
        if self.num_workers != "auto" and not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            raise ConfigError(f"num_workers must be auto or a count >= 0, got {self.num_workers!r}")

    @property
    def micro_bs(self) -> int:
        """Images per forward pass."""
        return self.bs // self.accum

    @property
    def keeps_grid(self) -> bool:
        """True when the network reads NPR residuals: the pixel grid must reach it un-resampled."""
        return self.input == "npr" or self.arch == NPR_ARCH

    @property
    def run_name(self) -> str:
        """Run folder name derived from the config: <arch>_r<item>-<size>[_npr]_<recipe>_s<seed>[_k<folds>]."""
        if self.name:
            return self.name
        folds = f"_k{self.data.folds}" if self.data.folds else ""  # K models: not comparable with a 1-split run
        folds += f"f{self.data.fold}" if self.data.fold is not None else ""  # one fold of K, trained alone
        if self.arch == TRACES_ARCH:  # no recipe; what varies between such runs is the EM and the classifier
            em = f"{self.em_mode}_{self.classifier}_k{self.kernel}_i{self.em_iter}"
            return f"{self.arch}_r{self.item_resize_px}_{em}_s{self.seed}{folds}"
        arch = self.arch.replace("/", "-").replace(".", "-")
        npr = "_npr" if self.input == "npr" else ""  # only when set, so existing run names stay as they were
        return f"{arch}_r{self.item_resize_px}-{self.size}{npr}_{self.recipe}_s{self.seed}{folds}"


def _check_grid_settings(cfg: TrainConfig) -> None:
    """Refuse the settings that would resample the image an NPR network sees (resampling erases the trace)."""
    what = f"input: npr (arch {cfg.arch})" if cfg.input == "npr" else f"arch: {cfg.arch} (NPR input)"
    if cfg.aug == "fastai":
        raise ConfigError(f"{what} keeps the pixel grid, but aug: fastai rotates, zooms and warps (resampling "
                          "erases the up-sampling trace); use aug: flip or aug: none")
    if cfg.size % 2:
        raise ConfigError(f"{what} compares the pixels of 2x2 cells: size must be even, got {cfg.size}")
    if cfg.item_resize_px < cfg.size:
        raise ConfigError(f"{what} crops instead of resizing: item_resize_px ({cfg.item_resize_px}) below size "
                          f"({cfg.size}) would up-sample; drop item_resize_px or set it >= size")


def _check_group_regex(key: str, pattern: str, what: str) -> None:
    try:
        if re.compile(pattern).groups < 1:
            raise ConfigError(f"{key} needs one (group) for {what}: '{pattern}'")
    except re.error as e:
        raise ConfigError(f"{key} is not a valid regex: {e}") from None


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got '{value}'")


RENAMED = {"item_resize": "item_resize_px"}  # old key -> new key: old YAML files keep working, with a warning
_warned: set[str] = set()  # old keys warned about: a sweep of 20 runs (expanded several times) warns once


def renamed(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``raw`` with deprecated keys under their new names (one warning line each); both given is an error."""
    out = dict(raw)
    for old, new in RENAMED.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{where}: both '{old}' and its new name '{new}' are set; keep '{new}'")
            if old not in _warned:
                log.warning("%s: '%s' is deprecated, use '%s'", where, old, new)
                _warned.add(old)
            out[new] = out.pop(old)
    return out


def from_dict(cls: type, raw: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and wrong types with the key named."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    if cls is TrainConfig:
        raw = renamed(raw, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        close = {u: difflib.get_close_matches(u, list(fields), n=1) for u in unknown}
        hint = "; ".join(f"'{u}': did you mean '{c[0]}'?" for u, c in close.items() if c)
        raise ConfigError(f"{where}: unknown key(s) {unknown}{'; ' + hint if hint else ''}; "
                          f"allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{where}: {k}") for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-4` arrives as the string "1e-4". Such strings are
# taken as the number they spell (only strings that are numbers: "fast" is still refused).
NUMBER_TEXT = {float: re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"), int: re.compile(r"[+-]?\d+")}


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint; int is accepted where float is expected, and a numeric string
    (YAML 1.1's `1e-4`) where a number is."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value or {}, where)
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]  # e.g. num_workers: int | str
        hint = next((a for a in members if isinstance(value, a) and not (a is int and isinstance(value, bool))),
                    members[0])
    if hint in NUMBER_TEXT and isinstance(value, str) and NUMBER_TEXT[hint].fullmatch(value.strip()):
        return hint(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file on any error."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return raw


def load_train_config(path: Path) -> TrainConfig:
    """Load a TrainConfig from YAML (e.g. a run folder's config.yaml)."""
    return from_dict(TrainConfig, load_yaml(path), str(path))


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with data.path and data.images_dir absolute, so a run folder's config.yaml finds the data from any
    working folder (as given, a relative path only worked from where the run was started)."""
    fixed = {k: str(Path(v).expanduser().resolve()) for k in ("path", "images_dir") if (v := getattr(cfg.data, k))}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **fixed)) if fixed else cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a (nested) config dataclass, for YAML/JSON."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    """YAML text of a config dataclass, keys in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
