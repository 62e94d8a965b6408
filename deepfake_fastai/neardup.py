"""Near-duplicate images across sides (train / valid / test) by a 64-bit perceptual hash.

``data.find_leaks`` sees only byte-identical files; a test image that is a re-saved, re-compressed or slightly
shifted copy of a training image leaks just the same. Each image gets a pHash (the signs of the 8x8 lowest
frequencies of a 32x32 grey DCT against their median); two images whose hashes differ in at most
``DEFAULT_MAX_DISTANCE`` bits are reported as a pair. Hashes are cached in an optional store file keyed by
(path, size, mtime_ns), so a sweep that prepares the same data once per run decodes each image once.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import atomic
from .progress import progress

log = logging.getLogger(__name__)

# Measured with this hash (`python -m benchmarks.bench_neardup --threshold`, BENCHMARKS.md "Near-duplicate check"):
# ../shared/data/cifake (3000 32 px JPEGs, 4,498,500 distinct pairs), 500 of them upscaled, 500 smoothed-noise
# textures. Distances are even (each hash has 32 bits set, ties aside), so thresholds step by 2.
#   JPEG q70 re-encode: max 6 at 32 px (p99 4); max 2-4 at 64-256 px.
#   1-pixel shift: at 32 px (3% of the image) max 22, p99 14, only 46% within 6; at 64 px 88-94% within 6;
#                  at 128 px 498/500 within 6 (max 8); at 256 px all (max 6).
#   distinct cifake pairs: min 8; none <= 6, 4 <= 8, 16 <= 10. The 4 at 8 are different photos with the same
#                  layout (two birds on a branch, a plane on blue sky), not copies: cifake holds no near-duplicates.
# 6 is the largest threshold with no distinct pair; each 2 bits more lets ~4x more through (8: ~1 in a million
# distinct pairs, ~1000 false warnings for 10k test x 100k train images). dHash (9x8 gradient signs) was worse on
# both sides at 32 px: q70 max 10, distinct pairs down to 2 (17 <= 6).
DEFAULT_MAX_DISTANCE = 6
NO_HASH = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # an undecodable file; never a pHash (at most 32 bits exceed the median)
HASH_PX = 32  # the grey image the DCT sees; JPEGs decode reduced towards it (Image.draft: 1.7x faster at 512 px)
STORE_COLUMNS = ["path", "size", "mtime_ns", "hash"]
CHUNK = 64  # images per thread task
BLOCK = 1 << 22  # hash pairs compared at once: 32 MB of XORs, so 100k x 100k needs no 80 GB matrix
PAIR_COLUMNS = ["id_a", "side_a", "id_b", "side_b", "distance"]
# pHash ignores brightness, contrast and colour by design, so two near-flat crops with one dark corner (sky, a
# black background: the embedded data's main job had 11 such pairs, at distances 0-6) hash alike. A candidate pair
# is confirmed on an 8x8 RGB thumbnail (box filter): mean absolute difference, grey levels. Measured on 300 CIFAKE
# images: a q70 re-encode differs by at most 3.8 (32 px) / 0.6 (128 px), a 1-pixel shift by at most 4.4 at 128 px
# (at 32 px median 6.1, the half pHash catches); the embedded data's false pairs by 11-85.
MAX_THUMB_DIFF = 8.0
THUMB_PX = 8


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``m @ x @ m.T`` is the 2-D DCT of an n x n block (no scipy here)."""
    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT = _dct_matrix(HASH_PX)[:8]  # only the 8 lowest frequencies are kept: (8 x 32) @ img @ (32 x 8)


def image_hash(path: Path | str) -> int:
    """The 64-bit pHash of an image file (raises what PIL raises on a file it cannot decode)."""
    with Image.open(path) as img:
        img.draft("L", (HASH_PX, HASH_PX))  # JPEG: decode at 1/2..1/8 scale, luma only; other formats: no-op
        grey = np.asarray(img.convert("L").resize((HASH_PX, HASH_PX), Image.BILINEAR), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T).ravel()
    bits = np.packbits(low > np.sort(low)[31:33].mean())  # the median; np.median costs 4x
    return int.from_bytes(bits.tobytes(), "big")


def _hash_or_mark(path: str) -> int:
    """image_hash, or NO_HASH for a file that is missing or cannot be decoded (reported by data's image check)."""
    try:
        return image_hash(path)
    except Exception:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError... on bad files
        return int(NO_HASH)


def _hash_chunk(paths: list[str]) -> list[int]:
    """_hash_or_mark of each path: one task per chunk, as a task per image costs 3x the hash (measured: 435 vs
    130 us per 32 px JPEG)."""
    return [_hash_or_mark(p) for p in paths]


def _stat(path: str) -> tuple[int, int]:
    """(size, mtime_ns), or (-1, -1) for a missing file so it never matches a stored entry."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _read_store(store: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (size, mtime_ns, hash as int64); empty when there is no store or it cannot be read (it is rebuilt)."""
    try:
        frame = pd.read_csv(store, dtype={"path": str}, keep_default_na=False)
        if list(frame.columns) != STORE_COLUMNS:
            raise ValueError(f"columns {list(frame.columns)}, expected {STORE_COLUMNS}")
        columns = [frame[c].to_numpy(np.int64).tolist() for c in STORE_COLUMNS[1:]]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, pd.errors.ParserError) as e:
        log.warning("%s: unreadable hash store (%s); hashing every image again and rewriting it", store, e)
        return {}
    return dict(zip(frame["path"], zip(*columns, strict=True), strict=True))


def _write_store(store: Path, entries: dict[str, tuple[int, int, int]]) -> None:
    """Write path, size, mtime_ns, hash rows atomically (hash as int64: CSV readers have no uint64)."""
    rows = [(path, *entry) for path, entry in entries.items()]
    atomic.write_csv(store, pd.DataFrame(rows, columns=STORE_COLUMNS))


def hashes(paths: Sequence[Path | str], workers: int = 2, store: Path | None = None) -> np.ndarray:
    """pHashes (uint64, NO_HASH for an undecodable file), one per path in order; unchanged files come from store."""
    keys = [os.path.abspath(p) for p in paths]
    stats = [_stat(k) for k in keys]
    entries = _read_store(store) if store is not None else {}
    values = np.empty(len(keys), dtype=np.int64)  # filled as int64 (the store's type), returned as uint64
    todo = []
    for i, (key, stat) in enumerate(zip(keys, stats, strict=True)):
        entry = entries.get(key)
        if entry is not None and entry[:2] == stat:
            values[i] = entry[2]
        else:
            todo.append(i)
    if todo:
        chunks = [[keys[i] for i in todo[lo:lo + CHUNK]] for lo in range(0, len(todo), CHUNK)]
        # Threads: PIL decodes outside the GIL (512 px JPEGs: 2 threads 1.9x faster); at 128 px and below the
        # per-file Python work (~100 us) dominates and 2 threads gain nothing. A process pool could at best halve
        # the 2 s of 10k 128 px images on 2 cores: not worth forking a training process (torch, CUDA) for.
        with ThreadPoolExecutor(max(1, workers)) as pool:
            done = pool.map(_hash_chunk, chunks)
            found = progress(done, len(chunks), f"hashing {len(todo)} images for the near-duplicate check", len(todo))
            values[todo] = np.array([h for chunk in found for h in chunk], dtype=np.uint64).view(np.int64)
        if store is not None:  # files that vanished keep their entries: a sweep lists the same files every run
            entries.update((keys[i], (*stats[i], int(values[i]))) for i in todo)
            _write_store(store, entries)
    return values.view(np.uint64)


@functools.cache
def _popcount16() -> np.ndarray:
    """Set bits of every 16-bit value: numpy < 2.0 has no np.bitwise_count."""
    return np.unpackbits(np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(-1, 2), axis=1).sum(1, np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _popcount16()[x.view(np.uint16)].reshape(*x.shape, 4).sum(-1, dtype=np.uint8)


def near_pairs(a: np.ndarray, b: np.ndarray, max_distance: int) -> np.ndarray:
    """(i, j, distance) int64 rows where a[i] and b[j] differ in at most max_distance bits (NO_HASH never pairs).

    When ``a is b``, each unordered pair comes once (i < j) and no image pairs with itself."""
    same = a is b
    ia = np.flatnonzero(np.asarray(a, np.uint64) != NO_HASH)
    ib = ia if same else np.flatnonzero(np.asarray(b, np.uint64) != NO_HASH)
    av, bv = np.asarray(a, np.uint64)[ia], np.asarray(b, np.uint64)[ib]
    step = max(1, BLOCK // max(1, len(bv)))
    found = [np.empty((0, 3), np.int64)]
    for lo in range(0, len(av), step):
        first = lo if same else 0  # same array: only columns at or after this block's first row, half the work
        dist = _popcount(av[lo:lo + step, None] ^ bv[None, first:])
        r, c = np.nonzero(dist <= max_distance)
        if same:
            r, c = r[c + first > r + lo], c[c + first > r + lo]
        found.append(np.stack([ia[r + lo], ib[c + first], dist[r, c]], axis=1).astype(np.int64))
    return np.concatenate(found)


def _thumbnail(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((THUMB_PX, THUMB_PX), Image.BOX), dtype=np.float64)


def _look_alike(a: str, b: str) -> bool:
    """Whether a pHash pair also looks alike in colour and brightness (MAX_THUMB_DIFF); False if either is gone."""
    try:
        return float(np.abs(_thumbnail(a) - _thumbnail(b)).mean()) <= MAX_THUMB_DIFF
    except Exception:  # noqa: BLE001 - changed or unreadable since it was hashed: no confirmed pair
        return False


def find_near_duplicates(frame: pd.DataFrame, max_distance: int = DEFAULT_MAX_DISTANCE,
                         store: Path | None = None) -> pd.DataFrame:
    """id_a, side_a, id_b, side_b, distance of near-identical images on different sides (columns id, path, side).

    Sides pair in the order they first appear in ``frame`` (train, valid, test rows give train-valid, train-test,
    valid-test pairs); rows are sorted by distance, then ids. Undecodable files pair with nothing; a hash pair is
    kept only when the two also look alike on a colour thumbnail (MAX_THUMB_DIFF)."""
    paths = frame["path"].tolist()
    values = hashes(paths, store=store)
    ids, side = frame["id"].to_numpy(), frame["side"].to_numpy()
    parts = [pd.DataFrame(columns=PAIR_COLUMNS)]
    for x, y in itertools.combinations(pd.unique(side), 2):
        ix, iy = np.flatnonzero(side == x), np.flatnonzero(side == y)
        pairs = near_pairs(values[ix], values[iy], max_distance)
        same = [_look_alike(paths[ix[i]], paths[iy[j]]) for i, j in pairs[:, :2]]  # a few pairs: decoded again
        pairs = pairs[np.asarray(same, dtype=bool)] if len(pairs) else pairs
        parts.append(pd.DataFrame({"id_a": ids[ix[pairs[:, 0]]], "side_a": x, "id_b": ids[iy[pairs[:, 1]]],
                                   "side_b": y, "distance": pairs[:, 2]}))
    found = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    return found.astype({"distance": np.int64}).sort_values(["distance", "id_a", "id_b"], ignore_index=True)
