"""CS image sets: built-in digits/faces, MNIST IDX files and a CelebA-like folder written by the tests."""

import gzip

import numpy as np
import pytest
from skimage import io

import ctrobust
from ctrobust.data.images import ImageSetError, load_image_set, read_idx, write_idx


def rows(images):
    return {img.tobytes() for img in images}


# --------------------------------------------------------------------------------------------------
# built-in sets
# --------------------------------------------------------------------------------------------------
def test_digits_splits_are_disjoint_deterministic_and_cover_the_set(global_rng_untouched):
    from sklearn.datasets import load_digits

    parts = {split: load_image_set("digits", split=split) for split in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1258, 180, 359]
    for x in parts.values():
        assert x.dtype == np.float32 and x.shape[1:] == (8, 8) and x.min() >= 0 and x.max() <= 1
    everything = load_image_set("digits", split="all")
    np.testing.assert_allclose(everything, load_digits().images / 16.0, atol=1e-7)
    # disjoint as index sets: rebuild the permutation through n= prefixes
    assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == len(everything)
    assert np.array_equal(load_image_set("digits", split="test"), parts["test"])
    other = load_image_set("digits", split="test", seed=1)
    assert not np.array_equal(other, parts["test"])
    assert np.array_equal(load_image_set("digits", split="test", n=7), parts["test"][:7])


def test_digits_split_indices_disjoint():
    from ctrobust.data.images import _split_indices

    idx = {s: set(_split_indices(1797, s, 3).tolist()) for s in ("train", "val", "test")}
    assert not (idx["train"] & idx["val"]) and not (idx["train"] & idx["test"]) and not (idx["val"] & idx["test"])
    assert idx["train"] | idx["val"] | idx["test"] == set(range(1797))


def test_faces_are_the_lfw_face_crops():
    from skimage import data

    faces = load_image_set("faces", split="all")
    assert faces.shape == (100, 25, 25) and faces.dtype == np.float32
    ref = np.asarray(data.lfw_subset()[:100], dtype=np.float64)
    np.testing.assert_allclose(faces, ref / (255.0 if ref.max() > 1 else 1.0), atol=1e-6)
    small = load_image_set("faces", n=4, size=12, split="test")
    assert small.shape == (4, 12, 12) and 0 <= small.min() and small.max() <= 1


# --------------------------------------------------------------------------------------------------
# MNIST IDX
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)  # gzip
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test)  # raw
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(20, dtype=np.uint8))
    return tmp_path, train, test


def test_idx_round_trip_and_header_bytes(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", arr)
    raw = (tmp_path / "a").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 3])  # magic 0x00000803 = 2051, MNIST's image magic
    assert raw[4:16] == bytes([0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    for dtype in (np.int16, np.int32, np.float32, np.float64, np.int8):
        data = (np.arange(6) - 3).astype(dtype).reshape(3, 2)
        write_idx(tmp_path / "b.gz", data)
        assert (tmp_path / "b.gz").read_bytes()[:2] == b"\x1f\x8b"
        back = read_idx(tmp_path / "b.gz")
        assert back.dtype == dtype and np.array_equal(back, data)


def test_mnist_folder_splits(mnist_dir):
    folder, train, test = mnist_dir
    got_test = load_image_set("mnist", path=folder, split="test")
    assert got_test.dtype == np.float32 and got_test.shape == (6, 28, 28)
    np.testing.assert_allclose(got_test, test / 255.0, atol=1e-7)
    tr = load_image_set("mnist", path=folder, split="train")
    va = load_image_set("mnist", path=folder, split="val")
    assert (len(tr), len(va)) == (18, 2)
    assert rows(tr) | rows(va) == rows((train / 255.0).astype(np.float32)) and not rows(tr) & rows(va)
    assert load_image_set("mnist", path=folder, split="all").shape == (26, 28, 28)
    assert load_image_set("mnist", path=folder, split="test", n=3, size=14).shape == (3, 14, 14)


def test_mnist_single_file(mnist_dir):
    folder, train, _ = mnist_dir
    x = load_image_set("mnist", path=folder / "train-images-idx3-ubyte.gz", split="all")
    np.testing.assert_allclose(x, train / 255.0, atol=1e-7)


def test_mnist_errors(mnist_dir, tmp_path):
    folder, _, _ = mnist_dir
    with pytest.raises(ImageSetError, match="labels file"):
        load_image_set("mnist", path=folder / "train-labels-idx1-ubyte", split="all")
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x08\x03\x00\x00" + bytes(100))
    with pytest.raises(ImageSetError, match=r"bad-magic: not an IDX file \(magic number 0x08030000"):
        read_idx(bad)
    truncated = tmp_path / "trunc"
    write_idx(truncated, np.zeros((3, 4, 4), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-5])
    message = r"trunc: IDX header says shape \(3, 4, 4\) \(48 data bytes\) but the file has 43"
    with pytest.raises(ImageSetError, match=message):
        load_image_set("mnist", path=truncated, split="all")
    code = tmp_path / "code"
    code.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(ImageSetError, match="unknown IDX data type 0x07"):
        read_idx(code)
    corrupt_gz = tmp_path / "x.gz"
    corrupt_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")[:-6])
    with pytest.raises(ImageSetError, match="corrupt gzip"):
        read_idx(corrupt_gz)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(ImageSetError, match="only 2 bytes"):
        read_idx(short)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageSetError, match="no MNIST test images"):
        load_image_set("mnist", path=tmp_path / "empty", split="test")
    with pytest.raises(ImageSetError, match="pass path="):
        load_image_set("mnist")
    with pytest.raises(ImageSetError, match="does not exist"):
        load_image_set("mnist", path=tmp_path / "nowhere")
    with pytest.raises(ImageSetError, match="only 6"):
        load_image_set("mnist", path=folder, split="test", n=7)


# --------------------------------------------------------------------------------------------------
# CelebA-like folder
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def celeba_dir(tmp_path):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for i in range(10):
        # 30 x 20 (H x W) RGB grey image: the centre 20 x 20 square has level v, the rest is white
        v = 20 * (i + 1)
        img = np.full((30, 20, 3), 255, np.uint8)
        img[5:25] = v
        io.imsave(folder / f"{i + 1:06d}.png", img, check_contrast=False)
    grey = np.full((16, 24), 128, np.uint8)  # grey-level file, wider than high
    io.imsave(folder / "000011.png", grey, check_contrast=False)
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[..., :3] = 60
    rgba[..., 3] = 255
    io.imsave(folder / "000012.png", rgba, check_contrast=False)
    (folder / "notes.txt").write_text("not an image")
    return tmp_path, folder


def test_celeba_crop_resize_grey(celeba_dir):
    parent, folder = celeba_dir
    x = load_image_set("celeba", path=folder, split="all", size=8)
    assert x.shape == (12, 8, 8) and x.dtype == np.float32
    for i in range(10):  # the centre crop removes the white rows exactly
        np.testing.assert_allclose(x[i], 20 * (i + 1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(x[10], 128 / 255.0, atol=1e-6)
    np.testing.assert_allclose(x[11], 60 / 255.0, atol=1e-6)
    # the parent folder works too (it holds img_align_celeba/)
    assert np.array_equal(load_image_set("celeba", path=parent, split="all", size=8), x)
    assert load_image_set("celeba", path=folder, split="all", n=2).shape == (2, 64, 64)  # default size 64


def test_celeba_split_and_partition_file(celeba_dir, global_rng_untouched):
    parent, folder = celeba_dir
    parts = {s: load_image_set("celeba", path=folder, split=s, size=4) for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == 12
    assert [len(parts[s]) for s in ("train", "val", "test")] == [8, 1, 3]  # round(8.4), round(1.2), rest
    lines = [f"{i:06d}.png {0 if i <= 6 else (1 if i <= 8 else 2)}" for i in range(1, 13)]
    (parent / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    test = load_image_set("celeba", path=folder, split="test", size=4)
    assert len(test) == 4
    np.testing.assert_allclose(test[0], 180 / 255.0, atol=1e-6)  # 000009.png
    (parent / "list_eval_partition.txt").write_text("000001.png zero\n000002.png 0\n000003.png x\n")
    with pytest.raises(ImageSetError, match=r"list_eval_partition.txt:3"):
        load_image_set("celeba", path=folder, split="test")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio probes its legacy plugins on a bad file
def test_celeba_errors(tmp_path, celeba_dir):
    _, folder = celeba_dir
    (folder / "000013.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageSetError, match="cannot read image .*000013.jpg"):
        load_image_set("celeba", path=folder, split="all")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageSetError, match="no image files"):
        load_image_set("celeba", path=empty)
    with pytest.raises(ImageSetError, match="must be a folder"):
        load_image_set("celeba", path=folder / "000001.png")


def test_argument_errors():
    with pytest.raises(ImageSetError, match="unknown image set 'cifar'"):
        load_image_set("cifar")
    with pytest.raises(ImageSetError, match="split must be one of"):
        load_image_set("digits", split="validation")
    with pytest.raises(ImageSetError, match="n must be a positive integer"):
        load_image_set("digits", n=0)
    with pytest.raises(ImageSetError, match="do not pass path"):
        load_image_set("faces", path="/tmp")
    with pytest.raises(ImageSetError, match="asked for n = 500"):
        load_image_set("faces", n=500)
    with pytest.raises(ctrobust.CtrobustError):
        load_image_set("digits", size=-3)
