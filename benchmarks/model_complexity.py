"""Parameters and FLOPs of BAFE-Net at 512x512, next to the numbers published in the GrokCV/BAFE-Net README.

    python benchmarks/model_complexity.py            # R18 and R50, faithful + improved variants
    python benchmarks/model_complexity.py --json out.json

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on the meta device (no weights, no compute) for the
tensor forward (backbone + FPN + head, no post-processing), batch 1, and reported as multiply-accumulates (GMAC = FLOPs
/ 2), the unit mmengine's `get_model_complexity_info` (used by the original `tools/analysis_tools/get_flops.py`)
calls "FLOPs". Parameters include frozen ones (backbone BN affine is stored as buffers here, as in timm/torchvision
FrozenBatchNorm2d; mmdet keeps them as parameters with requires_grad=False).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection

PUBLISHED = {"resnet18": (22.31, 57.654), "resnet50": (35.626, 71.639)}  # params (M), FLOPs (G, = GMAC) [README]
# R50 with the v1 static exchange (no LSK) vs the dynamic one: 35.329 M / 69.114 G vs 35.626 M / 71.639 G [README].
V1_STATIC_DELTA = (35.626 - 35.329, 71.639 - 69.114)

# Modules the original head builds but never calls (bafenet.md §1.4), left out here. Parameter counts from the
# documented shapes (1x1 convs with bias unless followed by a norm; BN/GN affine counted).
UNUSED_IN_ORIGINAL = {
    "conv_squeeze_tgt + conv_squeeze_bg (1x1 256->128 + BN)": 2 * (256 * 128 + 2 * 128),
    "conv_mix (1x1 256->256)": 256 * 256 + 256,
    "conv_reduce (1x1 256->64)": 256 * 64 + 64,
    "gen_weight (1x1 64->144)": 64 * 144 + 144,
    "fusion_conv (1x1 256->128 + GN)": 256 * 128 + 2 * 128,
    "convs_reg (conv_bn_relu pair 256->128->256)": (256 * 128 * 9 + 128 + 2 * 128) + (128 * 256 * 9 + 256 + 2 * 256),
    "_init_mod_convs (DW3x3 256, 3x3 2->1, 1x1 256->256)": (256 * 9 + 256) + (2 * 9 + 1) + (256 * 256 + 256),
}


def measure(config: BafeNetConfig, size: int = 512) -> dict[str, float]:
    """Parameters (M, incl. frozen BN buffers separately) and GMAC of the tensor forward at size x size."""
    with torch.device("meta"):
        model = BafeNetForObjectDetection(config).eval()
        pixels = torch.empty(1, 3, size, size)
    params = sum(p.numel() for p in model.parameters())
    frozen_bn = sum(b.numel() for n, b in model.backbone.named_buffers() if n.endswith(("weight", "bias")))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(pixels)
    counts = counter.get_flop_counts()
    parts = {k: sum(counts.get(f"{type(model).__name__}.{k}", {}).values()) / 2e9 for k in ("backbone", "fpn", "head")}
    caffe_saving = 0.0
    if config.backbone == "resnet50":
        # mmdet style='caffe' puts the stride on the 1x1 conv1 of the first block of layers 2-4 (timm/torchvision: on
        # the 3x3), so that conv runs at a quarter of the positions: 3/4 of its MACs saved per downsampling block.
        for layer, res in (("layer2", size // 4), ("layer3", size // 8), ("layer4", size // 16)):
            conv1 = getattr(model.backbone, layer)[0].conv1
            caffe_saving += 0.75 * conv1.in_channels * conv1.out_channels * res * res / 1e9
    return {"params_M": params / 1e6, "frozen_bn_affine_M": frozen_bn / 1e6, "gmac": counter.get_total_flops() / 2e9,
            **{f"gmac_{k}": v for k, v in parts.items()}, "caffe_style_saving_gmac": caffe_saving}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    unused = sum(UNUSED_IN_ORIGINAL.values()) / 1e6
    rows = []
    variants = [
        ("faithful", lambda b: BafeNetConfig.faithful(backbone=b)),
        ("improved", lambda b: BafeNetConfig.improved(backbone=b)),
        ("improved + P2", lambda b: BafeNetConfig.improved(backbone=b, p2=True)),
    ]
    for backbone in ("resnet18", "resnet50"):
        for name, make in variants:
            stats = measure(make(backbone), args.size)
            rows.append({"backbone": backbone, "variant": name, **stats})
    for name, make in variants[:1]:
        rows.append({"backbone": "tf_efficientnet_lite0", "variant": name,
                     **measure(make("tf_efficientnet_lite0"), args.size)})

    print(f"BAFE-Net complexity at {args.size}x{args.size}, batch 1 (GMAC = mmengine 'FLOPs')\n")
    print("| backbone | variant | params (M) | + frozen BN affine (M) | GMAC (backbone / FPN / head) "
          "| published params (M) | published FLOPs (G) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        pub_p, pub_f = PUBLISHED.get(r["backbone"], (None, None)) if r["variant"] == "faithful" else (None, None)
        split = f"{r['gmac_backbone']:.2f} / {r['gmac_fpn']:.2f} / {r['gmac_head']:.2f}"
        print(f"| {r['backbone']} | {r['variant']} | {r['params_M']:.2f} | {r['params_M'] + r['frozen_bn_affine_M']:.2f}"
              f" | {r['gmac']:.2f} ({split}) | {pub_p if pub_p else '-'} | {pub_f if pub_f else '-'} |")
    print(f"\nModules the original builds but never calls (left out here): {unused:.3f} M parameters, 0 FLOPs:")
    for k, v in UNUSED_IN_ORIGINAL.items():
        print(f"  {k}: {v / 1e6:.3f} M")
    for r in rows:
        if r["variant"] == "faithful" and r["backbone"] in PUBLISHED:
            pub_p, pub_f = PUBLISHED[r["backbone"]]
            ours_p = r["params_M"] + r["frozen_bn_affine_M"] + unused
            ours_f = r["gmac"] - r["caffe_style_saving_gmac"]
            print(f"\n{r['backbone']}: params + frozen BN affine + unused modules = {ours_p:.2f} M vs {pub_p} M "
                  f"({ours_p / pub_p - 1:+.1%}); GMAC {r['gmac']:.2f}"
                  + (f" - {r['caffe_style_saving_gmac']:.2f} (caffe-style stride) = {ours_f:.2f}"
                     if r["caffe_style_saving_gmac"] else "")
                  + f" vs {pub_f} G ({ours_f / pub_f - 1:+.1%})")
            if r["backbone"] == "resnet18":
                dp, df = V1_STATIC_DELTA
                print(f"  minus the R50 v1-static/dynamic difference ({dp:.3f} M, {df:.3f} G): {ours_p - dp:.2f} M "
                      f"({(ours_p - dp) / pub_p - 1:+.1%}), {ours_f - df:.2f} G ({(ours_f - df) / pub_f - 1:+.1%}): the "
                      "published R18 numbers most likely belong to the first (static exchange, no LSK) release.")
    print("\nThe rest (< 1 %): both counters count convolutions and matrix products; mmengine also counts a few "
          "element-wise layers (BN, upsample) that FlopCounterMode ignores. The head's Scale/exp/LSK gating are tiny.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "rows": rows, "published": PUBLISHED, "unused_params_M": unused}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
