"""load_image on every kind of input the issue lists (made with PIL in tmp_path), and label PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovseg.utils.image import ImageLoadError, id2rgb, load_image, rgb2id, save_label_png


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def test_rgb_png_round_trip(tmp_path):
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.png")), arr)  # str paths too


def test_grayscale_is_replicated(tmp_path):
    g = np.array([[0, 10], [200, 255]], dtype=np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, np.repeat(g[:, :, None], 3, axis=2))


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.shape == (3, 4, 3)
    assert (out == np.array([10, 20, 30], np.uint8)).all()
    np.testing.assert_array_equal(load_image(rgba), out)  # the array rule matches the file rule


def test_palette_image(tmp_path):
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (0, 0, 255)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 1000], [32768, 65278, 65535]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = load_image(tmp_path / "d.png")
    expected = np.round(v / 257.0).astype(np.uint8)  # [[0, 1, 4], [128, 254, 255]]
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 2], expected)
    assert out[0, 2, 0] == 4  # convert("RGB") would have clipped 1000 to 255


def test_mode_I_is_treated_as_16_bit():
    im = Image.fromarray(np.array([[0, 65535, 70000]], dtype=np.int32), "I")
    out = load_image(im)
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 255])


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (8, 8, 3)
    r, g, b = (int(x) for x in out[4, 4])
    assert r > 200 and g < 60 and b < 60  # pure red in CMYK


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((2, 4, 3), dtype=np.uint8)  # stored 2 high x 4 wide
    arr[0, 0] = 255
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (4, 2, 3)  # displayed 4 high x 2 wide, like detectron2's read_image


def test_pil_input_and_not_aliasing():
    arr = _rgb()
    out = load_image(Image.fromarray(arr))
    np.testing.assert_array_equal(out, arr)
    out2 = load_image(arr)
    out2[0, 0] = 7
    assert arr[0, 0, 0] == 0  # a copy: callers may modify the result


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255]),
        (np.array([[0, 1000, 65535]], np.uint16), [0, 4, 255]),
        (np.array([[False, True]]), [0, 255]),
        (np.array([[3, 250]], np.int64), [3, 250]),
    ],
)
def test_array_rules(arr, expected):
    out = load_image(arr)
    assert out.dtype == np.uint8 and out.shape == (*arr.shape, 3)
    np.testing.assert_array_equal(out[0, :, 1], expected)


def test_gray_hw1_array():
    out = load_image(np.full((2, 3, 1), 9, np.uint8))
    assert out.shape == (2, 3, 3) and (out == 9).all()


@pytest.mark.parametrize(
    ("arr", "fragment"),
    [
        (np.full((2, 2, 3), 255.0, np.float32), "must lie in [0, 1]"),
        (np.array([[np.nan]], np.float32), "NaN"),
        (np.array([[-1, 300]], np.int32), "[0, 255]"),
        (np.zeros((3, 8, 8), np.uint8), "channel-first"),
        (np.zeros((5, 4, 2), np.uint8), "expected (H, W)"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((2, 2, 3), np.complex64), "unsupported dtype"),
    ],
)
def test_bad_arrays(arr, fragment):
    with pytest.raises(ImageLoadError) as e:
        load_image(arr)
    assert fragment in str(e.value)


def test_bad_type():
    with pytest.raises(ImageLoadError, match="pass a file path"):
        load_image(12)  # type: ignore[arg-type]


def test_missing_file(tmp_path):
    p = tmp_path / "nope.png"
    with pytest.raises(ImageLoadError) as e:
        load_image(p)
    assert str(p) in str(e.value) and "not found" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty \(0 bytes\)") as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_not_an_image(tmp_path):
    p = tmp_path / "text.png"
    p.write_text("this is not a png")
    with pytest.raises(ImageLoadError, match="not an image format") as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_truncated_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "full.png"
    )
    data = (tmp_path / "full.png").read_bytes()
    p = tmp_path / "cut.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated") as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_id2rgb_round_trip():
    ids = np.array([[0, 1, 255], [256, 65536 + 3, 2**24 - 1]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8
    assert tuple(rgb[1, 0]) == (0, 1, 0)
    assert tuple(rgb[1, 1]) == (3, 0, 1)
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    with pytest.raises(ValueError, match="2\\*\\*24"):
        id2rgb(np.array([[2**24]]))


def test_save_label_png_bit_depth(tmp_path):
    small = np.array([[0, 5], [255, 1]])
    save_label_png(tmp_path / "s.png", small)
    im = Image.open(tmp_path / "s.png")
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), small)
    big = np.array([[0, 256], [65535, 7]])
    save_label_png(tmp_path / "b.png", big)
    im = Image.open(tmp_path / "b.png")
    assert im.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(im), big)
    with pytest.raises(ValueError, match="65535"):
        save_label_png(tmp_path / "x.png", np.array([[70000]]))


def test_save_label_png_forced_depth(tmp_path):
    save_label_png(tmp_path / "i.png", np.array([[0, 1], [2, 3]]), bits=16)
    im = Image.open(tmp_path / "i.png")
    assert im.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(im), [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        save_label_png(tmp_path / "x.png", np.array([[300]]), bits=8)
