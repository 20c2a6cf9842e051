#!/usr/bin/env python3
"""The PyTorch side of `scripts/bench_embed_files.sh`: embeds a folder of
images end to end as `wfrun embed` does — decode, shorter side to SIZE,
centre crop, normalise (torchvision ImageFolder + DataLoader), the template's
network in eval mode — and prints one JSON line with images/s.

    python scripts/embed_folder_torch.py --model bninception --image-size 64 FOLDER

The networks come from ../shared/peer/common.py (random weights: throughput
does not depend on them)."""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "peer"))
import common  # noqa: E402

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("folder")
p.add_argument("--model", choices=["resnet101", "resnext50_32x4d", "bninception"], required=True)
p.add_argument("--image-size", type=int, required=True)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--workers", type=int, default=2)
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()

common.set_threads_env(args.threads)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torchvision import transforms as T  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
started = time.perf_counter()
if args.model == "resnet101":
    # The angular margin template embeds with a 512-long projection, normalised.
    net, normalise = common.build_embedder(args.model, 512), True
else:
    net, normalise = common.build_backbone(args.model)[0], False
net.eval()
tf = T.Compose([
    T.Resize(args.image_size),
    T.CenterCrop(args.image_size),
    T.ToTensor(),
    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
])
data = torchvision.datasets.ImageFolder(args.folder, transform=tf)
loader = torch.utils.data.DataLoader(data, batch_size=args.batch, num_workers=args.workers)
built = time.perf_counter()
rows = 0
with torch.inference_mode():
    for x, _ in loader:
        e = net(x)
        if normalise:
            e = F.normalize(e)
        rows += e.shape[0]
done = time.perf_counter()
print(json.dumps({
    "framework": "pytorch", "model": args.model, "image_size": args.image_size,
    "images": rows, "threads": args.threads, "workers": args.workers,
    "seconds": round(done - started, 3), "embed_seconds": round(done - built, 3),
    "images_per_s": round(rows / (done - started), 2),
    **common.env_info(),
}))
