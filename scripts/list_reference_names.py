#!/usr/bin/env python3
"""Writes tests/data/torch/names.json: the tensor names and shapes of the
published networks' state dicts (torchvision resnet101 and resnext50_32x4d,
pretrainedmodels bninception), randomly initialised, nothing downloaded.
tests/weights.rs checks wfrun's full-size networks hold exactly these."""
import json
import sys

import torch
import torchvision
from pretrainedmodels.models.bninception import BNInception

nets = {
    "resnet101": torchvision.models.resnet101(weights=None),
    "resnext50_32x4d": torchvision.models.resnext50_32x4d(weights=None),
    "bninception": BNInception(num_classes=1000),
}
out = {
    name: {k: list(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    for name, net in nets.items()
}
path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/torch/names.json"
with open(path, "w") as f:
    json.dump(out, f, indent=0, sort_keys=True)
print(path, {k: len(v) for k, v in out.items()})
