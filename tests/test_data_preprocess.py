"""Pixel parsing, image decoding, Viola–Jones ROI, resize/equalise and augmentation (no Ray needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pytest

from data_pipeline import preprocess as pp
from data_pipeline import synth
from data_pipeline.config import PreprocessConfig
from data_pipeline.fer2013 import decode_pixels, fast_pixels, parse_pixels


def face_photo(seed: int, side: int = 256) -> np.ndarray:
    """A synthetic face drawn large on a flat background, like an uncropped lab photo."""
    face = synth.draw_face(seed % 7, np.random.default_rng(seed))
    canvas = np.full((side, side), 120, np.uint8)
    s = int(side * 0.62)
    y, x = int(side * 0.16), int(side * 0.23)
    canvas[y : y + s, x : x + s] = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC)
    return canvas


def test_parse_pixels_matches_per_row_parser_and_flags_bad_rows():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6, 2304), dtype=np.uint8)
    imgs[0, :5] = [0, 7, 10, 99, 255]
    texts = [" ".join(map(str, im)) for im in imgs]
    texts[1] = "  " + texts[1].replace(" ", "  ") + " "
    texts.append(" ".join(texts[2].split()[:-1]))
    texts.append(texts[3].replace(" ", " x", 1))
    texts.append("256 " + " ".join(texts[4].split()[1:]))
    texts.append("")
    texts.append("1000 " + " ".join(texts[4].split()[1:]))
    out, ok = parse_pixels(pa.array(texts))
    assert ok.tolist() == [True] * 6 + [False] * 5
    np.testing.assert_array_equal(out[:6], imgs)
    for i, t in enumerate(texts):
        img, err = decode_pixels(t)
        assert (img is not None) == ok[i], (i, err)
    assert "2303 values" in decode_pixels(texts[6])[1]
    assert "non-integer" in decode_pixels(texts[7])[1]
    assert "0..255" in decode_pixels(texts[8])[1]
    assert "empty" in decode_pixels(texts[9])[1]
    np.testing.assert_array_equal(fast_pixels(pa.array([texts[0], texts[2]])), imgs[[0, 2]])
    assert fast_pixels(pa.array(texts[:3])) is None
    assert fast_pixels(pa.array([texts[0], texts[8]])) is None
    sliced, ok2 = parse_pixels(pa.array(texts).slice(1, 3))
    assert ok2.tolist() == [True, True, True]
    np.testing.assert_array_equal(sliced, imgs[1:4])


def test_decode_image_formats_and_failures():
    gray = np.arange(48 * 40, dtype=np.uint32).reshape(40, 48).astype(np.uint8)
    for ext in (".png", ".bmp", ".tiff", ".jpg"):
        ok, buf = cv2.imencode(ext, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        img, err = pp.decode_image(buf.tobytes())
        assert err is None and img.shape == (40, 48) and img.dtype == np.uint8
        if ext != ".jpg":
            np.testing.assert_array_equal(img, gray)
    ok, buf16 = cv2.imencode(".png", gray.astype(np.uint16) * 256)
    np.testing.assert_array_equal(pp.decode_image(buf16.tobytes())[0], gray)
    assert pp.decode_image(b"")[1] == "empty file"
    assert "cannot decode" in pp.decode_image(b"not an image at all")[1]


def test_face_roi_crops_between_eyes_and_mouth():
    found = 0
    for seed in range(6):
        photo = face_photo(seed)
        face = pp.detect_face(photo)
        crop, flags = pp.face_roi(photo, margin=0.1)
        if face is None:
            assert crop is None and flags == 0
            continue
        found += 1
        fx, fy, fw, fh = face
        assert flags & pp.FACE
        assert crop is not None and crop.shape[0] < fh * 1.1 and crop.shape[1] < fw * 1.1
        assert crop.shape[0] > fh * 0.3 and crop.shape[1] > fw * 0.3
    assert found >= 4
    noise = np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8)
    assert pp.face_roi(noise) == (None, 0)


def test_preprocess_roi_modes_resize_and_equalize():
    photo = face_photo(3)
    auto = PreprocessConfig()
    img, flags, err = pp.preprocess(photo, auto)
    assert err is None and img.shape == (48, 48) and flags & pp.FACE
    small = cv2.resize(photo, (48, 48), interpolation=cv2.INTER_AREA)
    same, flags, _ = pp.preprocess(small, auto)
    assert flags == 0
    np.testing.assert_array_equal(same, small)
    blank = np.full((256, 256), 90, np.uint8)
    img, _, err = pp.preprocess(blank, auto)
    assert img is None and "no face" in err
    img, _, err = pp.preprocess(blank, PreprocessConfig(roi="none", size=64))
    assert err is None and img.shape == (64, 64)
    dim = (small // 4 + 10).astype(np.uint8)
    for mode in ("hist", "clahe"):
        eq = pp.finish(dim, PreprocessConfig(equalize=mode))
        assert int(eq.max()) - int(eq.min()) > 2 * (int(dim.max()) - int(dim.min()))


def test_augment_rotates_zooms_and_mirrors_deterministically():
    img = np.zeros((48, 48), np.uint8)
    img[10:20, 5:15] = 255
    same = pp.augment(img, 0.0, 1.0, False)
    np.testing.assert_array_equal(same, img)
    mirrored = pp.augment(img, 0.0, 1.0, True)
    np.testing.assert_array_equal(mirrored, img[:, ::-1])
    zoomed = pp.augment(img, 0.0, 1.2, False)
    assert zoomed.sum() > img.sum()
    rotated = pp.augment(img, 10.0, 1.1, True)
    assert not np.array_equal(rotated, img[:, ::-1])
    np.testing.assert_array_equal(rotated, pp.augment(img, 10.0, 1.1, True))


@pytest.mark.parametrize("bad", [{"roi": "maybe"}, {"equalize": "gamma"}, {"size": 4}])
def test_preprocess_config_rejects_bad_values(bad):
    from data_pipeline.dataset import DataError

    with pytest.raises(DataError):
        PreprocessConfig(**bad)
