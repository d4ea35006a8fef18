"""Model card (README.md) generated from what a training / evaluation run really wrote into a model folder.

Sources, all read defensively (a file that is absent is reported as such, never invented):

- ``config.json`` (required): architecture, mode switches, classes, ``auto_map`` (which usage snippets apply);
- ``preprocessor_config.json``: input size and normalisation;
- ``model.safetensors`` (or its index): parameter count and size, read from the safetensors header only;
- ``train_args.json``: the training arguments, shown as a table (secret-looking keys are left out and said so);
- ``metrics.json`` (training) and ``results*.json`` / ``eval_results*.json`` (``bafenet evaluate``): every numeric
  value is shown with the file's own convention fields (``meta``, ``conventions``, split, thresholds, ...) and the
  PR-curve plot the file names. Nothing else: a model without such files is marked "not evaluated".
"""

from __future__ import annotations

import fnmatch
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from . import CITATION, PAPER_URL

CODE_URL = "https://github.com/GrokCV/BAFE-Net"
DATA_URL = "https://github.com/GrokCV/DenseSIRST"

TRAINING_METRICS_FILES = ("metrics.json",)
EVALUATION_METRICS_GLOBS = ("results*.json", "eval_results*.json")  # `bafenet evaluate --out results.json`
TAGS = ["object-detection", "infrared", "small-target-detection", "bafenet", "densesirst", "custom_code", "vision"]

# Metric names whose meaning is fixed in this project (bafenet.metrics); anything else is shown without a gloss.
KNOWN_METRICS: dict[str, tuple[str, str | None]] = {
    # name: (description, model-index metric type or None)
    "mAP07": ("VOC AP, 11-point interpolation, IoU 0.5", "map"),
    "mAP12": ("VOC AP, area under the precision envelope (VOC2010+), IoU 0.5", "map"),
    "recall": ("final recall over all kept detections", "recall"),
    "precision": ("final precision over all kept detections", "precision"),
    "f1": ("F1 of the final precision and recall", "f1"),
    "Pd": ("target-level probability of detection", None),
    "Fa": ("pixel-level false-alarm rate", None),
    "IoU": ("pixel-level IoU over the whole split", "iou"),
    "mIoU": ("pixel-level IoU over the whole split", "iou"),
    "nIoU": ("mean per-image IoU", None),
    "num_images": ("images scored", None),
    "num_targets": ("ground-truth targets", None),
}

# config.json keys that every transformers config has; the card shows only the model's own fields.
_CONFIG_BOILERPLATE = {
    "architectures", "auto_map", "model_type", "transformers_version", "dtype", "torch_dtype", "id2label", "label2id",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tie_word_embeddings",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "chunk_size_feed_forward", "problem_type",
    "_name_or_path", "pruned_heads", "tf_legacy_loss", "task_specific_params", "finetuning_task", "tokenizer_class",
    "prefix", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "cross_attention_hidden_size", "output_scores", "return_dict_in_generate", "use_cache",
}
# Top-level objects of a metrics file that describe the run rather than measure it.
_CONVENTION_SECTIONS = ("meta", "conventions", "config", "args", "settings")
# Numeric fields that describe how numbers were measured rather than being measurements.
_CONVENTION_SUFFIXES = ("threshold", "thresholds", "size", "seed", "epoch", "step", "max_detections", "max_per_image",
                        "top_k", "plus_one", "num_classes")
_SECRET_WORDS = ("token", "password", "secret", "api_key", "apikey", "credential")


class CardSourceError(ValueError):
    """A JSON file of the model folder could not be read; the message names the file and the problem."""


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CardSourceError(f"{path}: cannot be read as JSON ({err})") from err


Extra = Mapping[str, "Path | bytes"]  # files pushed beside the folder's (path in the repo -> file or bytes)


def _has(folder: Path, extra: Extra, name: str) -> bool:
    return name in extra or (folder / name).is_file()


def _read_extra(folder: Path, extra: Extra, name: str) -> Any:
    item = extra.get(name, folder / name)
    if isinstance(item, bytes):
        try:
            return json.loads(item)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CardSourceError(f"{name}: cannot be read as JSON ({err})") from err
    return read_json(item)


def _read_optional(folder: Path, patterns: tuple[str, ...], extra: Extra | None = None) -> list[tuple[str, Any]]:
    extra = extra or {}
    names = dict.fromkeys(p.name for pattern in patterns for p in sorted(folder.glob(pattern)) if p.is_file())
    names.update(dict.fromkeys(n for n in sorted(extra) if "/" not in n and any(fnmatch.fnmatch(n, p)
                                                                                  for p in patterns)))
    return [(name, _read_extra(folder, extra, name)) for name in names]


def count_parameters(folder: Path) -> tuple[int, int] | None:
    """(number of parameters, bytes on disk) of the safetensors weights, from their headers only."""
    index = folder / "model.safetensors.index.json"
    shards = sorted(set(read_json(index)["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    total = size = 0
    for shard in shards:
        path = folder / shard
        if not path.is_file():
            return None
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
        size += path.stat().st_size
    return total, size


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten nested objects into dotted keys (``{"voc": {"mAP07": 0.3}}`` -> ``voc.mAP07``); lists stay leaves."""
    if isinstance(data, dict) and data:
        items: list[tuple[str, Any]] = []
        for key, value in data.items():
            items += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return items
    return [(prefix, data)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(value)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def split_metrics(data: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]], list[str]]:
    """Split a metrics JSON into (numeric metrics, convention fields, notes on what is not tabulated)."""
    if not isinstance(data, dict):
        return [], [], [f"top level is a {type(data).__name__}, not an object: not tabulated"]
    numbers, conventions, notes = [], [], []
    for key, value in _flatten(data):
        if not key:
            continue
        described = key.split(".", 1)[0] in _CONVENTION_SECTIONS
        if _is_number(value) and not described and not key.rsplit(".", 1)[-1].lower().endswith(_CONVENTION_SUFFIXES):
            numbers.append((key, value))
        elif _is_number(value):
            conventions.append((key, value))
        elif value is None or isinstance(value, (str, bool)):
            conventions.append((key, value))
        elif isinstance(value, list) and len(value) <= 8 and all(not isinstance(v, (dict, list)) for v in value):
            conventions.append((key, value))
        else:
            notes.append(f"`{key}` ({type(value).__name__} of {len(value)} entries) is in the file, not tabulated")
    return numbers, conventions, notes


def _by_size_lines(data: Any) -> list[str]:
    """The VOC numbers per frame-size group that `bafenet evaluate` writes under ``by_size``, as one table."""
    groups = data.get("by_size") if isinstance(data, dict) else None
    if not isinstance(groups, dict) or not groups:
        return []
    rule = (data.get("conventions") or {}).get("by_size") if isinstance(data.get("conventions"), dict) else None
    lines = ["Per frame size" + (f" ({_md(rule)})" if isinstance(rule, str) else "") + ":", "",
             "| frames | images | targets | mAP07 | mAP12 | recall |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in groups.items():
        if isinstance(row, dict):
            cells = [_fmt(row.get(key, "")) for key in ("images", "targets", "mAP07", "mAP12", "recall")]
            lines.append(f"| {_md(str(name))} | " + " | ".join(cells) + " |")
    return lines + [""]


def _metric_section(title: str, filename: str, data: Any, folder: Path, extra: Extra | None = None) -> list[str]:
    numbers, conventions, notes = split_metrics(data)
    lines = [f"### {title} (`{filename}`)", ""]
    meta = data.get("meta") if isinstance(data, dict) else None
    plot = meta.get("pr_curve") if isinstance(meta, dict) else None
    if isinstance(plot, str) and _has(folder, extra or {}, plot):
        lines += [f"![precision-recall curve]({plot})", ""]
    lines += _by_size_lines(data)
    if conventions:
        lines += ["Conventions recorded with these numbers:", ""]
        lines += [f"- `{key}`: {_md(_fmt(value))}" for key, value in conventions]
        lines.append("")
    if numbers:
        lines += ["| metric | value | meaning |", "| --- | --- | --- |"]
        for key, value in numbers:
            meaning = KNOWN_METRICS.get(key.rsplit(".", 1)[-1], ("", None))[0]
            lines.append(f"| `{_md(key)}` | {_fmt(value)} | {meaning} |")
        lines.append("")
    else:
        lines += ["No numeric metric in this file.", ""]
    lines += [f"- {note}" for note in notes]
    return lines + ([""] if notes else [])


def _eval_results(evaluations: list[tuple[str, Any]], dataset_repo: str) -> list[EvalResult]:
    """model-index entries for the known headline metrics that `bafenet evaluate` measured."""
    results = []
    for _, data in evaluations:
        if not isinstance(data, dict):
            continue
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        split, config = data.get("split", meta.get("split")), data.get("config", meta.get("config"))
        for key, value in _flatten(data):
            if key.split(".", 1)[0] in _CONVENTION_SECTIONS:
                continue
            metric_type = KNOWN_METRICS.get(key.rsplit(".", 1)[-1], ("", None))[1]
            if metric_type and _is_number(value):
                results.append(EvalResult(
                    task_type="object-detection", dataset_type=dataset_repo, dataset_name="DenseSIRST",
                    dataset_config=config if isinstance(config, str) else None,
                    dataset_split=split if isinstance(split, str) else None,
                    metric_type=metric_type, metric_value=float(value), metric_name=key,
                ))
    return results


def _architecture_lines(config: dict[str, Any], preprocessor: dict[str, Any] | None,
                        params: tuple[int, int] | None) -> list[str]:
    backbone = f"a `{config['backbone']}`" if isinstance(config.get("backbone"), str) else "a"
    lines = [
        f"BAFE-Net ([arXiv 2407.20078]({PAPER_URL})): an FCOS-style anchor-free detector for dense infrared small "
        f"targets with {backbone} backbone (timm), an FPN neck and a detection head that exchanges features with a "
        "sky-segmentation branch (background-aware feature exchange).",
        "",
    ]
    facts = []
    if params is not None:
        facts.append(f"- parameters: {params[0]:,} ({params[1] / 1e6:.2f} MB of safetensors weights)")
    if config.get("architectures"):
        facts.append(f"- class: `{', '.join(config['architectures'])}` (model type `{config.get('model_type', '?')}`)")
    if isinstance(config.get("id2label"), dict):
        facts.append(f"- classes: {', '.join(str(v) for v in config['id2label'].values())}")
    if preprocessor:
        size = preprocessor.get("size")
        if size is not None:
            facts.append(f"- input size (image processor): `{json.dumps(size)}`")
        for key in ("normalization", "image_mean", "image_std", "detection_threshold", "nms_iou_threshold",
                    "max_detections"):  # the processor's settings (preprocessor_config.json owns them)
            if key in preprocessor:
                facts.append(f"- {key.replace('_', ' ')} (image processor): `{json.dumps(preprocessor[key])}`")
    lines += facts + ([""] if facts else [])
    fields = [(k, v) for k, v in config.items() if k not in _CONFIG_BOILERPLATE and not k.startswith("_")]
    scalars = [(k, v) for k, v in fields if not isinstance(v, dict) and not isinstance(v, bool) and k != "mode"]
    if scalars:
        lines += ["| config field | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {_md(_fmt(v))} |" for k, v in scalars]
        lines.append("")
    return lines


def _mode_lines(config: dict[str, Any]) -> list[str]:
    switches = [(k, v) for k, v in config.items() if isinstance(v, bool) and k not in _CONFIG_BOILERPLATE]
    mode = config.get("mode")
    lines = ["## Mode", ""]
    if isinstance(mode, str):
        meaning = {
            "faithful": "its network is the original BAFE-Net code, quirks included, with every improvement switch off",
            "improved": "at least one improvement switch below deviates from the original code on purpose",
        }.get(mode, "")
        lines += [f"This checkpoint was built in **{mode}** mode" + (f": {meaning}." if meaning else "."), ""]
    elif not switches:
        lines += ["`config.json` records no mode and no switches.", ""]
    if switches:
        lines += ["Switches recorded in `config.json`:", "", "| switch | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {v} |" for k, v in switches]
        lines.append("")
    return lines + _training_setting_lines(config)


def _training_setting_lines(config: dict[str, Any]) -> list[str]:
    """How the backbone was initialised and whether its BatchNorm was frozen; whether the run is the paper's."""
    from bafenet.models.bafenet import BafeNetConfig

    try:
        parsed = BafeNetConfig.from_dict(config)
    except (TypeError, ValueError):
        return ["`config.json` does not say how the backbone was initialised.", ""]
    weights = (parsed.backbone_weights_provenance or {}).get("name")
    init = "ImageNet weights" + (f" (`{weights}`)" if weights else "") if parsed.backbone_init == "imagenet" \
        else f"{parsed.backbone_init} weights"
    lines = [f"- backbone `{parsed.backbone}` initialised from {init}; its BatchNorm was "
             f"{'frozen' if parsed.freeze_backbone_bn else 'trained'}"]
    if parsed.paper_faithful:
        lines.append("- **paper-faithful**: the original network, an ImageNet ResNet backbone with frozen BatchNorm")
    else:
        lines.append("- **not paper-faithful**; deviations from the paper: " + "; ".join(parsed.paper_deviations))
    return lines + [""]


def _training_lines(train_args: Any) -> list[str]:
    lines = ["## Training", ""]
    if train_args is None:
        return lines + ["No `train_args.json` in the model folder: the training arguments are unknown.", ""]
    if not isinstance(train_args, dict):
        return lines + ["`train_args.json` is not a JSON object: not shown.", ""]
    hidden = [k for k in train_args if any(word in k.lower() for word in _SECRET_WORDS)]
    lines += ["Arguments recorded in `train_args.json`:", "", "| argument | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {_md(_fmt(v))} |" for k, v in train_args.items() if k not in hidden]
    lines.append("")
    if hidden:
        lines += [f"Left out of this card (may hold credentials): {', '.join(f'`{k}`' for k in hidden)}.", ""]
    return lines


def _showcase_lines(folder: Path, extra: Extra) -> list[str]:
    """The overlay of a real frame and the latency per frame size (`bafenet.card_assets`), when pushed."""
    from .card_assets import LATENCY_FILE, OVERLAY_FILE

    lines: list[str] = []
    if _has(folder, extra, OVERLAY_FILE):
        lines += ["## What it detects", "", f"![detections of this model on a frame]({OVERLAY_FILE})", "",
                  "The model's detections at its operating point (`bafenet push --card-image`): boxes drawn outside "
                  "the targets, the predicted sky tinted blue, and on the right the densest cluster magnified.", ""]
    if _has(folder, extra, LATENCY_FILE):
        data = _read_extra(folder, extra, LATENCY_FILE)
        measured = data.get("measured", {}) if isinstance(data, dict) else {}
        frames = data.get("frames", []) if isinstance(data, dict) else []
        lines += ["## Speed", "", f"Measured by `bafenet push --card-latency` ({_md(str(measured.get('what', '')))}): "
                  f"{measured.get('torch_threads', '?')} torch thread(s) on {_md(str(measured.get('cpu', '?')))}, "
                  f"torch {measured.get('torch', '?')}, input mode `{measured.get('input_mode', '?')}`, "
                  f"{measured.get('date', '?')} (`{LATENCY_FILE}`).", "",
                  "| frame (W x H) | ms per frame |", "| --- | ---: |"]
        lines += [f"| {row.get('width')} x {row.get('height')} | {_fmt(row.get('median_ms'))} |" for row in frames
                  if isinstance(row, dict)]
        lines.append("")
    return lines


def _usage_lines(repo_id: str, auto_map: dict[str, Any], dataset_repo: str | None) -> list[str]:
    lines = ["## How to use", "", "With the `bafenet` package installed, `import bafenet.models` registers the model "
             "with the Auto classes and no code from this repository runs: drop `trust_remote_code=True` below (and "
             "pass `pipeline_class=BafeNetObjectDetectionPipeline, trust_remote_code=False` to the pipeline). Without "
             "the package, the model code ships with the weights: pass `trust_remote_code=True` (pin `revision=` to a "
             "commit you have reviewed).", ""]
    if "AutoModelForObjectDetection" in auto_map and "AutoImageProcessor" in auto_map:
        lines += ["Detection with the image processor:", "", "```python", "import torch", "from PIL import Image",
                  "from transformers import AutoImageProcessor, AutoModelForObjectDetection", "",
                  f'processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
                  f'model = AutoModelForObjectDetection.from_pretrained("{repo_id}", trust_remote_code=True).eval()',
                  "", 'image = Image.open("frame.png")  # single-band infrared; L, RGB or RGBA are accepted',
                  'inputs = processor(images=image, return_tensors="pt")', "with torch.no_grad():",
                  "    outputs = model(**inputs)",
                  "threshold = model.config.operating_threshold or 0.3  # the stored operating point (best F1 on "
                  "validation)",
                  "result = processor.post_process_object_detection(",
                  "    outputs, threshold=threshold, target_sizes=[(image.height, image.width)]", ")[0]",
                  'result = {k: v[result["scores"] >= threshold] for k, v in result.items()}  # final scores',
                  'for score, box in zip(result["scores"], result["boxes"]):  # boxes: xyxy in original pixels',
                  '    print(f"{score:.2f}", [round(v, 1) for v in box.tolist()])', "```", "",
                  "With the pipeline:", "", "```python", "from transformers import pipeline", "",
                  f'detector = pipeline("object-detection", model="{repo_id}", trust_remote_code=True)',
                  'print(detector("frame.png"))  # default threshold: the operating point; boxes rounded to pixels',
                  "```", ""]
    if "AutoModel" in auto_map:
        lines += ["The bare model (same class, outputs with `logits`, `pred_boxes`, `centerness`, `sky_logits`):", "",
                  "```python", "from transformers import AutoModel", "",
                  f'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)', "```", ""]
    if dataset_repo:
        lines += ["The data:", "", "```python", "from datasets import load_dataset", "",
                  f'ds = load_dataset("{dataset_repo}")  # splits train / validation / test (v2); "v1" config too',
                  "```", ""]
    return lines


def build_model_card(
    model_dir: str | Path,
    repo_id: str,
    *,
    dataset_repo: str | None = None,
    license: str | None = None,
    extra_files: Extra | None = None,
) -> str:
    """Return the README.md text (YAML metadata + Markdown) for the model folder ``model_dir``.

    ``extra_files`` (path in the repo -> file or bytes) are pushed beside the folder's files: results JSONs and
    their PR curves, ``card/overlay.png`` and ``card/latency.json`` among them are shown as if they were in the folder.

    Without ``license`` the card says ``other`` and links to the data's situation: DenseSIRST has no licence upstream,
    so nobody can grant a licence on weights trained on it on the user's behalf.
    """
    folder = Path(model_dir)
    config = read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise CardSourceError(f"{folder / 'config.json'}: expected a JSON object")
    preprocessor, train_args = (read_json(folder / name) if (folder / name).is_file() else None
                                for name in ("preprocessor_config.json", "train_args.json"))
    training = _read_optional(folder, TRAINING_METRICS_FILES)
    extra = extra_files or {}
    evaluations = _read_optional(folder, EVALUATION_METRICS_GLOBS, extra)
    auto_map = {**(config.get("auto_map") or {}), **((preprocessor or {}).get("auto_map") or {})}
    name = repo_id.split("/")[-1]

    eval_results = _eval_results(evaluations, dataset_repo) if dataset_repo else []
    licence_fields = ({"license": license} if license else
                      {"license": "other", "license_name": "densesirst-no-licence", "license_link": DATA_URL})
    card_data = ModelCardData(
        **licence_fields, library_name="transformers", pipeline_tag="object-detection", tags=TAGS,
        datasets=[dataset_repo] if dataset_repo else None, model_name=name if eval_results else None,
        eval_results=eval_results or None,
    )
    lines = ["---", card_data.to_yaml(), "---", "", f"# {name}", "",
             "BAFE-Net for dense infrared small-target detection, packaged with the `bafenet` library for the "
             "DenseSIRST dataset ("
             + (f"[{dataset_repo}](https://huggingface.co/datasets/{dataset_repo}); " if dataset_repo else "")
             + f"source: [GrokCV/DenseSIRST]({DATA_URL})). This card was generated by `bafenet push` from the files "
             "of the model folder; every number below was read from those files.", "", "## Architecture", ""]
    lines += _architecture_lines(config, preprocessor, count_parameters(folder))
    lines += _mode_lines(config)
    lines += _training_lines(train_args)
    lines += ["## Evaluation", ""]
    if not training and not evaluations:
        lines += ["**Not evaluated**: the model folder holds no `metrics.json` / `results.json`, so this card shows "
                  "no metric. Run `bafenet evaluate` and push again to add them.", ""]
    for filename, data in training:
        lines += _metric_section("Measured during training", filename, data, folder)
    for filename, data in evaluations:
        lines += _metric_section("Measured by `bafenet evaluate`", filename, data, folder, extra)
    lines += _showcase_lines(folder, extra)
    lines += _usage_lines(repo_id, auto_map, dataset_repo)
    lines += [
        "## Limitations", "",
        "- Trained for single-frame, single-band infrared images of small targets against sky and ground clutter "
        "(one class, `target`); other sensors, resolutions or object sizes are out of distribution.",
        "- Boxes follow the dataset convention: 0-based pixel coordinates with an exclusive maximum (xyxy).",
        "- Targets are a few pixels wide: resizing, JPEG compression or denoising before the processor changes them "
        "and the detections.",
        "- Scores are not calibrated probabilities; choose the threshold on a validation split.",
        "- Without the `bafenet` package the code runs from this repository (`trust_remote_code=True`): review it "
        "and pin a revision.",
        "- DenseSIRST has no licence file upstream ([GrokCV/DenseSIRST](" + DATA_URL + ")); the weights are for "
        "research use"
        + (f". The card's licence ({license}) was chosen by the publisher." if license else
           ", and the card's licence is `other` until the data's owners publish one (pass `--license` to "
           "`bafenet push` to set another)."), "",
        "## Citation", "",
        f"Paper: [{PAPER_URL}]({PAPER_URL}); original code: [{CODE_URL}]({CODE_URL}).", "",
        "```bibtex", CITATION, "```", "",
    ]
    return "\n".join(lines)
