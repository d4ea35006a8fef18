"""`bafenet demo`: the Gradio app in a real browser (the system's headless Chromium), examples, CLI glue."""

from __future__ import annotations

import os

import numpy as np
import pytest

from browser import browser, free_port
from conftest import TINY_MODEL_KWARGS

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def eager_model():
    """A random tiny BAFE-Net whose classifier starts at p = 0.5, so it detects something in every frame."""
    import torch

    from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor

    torch.manual_seed(0)
    config = BafeNetConfig(**TINY_MODEL_KWARGS, prior_prob=0.5)
    config.operating_threshold = 0.2
    size = TINY_MODEL_KWARGS["image_size"]
    return BafeNetForObjectDetection(config).eval(), BafeNetImageProcessor(size={"height": size, "width": size})


def test_example_frames_are_the_synthetic_devkit_frames(tmp_path):
    from PIL import Image

    from bafenet.data.synthetic import synthetic_frame
    from bafenet.demo import EXAMPLE_FRAMES, example_frames

    paths = example_frames(tmp_path)
    assert [p.name for p in paths] == [f"synthetic-{i}.png" for i in EXAMPLE_FRAMES]
    image, sky, boxes = synthetic_frame(EXAMPLE_FRAMES[0])
    assert np.array_equal(np.asarray(Image.open(paths[0])), image) and len(boxes) > 0 and sky.any()


def test_demo_command_without_gradio_says_how_to_install_it(monkeypatch, capsys, tiny_model_dir):
    import builtins

    from bafenet.cli import main

    real_import = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio" or name.startswith("gradio."):
            raise ImportError("No module named 'gradio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    assert main(["demo", "--model", str(tiny_model_dir)]) == 1
    assert "pip install 'bafenet[demo]'" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_in_a_browser_shows_boxes_and_the_detections_table(eager_model, tmp_path):
    """Start the app on a loopback port, upload a frame in headless Chromium, wait for the overlay and the table;
    the screenshot is left in the test's temporary folder (demo.png)."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from bafenet.demo import build_demo, example_frames

    model, processor = eager_model
    frame = example_frames(tmp_path / "upload", indices=(4,))[0]
    demo = build_demo(model, processor, examples_dir=tmp_path / "app")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    try:
        with browser() as driver:
            driver.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image input[type=file]"))
            slider = driver.find_element(By.CSS_SELECTOR, "#score-threshold input[type=number]")
            assert float(slider.get_attribute("value")) == pytest.approx(0.2)  # the model's operating point
            driver.find_element(By.CSS_SELECTOR, "#input-image input[type=file]").send_keys(str(frame))
            overlay = wait.until(lambda d: next((img for img in d.find_elements(By.CSS_SELECTOR, "#overlay img")
                                                 if d.execute_script("return arguments[0].complete && "
                                                                     "arguments[0].naturalWidth", img)), None))
            first = wait.until(lambda d: [c.text.strip() for c in d.find_elements(
                By.CSS_SELECTOR, "#detections [role=gridcell][data-row='0']")] or None)
            rows = {c.get_attribute("data-row") for c in driver.find_elements(By.CSS_SELECTOR,
                                                                               "#detections [role=gridcell]")}
            summary = driver.find_element(By.CSS_SELECTOR, "#summary").text
            width = driver.execute_script("return arguments[0].naturalWidth", overlay)
            driver.save_screenshot(str(tmp_path / "demo.png"))
    finally:
        demo.close()
    assert len(rows) > 0 and len(first) == 7 and float(first[0]) >= 0.2, first  # score, x0, y0, x1, y1, w, h
    assert "detections with score >= 0.20 in synthetic-4.png" in summary
    assert width == sum(Image.open(frame).size)  # the image and, beside it, the zoom panel as tall as the image
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    print(f"screenshot: {tmp_path / 'demo.png'}")
