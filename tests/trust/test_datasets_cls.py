"""ImageFolder data is checked up front by the trainer's real entry point (`localattn.cls.train.main`, what
tools/train.py runs): every image decodes to faithful 8-bit RGB, or the run stops before any work with exit
code 2 naming the file; 16-bit grey and EXIF orientation are decoded correctly; skip/warn policies; the
check is cached by file stats."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from localattn.cls import data as cls_data
from localattn.cls.synthetic import make_image_folder
from localattn.cls.train import main as train_main
from localattn.datacheck import DataCheckError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "configs", "cls", "xresnet18_imagewoof_128.yaml")
TINY = ["-j", "0", "--epochs", "1", "--warmup-epochs", "0", "--img-size", "32", "-b", "4", "--device", "cpu",
        "--no-progress"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALATTN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    make_image_folder(str(root), num_classes=2, train_per_class=4, val_per_class=2, size=32, seed=7)
    return root


def first_image(data, split="train"):
    folder = data / split / sorted(os.listdir(data / split))[0]
    return folder / sorted(os.listdir(folder))[0]


def rgba_with_hole():
    pixels = np.full((32, 32, 4), 200, np.uint8)
    pixels[:8, :8, 3] = 0
    return Image.fromarray(pixels, "RGBA")


def palette_with_transparency():
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(0, (0, 0, 8, 8))
    image.info["transparency"] = 0
    return image


def write_truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])


BROKEN = {  # name: (split, file name, writer, expected words)
    "float32_tiff": ("train", "x.tif", lambda p: Image.fromarray(np.ones((32, 32), np.float32), "F").save(p),
                     "32-bit float"),
    "alpha_with_transparent_pixels": ("train", "x.png", lambda p: rgba_with_hole().save(p), "transparent"),
    "palette_with_transparency": ("train", "x.png", lambda p: palette_with_transparency().save(p, transparency=0),
                                  "transparent"),
    "truncated_jpeg": ("train", "x.jpg", write_truncated_jpeg, "corrupt image"),
    "garbage_in_val_split": ("val", "x.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot an image"),
                             "corrupt image"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_image_stops_the_trainer_up_front_naming_the_file(case, data, tmp_path, capsys):
    split, name, write, words = BROKEN[case]
    bad = first_image(data, split).with_name(name)
    write(bad)
    code = train_main([RECIPE, str(data), *TINY, "--output", str(tmp_path / "out"), "--experiment", "run"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(bad) in err and words in err and "--corrupt-images skip|warn" in err
    assert not (tmp_path / "out" / "run").exists()  # stopped before the run folder, model or any epoch


def test_skip_leaves_the_file_out_and_warn_keeps_it(data, tmp_path, capsys):
    bad = first_image(data).with_name("x.png")
    rgba_with_hole().save(bad)
    with pytest.warns(UserWarning, match=f"skipping {bad}: .*transparent"):
        train_set, _ = cls_data.build_splits(str(data), "val", "skip")
    assert str(bad) not in [p for p, _ in train_set.samples] and len(train_set) == 8
    with pytest.warns(UserWarning, match=f"using anyway {bad}: .*transparent"):
        train_set, _ = cls_data.build_splits(str(data), "val", "warn")
    assert str(bad) in [p for p, _ in train_set.samples]
    image, _ = train_set[[p for p, _ in train_set.samples].index(str(bad))]
    assert image.mode == "RGB"  # decoded as PIL can
    with pytest.warns(UserWarning, match=f"skipping {bad}"):
        code = train_main([RECIPE, str(data), *TINY, "--data-check", "skip", "--output", str(tmp_path),
                           "--experiment", "s"])
    assert code == 0, capsys.readouterr().err


def test_16_bit_grey_is_scaled_to_8_bits(tmp_path):
    values = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64  # 0 .. 65472
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")
    decoded = np.asarray(cls_data.load_rgb(str(path)))
    assert decoded.dtype == np.uint8 and decoded.shape == (32, 32, 3)
    for channel in range(3):
        assert np.array_equal(decoded[..., channel], (values >> 8).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((16, 32, 3), np.uint8)  # a wide image, left half red: orientation 6 = rotate 90 clockwise
    pixels[:, :16, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels).save(path, exif=exif)
    decoded = np.asarray(cls_data.load_rgb(str(path)))
    assert np.array_equal(decoded, np.rot90(pixels, k=-1))


def test_check_is_cached_by_file_stats(data, monkeypatch):
    reads = []
    original = cls_data._image_problem
    monkeypatch.setattr(cls_data, "_image_problem", lambda path: reads.append(path) or original(path))
    cls_data.build_splits(str(data))
    assert len(reads) == 12  # 8 train + 4 val images, all decoded once
    reads.clear()
    cls_data.build_splits(str(data))
    assert reads == []  # nothing changed: every verdict from the cache
    changed = first_image(data)
    rgba_with_hole().save(changed)  # new size / mtime
    with pytest.raises(DataCheckError, match=str(changed)):
        cls_data.build_splits(str(data))
    assert reads == [str(changed)]
