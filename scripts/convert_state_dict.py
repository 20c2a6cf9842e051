#!/usr/bin/env python3
"""Converts PyTorch weights to the safetensors file a workflow's
`data { weights = "..." }` names.

    python scripts/convert_state_dict.py IN.pth OUT.safetensors

IN is a state dict saved with `torch.save(model.state_dict(), IN)` (or a
checkpoint holding one under "state_dict" / "model"). Tensor names are kept
as PyTorch writes them, which is what wfrun expects: torchvision's
`resnet101` and `resnext50_32x4d`, and pretrainedmodels' `bninception`,
load as they are. The script drops `num_batches_tracked` counters and the
`module.` prefix that DataParallel adds, and stores float32.

wfrun reports, by name, which tensors of the network the file lacks, which of
the file's it does not use, and which have another shape: the classifier head
of a network trained on other concepts is expected among them.

Needs torch and safetensors; nothing is downloaded.
"""
import sys

import torch
from safetensors.torch import save_file


def state_dict_of(obj):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        return obj
    raise SystemExit(f"no state dict in {type(obj).__name__}")


def convert(state):
    out = {}
    for name, t in state.items():
        if not torch.is_tensor(t) or name.endswith("num_batches_tracked"):
            continue
        name = name.removeprefix("module.")
        out[name] = t.detach().to(torch.float32).contiguous()
    return out


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    state = state_dict_of(torch.load(src, map_location="cpu", weights_only=False))
    tensors = convert(state)
    save_file(tensors, dst)
    print(f"{dst}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
