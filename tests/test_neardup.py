"""The near-duplicate check on real JPEGs the tests make: copies across sides are found, distinct images are not."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CIFAKE  # not tests.conftest: that import needs `python -m pytest`
from PIL import Image

from deepfake_fastai import neardup
from deepfake_fastai.neardup import DEFAULT_MAX_DISTANCE, NO_HASH, find_near_duplicates, hashes, near_pairs

PX = 128  # a 1-pixel shift is within the threshold from 128 px up (at 32 px it is 3% of the image: often not)


def texture(seed: int, px: int = PX) -> Image.Image:
    """A distinct smooth colour texture per seed: 16x16 noise upsampled, plus fine grain."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((px, px), Image.BICUBIC)
    return Image.fromarray(np.clip(np.asarray(coarse, float) + rng.normal(0, 6, (px, px, 3)), 0, 255).astype(np.uint8))


def shifted(img: Image.Image) -> Image.Image:
    """The image moved 1 pixel right (the first column repeated)."""
    a = np.asarray(img)
    return Image.fromarray(np.concatenate([a[:, :1], a[:, :-1]], axis=1))


def save(img: Image.Image, path: Path, quality: int = 90) -> str:
    img.save(path, quality=quality)
    return str(path)


def frame_of(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "path", "side"])


def test_a_reencoded_and_a_shifted_training_image_are_found_on_the_test_side(tmp_path):
    rows = [(f"train{k}", save(texture(k), tmp_path / f"train{k}.jpg"), "train") for k in range(30)]
    rows += [("q70", save(texture(3), tmp_path / "q70.jpg", quality=70), "test"),
             ("shift", save(shifted(texture(7)), tmp_path / "shift.jpg"), "test"),
             ("new", save(texture(100), tmp_path / "new.jpg"), "test")]
    found = find_near_duplicates(frame_of(rows))
    assert list(found.columns) == ["id_a", "side_a", "id_b", "side_b", "distance"]
    assert set(zip(found.id_a, found.id_b, strict=True)) == {("train3", "q70"), ("train7", "shift")}
    assert set(found.side_a) == {"train"} and set(found.side_b) == {"test"}
    assert found.distance.is_monotonic_increasing and found.distance.max() <= DEFAULT_MAX_DISTANCE


def test_distinct_images_make_no_pairs_and_same_side_copies_are_not_reported(tmp_path):
    sides = ["train", "valid", "test"]
    rows = [(f"img{k}", save(texture(k), tmp_path / f"img{k}.jpg"), sides[k % 3]) for k in range(36)]
    rows.append(("copy", save(texture(0), tmp_path / "copy.jpg", quality=70), "train"))  # img0 is on train too
    found = find_near_duplicates(frame_of(rows))
    assert found.empty and list(found.columns) == ["id_a", "side_a", "id_b", "side_b", "distance"]
    values = hashes([r[1] for r in rows[:36]])
    assert near_pairs(values, values, DEFAULT_MAX_DISTANCE + 2).size == 0  # a margin: distances are even


def test_the_store_is_reused_for_unchanged_files_and_refreshed_for_changed_ones(tmp_path):
    paths = [save(texture(k), tmp_path / f"img{k}.jpg") for k in range(4)]
    store = tmp_path / "cache" / "hashes.csv"
    first = hashes(paths, store=store)
    assert store.is_file() and (hashes(paths, store=store) == first).all()

    # Other bytes of the same size under the same mtime: the stored hash is kept, so the file was not decoded.
    st = os.stat(paths[0])
    Path(paths[0]).write_bytes(b"x" * st.st_size)
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hashes(paths, store=store)[0] == first[0]

    save(texture(99), Path(paths[1]))  # new content, new mtime: hashed again
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = hashes(paths, store=store)
    assert again[1] == hashes([paths[1]])[0] != first[1] and (again[2:] == first[2:]).all()


def test_an_unreadable_store_is_rebuilt(tmp_path):
    paths = [save(texture(k), tmp_path / f"img{k}.jpg") for k in range(2)]
    store = tmp_path / "hashes.csv"
    store.write_text("not,a\nstore")
    assert (hashes(paths, store=store) == hashes(paths)).all()
    assert pd.read_csv(store).columns.tolist() == neardup.STORE_COLUMNS


def test_undecodable_and_missing_files_get_no_hash_and_pair_with_nothing(tmp_path):
    good = save(texture(1), tmp_path / "good.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "bad2.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    paths = [good, str(tmp_path / "bad.jpg"), str(tmp_path / "gone.jpg"), str(tmp_path / "bad2.jpg")]
    values = hashes(paths, store=tmp_path / "hashes.csv")
    assert values[0] != NO_HASH and (values[1:] == NO_HASH).all()
    found = find_near_duplicates(frame_of([("bad", paths[1], "train"), ("bad2", paths[3], "test")]))
    assert found.empty


def test_near_pairs_on_one_array_gives_each_pair_once_and_no_self_pairs():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 50, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (50, 3)).astype(np.uint64)
    values = np.concatenate([base, base[:20] ^ flips[:20, 0] ^ flips[:20, 1], [NO_HASH, NO_HASH]])
    brute = {(i, j, bin(int(values[i]) ^ int(values[j])).count("1")) for i in range(len(values) - 2)
             for j in range(i + 1, len(values) - 2) if bin(int(values[i]) ^ int(values[j])).count("1") <= 4}
    pairs = near_pairs(values, values, 4)
    assert {tuple(p) for p in pairs.tolist()} == brute and len(pairs) == len(brute) >= 20
    assert len(near_pairs(values, values.copy(), 4)) == 2 * len(brute) + 70  # two arrays: both orders, self pairs


def test_the_popcount_table_for_old_numpy_counts_bits():
    values = np.random.default_rng(1).integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    table = neardup._popcount16()[values.view(np.uint16)].reshape(-1, 4).sum(1)
    assert table.tolist() == [bin(int(v)).count("1") for v in values]


@pytest.mark.skipif(not CIFAKE.is_dir(), reason=f"the cifake sample is not at {CIFAKE} (project workspace only)")
def test_on_cifake_no_distinct_pair_is_within_the_threshold_and_reencodes_are(tmp_path):
    paths = sorted(CIFAKE.glob("*/*.jpg"))
    values = hashes(paths)
    assert len(paths) == 3000 and (values != NO_HASH).all()
    assert near_pairs(values, values, DEFAULT_MAX_DISTANCE).size == 0  # the measurement behind the constant
    copies = [save(Image.open(p), tmp_path / f"{k}.jpg", quality=70) for k, p in enumerate(paths[::100])]
    assert (near_pairs(values[::100], hashes(copies), DEFAULT_MAX_DISTANCE)[:, :2].T == np.arange(30)).all()


def test_flat_images_that_hash_alike_but_differ_in_colour_are_not_pairs(tmp_path):
    """pHash ignores brightness and colour: a flat blue and a flat pale crop, each with a dark corner (sky in the
    embedded data), hash alike; the thumbnail check keeps them apart, and still confirms a real copy."""
    def flat(colour, seed):
        rng = np.random.default_rng(seed)
        a = np.full((PX, PX, 3), colour, float) + rng.normal(0, 2, (PX, PX, 3))
        a[-20:, :20] = 20  # the dark corner both share
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    blue = save(flat((90, 130, 230), 1), tmp_path / "blue.png")
    pale = save(flat((215, 225, 235), 2), tmp_path / "pale.png")
    assert bin(int(hashes([blue])[0]) ^ int(hashes([pale])[0])).count("1") <= DEFAULT_MAX_DISTANCE  # alike to pHash
    copy = save(flat((90, 130, 230), 1), tmp_path / "copy.jpg", quality=70)
    found = find_near_duplicates(frame_of([("blue", blue, "train"), ("pale", pale, "test"), ("copy", copy, "test")]))
    assert list(zip(found.id_a, found.id_b, strict=True)) == [("blue", "copy")]
