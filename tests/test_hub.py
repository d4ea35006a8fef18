"""`bafenet push` / push_to_hub.py against a local Hub stand-in (tests/hub_server.py, loopback only).

The round trip runs the real script in a subprocess with ``HF_ENDPOINT`` pointing at the stand-in, then loads both
artefacts back in a fresh process with ``load_dataset("tester/densesirst")`` and
``AutoModel.from_pretrained("tester/bafenet-tiny", trust_remote_code=True)``. The other tests call
``bafenet.hub.push`` in-process with an explicit endpoint.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from hub_server import USER, LocalHub, parse_front_matter, validate_card_metadata

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "hf_bafenetTESTtoken1234567890LeakCanary"
MODEL_REPO = f"{USER}/bafenet-tiny"
DATASET_REPO = f"{USER}/densesirst"


@pytest.fixture(scope="module")
def hub():
    with LocalHub(lifetime=600) as server:
        yield server


@pytest.fixture
def hub_api(hub, monkeypatch):
    """In-process clients: Xet off (read at call time) and the stand-in as endpoint."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return hub


def _linked_copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of a folder made of hard links (cheap for the weights; symlinks leaving a folder are refused), without
    the files in ``drop``. Tests replace a linked file with ``unlink`` + write, never write through it."""
    for path in src.rglob("*"):
        rel = path.relative_to(src).as_posix()
        if path.is_file() and rel not in drop:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dst / rel)
            except OSError:
                shutil.copy2(path, dst / rel)
    return dst


def _push(hub: LocalHub, **kwargs):
    from bafenet.hub import push

    out = io.StringIO()
    commits = push(endpoint=hub.endpoint, out=out, **kwargs)
    return commits, out.getvalue()


# -- round trip with the real scripts ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pushed(hub, tiny_model_dir, synthetic_dataset_dir, tmp_path_factory):
    """`python push_to_hub.py` of both folders in a subprocess (debug logging on, to catch any token in logs)."""
    home = tmp_path_factory.mktemp("push_home")
    env = {**os.environ, **hub.client_env(home, token=FAKE_TOKEN), "HF_HUB_VERBOSITY": "debug",
           "TRANSFORMERS_VERBOSITY": "debug", "DATASETS_VERBOSITY": "debug"}
    cmd = [sys.executable, str(REPO_ROOT / "push_to_hub.py"), "--model-dir", str(tiny_model_dir),
           "--model-repo", MODEL_REPO, "--dataset-dir", str(synthetic_dataset_dir), "--dataset-repo", DATASET_REPO]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=home)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"home": home, "stdout": result.stdout, "stderr": result.stderr, "env": env}


LOAD_BACK = textwrap.dedent("""
    import json, sys
    import torch
    from datasets import load_dataset
    from transformers import AutoImageProcessor, AutoModel, AutoModelForObjectDetection

    model_dir, dataset_dir, model_repo, dataset_repo = sys.argv[1:5]
    report = {}
    for config in ("default", "v1"):
        local = load_dataset(dataset_dir, config)
        remote = load_dataset(dataset_repo) if config == "default" else load_dataset(dataset_repo, config)
        report[config] = {
            split: {"rows": remote[split].num_rows, "local_rows": local[split].num_rows,
                    "same_features": remote[split].features == local[split].features,
                    "same_table": remote[split].data.table.equals(local[split].data.table),
                    "labels": [len(o["bbox"]) for o in remote[split]["objects"]]}
            for split in local
        }
        report[config]["splits"] = sorted(remote)

    torch.manual_seed(0)
    pixel_values = torch.rand(1, 3, 128, 128)
    image = load_dataset(dataset_dir, split="test")[0]["image"]
    outputs = {}
    for name, source, auto_class in (("local", model_dir, AutoModelForObjectDetection), ("hub", model_repo, AutoModel),
                                     ("hub_detector", model_repo, AutoModelForObjectDetection)):
        model = auto_class.from_pretrained(source, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=True)
        with torch.no_grad():
            out = model(pixel_values=pixel_values)
        outputs[name] = {"classes": [type(model).__name__, type(processor).__name__],
                         "pixels": processor(images=image, return_tensors="pt")["pixel_values"],
                         **{k: v for k, v in out.items() if torch.is_tensor(v)}}
    local = outputs["local"]
    report["model"] = {
        "keys": sorted(local),
        "classes": {name: out["classes"] for name, out in outputs.items()},
        "identical": {f"{name}.{k}": sorted(out) == sorted(local) and bool(torch.equal(local[k], out[k]))
                      for name, out in outputs.items() if name != "local" for k in local if torch.is_tensor(local[k])},
    }
    print("REPORT" + json.dumps(report))
""")


@pytest.fixture(scope="module")
def loaded_back(hub, pushed, tiny_model_dir, synthetic_dataset_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("load_home")  # fresh caches: everything comes from the stand-in
    env = {**os.environ, **hub.client_env(home, token=FAKE_TOKEN), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", LOAD_BACK, str(tiny_model_dir), str(synthetic_dataset_dir), MODEL_REPO,
           DATASET_REPO]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=home)
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    return {"home": home, "report": report, "stdout": result.stdout, "stderr": result.stderr}


@pytest.mark.slow
def test_round_trip_loads_same_rows_and_bit_identical_model(loaded_back, hub):
    report = loaded_back["report"]
    assert report["default"]["splits"] == ["test", "train", "validation"]
    assert report["v1"]["splits"] == ["test", "train", "validation"]
    for config in ("default", "v1"):
        for split in ("train", "validation", "test"):
            entry = report[config][split]
            assert entry["rows"] == entry["local_rows"] > 0, (config, split)
            assert entry["same_features"] and entry["same_table"], (config, split)
    model = report["model"]
    assert {"logits", "pred_boxes", "pixels"} <= set(model["keys"])
    assert all(c == ["BafeNetForObjectDetection", "BafeNetImageProcessor"] for c in model["classes"].values())
    assert len(model["identical"]) >= 6 and all(model["identical"].values()), model["identical"]


@pytest.mark.slow
def test_pushed_repos_hold_the_folders_and_the_cards(pushed, hub, tiny_model_dir, synthetic_dataset_dir):
    model_files = hub.files(MODEL_REPO)
    local = {p.relative_to(tiny_model_dir).as_posix() for p in tiny_model_dir.rglob("*") if p.is_file()}
    assert set(model_files) == local | {"README.md", ".gitattributes"}
    for rel in local - {"README.md"}:
        assert model_files[rel] == (tiny_model_dir / rel).read_bytes(), rel
    card = model_files["README.md"].decode()
    meta = parse_front_matter(card)
    assert meta["pipeline_tag"] == "object-detection" and meta["library_name"] == "transformers"
    assert meta["datasets"] == [DATASET_REPO] and meta["license"]
    assert validate_card_metadata(card, "model") == []
    assert "Not evaluated" in card and "model-index" not in meta  # the tiny model has no metrics files
    assert "2407.20078" in card and f'AutoModel.from_pretrained("{MODEL_REPO}", trust_remote_code=True)' in card

    dataset_files = hub.files(DATASET_REPO, "dataset")
    local = {p.relative_to(synthetic_dataset_dir).as_posix() for p in synthetic_dataset_dir.rglob("*") if p.is_file()}
    assert set(dataset_files) == local | {".gitattributes"}
    assert all(dataset_files[rel] == (synthetic_dataset_dir / rel).read_bytes() for rel in local - {"README.md"})
    from bafenet.data.card import card_for_hub

    local_card = (synthetic_dataset_dir / "README.md").read_text()
    assert dataset_files["README.md"].decode() == card_for_hub(local_card, "densesirst", DATASET_REPO) != local_card
    assert 'load_dataset("densesirst"' not in dataset_files["README.md"].decode()
    assert hub.commits(MODEL_REPO) == ["initial commit", "Upload BAFE-Net model with bafenet push"]
    assert hub.commits(DATASET_REPO, "dataset") == ["initial commit", "Upload DenseSIRST dataset with bafenet push"]


def _python_blocks(card: str) -> list[str]:
    return [block.split("\n", 1)[1] for block in card.split("```")[1::2] if block.startswith("python\n")]


@pytest.mark.slow
def test_pushed_cards_snippets_run_against_the_hub(pushed, hub, tmp_path):
    """Every Python snippet of both pushed cards runs as written (repo ids) in a fresh process on the stand-in."""
    from PIL import Image

    blocks = [block for repo, kind in ((DATASET_REPO, "dataset"), (MODEL_REPO, "model"))
              for block in _python_blocks(hub.files(repo, kind)["README.md"].decode())]
    assert len(blocks) >= 5 and any(DATASET_REPO in b for b in blocks) and any(MODEL_REPO in b for b in blocks)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120), dtype=np.uint8)).save(tmp_path / "frame.png")
    env = {**os.environ, **hub.client_env(tmp_path / "home", token=FAKE_TOKEN), "OMP_NUM_THREADS": "1"}
    script = "\n".join(f"exec(compile({block!r}, 'snippet {i}', 'exec'), {{}})" for i, block in enumerate(blocks))
    result = subprocess.run([sys.executable, "-c", script + "\nprint('SNIPPETS OK')"], env=env, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0 and "SNIPPETS OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_token_never_appears_in_output_logs_requests_or_files(pushed, loaded_back, hub, tiny_model_dir,
                                                              synthetic_dataset_dir):
    needle = FAKE_TOKEN.encode()
    assert FAKE_TOKEN not in pushed["stdout"] + pushed["stderr"]
    assert "(authenticated: True)" in pushed["stderr"]  # huggingface_hub debug logs really were captured
    assert FAKE_TOKEN not in loaded_back["stdout"] + loaded_back["stderr"]
    writes = [r for r in hub.state.requests if r.method in ("POST", "PUT")]
    assert writes and all(r.headers.get("authorization") == f"Bearer {FAKE_TOKEN}" for r in writes
                          if not r.path.startswith("/lfs-upload/"))  # the token was used ...
    for request in hub.state.requests:  # ... but only ever in the Authorization header
        assert needle not in request.body and FAKE_TOKEN not in request.path
        assert all(FAKE_TOKEN not in v for k, v in request.headers.items() if k != "authorization")
    for repo, repo_type in ((MODEL_REPO, "model"), (DATASET_REPO, "dataset")):
        assert not any(needle in data for data in hub.files(repo, repo_type).values())
    for root in (pushed["home"], loaded_back["home"], tiny_model_dir, synthetic_dataset_dir):
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert needle not in path.read_bytes(), path


# -- in-process behaviour ----------------------------------------------------------------------------------------------
@pytest.mark.slow  # local Hub server
def test_dry_run_lists_every_file_and_sends_nothing(hub, tiny_model_dir, synthetic_dataset_dir, capsys, monkeypatch):
    from bafenet.commands.push import main

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    before = len(hub.state.requests)
    code = main(["--model-dir", str(tiny_model_dir), "--model-repo", "tester/dry", "--dataset-dir",
                 str(synthetic_dataset_dir), "--dataset-repo", "tester/dry-data", "--revision", "v2", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and len(hub.state.requests) == before
    assert "model tester/dry (revision v2)" in out and "dataset tester/dry-data (revision v2)" in out
    for folder in (tiny_model_dir, synthetic_dataset_dir):
        for path in folder.rglob("*"):
            if path.is_file() and path.name != "README.md":
                assert path.relative_to(folder).as_posix() in out
    assert "README.md" in out and "model card generated" in out and "nothing was sent" in out
    assert FAKE_TOKEN not in out


def _auto_map_code_file(model_dir: Path) -> str:
    auto_map = json.loads((model_dir / "config.json").read_text())["auto_map"]
    return next(v for k, v in auto_map.items() if k != "AutoConfig").rsplit(".", 1)[0] + ".py"


@pytest.mark.slow  # local Hub server
@pytest.mark.parametrize("missing", ["model.safetensors", "config.json", "preprocessor_config.json", "<auto_map code>"])
def test_incomplete_model_folder_fails_before_sending(hub_api, tiny_model_dir, tmp_path, missing):
    from bafenet.hub import HubFolderError

    if missing == "<auto_map code>":
        missing = _auto_map_code_file(tiny_model_dir)
    folder = _linked_copy(tiny_model_dir, tmp_path / "model", drop=(missing,))
    before = len(hub_api.state.requests)
    with pytest.raises(HubFolderError, match=rf"(?s)incomplete.*{missing}: missing"):
        _push(hub_api, model_dir=folder, model_repo="tester/incomplete")
    assert len(hub_api.state.requests) == before


def test_incomplete_folder_cli_exits_1_with_message(tiny_model_dir, tmp_path, capsys):
    from bafenet.commands.push import main

    folder = _linked_copy(tiny_model_dir, tmp_path / "model", drop=("model.safetensors",))
    assert main(["--model-dir", str(folder), "--model-repo", "tester/x", "--dry-run"]) == 1
    assert "model.safetensors: missing" in capsys.readouterr().err


@pytest.mark.slow  # local Hub server
def test_incomplete_dataset_folder_fails_before_sending(hub_api, synthetic_dataset_dir, tmp_path):
    from bafenet.hub import HubFolderError

    no_card = _linked_copy(synthetic_dataset_dir, tmp_path / "no_card", drop=("README.md",))
    shards = [p.relative_to(synthetic_dataset_dir).as_posix() for p in synthetic_dataset_dir.rglob("*.parquet")]
    no_shards = _linked_copy(synthetic_dataset_dir, tmp_path / "no_shards", drop=tuple(shards))
    one_missing = _linked_copy(synthetic_dataset_dir, tmp_path / "one_missing", drop=(sorted(shards)[0],))
    before = len(hub_api.state.requests)
    with pytest.raises(HubFolderError, match="README.md: missing"):
        _push(hub_api, dataset_dir=no_card, dataset_repo="tester/bad")
    with pytest.raises(HubFolderError, match=r"no Parquet shard"):
        _push(hub_api, dataset_dir=no_shards, dataset_repo="tester/bad")
    with pytest.raises(HubFolderError, match=r"matches no file"):
        _push(hub_api, dataset_dir=one_missing, dataset_repo="tester/bad")
    assert len(hub_api.state.requests) == before


@pytest.mark.slow  # local Hub server
def test_folder_holding_the_token_is_refused(hub_api, tiny_model_dir, tmp_path):
    from bafenet.hub import HubFolderError

    folder = _linked_copy(tiny_model_dir, tmp_path / "model")
    (folder / "train_args.json").write_text(json.dumps({"lr": 0.01, "hub_token": FAKE_TOKEN}))
    before = len(hub_api.state.requests)
    with pytest.raises(HubFolderError, match="train_args.json: contains your Hugging Face token") as info:
        _push(hub_api, model_dir=folder, model_repo="tester/leaky")
    assert FAKE_TOKEN not in str(info.value) and len(hub_api.state.requests) == before


def _pushed_with_notes(hub_api, tiny_model_dir, tmp_path, repo: str):
    """A linked copy of the tiny model with a notes.txt, pushed once to ``repo``; returns the folder."""
    folder = _linked_copy(tiny_model_dir, tmp_path / "model")
    (folder / "notes.txt").write_text("first run\n")
    _push(hub_api, model_dir=folder, model_repo=repo)
    return folder


@pytest.mark.slow  # local Hub server
def test_push_without_flag_keeps_remote_files_and_dry_run_lists_deletions(hub_api, tiny_model_dir, tmp_path):
    repo = "tester/bafenet-keep"
    folder = _pushed_with_notes(hub_api, tiny_model_dir, tmp_path, repo)
    (folder / "notes.txt").unlink()
    (folder / "extra.txt").write_text("second run\n")
    _push(hub_api, model_dir=folder, model_repo=repo)  # like upload_folder: adds and updates, deletes nothing
    files = hub_api.files(repo)
    assert "notes.txt" in files and "extra.txt" in files

    before = len([r for r in hub_api.state.requests if r.method in ("POST", "PUT")])
    _, out = _push(hub_api, model_dir=folder, model_repo=repo, dry_run=True)
    assert "remote files not in this list are kept" in out and "notes.txt" not in out
    _, out = _push(hub_api, model_dir=folder, model_repo=repo, dry_run=True, delete_remote_extras=True)
    assert "(--delete-remote-extras): notes.txt" in out and "notes.txt" in hub_api.files(repo)
    assert len([r for r in hub_api.state.requests if r.method in ("POST", "PUT")]) == before  # read-only
    _push(hub_api, model_dir=folder, model_repo=repo, delete_remote_extras=True)
    assert "notes.txt" not in hub_api.files(repo) and "extra.txt" in hub_api.files(repo)


@pytest.mark.slow  # local Hub server
def test_token_found_in_large_binary_file_across_chunk_boundary(hub_api, tiny_model_dir, tmp_path):
    from bafenet.hub import SCAN_CHUNK_BYTES, HubFolderError, file_contains

    folder = _linked_copy(tiny_model_dir, tmp_path / "model")
    blob = bytearray(os.urandom(3 * SCAN_CHUNK_BYTES))
    at = 2 * SCAN_CHUNK_BYTES - len(FAKE_TOKEN) // 2  # straddles the second chunk boundary
    blob[at : at + len(FAKE_TOKEN)] = FAKE_TOKEN.encode()
    (folder / "extra_weights.bin").write_bytes(bytes(blob))
    assert file_contains(folder / "extra_weights.bin", FAKE_TOKEN.encode())
    assert not file_contains(folder / "config.json", FAKE_TOKEN.encode())
    before = len(hub_api.state.requests)
    with pytest.raises(HubFolderError, match="extra_weights.bin: contains your Hugging Face token"):
        _push(hub_api, model_dir=folder, model_repo="tester/leaky-binary")
    assert len(hub_api.state.requests) == before


def test_symlink_leaving_the_folder_is_refused_in_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from bafenet.commands.push import main

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    folder = _linked_copy(tiny_model_dir, tmp_path / "model")
    secret = tmp_path / "secret.txt"
    secret.write_text("private\n")
    (folder / "inside.txt").write_text("fine\n")
    (folder / "alias.txt").symlink_to(folder / "inside.txt")  # stays inside: uploaded
    assert main(["--model-dir", str(folder), "--model-repo", "tester/x", "--dry-run"]) == 0
    assert "alias.txt" in capsys.readouterr().out
    (folder / "leak.txt").symlink_to(secret)
    assert main(["--model-dir", str(folder), "--model-repo", "tester/x", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "leak.txt: symbolic link" in err and "outside the folder" in err


def test_model_card_licence_defaults_to_other_pointing_to_the_data(tiny_model_dir):
    from bafenet.model_card import DATA_URL, build_model_card

    meta = parse_front_matter(card := build_model_card(tiny_model_dir, "tester/m"))
    assert meta["license"] == "other" and meta["license_link"] == DATA_URL and meta["license_name"]
    assert "no licence file upstream" in card and validate_card_metadata(card, "model") == []
    meta = parse_front_matter(card := build_model_card(tiny_model_dir, "tester/m", license="mit"))
    assert meta["license"] == "mit" and "license_link" not in meta and "(mit) was chosen" in card


@pytest.mark.slow  # local Hub server
def test_push_again_updates_in_one_commit_and_deletes_stale_files(hub_api, tiny_model_dir, tmp_path):
    repo = "tester/bafenet-repush"
    folder = _pushed_with_notes(hub_api, tiny_model_dir, tmp_path, repo)
    assert "notes.txt" in hub_api.files(repo)

    (folder / "notes.txt").unlink()
    results = {"split": "test", "iou_threshold": 0.5, "legacy_plus_one": True, "mAP07": 0.125, "mAP12": 0.1}
    (folder / "results.json").write_text(json.dumps(results))
    (commit,), out = _push(hub_api, model_dir=folder, model_repo=repo, dataset_repo=DATASET_REPO,
                           commit_message="Second run", delete_remote_extras=True)
    files = hub_api.files(repo)
    assert hub_api.commits(repo) == ["initial commit", "Upload BAFE-Net model with bafenet push", "Second run"]
    assert "notes.txt" not in files and "results.json" in files and commit.oid in out + commit.commit_url
    card = files["README.md"].decode()
    assert "0.125" in card and "Not evaluated" not in card and validate_card_metadata(card, "model") == []
    assert parse_front_matter(card)["model-index"][0]["results"][0]["dataset"]["type"] == DATASET_REPO

    _push(hub_api, model_dir=folder, model_repo=repo, dataset_repo=DATASET_REPO)  # nothing changed: no commit
    assert len(hub_api.commits(repo)) == 3


@pytest.mark.slow  # local Hub server
def test_revision_and_pull_request_leave_main_alone(hub_api, synthetic_dataset_dir, tmp_path):
    repo = "tester/densesirst-branches"
    folder = _linked_copy(synthetic_dataset_dir, tmp_path / "data")
    _push(hub_api, dataset_dir=folder, dataset_repo=repo)
    main_files = hub_api.files(repo, "dataset")
    (folder / "extra.txt").write_text("on a branch\n")
    _push(hub_api, dataset_dir=folder, dataset_repo=repo, revision="dev")
    assert "extra.txt" in hub_api.files(repo, "dataset", revision="dev")
    (commit,), _ = _push(hub_api, dataset_dir=folder, dataset_repo=repo, create_pr=True)
    assert commit.pr_url and commit.pr_url.endswith("/discussions/1")
    assert "extra.txt" in hub_api.files(repo, "dataset", revision="refs/pr/1")
    assert hub_api.files(repo, "dataset") == main_files


@pytest.mark.slow  # local Hub server
def test_missing_token_is_a_clear_error(hub, tiny_model_dir, monkeypatch, tmp_path):
    from bafenet.hub import HubFolderError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(HubFolderError, match="no Hugging Face token"):
        _push(hub, model_dir=tiny_model_dir, model_repo="tester/no-token")


def test_model_card_shows_only_measured_metrics_with_conventions(tiny_model_dir, tmp_path):
    from bafenet.model_card import build_model_card

    folder = _linked_copy(tiny_model_dir, tmp_path / "model")
    card = build_model_card(folder, "tester/m")
    assert "Not evaluated" in card and "| metric |" not in card and "No `train_args.json`" in card
    # each setting from its owner: normalisation and post-processing from preprocessor_config.json
    assert "- max detections (image processor): `100`" in card and "- normalization (image processor):" in card
    (folder / "train_args.json").write_text(json.dumps({"epochs": 12, "lr": 0.01, "hub_token": "hf_x"}))
    (folder / "metrics.json").write_text(json.dumps({"epoch": 12, "train_loss": 0.75, "history": [{}] * 20}))
    (folder / "results.json").write_text(json.dumps({"split": "test", "box": {"mAP07": 0.2825, "recall": 0.33},
                                                     "operating_threshold": 0.5, "legacy_plus_one": True}))
    card = build_model_card(folder, "tester/m", dataset_repo=DATASET_REPO)
    assert "Not evaluated" not in card and "| `epochs` | 12 |" in card and "hf_x" not in card
    assert "| `box.mAP07` | 0.2825 | VOC AP, 11-point" in card and "| `train_loss` | 0.75 |" in card
    assert "- `operating_threshold`: 0.5" in card and "- `legacy_plus_one`: True" in card and "- `split`: test" in card
    assert "`history` (list of 20 entries)" in card
    meta = parse_front_matter(card)
    metrics = [m for r in meta["model-index"][0]["results"] for m in r["metrics"]]
    assert {(m["name"], m["value"]) for m in metrics} == {("box.mAP07", 0.2825), ("box.recall", 0.33)}
    assert validate_card_metadata(card, "model") == []


def test_training_run_folder_uploads_only_the_final_model(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from bafenet.commands.push import main

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run = _linked_copy(tiny_model_dir, tmp_path / "run")
    for sub in ("best_model", "last_model"):
        _linked_copy(tiny_model_dir, run / sub)
    (run / "checkpoints" / "epoch_3").mkdir(parents=True)
    (run / "checkpoints" / "epoch_3" / "optimizer.bin").write_bytes(b"state")
    (run / "logs").mkdir()
    (run / "logs" / "events.out.tfevents.1").write_bytes(b"log")
    (run / "results.json").write_text(json.dumps({"mAP07": 0.21, "meta": {"split": "test", "seconds": 3.5,
                                                  "pr_curve": "results_pr_curve.png"}, "detections": [{}] * 9}))
    (run / "results_pr_curve.png").write_bytes(b"\x89PNG")
    assert main(["--model-dir", str(run), "--model-repo", "tester/run", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "results_pr_curve.png" in out and "model.safetensors" in out
    n = sum(p.is_file() for p in tiny_model_dir.rglob("*"))
    skipped = f"best_model/ ({n} files), checkpoints/ (1 file), last_model/ ({n} files), logs/ (1 file)"
    assert f"not uploaded: {skipped}" in out
    from bafenet.model_card import build_model_card

    card = build_model_card(run, "tester/run")
    assert "![precision-recall curve](results_pr_curve.png)" in card and "| `mAP07` | 0.21 |" in card
    assert "- `meta.seconds`: 3.5" in card and "`detections` (list of 9 entries)" in card


@pytest.mark.slow  # local Hub server
def test_local_hub_stops_by_itself():
    hub = LocalHub(lifetime=0.3).start()
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"{hub.endpoint}/api/models/{USER}/none", timeout=5)
    deadline = time.monotonic() + 5
    while hub.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not hub.running
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{hub.endpoint}/api/whoami-v2", timeout=2)


def test_cli_word_push_is_wired(capsys):
    from bafenet.cli import main

    with pytest.raises(SystemExit):
        main(["push", "--help"])
    out = capsys.readouterr().out
    assert "--model-dir" in out and "--dry-run" in out and "HF_TOKEN" in out



FROM_CONFIG = textwrap.dedent("""
    import json, sys
    from transformers import AutoConfig, AutoModelForObjectDetection

    config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
    model = AutoModelForObjectDetection.from_config(config, trust_remote_code=True)
    print("REPORT" + json.dumps({"class": type(model).__name__, "weights": config.backbone_weights,
                                 "provenance": config.backbone_weights_provenance}))
""")


@pytest.mark.slow  # local Hub server and a fresh process
def test_pushed_config_with_backbone_weights_loads_from_config_in_a_fresh_process(hub_api, tmp_path):
    """config.json travels: the local weights file is gone (another machine), `from_config` still builds the model."""
    torchvision = pytest.importorskip("torchvision")
    import hashlib

    import torch
    from conftest import TINY_MODEL_KWARGS

    from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor

    weights = tmp_path / "weights" / "r18.pth"
    weights.parent.mkdir()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    folder = tmp_path / "model"
    config = BafeNetConfig(**TINY_MODEL_KWARGS, backbone_weights=str(weights))
    BafeNetForObjectDetection(config).save_pretrained(folder)
    BafeNetImageProcessor.from_model_config(config).save_pretrained(folder)
    weights.unlink()
    assert str(tmp_path) not in (folder / "config.json").read_text()
    repo = "tester/bafenet-portable"
    _push(hub_api, model_dir=folder, model_repo=repo)

    home = tmp_path / "home"
    env = {**os.environ, **hub_api.client_env(home, token=FAKE_TOKEN)}
    result = subprocess.run([sys.executable, "-c", FROM_CONFIG, repo], env=env, capture_output=True, text=True,
                            timeout=240, cwd=home.mkdir() or home)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report == {"class": "BafeNetForObjectDetection", "weights": None,
                      "provenance": {"name": "r18.pth", "source": "local file", "sha256": digest}}


# -- the metric (`--metric-repo`) --------------------------------------------------------------------------------------
LOAD_METRIC = textwrap.dedent("""
    import json, sys
    import evaluate

    metric = evaluate.load(sys.argv[1])
    result = metric.compute(predictions=[{"image_id": "a", "boxes": [[0, 0, 4, 4]], "scores": [0.9]}],
                            references=[{"image_id": "a", "boxes": [[0, 0, 4, 4]]}])
    print("REPORT" + json.dumps({"class": type(metric).__name__, "mAP07": result["mAP07"]}))
""")


@pytest.mark.slow  # local Hub server and a fresh process
def test_metric_repo_pushes_the_generated_module_as_a_space_that_evaluate_loads(hub_api, tmp_path, capsys):
    """`--dry-run` lists the generated files and sends nothing; the push makes one Space commit holding exactly the
    files of `bafenet metric export`; `evaluate.load("tester/densesirst_voc")` in a fresh process runs it."""
    from bafenet import __version__
    from bafenet.commands.push import main
    from bafenet.metrics.evaluate_module import evaluate_module_files

    repo = f"{USER}/densesirst_voc"
    files = {name: text.encode() for name, text in evaluate_module_files("densesirst_voc").items()}
    before = len(hub_api.state.requests)
    _, out = _push(hub_api, metric_repo=repo, dry_run=True)
    assert len(hub_api.state.requests) == before and "nothing was sent" in out
    assert f"space {repo} (revision main)" in out and all(name in out for name in files)

    _, out = _push(hub_api, metric_repo=repo)
    assert f"Pushing space bafenet metric export (bafenet {__version__}) to {repo}: {len(files)} files" in out
    assert {k: v for k, v in hub_api.files(repo, "space").items() if k != ".gitattributes"} == files
    assert hub_api.commits(repo, "space")[-1] == "Upload DenseSIRST VOC metric with bafenet push"

    env = {**os.environ, **hub_api.client_env(tmp_path, token=FAKE_TOKEN), "HF_UPDATE_DOWNLOAD_COUNTS": "0"}
    result = subprocess.run([sys.executable, "-c", LOAD_METRIC, repo], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.split("REPORT", 1)[1]) == {"class": "DensesirstVoc", "mAP07": 1.0}

    # a repo name evaluate cannot import is one line naming the option, before anything is sent
    before = len(hub_api.state.requests)
    assert main(["--metric-repo", f"{USER}/densesirst.voc", "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--metric-repo" in err and len(hub_api.state.requests) == before


RUN_SPACE_APP = textwrap.dedent("""
    import json, runpy, sys
    app = runpy.run_path(sys.argv[1], run_name="space_app")  # what the Space runs, without launching the server
    print("REPORT" + json.dumps({"blocks": type(app["demo"]).__name__, "trust": app["TRUST_REMOTE_CODE"],
                                 "model": app["MODEL_REPO"]}))
""")


@pytest.mark.slow  # local Hub server and a fresh process
def test_space_pushes_the_demo_app_that_loads_the_model_repo(hub_api, tiny_model_dir, tmp_path):
    """`--space NS/NAME --model-repo NS/MODEL` (with the model folder): the model, then a Gradio Space with app.py,
    requirements.txt and a README whose metadata names the SDK, the app and the model; its app.py, run in a fresh
    process against the stand-in, loads the model repo without remote code and builds the demo."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    from bafenet import __version__

    space, model = f"{USER}/bafenet-demo", f"{USER}/bafenet-demo-model"
    with pytest.raises(ValueError, match="--space needs --model-repo"):
        _push(hub_api, space_repo=space, dry_run=True)
    _, out = _push(hub_api, space_repo=space, model_repo=model, model_dir=tiny_model_dir, dry_run=True)
    assert f"space {space} (revision main)" in out and "app.py" in out and "requirements.txt" in out

    _push(hub_api, space_repo=space, model_repo=model, model_dir=tiny_model_dir)
    files = hub_api.files(space, "space")
    assert {"app.py", "requirements.txt", "README.md"} <= set(files)
    assert files["requirements.txt"].decode() == f"bafenet[demo]=={__version__}\n"
    meta = parse_front_matter(files["README.md"].decode())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == [model]
    assert f'MODEL_REPO = "{model}"' in files["app.py"].decode()
    assert hub_api.commits(space, "space")[-1] == "Upload BAFE-Net web demo with bafenet push"

    (tmp_path / "app.py").write_bytes(files["app.py"])
    env = {**os.environ, **hub_api.client_env(tmp_path / "home", token=None), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_UPDATE_DOWNLOAD_COUNTS": "0"}
    result = subprocess.run([sys.executable, "-c", RUN_SPACE_APP, str(tmp_path / "app.py")], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.split("REPORT", 1)[1]) == {"blocks": "Blocks", "trust": False, "model": model}
