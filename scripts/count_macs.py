#!/usr/bin/env python3
"""Independent multiply-add counts of the templates' networks, for the cost model.

PyTorch's own FLOP counter (`torch.utils.flop_counter.FlopCounterMode`, which counts
each convolution and matrix product from the operator's shapes) on the published
definitions: torchvision's `resnet101` and `resnext50_32x4d`, and Cadene's
`pretrainedmodels` `bninception` (no weights are downloaded). One image, forward only,
in evaluation mode; multiply-adds are FLOPs / 2. The backbone alone (no classifier) and
the published network with its 1000-way classifier (what torchvision's figures count).

    $HOME/.peer-venv/bin/python scripts/count_macs.py [--sizes 224,64,32]

Prints one JSON line per network and size; `src/cost.rs`'s tests hold the 224 px
figures, and BENCHMARKS.md the comparison.
"""
import argparse
import json

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode


def bninception():
    import pretrainedmodels

    net = pretrainedmodels.__dict__["bninception"](num_classes=1000, pretrained=None)
    # Its 7x7 pool fits 224 px only; a global pool is the same there and fits every size.
    net.global_pool = torch.nn.AdaptiveAvgPool2d(1)
    return net


def count(model, size, backbone_only):
    model.eval()
    x = torch.zeros(1, 3, size, size)
    if backbone_only:
        if hasattr(model, "features"):  # pretrainedmodels: features() then logits()
            run = model.features
        else:
            model.fc = torch.nn.Identity()
            run = model
    else:
        run = model
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run(x)
    return counter.get_total_flops() // 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="224,64,32")
    args = ap.parse_args()
    nets = {
        "resnet101": lambda: torchvision.models.resnet101(weights=None),
        "resnext50_32x4d": lambda: torchvision.models.resnext50_32x4d(weights=None),
        "bninception": bninception,
    }
    for name, make in nets.items():
        params = sum(p.numel() for p in make().parameters())
        for size in [int(s) for s in args.sizes.split(",")]:
            print(
                json.dumps(
                    {
                        "net": name,
                        "image_size": size,
                        "params_with_1000_classes": params,
                        "macs_with_1000_classes": count(make(), size, False),
                        "macs_backbone": count(make(), size, True),
                    }
                )
            )


if __name__ == "__main__":
    main()
