import numpy as np
import pytest

from holoburn.processing.preprocess import letterbox_geometry, prepare_input, restore_mask


@pytest.mark.parametrize("h,w", [(480, 640), (640, 480), (1080, 1920), (97, 13), (256, 256)])
def test_mask_round_trip_keeps_geometry(h, w):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[: h // 2] = 255  # top half white
    x, box = prepare_input(frame, 64, (0, 0, 0), (1, 1, 1))
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    # a mask that is 1 where the model input is bright comes back at frame size, top half
    mask_square = (x[0, 0] > 127).astype(np.uint8)
    mask = restore_mask(mask_square, box)
    assert mask.shape == (h, w)
    agree = (mask == (np.arange(h)[:, None] < h // 2)).mean()
    assert agree > 0.9


def test_padding_is_zero_after_normalisation():
    frame = np.full((100, 200, 3), 200, np.uint8)
    x, box = prepare_input(frame, 64, (200, 200, 200), (10, 10, 10))
    assert box.top == 16 and box.height == 32 and box.left == 0
    assert np.all(x == 0)


def test_normalisation_values():
    frame = np.full((32, 32, 3), (10, 20, 30), np.uint8)
    x, _ = prepare_input(frame, 32, (10, 10, 10), (2, 5, 10))
    assert np.allclose(x[0, :, 5, 5], [0.0, 2.0, 2.0])


def test_bad_frames_rejected():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        prepare_input(np.zeros((10, 10), np.uint8), 32, (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError):
        letterbox_geometry(0, 10, 32)
