"""Runs an ONNX model exported by wfrun in ONNX Runtime (tests/onnx.rs).

    python run_model.py MODEL OUT_DIR INPUT...

Each INPUT is a file of little-endian float32 images, [N, 3, S, S] with S
the model's `image_size` property; N comes from the file's length. For the
i-th input, writes OUT_DIR/i.embeddings.f32 and OUT_DIR/i.scores.f32 (the
outputs as little-endian float32). Prints one JSON object: the model's
metadata properties, producer, IR version, opsets, the inputs' and outputs'
declared shapes, and each run's output shapes. The model is checked with
`onnx.checker` (full check, with shape inference) first.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def main() -> None:
    model_path, out_dir, *inputs = sys.argv[1:]
    out = Path(out_dir)

    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)

    options = ort.SessionOptions()
    session = ort.InferenceSession(
        model_path, sess_options=options, providers=["CPUExecutionProvider"]
    )
    meta = session.get_modelmeta()
    size = int(meta.custom_metadata_map["image_size"])
    report = {
        "metadata": dict(meta.custom_metadata_map),
        "producer": meta.producer_name,
        "ir_version": model.ir_version,
        "opsets": {o.domain: o.version for o in model.opset_import},
        "inputs": [{"name": i.name, "shape": i.shape} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "shape": o.shape} for o in session.get_outputs()],
        "runs": [],
    }
    for i, path in enumerate(inputs):
        images = np.fromfile(path, dtype="<f4").reshape(-1, 3, size, size)
        embeddings, scores = session.run(["embeddings", "scores"], {"images": images})
        embeddings.astype("<f4").tofile(out / f"{i}.embeddings.f32")
        scores.astype("<f4").tofile(out / f"{i}.scores.f32")
        report["runs"].append(
            {"embeddings": list(embeddings.shape), "scores": list(scores.shape)}
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
