"""The single-precision products of `examples/bench_gemm.rs` in numpy (its
OpenBLAS) or PyTorch, one JSON line per shape, GFLOP/s of the best of five
repetitions. Threads from the environment (OPENBLAS_NUM_THREADS, set by
scripts/bench_gemm.sh) or `torch.set_num_threads`.

    python scripts/bench_gemm.py numpy|torch THREADS
"""
import json
import sys
import time

SHAPES = [
    (1024, 1024, 1024), (2048, 2048, 2048), (64, 32768, 147), (64, 8192, 256),
    (64, 8192, 576), (128, 2048, 1152), (128, 2048, 512), (256, 512, 2304),
    (1024, 512, 256), (256, 512, 1024), (512, 128, 4608), (2048, 128, 512),
]


def main():
    lib, threads = sys.argv[1], int(sys.argv[2])
    if lib == "torch":
        import torch
        torch.set_num_threads(threads)
        make = lambda r, c: torch.rand(r, c)
        version = torch.__version__
    else:
        import numpy as np
        make = lambda r, c: np.random.rand(r, c).astype(np.float32)
        version = np.__version__
    for m, n, k in SHAPES:
        a, b = make(m, k), make(k, n)
        a @ b
        flops = 2.0 * m * n * k
        reps = max(3, int(4e10 / flops))
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = min(best, (time.perf_counter() - t) / reps)
        print(json.dumps({"bench": "gemm", "framework": lib, "version": version,
                          "threads": threads, "m": m, "n": n, "k": k,
                          "gflops": round(flops / best / 1e9, 1)}), flush=True)


main()
