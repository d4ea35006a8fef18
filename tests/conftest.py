"""Shared fixtures. Heavy imports stay inside fixtures so each test file pays only for what it uses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# CI has 2 cores and several tests start subprocesses (accelerate launch, fresh-process loads): one intra-op thread
# per process avoids oversubscription, which made small CPU ops several times slower. Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DEVKIT = Path(os.environ.get("DENSESIRST_DEVKIT", REPO_ROOT.parent / "shared/data/DenseSIRST/data/SIRSTdevkit"))

# A model small enough for CPU unit tests (same architecture, narrow and shallow, 128x128 input).
TINY_MODEL_KWARGS = dict(backbone="resnet18", fpn_channels=32, num_head_convs=1, adapter_channels=16, image_size=128)


def one_line_error(capsys, *needles: str) -> str:
    """The error is the last line on stderr (progress bars of a run that got that far may precede it), no traceback;
    it holds every one of ``needles``."""
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1] if err else ""
    assert "Traceback" not in err and "error" in line, err
    for needle in needles:
        assert needle in line, err
    return line


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for this test: tiny tensors run faster, and reductions match a fresh OMP_NUM_THREADS=1
    process bit for bit."""
    with _torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """`one_thread` for a whole module (`pytestmark = pytest.mark.usefixtures("one_thread_module")`)."""
    with _torch_threads(1):
        yield


@pytest.fixture(scope="session")
def real_devkit() -> Path:
    """The real DenseSIRST devkit from ../shared/data (read in place, never copied)."""
    if not (REAL_DEVKIT / "Splits").is_dir():
        pytest.skip(f"real DenseSIRST devkit not found at {REAL_DEVKIT}")
    return REAL_DEVKIT


@pytest.fixture(scope="session")
def synthetic_devkit(tmp_path_factory) -> Path:
    """A small synthetic SIRSTdevkit (same layout and conventions as the real one)."""
    from bafenet.data.synthetic import write_synthetic_devkit

    return write_synthetic_devkit(tmp_path_factory.mktemp("devkit") / "SIRSTdevkit", num_images=12, seed=0)


@pytest.fixture(scope="session")
def synthetic_dataset_dir(synthetic_devkit, tmp_path_factory) -> Path:
    """The synthetic devkit built into a `load_dataset`-able folder (Parquet + README card)."""
    from bafenet.data.build import build_dataset

    return build_dataset(synthetic_devkit, tmp_path_factory.mktemp("built") / "densesirst")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny BAFE-Net saved with `save_pretrained` (weights, config, remote code, processor)."""
    import torch

    from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor

    torch.manual_seed(0)
    config = BafeNetConfig(**TINY_MODEL_KWARGS)
    out = tmp_path_factory.mktemp("tiny_model")
    BafeNetForObjectDetection(config).eval().save_pretrained(out)
    size = TINY_MODEL_KWARGS["image_size"]
    BafeNetImageProcessor(size={"height": size, "width": size}).save_pretrained(out)
    return out
