"""The submit form's framing preview (videojobs/static/videojobs/crop-preview.js) in headless
Chromium: what it says a crop keeps and what size "auto" gives agree with the server's own rule
(videojobs.params.output_size), for a landscape and a portrait picture."""
from __future__ import annotations

import pytest
from PIL import Image

from tests.test_page_browser import chromium  # the same system Chromium, failing under CI where missing
from videojobs.params import output_size

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _kept_percent(image: tuple[int, int], size: tuple[int, int]) -> int:
    """The share of the picture that covering ``size`` and centre-cropping keeps."""
    (iw, ih), (w, h) = image, size
    scale = max(w / iw, h / ih)
    return round(100 * min(iw, w / scale) * min(ih, h / scale) / (iw * ih))


@pytest.mark.parametrize("image", [(320, 240), (240, 400)])
def test_the_preview_shows_what_crop_keeps_and_the_size_auto_gives(live_server, tmp_path, image) -> None:
    path = tmp_path / "in.png"
    Image.new("RGB", image, (90, 150, 220)).save(path)
    with chromium() as browser:
        page = browser.new_page()
        page.goto(live_server.url + "/")
        page.select_option("#id_image_size", "832*480")
        page.set_input_files("#id_image", str(path))
        page.wait_for_selector("#crop-preview:not([hidden])")
        crop = page.inner_text("#crop-caption")
        page.select_option("#id_aspect", "auto")
        auto = page.inner_text("#crop-caption")
        canvas = page.evaluate("() => [document.querySelector('#crop-canvas').width,"
                               " document.querySelector('#crop-canvas').height]")
    assert f"{_kept_percent(image, (832, 480))}% of the picture, as a 832*480 video" in crop, crop
    width, height = output_size(image_size="832*480", aspect="auto", image_width=image[0], image_height=image[1])
    assert f"the whole picture, as a {width}*{height} video" in auto, auto
    assert canvas[0] / canvas[1] == pytest.approx(image[0] / image[1], rel=0.02)
