"""imaging: each preprocessing step, hostile files, and user-style images of real MNIST digits."""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from mnistcli import imaging, strokes
from mnistcli.data import normalize
from mnistcli.errors import ImageError
from mnistcli.loading import module_logits
from mnistcli.predict import to_batch


def gray(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.float32) / 255


def digit_on_paper(size=(200, 150), box=(60, 40, 100, 110), ink=20, paper=235) -> Image.Image:
    """A thick dark '1'-like stroke on light paper, as a user's photo would be."""
    im = Image.new("L", size, paper)
    ImageDraw.Draw(im).rectangle(box, fill=ink)
    return im


# --- grayscale -----------------------------------------------------------------------------


def test_grayscale_of_l_and_rgb_keeps_the_levels():
    im = Image.new("L", (3, 2), 51)
    assert np.allclose(imaging.to_grayscale(im), np.full((2, 3), 0.2))
    rgb = Image.new("RGB", (3, 2), (255, 0, 0))
    assert np.allclose(imaging.to_grayscale(rgb), np.full((2, 3), 76 / 255))  # ITU-R 601
    assert imaging.to_grayscale(rgb).dtype == np.float32


def test_transparency_is_composed_on_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    im.putpixel((1, 1), (0, 0, 0, 255))  # one opaque black pixel: the ink
    g = imaging.to_grayscale(im)
    assert g[1, 1] == 0 and g[0, 0] == 1 and g.sum() == 15
    la = Image.new("LA", (2, 1), (0, 128))  # half-transparent black on white: mid grey
    assert abs(float(imaging.to_grayscale(la)[0, 0]) - 127 / 255) < 0.01


def test_palette_with_a_transparent_index_is_composed_on_white():
    def black_and_white(**info: int) -> Image.Image:
        im = Image.new("P", (2, 1))
        im.putpalette([0, 0, 0, 255, 255, 255])
        im.putpixel((1, 0), 1)
        im.info.update(info)
        return im

    assert imaging.to_grayscale(black_and_white()).tolist() == [[0.0, 1.0]]
    # black is the transparent colour: it shows the white paper beneath
    assert imaging.to_grayscale(black_and_white(transparency=0)).tolist() == [[1.0, 1.0]]


def test_16_bit_images_are_scaled_not_clipped():
    im = Image.new("I;16", (2, 1))
    im.putpixel((0, 0), 65535)
    im.putpixel((1, 0), 257 * 100)
    g = imaging.to_grayscale(im)
    assert g[0, 0] == 1.0 and abs(float(g[0, 1]) - 100 / 255) < 1e-4
    i32 = Image.new("I", (2, 1))
    i32.putpixel((0, 0), 255)
    assert imaging.to_grayscale(i32).tolist() == [[1.0, 0.0]]  # 8-bit values kept as 8-bit


def test_cmyk_and_bilevel_are_converted():
    assert float(imaging.to_grayscale(Image.new("CMYK", (2, 2), (0, 0, 0, 255))).max()) == 0.0
    assert float(imaging.to_grayscale(Image.new("1", (2, 2), 1)).min()) == 1.0


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "RGBA"])
def test_large_images_of_any_mode_are_reduced_with_a_box_average(mode):
    im = Image.new("L", (3000, 1100), 255)
    ImageDraw.Draw(im).rectangle((1000, 200, 1300, 900), fill=0)
    if mode == "I;16":  # 16-bit white is 65535
        im = im.convert("I").point(lambda v: v * 257)
    prep = imaging.preprocess(im.convert(mode))
    assert not prep.blank and prep.inverted
    reduced = imaging.reduce_large(np.ones((2050, 1000), np.float32))
    assert reduced.shape == (684, 334) and np.allclose(reduced, 1.0)  # edges too
    steps = np.arange(12, dtype=np.float32).reshape(3, 4)  # 3x4 by 2: the last row alone
    assert imaging.reduce_large(steps, side=2).tolist() == [[2.5, 4.5], [8.5, 10.5]]


# --- polarity and contrast -----------------------------------------------------------------


def test_light_background_is_inverted_and_dark_background_is_not():
    paper = gray([[240, 240, 240], [240, 10, 240], [240, 240, 240]])
    out, inverted = imaging.make_ink_bright(paper)
    assert inverted and float(out[1, 1]) > float(out[0, 0])
    mnist_like = 1 - paper
    out, inverted = imaging.make_ink_bright(mnist_like)
    assert not inverted and np.array_equal(out, mnist_like)


def test_grey_ink_on_lighter_grey_is_inverted():
    # border 110 is above the middle of the range (50..110): the background is the light side
    img = gray([[110, 110, 110], [110, 50, 110], [110, 110, 110]])
    assert imaging.make_ink_bright(img)[1]


def test_contrast_stretch_maps_background_to_0_and_ink_to_1():
    img = gray([[60, 60, 60], [60, 160, 60], [60, 110, 60]])
    out, contrast = imaging.stretch_contrast(img)
    assert abs(contrast - 100 / 255) < 1e-6
    assert out[0, 0] == 0 and out[1, 1] == 1 and abs(float(out[2, 1]) - 0.5) < 1e-6
    grainy, _ = imaging.stretch_contrast(img, noise=10 / 255)  # grain up to 2 noise levels: 0
    assert grainy[0, 0] == 0 and grainy[1, 1] == 1 and abs(float(grainy[2, 1]) - 30 / 80) < 1e-6


def test_too_little_contrast_is_reported_and_not_stretched():
    img = np.full((5, 5), 0.5, dtype=np.float32)
    img[2, 2] = 0.52
    out, contrast = imaging.stretch_contrast(img)
    assert contrast < imaging.MIN_CONTRAST and np.array_equal(out, img)


def test_uneven_lighting_is_flattened_to_a_zero_background():
    ys = np.linspace(0, 1, 60, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, 80, dtype=np.float32)[None, :]
    lit = 0.1 + 0.3 * ys + 0.2 * xs  # background brighter towards one corner
    lit[20:40, 30:36] = 0.95  # the ink
    lit[0:5, 0:3] = 0.9  # ink touching the edge: an outlier the refit ignores
    flat = imaging.flatten_background(lit)
    background = np.ones_like(lit, dtype=bool)
    background[20:40, 30:36] = background[0:5, 0:3] = False
    assert np.abs(flat[background]).max() < 0.01
    assert flat[20:40, 30:36].min() > 0.3
    assert np.abs(imaging.flatten_background(np.full((3, 3), 0.4, np.float32))).max() == 0


# --- ink box, specks -----------------------------------------------------------------------


def test_components_are_8_connected():
    mask = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]], dtype=bool)
    labels = imaging.label_components(mask)
    assert labels[0, 0] == labels[1, 1]  # diagonal neighbours join
    assert labels[1, 3] == labels[2, 3] != labels[0, 0]
    assert len(np.unique(labels[mask])) == 3 and (labels[~mask] == 0).all()
    # a U: its two arms meet only at the bottom, after both were started as separate runs
    u = np.zeros((5, 7), dtype=bool)
    u[:, 1] = u[:, 5] = u[4, 1:6] = True
    u[0, 3] = True  # a separate dot between the arms
    labels = imaging.label_components(u)
    assert labels[0, 1] == labels[0, 5] == labels[4, 3] != labels[0, 3] > 0
    assert len(np.unique(labels[u])) == 2


def test_ink_bbox_ignores_a_speck_far_from_the_digit():
    ink = np.zeros((100, 120), np.float32)
    ink[30:70, 50:60] = 1.0  # the digit: 40 x 10
    ink[5, 5] = 1.0  # a speck of dust
    ink[95, 110:112] = 0.8  # another
    assert imaging.ink_bbox(ink) == (30, 50, 70, 60)


def test_ink_bbox_keeps_parts_of_a_broken_digit():
    ink = np.zeros((60, 60), np.float32)
    ink[10:30, 20:26] = 1.0
    ink[31:50, 20:26] = 1.0  # a one-pixel gap: the same stroke
    ink[10:14, 30:45] = 1.0  # a separate bar, like the top of a 5: not a speck
    assert imaging.ink_bbox(ink) == (10, 20, 50, 45)


def test_ink_bbox_of_a_large_image_works_on_the_reduced_mask():
    ink = np.zeros((1000, 800), np.float32)
    ink[200:703, 300:351] = 1.0
    ink[900, 10] = 1.0
    assert imaging.ink_bbox(ink) == (200, 300, 703, 351)
    assert imaging.ink_bbox(np.zeros((10, 10), np.float32)) is None


# --- size and centring ---------------------------------------------------------------------


def test_fit_box_scales_the_longer_side_to_20_and_keeps_the_aspect():
    assert strokes.fit_box(np.ones((80, 40), np.float32)).shape == (20, 10)
    assert strokes.fit_box(np.ones((3, 5), np.float32)).shape == (12, 20)  # small ink enlarged
    assert strokes.fit_box(np.ones((200, 1), np.float32)).shape == (20, 1)
    out = strokes.fit_box(np.random.default_rng(0).random((123, 77), dtype=np.float32))
    assert out.min() >= 0 and out.max() <= 1


def test_downscaling_is_antialiased():
    stripes = np.zeros((200, 200), np.float32)
    stripes[:, ::2] = 1.0  # one-pixel stripes average to grey, not to aliased bars
    out = strokes.fit_box(stripes)
    assert np.abs(out - 0.5).max() < 0.05


def test_centre_of_mass():
    img = np.zeros((5, 7), np.float32)
    img[1, 2] = 1.0
    img[3, 6] = 3.0
    assert imaging.centre_of_mass(img) == (2.5, 5.0)
    assert imaging.centre_of_mass(np.zeros((4, 6), np.float32)) == (1.5, 2.5)


def test_place_by_mass_puts_the_centre_of_mass_at_14_without_losing_ink():
    patch = np.zeros((16, 12), np.float32)
    patch[:8, :] = 1.0  # heavy top: the mass is high and to the left in the box
    patch[8:, 0] = 1.0
    canvas = imaging.place_by_mass(patch)
    cy, cx = imaging.centre_of_mass(canvas)
    assert canvas.shape == (28, 28) and abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert canvas.sum() == patch.sum()
    lopsided = np.zeros((20, 20), np.float32)
    lopsided[0, 0] = 1.0  # the wanted shift would push ink off the canvas: clamped instead
    assert imaging.place_by_mass(lopsided).sum() == 1.0


# --- the whole recipe ----------------------------------------------------------------------


def test_preprocess_makes_an_mnist_style_digit():
    prep = imaging.preprocess(digit_on_paper().convert("RGB"))
    assert not prep.blank and prep.inverted and prep.mode == "RGB" and prep.size == (200, 150)
    assert prep.image.shape == (28, 28) and prep.image.dtype == np.float32
    assert prep.pixels.shape == (28, 28) and prep.pixels.dtype == np.uint8
    assert np.array_equal(prep.image, prep.pixels / np.float32(255))
    rows = np.flatnonzero(prep.pixels.any(1))
    cols = np.flatnonzero(prep.pixels.any(0))
    assert rows[-1] - rows[0] + 1 == 20  # the longer side fits the 20x20 box
    assert cols[-1] - cols[0] + 1 < 20  # and the aspect ratio is kept
    assert prep.pixels[0].sum() == 0 and prep.pixels.max() == 255
    cy, cx = imaging.centre_of_mass(prep.pixels.astype(np.float32))
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


@pytest.mark.slow
def test_an_mnist_digit_passes_through_almost_unchanged(real_mnist):
    digit = real_mnist.test_images[0]
    prep = imaging.preprocess(Image.frombytes("L", (28, 28), bytes(digit.flatten().tolist())))
    assert not prep.inverted
    assert np.abs(prep.pixels.astype(float) - digit.numpy()).mean() < 12  # of 255


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("L", (64, 64), 255),  # white paper
        lambda: Image.new("RGBA", (30, 20), (0, 0, 0, 0)),  # an empty transparent canvas
        lambda: Image.new("L", (1, 1), 0),
        lambda: Image.effect_noise((64, 64), 3),  # faint noise, no ink
        lambda: digit_on_paper(size=(400, 400), box=(100, 100, 101, 101)),  # a speck of dust
        lambda: photo(Image.new("L", (200, 150), 220), random.Random(1), shade=80, noise=20),
        lambda: photo(Image.new("L", (900, 700), 200), random.Random(2), shade=0, noise=40),
        lambda: Image.new("L", (64, 64), 0),  # black
        lambda: Image.new("RGB", (80, 60), (128, 128, 128)),  # flat grey
        lambda: Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)),
        lambda: Image.fromarray(  # strong Gaussian noise around mid-grey, clipped at both ends
            np.clip(np.random.default_rng(1).normal(128, 60, (120, 90)), 0, 255).astype(np.uint8)
        ),
    ],
    ids=[
        "white",
        "transparent",
        "1x1",
        "faint-noise",
        "speck",
        "noisy-photo",
        "grainy-photo",
        "black",
        "flat-grey",
        "uniform-noise",
        "gaussian-noise",
    ],
)
def test_blank_or_near_blank_images_have_no_digit(make):
    prep = imaging.preprocess(make())
    assert prep.blank and prep.image.shape == (28, 28)
    assert prep.pixels.sum() == 0


def six_touching_three_edges(width: int = 8) -> Image.Image:
    """A clean scan of a dark 6 on white, 64x64, its strokes touching the top, left and bottom
    edges (issue 12: this was "no digit found" while the border was taken for background)."""
    im = Image.new("L", (64, 64), 255)
    draw = ImageDraw.Draw(im)
    draw.arc((-4, -2, 90, 110), 180, 265, fill=0, width=width)  # the stem, down the left edge
    draw.ellipse((-2, 26, 44, 66), outline=0, width=width)  # the loop, over left and bottom
    return im


@pytest.mark.parametrize("width", [6, 8, 10, 12])
def test_a_digit_touching_three_edges_is_found(width):
    im = six_touching_three_edges(width)
    ink = np.asarray(im) < 128
    assert ink[0].any() and ink[:, 0].any() and ink[-1].any() and not ink[:, -1].any()
    prep = imaging.preprocess(im)
    assert not prep.blank and prep.inverted
    rows = np.flatnonzero(prep.pixels.any(1))
    assert rows[-1] - rows[0] + 1 == 20  # the whole 6, scaled into the 20x20 box
    assert prep.pixels[:, :2].sum() == 0 and prep.pixels[0].sum() == 0  # centred, not cut


@pytest.mark.slow
def test_mnist_digits_cropped_to_their_ink_are_found(real_mnist):
    """Issue 12: test digits 2000-2019 cropped exactly to their ink (touching all four edges),
    inverted to dark on light and enlarged 4x; 2 of them were "no digit found"."""
    for digit in real_mnist.test_images[2000:2020].numpy():
        rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
        crop = 255 - digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        im = Image.fromarray(crop).resize(
            (crop.shape[1] * 4, crop.shape[0] * 4), Image.Resampling.BICUBIC
        )
        prep = imaging.preprocess(im)
        assert not prep.blank and prep.inverted
        original = imaging.preprocess(Image.fromarray(digit))
        assert np.abs(prep.image - original.image).mean() < 0.06  # the same digit, re-made


def test_paper_level_ignores_ink_and_lines_covering_most_of_the_border():
    paper = np.full(100, 0.02, np.float32)
    paper[:35] = 0.3  # a printed line along one edge
    paper[35:60] = 0.9  # ink crossing the border
    assert imaging.paper_level(paper) == pytest.approx(0.02)
    assert imaging.half_sample_mode(np.array([0.1, 0.5, 0.5, 0.51, 0.9])) == pytest.approx(0.5)


@pytest.mark.parametrize(("shape", "reach"), [((30, 40), 1), ((17, 9), 5), ((50, 50), 20)])
def test_growing_a_mask_matches_a_max_filter(shape, reach):
    from PIL import ImageFilter

    mask = np.random.default_rng(0).random(shape) < 0.05
    im = Image.fromarray(mask.astype(np.uint8) * 255)
    expected = np.asarray(im.filter(ImageFilter.MaxFilter(2 * reach + 1))) > 0
    assert np.array_equal(imaging._grow(mask, reach), expected)


@pytest.mark.parametrize("shade", [60, 100, 130])
def test_polarity_holds_under_a_strong_lighting_gradient(shade):
    """Grey ink (90) on paper that darkens from 220 to 220 - `shade` towards one corner: the
    border spans more than the ink's contrast, and is still read as the paper."""
    ys, xs = np.mgrid[0:100, 0:100]
    paper = 220 - shade * (1 - (ys + xs) / 198)
    stroke = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(stroke).line([(60, 20), (40, 80)], fill=255, width=8)
    cover = np.asarray(stroke) / 255
    im = Image.fromarray(np.round(paper * (1 - cover) + 90 * cover).astype(np.uint8))
    prep = imaging.preprocess(im)
    assert prep.inverted and not prep.blank
    rows = np.flatnonzero(prep.pixels.any(1))
    assert rows[-1] - rows[0] + 1 == 20 and prep.pixels.any(0).sum() < 14  # the stroke alone


def test_a_frame_of_grid_lines_all_round_is_not_taken_for_the_paper():
    im = Image.new("RGB", (100, 100), (245, 245, 245))
    draw = ImageDraw.Draw(im)
    for at in range(0, 100, 33):  # a red grid whose lines run along all four edges
        draw.line([(0, at), (99, at)], fill=(230, 150, 150), width=2)
        draw.line([(at, 0), (at, 99)], fill=(230, 150, 150), width=2)
    draw.line([(0, 98), (99, 98)], fill=(230, 150, 150), width=2)
    draw.line([(98, 0), (98, 99)], fill=(230, 150, 150), width=2)
    draw.line([(55, 15), (45, 85)], fill=(30, 30, 30), width=7)  # the digit, a 1
    prep = imaging.preprocess(im)
    assert not prep.blank and prep.inverted
    assert prep.pixels.any(0).sum() < 14  # the stroke, not the grid


def test_ruled_lines_behind_a_digit_go_black():
    im = Image.new("L", (120, 120), 250)
    draw = ImageDraw.Draw(im)
    for y in range(10, 120, 25):
        draw.line([(0, y), (120, y)], fill=185, width=2)  # pale lines, across the whole page
    draw.rectangle((50, 20, 62, 100), fill=20)  # the digit: a thick 1
    prep = imaging.preprocess(im)
    assert not prep.blank
    cols = np.flatnonzero(prep.pixels.any(0))
    assert cols[-1] - cols[0] + 1 < 10  # only the stroke is left: no line reaches the sides


def test_raw_keeps_28x28_pixels_and_refuses_other_sizes():
    im = Image.new("L", (28, 28), 0)
    im.putpixel((3, 4), 200)
    prep = imaging.preprocess(im, raw=True)
    assert prep.pixels[4, 3] == 200 and prep.pixels.sum() == 200 and not prep.blank
    with pytest.raises(ImageError, match="--raw needs a 28x28 image, this one is 30x28"):
        imaging.preprocess(Image.new("L", (30, 28)), raw=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 48),
    height=st.integers(1, 48),
    mode=st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "1", "CMYK", "PA"]),
    seed=st.integers(0, 2**32 - 1),
    raw=st.booleans(),
)
def test_any_image_gives_a_28x28_input_or_an_image_error(width, height, mode, seed, raw):
    rng = random.Random(seed)
    data = rng.randbytes(width * height * 4)
    if mode in ("I", "F"):  # any 32-bit pattern, including NaN and infinities
        im = Image.frombytes(mode, (width, height), data)
    else:
        im = Image.frombytes("RGBA", (width, height), data).convert(
            "RGB" if mode in ("P", "PA") else mode
        )
        im = im.convert(mode) if mode in ("P", "PA") else im
    try:
        prep = imaging.preprocess(im, raw=raw)
    except ImageError:
        return
    assert prep.image.shape == (28, 28) and prep.image.dtype == np.float32
    assert np.isfinite(prep.image).all()
    assert 0 <= float(prep.image.min()) <= float(prep.image.max()) <= 1
    assert prep.pixels.shape == (28, 28) and prep.pixels.dtype == np.uint8


# --- reading files -------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming `width` x `height` pixels, with no pixel data: a bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not an image"), "not an image this program reads"),
        (lambda p: p.write_bytes(b""), "not an image this program reads"),
        (lambda p: Image.new("L", (8, 8)).save(p, format="PPM"), "not an image this program"),
        (lambda p: Image.new("L", (8, 8)).save(p, format="TGA"), "not an image this program"),
        (lambda p: p.write_bytes(png_header(7000, 7000)), "megapixels, more than the 40"),
        (lambda p: p.write_bytes(png_header(10000, 10000)), "decompression bomb"),
        (lambda p: p.write_bytes(png_header(30000, 30000)), "decompression bomb"),
        (lambda p: p.write_bytes(_png(Image.new("L", (50, 50)))[:60]), "cannot decode"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.symlink_to(p), "cannot read the file"),  # a link to itself: ELOOP
    ],
    ids=[
        *("missing", "text", "empty", "ppm", "tga", "over-cap", "bomb-warn", "bomb", "trunc"),
        *("dir", "link-loop"),
    ],
)
def test_bad_files_are_one_line_image_errors_naming_the_file(tmp_path, make, message):
    path = tmp_path / "digit.png"
    make(path)
    with pytest.raises(ImageError, match=message) as info:
        imaging.load_image(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert info.value.exit_code == 1


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@settings(max_examples=40, deadline=None)
@given(
    magic=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"\xff\xd8\xff", b"II*\x00"]),
    junk=st.binary(max_size=300),
)
def test_corrupt_files_never_raise_anything_but_image_error(tmp_path_factory, magic, junk):
    path = tmp_path_factory.mktemp("fuzz") / "x.img"
    path.write_bytes(magic + junk)
    try:
        imaging.load_image(path)
    except ImageError as exc:
        assert str(exc).startswith(f"{path}: ")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"])
def test_every_allowed_format_reads(tmp_path, fmt):
    path = tmp_path / f"d.{fmt.lower()}"
    digit_on_paper().convert("RGB").save(path, format=fmt)
    prep = imaging.load_image(path)
    assert not prep.blank and prep.inverted and prep.pixels.max() == 255


def test_16_bit_png_is_read(tmp_path):
    im = Image.new("I;16", (60, 60), 60000)
    ImageDraw.Draw(im).rectangle((20, 10, 30, 50), fill=2000)
    im.save(tmp_path / "deep.png")
    prep = imaging.load_image(tmp_path / "deep.png")
    assert prep.mode.startswith("I") and not prep.blank and prep.inverted


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("L", (40, 20), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "phone.jpg", exif=exif)
    assert imaging.open_image(tmp_path / "phone.jpg").size == (20, 40)


def test_animated_gif_uses_the_first_frame(tmp_path):
    first = digit_on_paper(size=(60, 60), box=(25, 10, 32, 50))  # a tall bar
    second = digit_on_paper(size=(60, 60), box=(10, 25, 50, 32))  # a wide bar
    first.save(tmp_path / "anim.gif", save_all=True, append_images=[second], duration=100)
    prep = imaging.load_image(tmp_path / "anim.gif")
    rows = int(prep.pixels.any(1).sum())
    cols = int(prep.pixels.any(0).sum())
    assert rows > cols


# --- user-style images of real digits ------------------------------------------------------


def user_style(digit: torch.Tensor, rng: random.Random, mode: str) -> Image.Image:
    """An MNIST digit as a user would bring it: enlarged, dark ink on light paper, off-centre
    on a wide margin, in `mode` (RGBA: ink on a transparent canvas; "photo": a JPEG with
    uneven lighting and sensor noise)."""
    im = Image.frombytes("L", (28, 28), bytes(digit.flatten().tolist()))
    side = 28 * rng.choice([2, 3, 4, 6])
    im = im.resize((side, side), Image.Resampling.BICUBIC).point(lambda v: 255 - v)
    width, height = side + rng.randint(20, 160), side + rng.randint(20, 160)
    ink = Image.new("L", (width, height), 255)
    ink.paste(im, (rng.randint(0, width - side), rng.randint(0, height - side)))
    canvas = ImageChops.darker(ink, Image.new("L", (width, height), rng.randint(200, 255)))
    if mode == "RGBA":
        rgba = Image.new("RGBA", canvas.size, (20, 20, 90, 0))
        rgba.putalpha(canvas.point(lambda v: 255 - v))
        return rgba
    if mode == "P":
        return canvas.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    if mode == "photo":
        return photo(canvas, rng)
    return canvas.convert(mode)


def photo(
    paper: Image.Image, rng: random.Random, shade: int = 80, noise: float = 10
) -> Image.Image:
    """`paper` as a phone would take it: darker towards one corner by up to `shade` levels,
    Gaussian noise, saved as a JPEG of quality 75."""
    g = torch.Generator().manual_seed(rng.randint(0, 2**31))
    w, h = paper.size
    pixels = torch.frombuffer(bytearray(paper.tobytes()), dtype=torch.uint8).reshape(h, w)
    light = torch.linspace(0, 1, h)[:, None] * 0.5 + torch.linspace(0, 1, w)[None, :] * 0.5
    shaded = pixels.float() - shade * light + torch.randn(h, w, generator=g) * noise
    im = Image.frombytes(
        "L", (w, h), bytes(shaded.clamp(0, 255).to(torch.uint8).flatten().tolist())
    )
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=75)
    return Image.open(buf)


@pytest.mark.slow
def test_user_style_images_are_predicted_as_the_original_digits(trained_run, real_mnist):
    from mnistcli.loading import load_model

    model, _ = load_model(trained_run / "best.pt")
    digits = real_mnist.test_images[:200]
    with torch.inference_mode():
        expected = model(normalize(digits)).argmax(1).numpy()
    backend = functools.partial(module_logits, model)
    rng = random.Random(0)
    rates = {}
    for mode in ("L", "RGB", "RGBA", "P", "photo"):
        batch = [imaging.preprocess(user_style(d, rng, mode)) for d in digits]
        assert not any(p.blank for p in batch)
        got = backend(to_batch(batch)).argmax(1)
        rates[mode] = float((got == expected).mean())
    print(f"agreement with the predictions on the original 28x28 digits: {rates}")
    assert min(rates.values()) >= 0.9, rates
    assert sum(rates.values()) / len(rates) >= 0.93, rates


def test_fifos_are_refused(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file") as info:
        imaging.open_image(fifo)
    assert info.value.path == str(fifo) and info.value.reason == "is not a regular file"


def test_preprocessing_never_imports_torch(tmp_path):
    """One implementation for every backend: an exported model's runtime must not need torch."""
    import subprocess
    import sys

    digit_on_paper().save(tmp_path / "d.png")
    code = (
        "import sys; from pathlib import Path; from mnistcli import imaging; "
        f"p = imaging.load_image(Path({str(tmp_path / 'd.png')!r})); "
        "assert not p.blank and p.pixels.max() == 255, p; "
        "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(0, 255, allow_nan=False, width=32), max_size=40),
    st.sampled_from([np.float32, np.float64, np.uint8]),
    st.sampled_from([0.0, 0.01, 0.37, 0.5, 0.99, 1.0]),
)
def test_median_and_quantile_equal_numpys(values, dtype, q):
    """imaging's own median and quantile (numpy's import numpy.ma) give numpy's exact answers."""
    x = np.array(values, dtype=np.float64).astype(dtype)
    assert imaging.median(x) == (float(np.median(x)) if len(x) else 0.0)
    if len(x):
        assert imaging.quantile(x, q) == float(np.quantile(x, q))


def _ring(width_at_4x: int) -> np.ndarray:
    """A drawn zero: an ellipse outline `width_at_4x` px wide at 4x, reduced to at most 28 px."""
    im = Image.new("L", (112, 112), 0)
    ImageDraw.Draw(im).ellipse((30, 12, 82, 100), outline=255, width=width_at_4x)
    small = np.asarray(im.resize((28, 28), Image.Resampling.BOX), np.float32) / 255
    rows, cols = np.flatnonzero(small.any(1)), np.flatnonzero(small.any(0))
    return small[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def test_stroke_width_measures_drawn_strokes():
    widths = [strokes.stroke_width(strokes.fit_box(_ring(w))) for w in (4, 8, 12, 16)]
    assert widths == sorted(widths)  # thicker pens measure thicker
    # an 8 px pen at 4x is 2 px in 28x28, a little less in the 20 px box (the ring is 22 px
    # tall); the measure runs a little low on curves
    assert 1.6 < widths[1] < 2.4 and 2.8 < widths[3] < 4.2
    assert strokes.stroke_width(np.zeros((20, 20), np.float32)) == 0.0


def test_strokes_outside_mnists_range_are_brought_back():
    """A fine pen is thickened to MNIST's median width, a marker thinned to the range's top."""
    lo, hi = strokes.STROKE_RANGE
    for pen, target in ((4, strokes.STROKE_MEDIAN), (24, hi)):  # a fine pen and a marker
        before = strokes.box_stroke_width(_ring(pen))
        after = strokes.box_stroke_width(strokes.fit_box_with_stroke(_ring(pen)))
        assert not lo <= before <= hi
        assert abs(after - target) <= 0.25, (pen, before, after)
        assert abs(after - before) > 0.5
    inside = _ring(12)
    assert lo <= strokes.box_stroke_width(inside) <= hi
    assert np.array_equal(strokes.fit_box_with_stroke(inside), strokes.fit_box(inside))


@pytest.mark.slow
def test_stroke_range_is_mnists_own(real_mnist):
    """STROKE_RANGE and STROKE_MEDIAN are what preprocess measures on MNIST's training digits
    (2.5th, 50th and 97.5th percentiles), so the correction leaves typical digits alone."""
    pick = np.random.default_rng(0).choice(len(real_mnist.train_images), 1500, replace=False)
    digits = real_mnist.train_images.numpy()[pick]  # (alternate digits differ: not a stride)
    widths = []
    for digit in digits:
        gray, inverted = imaging.make_ink_bright(imaging.to_grayscale(Image.fromarray(digit)))
        crop = imaging.ink_crop(gray)
        assert crop is not None and not inverted
        widths.append(strokes.box_stroke_width(crop))
    lo, mid, hi = np.percentile(widths, [2.5, 50, 97.5])
    assert abs(lo - strokes.STROKE_RANGE[0]) < 0.08
    assert abs(mid - strokes.STROKE_MEDIAN) < 0.08
    assert abs(hi - strokes.STROKE_RANGE[1]) < 0.15


@pytest.mark.slow
def test_marker_drawn_mnist_digits_come_out_with_mnists_stroke_width(real_mnist, monkeypatch):
    """MNIST test digits drawn over with a marker, dark on white: without the correction their
    strokes measure beyond MNIST's range; with it, at its end."""
    hi = strokes.STROKE_RANGE[1]
    papers = []
    for digit in real_mnist.test_images[:40].numpy():
        big = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)
        papers.append(ImageChops.invert(big.filter(ImageFilter.MaxFilter(13))))

    def median_width():
        widths = [strokes.box_stroke_width(imaging.preprocess(p).pixels / 255) for p in papers]
        return np.median(widths)

    corrected = median_width()
    monkeypatch.setattr(strokes, "STROKE_RANGE", (0.0, float("inf")))
    assert median_width() > hi + 0.5
    assert corrected <= hi + 0.35


@pytest.mark.parametrize("shape", [(1, 1), (20, 1), (1, 20), (2, 2)])
def test_stroke_width_of_slivers(shape):
    """A 1 in its 20x20 box can be one pixel wide."""
    assert strokes.stroke_width(np.ones(shape, np.float32)) > 0
    assert strokes.fit_box_with_stroke(np.ones(shape, np.float32)).max() > 0
