//! Where a training step's time goes, per kernel, when asked: wall time and
//! calls summed in atomic counters (off by default; `examples/bench_train`
//! turns it on with `--profile`). Cheap enough to leave in: one relaxed load
//! per kernel call when off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The kernels timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    ConvForward,
    ConvBackward,
    NormForward,
    NormBackward,
    AddRelu,
    Sgd,
    PoolForward,
    PoolBackward,
    Unfold,
    Fold,
    /// The input and output transforms of Winograd's convolutions (their
    /// products count as `Gemm`).
    Winograd,
    Gemm,
    /// Grouped convolutions' passes (ResNeXt's), also counted in
    /// `ConvForward` and `ConvBackward`.
    GroupedForward,
    GroupedBackward,
}

const KERNELS: [(Kernel, &str); 14] = [
    (Kernel::ConvForward, "conv_forward"),
    (Kernel::ConvBackward, "conv_backward"),
    (Kernel::NormForward, "norm_forward"),
    (Kernel::NormBackward, "norm_backward"),
    (Kernel::AddRelu, "add_relu"),
    (Kernel::Sgd, "sgd"),
    (Kernel::PoolForward, "pool_forward"),
    (Kernel::PoolBackward, "pool_backward"),
    (Kernel::Unfold, "  conv unfold"),
    (Kernel::Fold, "  conv fold"),
    (Kernel::Winograd, "  winograd"),
    (Kernel::Gemm, "  gemm"),
    (Kernel::GroupedForward, "  grouped fwd"),
    (Kernel::GroupedBackward, "  grouped bwd"),
];

static ON: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; KERNELS.len()] = [const { AtomicU64::new(0) }; KERNELS.len()];
static CALLS: [AtomicU64; KERNELS.len()] = [const { AtomicU64::new(0) }; KERNELS.len()];

/// Turns timing on or off and clears the counters.
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
    for i in 0..KERNELS.len() {
        NANOS[i].store(0, Ordering::Relaxed);
        CALLS[i].store(0, Ordering::Relaxed);
    }
}

/// Adds the time from `start` until it is dropped to a kernel's counter
/// (when timing is on): for code with early returns.
pub struct Timer(Option<(Kernel, Instant)>);

impl Timer {
    pub fn start(kernel: Kernel) -> Timer {
        Timer(ON.load(Ordering::Relaxed).then(|| (kernel, Instant::now())))
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some((kernel, start)) = self.0 {
            let i = kernel as usize;
            NANOS[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs `f`, adding its wall time to `kernel`'s counter when timing is on.
pub fn time<R>(kernel: Kernel, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let i = kernel as usize;
    NANOS[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    CALLS[i].fetch_add(1, Ordering::Relaxed);
    out
}

/// (kernel name, milliseconds, calls) since the last [`enable`].
pub fn totals() -> Vec<(&'static str, f64, u64)> {
    KERNELS
        .iter()
        .enumerate()
        .map(|(i, (_, name))| {
            (
                *name,
                NANOS[i].load(Ordering::Relaxed) as f64 / 1e6,
                CALLS[i].load(Ordering::Relaxed),
            )
        })
        .collect()
}
