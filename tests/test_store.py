import h5py
import numpy as np
import pytest

from heptapod.data.store import H5Writer, LatentStore, StoreError, read_arrays, write_arrays

from conftest import make_latent_store


def test_round_trip_and_attributes(tmp_path):
    path = make_latent_store(tmp_path / "l.h5", n=50, chunk_rows=16)
    with h5py.File(path) as f:
        codes, labels = f["codes"][:], f["labels"][:]
        assert f["codes"].chunks[0] == 16 and f["codes"].compression == "gzip"
    store = LatentStore(path)
    assert (store.grid_size, store.vocab_size, store.num_classes) == (3, 16, 4)
    # one epoch of batches covers every row exactly once, with matching labels
    seen = []
    for step in range(store.steps_per_epoch(10)):
        c, y = store.batch(step, 10, seed=1)
        for ci, yi in zip(c.numpy(), y.numpy()):
            row = np.flatnonzero((codes == ci).all(axis=(1, 2, 3)))
            assert len(row) >= 1 and labels[row[0]] == yi
            seen.append(row[0])
    assert len(set(seen)) == 50


def test_batches_are_a_function_of_seed_and_step(latent_store):
    a, b = LatentStore(latent_store), LatentStore(latent_store)
    for step in (0, 5, 3, 7):  # any access order
        ca, ya = a.batch(step, 8, seed=2)
        cb, yb = b.batch(step, 8, seed=2)
        assert np.array_equal(ca, cb) and np.array_equal(ya, yb)
    assert not np.array_equal(a.batch(0, 8, seed=2)[0], a.batch(0, 8, seed=3)[0])
    # epochs differ in order
    spe = a.steps_per_epoch(8)
    assert not np.array_equal(a.batch(0, 8, seed=2)[0], a.batch(spe, 8, seed=2)[0])


def test_missing_store_names_file(tmp_path):
    with pytest.raises(StoreError, match="not found: .*nope.h5"):
        LatentStore(tmp_path / "nope.h5")


def test_corrupt_store_names_file(tmp_path):
    path = make_latent_store(tmp_path / "l.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated, as by a crash mid-copy
    with pytest.raises(StoreError, match=r"l\.h5"):
        LatentStore(path)
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(StoreError, match=r"junk\.h5 is corrupt"):
        LatentStore(tmp_path / "junk.h5")


def test_incomplete_or_wrong_kind_store_is_rejected(tmp_path):
    path = tmp_path / "half.h5"
    with h5py.File(path, "w") as f:  # written without the 'complete' mark
        f["codes"] = np.zeros((4, 2, 3, 3), np.int16)
        f["labels"] = np.zeros(4, np.int64)
        f.attrs["kind"] = "latents"
    with pytest.raises(StoreError, match="not a complete 'latents' store"):
        LatentStore(path)
    write_arrays(tmp_path / "img.h5", "images", {"images": np.zeros((2, 1, 4, 4), np.uint8)}, {})
    with pytest.raises(StoreError, match="not a complete 'latents' store"):
        LatentStore(tmp_path / "img.h5")
    with pytest.raises(StoreError, match="lacks dataset"):
        read_arrays(tmp_path / "img.h5", "images", ("images", "labels"))


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with H5Writer(path, "latents", {}) as w:
            w.create("codes", (4, 2), np.int16)
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
