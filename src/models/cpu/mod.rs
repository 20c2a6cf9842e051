//! The training step's hot kernels on the CPU, as candle custom ops with
//! hand-written backward passes: convolution through matrix products
//! ([`conv`]), batch norm with an optional fused ReLU ([`norm`]), the residual
//! add + ReLU, and the in-place SGD update ([`eltwise`]).
//!
//! candle's own CPU path runs a convolution's input gradient as a direct loop,
//! a grouped convolution as a loop of split / concatenate, and batch norm as
//! about ten tensor operations forward and twenty backward, each allocating a
//! tensor. Here each layer is one pass (or one matrix product) forward and one
//! backward. The layers take this path for CPU tensors and candle's generic
//! operations on CUDA and Metal. Every kernel has a finite-difference gradient
//! check in f64 and the networks still match PyTorch (`tests/torch_agreement.rs`).

pub mod conv;
pub mod eltwise;
pub mod norm;
pub mod profile;
pub mod team;

use candle_core::{CpuStorage, Layout, Result, Shape, Storage, Tensor, WithDType};

/// f32 or f64: what the kernels compute in.
pub trait Float:
    WithDType
    + Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether the layers take these kernels for a tensor on `device` (the CPU,
/// unless [`set_enabled`] turned them off).
pub fn takes(device: &candle_core::Device) -> bool {
    device.is_cpu() && ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns the kernels off (the layers then use candle's generic operations on
/// the CPU too) or back on; for comparing the two paths.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Keeps freed memory in the process instead of handing it back to the
/// system, where glibc's malloc would (on Linux): a training step frees and
/// allocates hundreds of megabytes of activations, and memory handed back is
/// taken again page fault by page fault, each page cleared by the kernel.
/// Measured on ResNeXt-50's embedding at 64 px (2 threads, 7 batches of 32):
/// 300,000–385,000 page faults a run without it, 114,000 with it (most of
/// them loading the network). Sets `M_MMAP_THRESHOLD` to 32 MiB (its
/// maximum) and `M_TRIM_THRESHOLD` to 1 GiB. Process-wide, so the library
/// never calls it itself: the `wfrun` binary and the benchmarks do, at start;
/// a program embedding wfrun may. Does nothing elsewhere.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; both values are in range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// The threads the kernels may use (candle's setting: `RAYON_NUM_THREADS` or the cores).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// The elements of a contiguous CPU tensor's storage.
pub fn slice<'a, T: Float>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} needs a contiguous tensor")))?;
    Ok(&T::cpu_storage_as_slice(storage)?[start..end])
}

/// Runs `f` on the elements of a CPU tensor (made contiguous first).
pub fn with_slice<T: Float, R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(slice(cpu, layout, what)?),
        _ => candle_core::bail!("{what}: the CPU kernel got a tensor on another device"),
    }
}

/// A CPU tensor holding `data`.
pub fn tensor<T: Float>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

/// `dst (m × n, row stride dst_rs) = [dst +] lhs · rhs`, with `lhs` (m × k)
/// and `rhs` (k × n) given by (row stride, column stride). With `threads` > 1
/// a large product is cut into blocks of rows (or of columns, when it is
/// wider than tall), a few per thread, claimed as threads come free.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    threads: usize,
) {
    profile::time(profile::Kernel::Gemm, || {
        gemm_impl(
            (m, n, k),
            dst,
            dst_rs,
            accumulate,
            lhs,
            (lhs_rs, lhs_cs),
            rhs,
            (rhs_rs, rhs_cs),
            threads,
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn gemm_impl<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(dst.len() > last(m, n, dst_rs, 1), "gemm: dst too short");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    assert!(
        lhs.len() > last(m, k, lhs_rs, lhs_cs),
        "gemm: lhs too short"
    );
    assert!(
        rhs.len() > last(k, n, rhs_rs, rhs_cs),
        "gemm: rhs too short"
    );
    let product = Product {
        dst: dst.as_mut_ptr(),
        dst_rs,
        accumulate,
        lhs: lhs.as_ptr(),
        lhs_strides: (lhs_rs, lhs_cs),
        rhs: rhs.as_ptr(),
        rhs_strides: (rhs_rs, rhs_cs),
        k,
    };
    // A few blocks a thread, at least 64 rows (columns) each: a thread that
    // gets less of its core (another process, another virtual machine) takes
    // fewer of them instead of holding up the others.
    let parts = if threads > 1 && m * n * k >= 1 << 18 {
        (threads * BLOCKS_PER_THREAD).min(m.max(n) / 64).max(1)
    } else {
        1
    };
    if parts == 1 {
        // SAFETY: the asserts above bound every element read and written.
        unsafe { product.run((0, m), (0, n)) };
        return;
    }
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    // Blocks of whole micro-kernel widths (16 rows or columns).
    let block = len.div_ceil(parts).div_ceil(16) * 16;
    team::for_each(len.div_ceil(block), &|b| {
        let span = (b * block, ((b + 1) * block).min(len));
        let (rows, cols) = if by_rows {
            (span, (0, n))
        } else {
            ((0, m), span)
        };
        // SAFETY: the blocks are disjoint parts of the product the asserts
        // above bound; each writes only its own rows (columns) of dst.
        unsafe { product.run(rows, cols) };
    });
}

/// One matrix product as raw parts, so blocks of it can go to threads.
struct Product<T> {
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    lhs_strides: (usize, usize),
    rhs: *const T,
    rhs_strides: (usize, usize),
    k: usize,
}

// SAFETY: the pointers are only used for disjoint blocks of dst (see `gemm`).
unsafe impl<T> Send for Product<T> {}
unsafe impl<T> Sync for Product<T> {}

impl<T: Float> Product<T> {
    /// The block of rows `[r0, r1)` and columns `[c0, c1)` of dst, on this thread.
    ///
    /// SAFETY: the block lies within the product whose bounds were checked,
    /// and no other thread writes it meanwhile.
    unsafe fn run(&self, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) {
        let (lrs, lcs) = self.lhs_strides;
        let (rrs, rcs) = self.rhs_strides;
        gemm::gemm(
            r1 - r0,
            c1 - c0,
            self.k,
            self.dst.add(r0 * self.dst_rs + c0),
            1,
            self.dst_rs as isize,
            self.accumulate,
            self.lhs.add(r0 * lrs),
            lcs as isize,
            lrs as isize,
            self.rhs.add(c0 * rcs),
            rcs as isize,
            rrs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// How many parts a parallel pass is cut into, per thread: enough that a
/// thread slowed down by something else leaves its share to the others.
const BLOCKS_PER_THREAD: usize = 4;

/// Runs `f` on each chunk of `data` (of `len` elements), on the team when
/// there is enough `work` (elements touched in all) to pay for it: the chunks
/// are dealt out in a few runs per thread.
pub fn par_chunks<T: Send>(
    data: &mut [T],
    len: usize,
    work: usize,
    f: impl Fn(usize, &mut [T]) + Send + Sync,
) {
    if len == 0 {
        return;
    }
    let chunks = data.len().div_ceil(len);
    let t = threads();
    if t == 1 || chunks == 1 || work < 1 << 15 {
        data.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
        return;
    }
    let per_part = chunks.div_ceil(t * BLOCKS_PER_THREAD);
    let total = data.len();
    let base = SendPtr(data.as_mut_ptr());
    team::for_each(chunks.div_ceil(per_part), &|part| {
        let first = part * per_part;
        for i in first..(first + per_part).min(chunks) {
            let start = i * len;
            let end = (start + len).min(total);
            // SAFETY: chunk i is [i·len, (i+1)·len) of `data`; parts take
            // disjoint runs of chunks, and `data` is borrowed mutably until
            // all parts have run.
            let chunk =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            f(i, chunk);
        }
    });
}

/// A pointer handed to the team's parts (each uses a disjoint range).
struct SendPtr<T>(*mut T);
// SAFETY: see the uses: disjoint ranges, the owner waits for all parts.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}
