//! Single-precision matrix products alone, through wfrun's product
//! (`wfrun::models::cpu::gemm`, the kernels' one entry to the `gemm` crate),
//! on square shapes and on the shapes ResNet-101 embeds with at 64 px
//! (batches of 32): `scripts/bench_gemm.sh` runs it beside numpy's OpenBLAS
//! and PyTorch on the same shapes, alternating.
//!
//!     cargo run --release --example bench_gemm -- --threads 1
//!     cargo run --release --example bench_gemm -- --threads 1 --shape 256,32,256 --shape 32,256,256,t
//!
//! `--shape m,n,k` measures that shape instead of the list; `m,n,k,t` reads
//! both operands column-major, as a product computed transposed would.
//!
//! One JSON line per shape: the best of five repetitions of enough products
//! to take about 0.2 s, as GFLOP/s (2·m·n·k floating-point operations).

#[allow(dead_code)]
#[path = "common/bench.rs"]
mod bench;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    bench::set_threads(&args);
    let threads = wfrun::models::cpu::threads();
    // `--shape m,n,k` (repeatable) replaces the list; `m,n,k,t` reads both
    // operands column-major, as a product computed transposed reads them.
    let chosen: Vec<(usize, usize, usize, bool)> = args
        .windows(2)
        .filter(|w| w[0] == "--shape")
        .map(|w| {
            let v: Vec<&str> = w[1].split(',').collect();
            let num = |i: usize| {
                v.get(i)
                    .and_then(|s| s.parse().ok())
                    .expect("--shape m,n,k[,t]")
            };
            (num(0), num(1), num(2), v.get(3) == Some(&"t"))
        })
        .collect();
    let shapes = if chosen.is_empty() {
        SHAPES.iter().map(|&(m, n, k)| (m, n, k, false)).collect()
    } else {
        chosen
    };
    for (m, n, k, transposed) in shapes {
        let (lhs_strides, rhs_strides) = if transposed {
            ((1, m), (1, k))
        } else {
            ((k, 1), (n, 1))
        };
        let lhs: Vec<f32> = (0..m * k).map(|i| (i % 97) as f32 / 97.0).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i % 89) as f32 / 89.0).collect();
        let mut dst = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let reps = ((4e10 / flops) as usize).max(3);
        let mut once = || {
            wfrun::models::cpu::gemm(
                (m, n, k),
                &mut dst,
                n,
                false,
                &lhs,
                lhs_strides,
                &rhs,
                rhs_strides,
                threads,
            )
        };
        once();
        let best = (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    once();
                }
                t.elapsed().as_secs_f64() / reps as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!(
            "{{\"bench\":\"gemm\",\"framework\":\"wfrun\",\"threads\":{threads},\"m\":{m},\"n\":{n},\"k\":{k},\"transposed\":{transposed},\"gflops\":{:.1}}}",
            flops / best / 1e9
        );
    }
}

/// (m, n, k): squares, then ResNet-101's products at 64 px in batches of 32
/// (output channels × images·pixels × input channels·taps), layer by layer.
const SHAPES: &[(usize, usize, usize)] = &[
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (64, 32768, 147),
    (64, 8192, 256),
    (64, 8192, 576),
    (128, 2048, 1152),
    (128, 2048, 512),
    (256, 512, 2304),
    (1024, 512, 256),
    (256, 512, 1024),
    (512, 128, 4608),
    (2048, 128, 512),
];
