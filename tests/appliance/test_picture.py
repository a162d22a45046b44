"""appliance/picture.py: what a picture claims to be, checked before it is decoded."""

from __future__ import annotations

import cv2
import pytest

from appliance import picture
from tests.support.pictures import encoded, jpeg_claiming, png_claiming


@pytest.mark.parametrize("ext, fmt, kwargs", [
    (".jpg", "JPEG", {}), (".png", "PNG", {}), (".webp", "WebP", {}), (".bmp", "BMP", {}),
    (".webp", "WebP", {"params": [cv2.IMWRITE_WEBP_QUALITY, 101]}),  # lossless: VP8L
    (".jpg", "JPEG", {"params": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]}),
])
def test_the_four_accepted_formats_are_read_with_their_size(ext, fmt, kwargs):
    data = encoded(ext, 320, 200, **kwargs)
    assert picture.read_header(data) == picture.PictureHeader(fmt, 320, 200)
    assert picture.decode(data).shape == (200, 320, 3)


@pytest.mark.parametrize("ext, name", [
    (".tiff", "TIFF"), (".ppm", "PNM"), (".pfm", "PFM"), (".hdr", "Radiance HDR"), (".ras", "Sun raster"),
])
def test_other_formats_opencv_could_decode_are_refused_by_name(ext, name):
    with pytest.raises(picture.PictureError, match=f"a {name}.*only JPEG, PNG, WebP or BMP"):
        picture.decode(encoded(ext))


def test_a_tiny_jpeg_claiming_65500_pixels_a_side_is_refused_without_decoding():
    data = jpeg_claiming(65500, 65500)
    assert len(data) < 1000
    with pytest.raises(picture.PictureError, match=r"the JPEG is 65500x65500 pixels \(4290 megapixels\)"):
        picture.decode(data)


def test_a_small_png_that_really_holds_30000_by_30000_pixels_is_refused_from_its_header():
    data = png_claiming(30000, 30000)
    assert len(data) < 1_000_000
    with pytest.raises(picture.PictureError, match="the PNG is 30000x30000 pixels"):
        picture.decode(data)


def test_a_large_jpeg_is_decoded_by_the_jpeg_decoder_at_the_size_it_is_needed():
    data = encoded(".jpg", 4000, 3000)
    assert picture.decode(data, fit=(1920, 1080)).shape == (1500, 2000, 3)  # 1/2: still covers
    assert picture.decode(data, fit=(640, 360)).shape == (750, 1000, 3)  # 1/4 (1/8 would not cover)
    assert picture.decode(data).shape == (3000, 4000, 3)


@pytest.mark.parametrize("data, words", [
    (b"", "not a picture"), (b"hello", "not a picture"), (b"\xff\xd8\xff\xe0\x00\x10JFIF", "no frame header"),
    (b"\x89PNG\r\n\x1a\n", "not a picture"), (b"BM\x00", "cut short"),
])
def test_damaged_headers_are_a_clear_error(data, words):
    with pytest.raises(picture.PictureError, match=words):
        picture.decode(data)


def test_a_header_that_is_fine_over_damaged_data_is_a_clear_error():
    data = encoded(".png", 300, 200)
    with pytest.raises(picture.PictureError, match="could not be decoded"):
        picture.decode(data[:200])
