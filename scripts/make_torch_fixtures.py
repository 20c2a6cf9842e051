#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures that tests/torch_agreement.rs checks
wfrun's networks against. Run once; PyTorch is not needed to run the tests.

    python scripts/make_torch_fixtures.py [OUT]      # default: tests/data/torch

Needs torch, torchvision, pretrainedmodels and safetensors (see
../shared/peer/README.md for an install that works without a GPU).

Each network is built small from the reference code itself: the ResNets from
torchvision's own `Bottleneck` blocks, BN-Inception from pretrainedmodels'
source with every width divided by 16. In float64, in training mode (batch
norm on batch statistics), each fixture holds:

    weights.NAME   the state dict (PyTorch names; no num_batches_tracked)
    input          a batch of 4 images, 3x32x32
    labels         class indices (i64) or, for sigmoid units, 0/1 targets
    train.output   the embedding (angular margin) or the logits (classifiers)
    train.loss     the template's loss, shape [1]
    grad.input     d loss / d input
    grad.NAME      d loss / d parameter, for every parameter
    running.NAME   batch-norm running statistics after that forward pass
    eval.output    the output in evaluation mode afterwards
"""
import math
import re
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models.resnet import Bottleneck

torch.set_default_dtype(torch.float64)


class SmallResNet(nn.Module):
    """torchvision's ResNet skeleton (same names), with a chosen stem width
    `base`, built from torchvision's Bottleneck."""

    def __init__(self, layers, base, groups=1, width_per_group=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = base
        for i, blocks in enumerate(layers):
            planes = base << i
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
                )
            mods = [Bottleneck(self.inplanes, planes, stride, downsample, groups, width_per_group)]
            self.inplanes = planes * 4
            for _ in range(1, blocks):
                mods.append(Bottleneck(self.inplanes, planes, groups=groups, base_width=width_per_group))
            setattr(self, f"layer{i + 1}", nn.Sequential(*mods))
        self.feature_dim = self.inplanes

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean((2, 3))


def small_bninception(div):
    """pretrainedmodels' BNInception with every channel count divided by `div`."""
    import importlib

    # `pretrainedmodels.models.bninception` names the function; the module is in sys.modules.
    importlib.import_module("pretrainedmodels.models.bninception")
    ref = sys.modules["pretrainedmodels.models.bninception"]
    src = Path(ref.__file__).read_text()
    scale = lambda m: str(int(m.group(0)) // div)
    keep_rgb = lambda c: c if c == 3 else c // div  # the stem's 3 input channels stay
    src = re.sub(r"(?<=nn\.Conv2d\()(\d+), (\d+)", lambda m: f"{keep_rgb(int(m.group(1)))}, {int(m.group(2)) // div}", src)
    src = re.sub(r"(?<=nn\.BatchNorm2d\()\d+", scale, src)
    src = re.sub(r"(?<=nn\.Linear \()\d+", scale, src)
    namespace = {}
    exec(compile(src, ref.__file__, "exec"), namespace)
    return namespace["BNInception"](num_classes=3)


class Classifier(nn.Module):
    def __init__(self, backbone, feature_dim, classes, fc_name):
        super().__init__()
        self.backbone = backbone
        self.fc_name = fc_name
        setattr(self, fc_name, nn.Linear(feature_dim, classes))

    def features(self, x):
        if hasattr(self.backbone, "features"):
            # BN-Inception: the pooled output of the last inception module.
            return self.backbone.features(x).mean((2, 3))
        return self.backbone(x)

    def forward(self, x):
        return getattr(self, self.fc_name)(self.features(x))


class AngularMarginNet(nn.Module):
    def __init__(self, backbone, emb, classes, s, m):
        super().__init__()
        self.backbone = backbone
        self.embedding = nn.Linear(backbone.feature_dim, emb)
        self.arcface = nn.Module()
        self.arcface.weight = nn.Parameter(torch.randn(classes, emb) * 0.5)
        self.s, self.m = s, m

    def forward(self, x):
        return F.normalize(self.embedding(self.backbone(x)))

    def loss(self, emb, labels):
        cos = F.linear(emb, F.normalize(self.arcface.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - cos * cos)
        phi = cos * math.cos(self.m) - sin * math.sin(self.m)
        phi = torch.where(cos > math.cos(math.pi - self.m), phi, cos - math.sin(math.pi - self.m) * self.m)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return F.cross_entropy(self.s * (onehot * phi + (1 - onehot) * cos), labels)


def flat_state(model):
    """State-dict names as the Rust networks use them (the backbone's prefix dropped)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        out[k.removeprefix("backbone.")] = v.detach().clone()
    return out


def fixture(name, model, loss_fn, labels, out_dir):
    torch.manual_seed(1)
    # Random batch-norm affine parameters and running statistics, so loading them matters.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    tensors = {f"weights.{k}": v for k, v in flat_state(model).items()}
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    tensors["input"] = x.detach().clone()
    tensors["labels"] = labels
    model.train()
    out = model(x)
    loss = loss_fn(model, out)
    loss.backward()
    tensors["train.output"] = out.detach().clone()
    tensors["train.loss"] = loss.detach().reshape(1)
    tensors["grad.input"] = x.grad.detach().clone()
    for k, p in model.named_parameters():
        tensors[f"grad.{k.removeprefix('backbone.')}"] = p.grad.detach().clone()
    for k, v in flat_state(model).items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            tensors[f"running.{k}"] = v
    model.eval()
    with torch.no_grad():
        tensors["eval.output"] = model(x.detach()).clone()
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = out_dir / f"{name}.safetensors"
    save_file(tensors, str(path))
    print(f"{path}: {len(tensors)} tensors, {path.stat().st_size // 1024} KiB, loss {loss.item():.6f}")


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/torch")
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = torch.tensor([0, 2, 1, 2])

    torch.manual_seed(0)
    resnet = SmallResNet([1, 2, 1, 1], base=4)
    arc = AngularMarginNet(resnet, emb=16, classes=3, s=16.0, m=0.5)
    fixture("resnet_angular_margin", arc, lambda m, out: m.loss(out, classes), classes, out_dir)

    torch.manual_seed(0)
    resnext = SmallResNet([1, 2, 1, 1], base=8, groups=4, width_per_group=16)
    net = Classifier(resnext, resnext.feature_dim, 3, "fc")
    fixture("resnext_softmax", net, lambda m, out: F.cross_entropy(out, classes), classes, out_dir)

    torch.manual_seed(0)
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    bn = small_bninception(16)
    net = Classifier(bn, 1024 // 16, 3, "last_linear")
    del bn.last_linear  # the classifier's own last_linear replaces the reference's
    fixture("bninception_sigmoid", net, lambda m, out: F.binary_cross_entropy_with_logits(out, targets), targets, out_dir)


if __name__ == "__main__":
    main()
