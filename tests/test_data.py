"""Datasets and on-device batches: CIFAR's on-disk format, digits, synthetic, the validation split,
augmentation."""

import pickle

import numpy as np
import pytest
import torch
from trainer.config import ConfigError, DataConfig, load_config
from trainer.data import (DATASETS, DataError, Dataset, augment, cifar_integrity_problem, load_dataset,
                          split_validation, train_batches)


def _write_batch(path, images, labels, label_key):
    # CIFAR's pickles (read back with encoding="latin1"): str keys, data as (N, 3072) uint8 rows
    # in C-H-W order.
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as f:
        pickle.dump({"data": rows, label_key: list(labels), "batch_label": "mini"}, f)


def write_mini_cifar(root, classes: int, per_file: int = 4):
    """A miniature CIFAR in torchvision's on-disk layout; returns the training images."""
    rng = np.random.default_rng(0)
    if classes == 10:
        folder, meta_key, label_key = root / "cifar-10-batches-py", "label_names", "labels"
        train_files, test_file, meta = [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"
    else:
        folder, meta_key, label_key = root / "cifar-100-python", "fine_label_names", "fine_labels"
        train_files, test_file, meta = ["train"], "test", "meta"
    folder.mkdir(parents=True)
    with open(folder / meta, "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(classes)]}, f)
    train = []
    for name in train_files + [test_file]:
        images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        _write_batch(folder / name, images, rng.integers(0, classes, per_file), label_key)
        if name != test_file:
            train.append(images)
    return np.concatenate(train)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_a_miniature_in_the_on_disk_format(tmp_path, name, classes):
    expected = write_mini_cifar(tmp_path, classes)
    # An own copy: its md5 sums are not the published ones, so it is read with verify=false.
    data = load_dataset(DataConfig(dataset=name, data_dir=str(tmp_path), val_size=0, verify=False))
    assert data.num_classes == classes
    assert data.train_x.shape == (len(expected), 3, 32, 32) and data.train_x.dtype == torch.float32
    assert data.test_x.shape == (4, 3, 32, 32) and data.test_y.dtype == torch.int64
    # Pixel (row 5, column 7, green) of the first training image, scaled to [0, 1].
    assert data.train_x[0, 1, 5, 7].item() == pytest.approx(expected[0, 5, 7, 1] / 255)
    assert 0 <= data.train_x.min() and data.train_x.max() <= 1
    # The validation split is carved from the training images, never from the test images.
    split = load_dataset(DataConfig(dataset=name, data_dir=str(tmp_path), val_size=2, verify=False))
    assert split.val_x.shape[0] == 2 and split.train_x.shape[0] == len(expected) - 2
    assert torch.equal(split.val_x, data.train_x[split.val_indices]) and torch.equal(split.test_x, data.test_x)


@pytest.mark.parametrize("name,classes,files", [("cifar10", 10, "data_batch_1, data_batch_2, data_batch_3, "
                                                   "data_batch_4, data_batch_5, test_batch, batches.meta"),
                                                  ("cifar100", 100, "train, test, meta")])
def test_cifar_files_that_fail_the_md5_check_are_refused_in_one_line_naming_them(tmp_path, name, classes, files):
    write_mini_cifar(tmp_path, classes)
    folder = tmp_path / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(dataset=name, data_dir=str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message and str(folder) in message, message
    assert f"{files} differ from the published files" in message and "md5" in message
    assert "--set data.verify=false" in message and "--set data.download=true" in message
    # In a sweep the section is named as the user writes it there.
    swept = cifar_integrity_problem(DataConfig(dataset=name, data_dir=str(tmp_path)), "trainer.data")
    assert swept.startswith("trainer.data: ") and "--set trainer.data.verify=false" in swept
    # A partial copy: the missing file is named as such.
    (folder / ("test_batch" if classes == 10 else "test")).unlink()
    problem = cifar_integrity_problem(DataConfig(dataset=name, data_dir=str(tmp_path)))
    assert problem is not None and ("test_batch missing" if classes == 10 else "; test missing") in problem
    # Nothing to check: verify off, a download asked for (torchvision fetches it again), no folder.
    assert cifar_integrity_problem(DataConfig(dataset=name, data_dir=str(tmp_path), verify=False)) is None
    assert cifar_integrity_problem(DataConfig(dataset=name, data_dir=str(tmp_path), download=True)) is None
    assert cifar_integrity_problem(DataConfig(dataset=name, data_dir=str(tmp_path / "none"))) is None


def test_an_unreadable_own_copy_is_a_data_error_naming_the_folder(tmp_path):
    write_mini_cifar(tmp_path, 100)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read .*cifar-100-python as CIFAR's on-disk format"):
        load_dataset(DataConfig(dataset="cifar100", data_dir=str(tmp_path), verify=False))


def test_missing_cifar_without_download_names_the_directory_and_the_flag(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(dataset="cifar100", data_dir=str(tmp_path / "nowhere")))
    assert str(tmp_path / "nowhere") in str(err.value)
    assert "data.download=true" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_digits_split_is_fixed_stratified_and_scaled():
    data = load_dataset(DataConfig(dataset="digits", val_size=0))
    again = load_dataset(DataConfig(dataset="digits", val_size=0))
    other = load_dataset(DataConfig(dataset="digits", split_seed=1, val_size=0))
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    assert data.in_channels == 1 and data.image_size == 8 and data.num_classes == 10
    assert torch.equal(data.test_x, again.test_x) and not torch.equal(data.test_x, other.test_x)
    assert data.train_x.min() == 0 and data.train_x.max() == 1
    assert torch.bincount(data.test_y).tolist() == pytest.approx([36] * 10, abs=1)
    small = load_dataset(DataConfig(dataset="digits", train_size=100, test_size=50, val_size=0))
    assert torch.equal(small.train_x, data.train_x[:100]) and small.test_y.shape == (50,)
    assert data.val_x is None and data.val_y is None  # val_size 0: no validation split


def test_validation_split_is_carved_from_training_disjoint_and_stable():
    full = load_dataset(DataConfig(dataset="synthetic", train_size=200, val_size=0))
    cfg = DataConfig(dataset="synthetic", train_size=200)  # default: a tenth
    data, again = load_dataset(cfg), load_dataset(cfg)
    assert data.val_x.shape[0] == 20 and data.train_x.shape[0] == 180 and len(data.val_y) == 20
    # The same images on every load (and so for every training seed, which is not an input).
    assert torch.equal(data.val_indices, again.val_indices) and torch.equal(data.val_x, again.val_x)
    # Train + validation = the training pool, each image once; the test set is untouched.
    held = set(data.val_indices.tolist())
    kept = [i for i in range(200) if i not in held]
    assert torch.equal(data.val_x, full.train_x[data.val_indices]) and torch.equal(data.val_y, full.train_y[data.val_indices])
    assert torch.equal(data.train_x, full.train_x[kept]) and torch.equal(data.train_y, full.train_y[kept])
    assert torch.equal(data.test_x, full.test_x)
    # Disjoint by content too (continuous noise: no two images are equal).
    flat = lambda t: {tuple(row) for row in t.flatten(1).tolist()}  # noqa: E731
    assert not flat(data.val_x) & flat(data.train_x) and not flat(data.val_x) & flat(data.test_x)
    # Another split seed draws other images (and another dataset, for the generated ones).
    other = split_validation(200, 20, seed=1)[1]
    assert not torch.equal(other, data.val_indices) and len(other) == 20


@pytest.mark.parametrize("val_size,count", [(0.1, 144), (0.5, 718), (100, 100), (100.0, 100), (1, 1)])
def test_validation_size_is_a_fraction_or_a_count(val_size, count):
    data = load_dataset(DataConfig(dataset="digits", val_size=val_size))
    assert data.val_x.shape[0] == count and data.train_x.shape[0] == 1437 - count
    train, val = split_validation(1437, val_size, seed=0)
    assert torch.equal(data.val_indices, val) and len(set(train.tolist()) | set(val.tolist())) == 1437


def test_bad_validation_sizes_are_refused():
    for bad in ("-1", "2.5"):
        with pytest.raises(ConfigError, match="data.val_size"):
            load_config({}, [f"data.val_size={bad}"])
    # A split that leaves nothing to train on is a data error naming the field, before training.
    with pytest.raises(DataError, match="data.val_size=64.*leave none"):
        load_dataset(DataConfig(dataset="digits", train_size=64, val_size=64))


def test_synthetic_has_the_configured_shape_and_is_seeded():
    cfg = DataConfig(dataset="synthetic", num_classes=3, channels=2, image_size=6, train_size=30, val_size=0)
    data, again = load_dataset(cfg), load_dataset(cfg)
    assert data.train_x.shape == (30, 2, 6, 6) and data.num_classes == 3
    assert torch.equal(data.train_x, again.train_x)
    # Learnable: the nearest class mean of the training set classifies the test set well.
    means = torch.stack([data.train_x[data.train_y == c].mean(0) for c in range(3)])
    dist = (data.test_x[:, None] - means[None]).flatten(2).pow(2).sum(2)
    assert (dist.argmin(1) == data.test_y).float().mean() > 0.9


def test_registry_holds_every_dataset():
    assert set(DATASETS) == {"cifar10", "cifar100", "digits", "synthetic", "gaussians"}


def test_augment_crops_with_zero_padding_and_flips():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    gen = torch.Generator().manual_seed(0)
    out = augment(x, gen, padding=2, flip=True)
    assert out.shape == x.shape
    for i in range(2):
        # Every output is a window of the zero-padded (possibly flipped) image.
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        windows = [
            p[:, r : r + 4, c : c + 4] for p in (padded, padded.flip(2)) for r in range(5) for c in range(5)
        ]
        assert any(torch.equal(out[i], w) for w in windows)
    # Padding 0 and no flips: identity.
    assert torch.equal(augment(x, gen, padding=0, flip=False), x)


def test_train_batches_cover_the_epoch_and_are_seeded():
    data = Dataset(
        "t", torch.rand(10, 1, 4, 4), torch.arange(10), torch.rand(2, 1, 4, 4), torch.arange(2), 10
    )
    cfg = DataConfig(augment=False)
    batches = list(train_batches(data, 4, torch.Generator().manual_seed(1), cfg))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(10)) and labels.tolist() != list(range(10))
    for x, y in batches:
        assert torch.equal(x, data.train_x[y])
    again = list(train_batches(data, 4, torch.Generator().manual_seed(1), DataConfig()))
    again2 = list(train_batches(data, 4, torch.Generator().manual_seed(1), DataConfig()))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, again2))
    # A trailing single image is dropped: BatchNorm cannot train on it.
    assert [len(y) for _, y in train_batches(data, 3, torch.Generator(), cfg)] == [3, 3, 3]
