import numpy as np
import pytest
from PIL import Image

from malle.io.images import BadImage, load_rgb, to_rgb


def test_each_bad_file_gets_its_reason(bad_folder):
    folder, expected = bad_folder
    for name, fragment in expected.items():
        if name.endswith(".txt"):
            continue  # filtered by name before decoding
        with pytest.raises(BadImage) as err:
            load_rgb(folder / name)
        assert fragment in str(err.value), (name, str(err.value))


@pytest.mark.parametrize("name", ["cmyk_1.jpg", "gray_1.png", "palette_1.gif", "rgba_1.png", "deep16_1.png",
                                  "small_20px.jpg", "café_été.jpeg"])
def test_odd_but_valid_images_load_as_rgb(bad_folder, name):
    img = load_rgb(bad_folder[0] / name)
    assert img.mode == "RGB" and min(img.size) >= 20


def test_exif_rotation_is_applied(bad_folder):
    # Saved 320x200 with orientation 6: displayed upright it is 200 wide, 320 tall.
    assert load_rgb(bad_folder[0] / "exifrot_1.jpg").size == (200, 320)


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = (np.arange(256, dtype=np.uint16).repeat(16).reshape(64, 64) * 257)
    rgb = np.asarray(to_rgb(Image.fromarray(ramp)))
    assert rgb.max() == 255 and rgb.min() == 0 and len(np.unique(rgb)) > 200


def test_rgba_is_composited_on_white():
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert np.asarray(to_rgb(clear)).min() == 255


def test_bytes_input_and_missing_file(tmp_path):
    with pytest.raises(BadImage, match="not an image"):
        load_rgb(b"hello")
    with pytest.raises(BadImage, match="not found"):
        load_rgb(tmp_path / "nope.jpg")
