"""Cards that show what the model does, checked the way a reader sees them: the model folder pushed to the loopback
Hub with its results, PR curve, overlay and latency; its README (and the dataset card) turned into HTML and opened in
the system's headless Chromium, where every image must load and the tables must render."""

from __future__ import annotations

import re

import pytest

from browser import browser
from hub_server import USER, LocalHub

pytestmark = pytest.mark.slow  # evaluation, a local Hub server and a browser

FAKE_TOKEN = "hf_bafenetCARDtoken1234567890"


def render(card: str, folder, name: str = "index.html"):
    """The card's Markdown (front matter dropped) as an HTML page in ``folder``, beside the card's files."""
    import markdown

    body = re.sub(r"^---\s*\n.*?\n---\s*\n", "", card, count=1, flags=re.DOTALL)
    html = markdown.markdown(body, extensions=["tables", "fenced_code"])
    page = folder / name
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{html}</body></html>",
                    encoding="utf-8")
    return page


def open_in_browser(page, screenshot):
    """(images as (src, naturalWidth), number of tables, texts of the table headers) of ``page`` in Chromium."""
    with browser() as driver:
        driver.get(page.as_uri())
        driver.execute_script("window.scrollTo(0, 0)")
        images = driver.execute_script(
            "return Promise.all([...document.images].map(i => i.decode().catch(() => null)"
            ".then(() => [i.getAttribute('src'), i.naturalWidth])))")
        tables = driver.execute_script("return document.querySelectorAll('table').length")
        headers = driver.execute_script("return [...document.querySelectorAll('table th')].map(t => t.textContent)")
        driver.save_screenshot(str(screenshot))
    return images, tables, headers


@pytest.fixture(scope="module")
def results_file(tiny_model_dir, synthetic_dataset_dir, tmp_path_factory):
    from bafenet.cli import main

    out = tmp_path_factory.mktemp("evaluation") / "results.json"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--dataset", str(synthetic_dataset_dir), "--split",
                 "test", "--out", str(out)]) == 0
    return out


def test_pushed_model_card_shows_its_images_and_tables_in_a_browser(tiny_model_dir, synthetic_devkit, results_file,
                                                                    tmp_path, monkeypatch):
    from huggingface_hub import constants

    from bafenet.card_assets import LATENCY_FILE, OVERLAY_FILE
    from bafenet.hub import push

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    frame = sorted((synthetic_devkit / "PNGImages").glob("*.png"))[0]
    repo = f"{USER}/bafenet-card"
    with LocalHub(lifetime=600) as hub:
        push(model_dir=tiny_model_dir, model_repo=repo, token=FAKE_TOKEN, endpoint=hub.endpoint,
             results=(results_file,), card_image=frame, card_latency=True)
        files = hub.files(repo)
    pr_curve = results_file.with_name("results_pr_curve.png").name
    assert {"results.json", pr_curve, OVERLAY_FILE, LATENCY_FILE} <= set(files)
    for path, data in files.items():  # the repo as a reader's clone
        (tmp_path / "repo" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / path).write_bytes(data)
    card = files["README.md"].decode()
    assert f"![precision-recall curve]({pr_curve})" in card and f"]({OVERLAY_FILE})" in card
    assert "| frames | images | targets | mAP07 | mAP12 | recall |" in card and "| 1918 x 1080 |" in card
    assert "torch thread(s) on" in card

    images, tables, headers = open_in_browser(render(card, tmp_path / "repo"), tmp_path / "model_card.png")
    assert {src for src, _ in images} >= {pr_curve, OVERLAY_FILE}
    assert all(width > 0 for _, width in images), images
    assert tables >= 3 and {"frames", "ms per frame", "metric"} <= set(headers), headers


def test_dataset_card_statistics_plots_render_in_a_browser(synthetic_dataset_dir, tmp_path):
    import shutil

    card = (synthetic_dataset_dir / "README.md").read_text(encoding="utf-8")
    shutil.copytree(synthetic_dataset_dir / "stats", tmp_path / "repo" / "stats")  # the plots beside a copy of the card
    images, tables, _ = open_in_browser(render(card, tmp_path / "repo"), tmp_path / "dataset_card.png")
    assert len(images) >= 6 and all(src.startswith("stats/") for src, _ in images), images
    assert all(width > 0 for _, width in images), images
    assert tables >= 2
