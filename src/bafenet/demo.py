"""``bafenet demo``: a Gradio web app around a BAFE-Net model (``pip install 'bafenet[demo]'``).

    bafenet demo --model runs/quickstart/model            # http://127.0.0.1:7860
    bafenet demo --model my-org/bafenet-r18 --port 8080   # a Hub repo (downloaded once, no remote code)

Pick one of the bundled synthetic frames or upload an infrared image; the app shows the overlay of
:func:`bafenet.visualize.draw_detections` (boxes, tinted sky, the zoomed densest cluster), a table of the detections,
a score slider that starts at the model's stored operating point, and the detections as a JSON file to download.

The network runs once per image at the processor's ``detection_threshold``; moving the slider only filters and
redraws. The model is loaded through `bafenet.models.loading` (the package's classes; the repo's own code only with
``--trust-remote-code``). :func:`build_demo` returns the ``gradio.Blocks`` without launching it, so tests and Spaces
(the ``app.py`` that ``bafenet push --space`` writes) run the same app.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import FALLBACK_OPERATING_THRESHOLD
from .predict import BOX_FORMAT, Predictor, load_grey_image

__all__ = ["EXAMPLE_FRAMES", "TABLE_HEADERS", "build_demo", "example_frames", "load_demo",
           "space_files"]

EXAMPLE_FRAMES = (0, 4, 5)  # indices of the synthetic frames offered as examples (seed 0)
TABLE_HEADERS = ["score", "x0", "y0", "x1", "y1", "width", "height"]
DEFAULT_PORT = 7860
SPACE_GRADIO_VERSION = "6.31.0"  # the Space's sdk_version when gradio is not installed here (the tested version)


def example_frames(folder: str | Path, indices: tuple[int, ...] = EXAMPLE_FRAMES, seed: int = 0) -> list[Path]:
    """Write the bundled examples (frames of `bafenet.data.synthetic`, generated, nothing shipped) as PNGs."""
    from PIL import Image

    from .data.synthetic import synthetic_frame

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in indices:
        path = folder / f"synthetic-{index}.png"
        Image.fromarray(synthetic_frame(index, seed)[0], mode="L").save(path)
        paths.append(path)
    return paths


def _operating_threshold(model: Any) -> float:
    stored = getattr(model.config, "operating_threshold", None)
    return FALLBACK_OPERATING_THRESHOLD if stored is None else float(stored)


def build_demo(model: Any, processor: Any, *, title: str = "BAFE-Net: infrared small-target detection",
               operating_threshold: float | None = None, detection_threshold: float | None = None,
               examples_dir: str | Path | None = None) -> Any:
    """The app as a ``gradio.Blocks`` (not launched).

    Args:
        model, processor: a loaded BAFE-Net and its image processor (`bafenet.models.loading`).
        operating_threshold: where the score slider starts (default: ``model.config.operating_threshold``, the
            best-F1 score on validation stored by training, else 0.5).
        detection_threshold: the post-processing cut before NMS (default: the processor's, 0.05); the slider cannot
            show detections below it.
        examples_dir: where the example frames and the JSON downloads are written (default: a new temporary folder).
    """
    import gradio as gr

    from .visualize import draw_detections

    start = _operating_threshold(model) if operating_threshold is None else float(operating_threshold)
    predictor = Predictor.from_loaded(model, processor, operating_threshold=0.0,
                                      detection_threshold=detection_threshold)
    work = Path(examples_dir) if examples_dir is not None else Path(tempfile.mkdtemp(prefix="bafenet-demo-"))
    examples = example_frames(work / "examples")

    def analyse(path: str | None) -> dict[str, Any] | None:
        if not path:
            return None
        image = load_grey_image(path)
        found = predictor([image], sky=True)[0]
        return {"path": path, "image": image, "boxes": found.boxes, "scores": found.scores, "sky": found.sky_mask}

    def show(result: dict[str, Any] | None, threshold: float, tint_sky: bool) -> tuple[Any, Any, str, Any]:
        if result is None:
            return None, [], "Upload an infrared image or pick an example.", None
        keep = result["scores"] >= np.float32(threshold)
        boxes, scores = result["boxes"][keep], result["scores"][keep]
        name = Path(result["path"]).name
        overlay = draw_detections(result["image"], boxes, scores, sky_mask=result["sky"] if tint_sky else None,
                                  title=f"{name}: {len(boxes)} detections >= {threshold:.2f}")
        rows = [[round(float(s), 4), *(round(float(v), 1) for v in b), round(float(b[2] - b[0]), 1),
                 round(float(b[3] - b[1]), 1)] for b, s in zip(boxes, scores)]
        sky_fraction = float(result["sky"].mean()) if result["sky"] is not None else None
        record = {"image": name, "width": result["image"].width, "height": result["image"].height,
                  "box_format": BOX_FORMAT, "operating_threshold": round(float(threshold), 4),
                  "boxes": np.round(boxes, 2).tolist(), "scores": np.round(scores, 4).tolist(),
                  "sky_fraction": None if sky_fraction is None else round(sky_fraction, 4)}
        download = work / "detections" / f"{Path(name).stem}.json"
        download.parent.mkdir(parents=True, exist_ok=True)
        download.write_text(json.dumps(record, indent=1))
        summary = (f"**{len(boxes)}** detections with score >= {threshold:.2f} in {name} "
                   f"({result['image'].width}x{result['image'].height}); {len(result['scores'])} above the "
                   f"detection cut {predictor.detection_threshold:g}"
                   + ("" if sky_fraction is None else f"; predicted sky {100 * sky_fraction:.0f} % of the frame"))
        return overlay, rows, summary, str(download)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\n\nBoxes are drawn outside the targets (2-10 px wide); the panel on the right "
                    "magnifies the densest cluster. The slider starts at the model's operating point "
                    f"({start:.2f}: the best-F1 score on validation when training stored one).")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Infrared image", sources=["upload"], elem_id="input-image")
                gr.Examples([[str(p)] for p in examples], inputs=[image], label="Synthetic frames")
                threshold = gr.Slider(0.0, 1.0, value=round(start, 4), step=0.01, label="Score threshold",
                                      elem_id="score-threshold")
                tint = gr.Checkbox(value=True, label="Tint the predicted sky")
            with gr.Column(scale=2):
                overlay = gr.Image(type="pil", label="Detections", format="png", interactive=False, elem_id="overlay")
                summary = gr.Markdown(elem_id="summary")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Detections (xyxy, original pixels)",
                                     interactive=False, elem_id="detections")
                download = gr.File(label="Detections JSON", elem_id="detections-json")
        outputs = [overlay, table, summary, download]
        image.change(analyse, inputs=[image], outputs=[state]).then(show, [state, threshold, tint], outputs)
        threshold.release(show, [state, threshold, tint], outputs)
        tint.change(show, [state, threshold, tint], outputs)
    return demo


def load_demo(model: str | Path, *, trust_remote_code: bool = False, revision: str | None = None, **kwargs: Any) -> Any:
    """`build_demo` for a model folder or Hub repo id, loaded by `bafenet.models.loading` (float32, eval mode)."""
    import torch

    from .models.loading import load_model, load_processor

    processor = load_processor(model, trust_remote_code=trust_remote_code, revision=revision)
    network = load_model(model, trust_remote_code=trust_remote_code, revision=revision, dtype=torch.float32).eval()
    return build_demo(network, processor, **kwargs)


def space_files(model_repo: str, space_repo: str, *, trust_remote_code: bool = False) -> dict[str, str]:
    """The files of a Gradio Space that runs this demo on the Hub model ``model_repo``: ``app.py``,
    ``requirements.txt`` (this bafenet with the ``demo`` extra) and README.md with the Space metadata.

    The app loads the model through `bafenet.models.loading`, so no code from the model repo runs unless
    ``trust_remote_code`` (written into ``app.py`` for the reader to see)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        sdk_version = version("gradio")
    except PackageNotFoundError:
        sdk_version = SPACE_GRADIO_VERSION
    code = ("True  # runs the .py files of the model repo: review them" if trust_remote_code else
            "False  # the installed bafenet classes load the model; no code from the model repo runs")
    app = f'''"""Web demo of {model_repo}, written by `bafenet push --space` (bafenet {__version__})."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bafenet.demo import load_demo  # noqa: E402

MODEL_REPO = "{model_repo}"
TRUST_REMOTE_CODE = {code}

demo = load_demo(MODEL_REPO, trust_remote_code=TRUST_REMOTE_CODE)

if __name__ == "__main__":
    demo.launch()
'''
    title = space_repo.split("/")[-1]
    readme = f"""---
title: {title}
emoji: 🔭
colorFrom: indigo
colorTo: gray
sdk: gradio
sdk_version: {sdk_version}
app_file: app.py
pinned: false
models:
- {model_repo}
tags:
- object-detection
- infrared
- small-target-detection
- bafenet
---

# {title}

Web demo of [{model_repo}](https://huggingface.co/{model_repo}), a BAFE-Net for dense infrared small-target
detection: pick a synthetic frame or upload an infrared image to see the detections (boxes drawn outside the
targets, the predicted sky tinted, the densest cluster magnified), the table of boxes and scores, and download them as
JSON. The score slider starts at the model's stored operating point.

Written by `bafenet push --space {space_repo} --model-repo {model_repo}` (bafenet {__version__}); the same app runs
locally with `bafenet demo --model {model_repo}`.
"""
    return {"app.py": app, "requirements.txt": f"bafenet[demo]=={__version__}\n", "README.md": readme}
