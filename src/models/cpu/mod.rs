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

use std::mem::MaybeUninit;

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

    /// This thread's scratch buffer (empty when in use or never used).
    fn take_scratch() -> Vec<Self>;
    /// Gives the scratch buffer back for the next [`Float::take_scratch`].
    fn put_scratch(v: Vec<Self>);

    /// `self · a + b` rounded once (a fused multiply-add; the same value on
    /// every processor, in hardware where it has one).
    fn mul_add(self, a: Self, b: Self) -> Self;
}

thread_local! {
    static SCRATCH_F32: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH_F64: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;

    fn take_scratch() -> Vec<Self> {
        SCRATCH_F32.with(|s| s.take())
    }

    fn put_scratch(v: Vec<Self>) {
        SCRATCH_F32.with(|s| s.set(v))
    }

    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;

    fn take_scratch() -> Vec<Self> {
        SCRATCH_F64.with(|s| s.take())
    }

    fn put_scratch(v: Vec<Self>) {
        SCRATCH_F64.with(|s| s.set(v))
    }

    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
}

/// Which operations a network's layers and its optimiser run, chosen when
/// they are built: no process-wide switch, so two networks on different
/// kernels can live side by side (the kernel tests compare them so).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// wfrun's kernels for CPU tensors, with channels-first activations;
    /// candle's operations on other devices.
    #[default]
    Wfrun,
    /// candle's generic operations everywhere, images first.
    Candle,
}

impl Kernels {
    /// Whether a tensor on `device` goes through wfrun's kernels.
    pub fn takes(self, device: &candle_core::Device) -> bool {
        self == Kernels::Wfrun && device.is_cpu()
    }
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

/// The threads the kernels may use (candle's setting: `RAYON_NUM_THREADS` or
/// the physical cores), read once per process: candle reads the environment
/// and, without `RAYON_NUM_THREADS`, parses `/proc/cpuinfo` on every call,
/// which the kernels make hundreds of times a step (a tenth of a run's time).
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::get_num_threads().max(1))
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
    let product = Product::new(
        (m, n, k),
        (dst.as_mut_ptr(), dst.len()),
        dst_rs,
        accumulate,
        (lhs, (lhs_rs, lhs_cs)),
        (rhs, (rhs_rs, rhs_cs)),
    );
    profile::time(profile::Kernel::Gemm, || product.run_all(threads, None))
}

/// What a product does to each block of its output as soon as the block is
/// computed, while it is still in cache: `then(row, first_column, values)`
/// for each row of the block (row and columns counted within dst).
pub type Then<'a, T> = &'a (dyn Fn(usize, usize, &mut [T]) + Sync);

/// Like [`gemm`], into `dst` that need not be initialised (it is only
/// written, never read), then `then` on each block: every element of the
/// `m × n` product is initialised when it returns.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [MaybeUninit<T>],
    dst_rs: usize,
    lhs: &[T],
    lhs_strides: (usize, usize),
    rhs: &[T],
    rhs_strides: (usize, usize),
    threads: usize,
    then: Option<Then<T>>,
) {
    let product = Product::new(
        (m, n, k),
        (dst.as_mut_ptr().cast::<T>(), dst.len()),
        dst_rs,
        false,
        (lhs, lhs_strides),
        (rhs, rhs_strides),
    );
    profile::time(profile::Kernel::Gemm, || product.run_all(threads, then))
}

/// One product of a pair run together by [`gemm_pair`]: `dst (m × n, row
/// stride dst_rs) = [dst +] lhs · rhs`, as [`gemm`] and [`gemm_into`] take it.
pub(crate) struct Gemm<'a, T> {
    product: Product<T>,
    _borrows: std::marker::PhantomData<(&'a mut [T], &'a [T])>,
}

impl<'a, T: Float> Gemm<'a, T> {
    /// Into `dst`, which need not be initialised (as [`gemm_into`]).
    pub(crate) fn into(
        dims: (usize, usize, usize),
        (dst, dst_rs): (&'a mut [MaybeUninit<T>], usize),
        lhs: (&'a [T], (usize, usize)),
        rhs: (&'a [T], (usize, usize)),
    ) -> Self {
        let dst = (dst.as_mut_ptr().cast::<T>(), dst.len());
        Gemm {
            product: Product::new(dims, dst, dst_rs, false, lhs, rhs),
            _borrows: std::marker::PhantomData,
        }
    }

    /// Into `dst`, added to it when `accumulate` (as [`gemm`]).
    pub(crate) fn onto(
        dims: (usize, usize, usize),
        (dst, dst_rs): (&'a mut [T], usize),
        accumulate: bool,
        lhs: (&'a [T], (usize, usize)),
        rhs: (&'a [T], (usize, usize)),
    ) -> Self {
        let dst = (dst.as_mut_ptr(), dst.len());
        Gemm {
            product: Product::new(dims, dst, dst_rs, accumulate, lhs, rhs),
            _borrows: std::marker::PhantomData,
        }
    }
}

/// Two products on up to `threads` threads, the blocks of both dealt out
/// together and claimed as threads come free: a thread done with one
/// product's blocks takes the other's instead of waiting for it. (A
/// convolution's weight and input gradients: the weight gradient's inner
/// dimension is the batch's pixels, a few dozen on small maps, and it runs
/// far slower a multiply-add than the input gradient's; each on a thread of
/// its own, one thread waited for the other: on ResNet-101 at 64 px, 15 ms
/// of a 140 ms step.)
pub(crate) fn gemm_pair<T: Float>(a: Gemm<T>, b: Gemm<T>, threads: usize) {
    let (a, b) = (&a.product, &b.product);
    // One block a thread each: a block packs its own copy of the operand
    // the blocks share, which on these small products costs more than a
    // thread slowed by something else loses (measured: four a thread each
    // was slower than the two products on a thread each).
    let (cut_a, cut_b) = (a.blocks(threads, 1, false), b.blocks(threads, 1, false));
    let run = |i: usize| match i.checked_sub(cut_a.count) {
        None => a.run_block(&cut_a, i, None),
        Some(i) => b.run_block(&cut_b, i, None),
    };
    let count = cut_a.count + cut_b.count;
    profile::time(profile::Kernel::Gemm, || {
        if threads > 1 && count > 1 {
            team::for_each(count, &run);
        } else {
            (0..count).for_each(run);
        }
    })
}

/// Defines `fn NAME<T: Float>(ARGS) -> R` whose body runs compiled for the
/// widest vectors this processor has (AVX-512, else AVX2 with FMA, else the
/// build's baseline), chosen at run time: the body is an `#[inline(always)]`
/// function called from one entry point per instruction set compiled for
/// it. For batch norm's sums and passes (which the baseline compiles to
/// scalar code where a value is chosen by a comparison) and the grouped
/// convolutions' kernels. Rust contracts no multiply and add into one fused
/// operation unless asked (and `mul_add` is correctly rounded everywhere),
/// so the values are the same on every path; only their speed differs.
macro_rules! widest {
    ($(#[$meta:meta])* fn $name:ident<T: Float>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        #[allow(clippy::unused_unit)]
        fn $name<T: Float>($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body<T: Float>($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn avx512<T: Float>($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<T: Float>($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if $crate::models::cpu::has_avx512() {
                    // SAFETY: the processor has the entry point's features.
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::models::cpu::has_avx2() {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }

        /// The same function compiled for the build's baseline only, for
        /// tests that compare its values with the dispatched ones.
        #[cfg(test)]
        mod $name {
            use super::*;

            #[allow(clippy::unused_unit, dead_code)]
            pub(super) fn baseline<T: Float>($($arg: $ty),*) -> $ret $body
        }
    };
}
pub(crate) use widest;

/// Whether [`widest`]'s functions may take their AVX-512 entry point.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
}

/// Whether [`widest`]'s functions may take their AVX2 entry point.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `s` as the values it holds.
///
/// # Safety
/// Every element of `s` has been written.
pub(crate) unsafe fn init_mut<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: MaybeUninit<T> has T's layout, and the caller vouches that
    // every element is initialised.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A vector of `len` elements to be written before anything reads them: no
/// pass of zeros over memory the caller writes in full anyway.
pub(crate) fn uninit<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { v.set_len(len) };
    v
}

/// The vector once every element has been written.
///
/// # Safety
///
/// Every element of `v` is initialised.
pub(crate) unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity())
}

/// Elements of output a block with an epilogue aims at (1 MiB of f32): it
/// is still in the core's cache when the epilogue reads it.
const EPILOGUE_BLOCK: usize = 1 << 18;

/// One matrix product as raw parts, so blocks of it can go to threads.
struct Product<T> {
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    lhs_strides: (usize, usize),
    rhs: *const T,
    rhs_strides: (usize, usize),
}

/// How a product is cut into blocks of whole rows (or columns) for threads.
struct Blocks {
    threaded: bool,
    by_rows: bool,
    /// Rows (or columns) in all.
    len: usize,
    /// Rows (or columns) a block.
    block: usize,
    count: usize,
}

// SAFETY: the pointers are only used for disjoint blocks of dst (see `run_all`).
unsafe impl<T> Send for Product<T> {}
unsafe impl<T> Sync for Product<T> {}

impl<T: Float> Product<T> {
    /// Checks that every element the product reads or writes lies within
    /// its slice (dst given as pointer and length).
    fn new(
        (m, n, k): (usize, usize, usize),
        (dst, dst_len): (*mut T, usize),
        dst_rs: usize,
        accumulate: bool,
        (lhs, (lhs_rs, lhs_cs)): (&[T], (usize, usize)),
        (rhs, (rhs_rs, rhs_cs)): (&[T], (usize, usize)),
    ) -> Product<T> {
        let last =
            |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
        if m > 0 && n > 0 {
            assert!(dst_len > last(m, n, dst_rs, 1), "gemm: dst too short");
            if k > 0 {
                assert!(
                    lhs.len() > last(m, k, lhs_rs, lhs_cs),
                    "gemm: lhs too short"
                );
                assert!(
                    rhs.len() > last(k, n, rhs_rs, rhs_cs),
                    "gemm: rhs too short"
                );
            }
        }
        Product {
            m,
            n,
            k,
            dst,
            dst_rs,
            accumulate,
            lhs: lhs.as_ptr(),
            lhs_strides: (lhs_rs, lhs_cs),
            rhs: rhs.as_ptr(),
            rhs_strides: (rhs_rs, rhs_cs),
        }
    }

    /// The whole product on up to `threads` threads, `then` after each block.
    fn run_all(&self, threads: usize, then: Option<Then<T>>) {
        let blocks = self.blocks(threads, BLOCKS_PER_THREAD, then.is_some());
        let run = |b: usize| self.run_block(&blocks, b, then);
        if blocks.threaded && blocks.count > 1 {
            team::for_each(blocks.count, &run);
        } else {
            (0..blocks.count).for_each(run);
        }
    }

    /// How the product is cut for `threads` threads, about `per_thread`
    /// blocks a thread (`epilogue`: with a `then` to run on each block).
    fn blocks(&self, threads: usize, per_thread: usize, epilogue: bool) -> Blocks {
        let (m, n, k) = (self.m, self.n, self.k);
        if m == 0 || n == 0 {
            return Blocks {
                threaded: false,
                by_rows: true,
                len: 0,
                block: 1,
                count: 0,
            };
        }
        // A few blocks a thread, at least 64 rows (columns) each: a thread
        // that gets less of its core (another process, another virtual
        // machine) takes fewer of them instead of holding up the others.
        // With an epilogue, blocks small enough to stay in cache too.
        let threaded = threads > 1 && m * n * k >= 1 << 18;
        let mut parts = if threaded { threads * per_thread } else { 1 };
        if epilogue {
            parts = parts.max((m * n).div_ceil(EPILOGUE_BLOCK));
        }
        let parts = parts.min(m.max(n) / 64).max(1);
        let by_rows = m >= n;
        let len = if by_rows { m } else { n };
        // Blocks of whole micro-kernel widths (16 rows or columns).
        let block = len.div_ceil(parts).div_ceil(16) * 16;
        Blocks {
            threaded,
            by_rows,
            len,
            block,
            count: len.div_ceil(block),
        }
    }

    /// Block `b` of the cut `blocks`, on this thread.
    fn run_block(&self, blocks: &Blocks, b: usize, then: Option<Then<T>>) {
        let span = (b * blocks.block, ((b + 1) * blocks.block).min(blocks.len));
        let (rows, cols) = if blocks.by_rows {
            (span, (0, self.n))
        } else {
            ((0, self.m), span)
        };
        // SAFETY: `new` bounded the product; blocks are disjoint and each
        // writes only its own rows (columns) of dst.
        unsafe { self.run(rows, cols, then) };
    }

    /// The block of rows `[r0, r1)` and columns `[c0, c1)` of dst, on this
    /// thread, then `then` on each of its rows.
    ///
    /// SAFETY: the block lies within the product whose bounds were checked,
    /// and no other thread touches it meanwhile.
    unsafe fn run(
        &self,
        (r0, r1): (usize, usize),
        (c0, c1): (usize, usize),
        then: Option<Then<T>>,
    ) {
        let (lrs, lcs) = self.lhs_strides;
        let (rrs, rcs) = self.rhs_strides;
        let row = |r: usize| self.dst.add(r * self.dst_rs + c0);
        if self.k == 0 {
            if !self.accumulate {
                for r in r0..r1 {
                    std::slice::from_raw_parts_mut(row(r).cast::<MaybeUninit<T>>(), c1 - c0)
                        .fill(MaybeUninit::new(T::ZERO));
                }
            }
        } else {
            gemm::gemm(
                r1 - r0,
                c1 - c0,
                self.k,
                row(r0),
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
        if let Some(then) = then {
            for r in r0..r1 {
                // The block's rows are written: gemm never reads dst unless
                // accumulating, and writes every element of the block.
                then(r, c0, std::slice::from_raw_parts_mut(row(r), c1 - c0));
            }
        }
    }
}

/// How many parts a parallel pass is cut into, per thread: enough that a
/// thread slowed down by something else leaves its share to the others.
pub(super) const BLOCKS_PER_THREAD: usize = 4;

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
    let base = DisjointMut::new(data);
    team::for_each(chunks.div_ceil(per_part), &|part| {
        let first = part * per_part;
        for i in first..(first + per_part).min(chunks) {
            let start = i * len;
            let end = (start + len).min(total);
            // SAFETY: chunk i is [i·len, (i+1)·len) of `data`; parts take
            // disjoint runs of chunks, and `data` is borrowed mutably until
            // all parts have run.
            let chunk = unsafe { base.range(start, end - start) };
            f(i, chunk);
        }
    });
}

/// A mutable slice handed to parallel parts that each write their own
/// range of it: the one way the kernels share a buffer among threads. It
/// borrows the slice for `'a`, so the slice cannot be used otherwise while
/// parts hold ranges of it.
pub(crate) struct DisjointMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: std::marker::PhantomData<&'a mut [T]>,
}

impl<T> Clone for DisjointMut<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for DisjointMut<'_, T> {}

// SAFETY: the parts write disjoint ranges (the contract of `range`), and the
// borrow of the slice outlives them all.
unsafe impl<T: Send> Send for DisjointMut<'_, T> {}
unsafe impl<T: Send> Sync for DisjointMut<'_, T> {}

impl<'a, T> DisjointMut<'a, T> {
    pub fn new(slice: &'a mut [T]) -> DisjointMut<'a, T> {
        DisjointMut {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _slice: std::marker::PhantomData,
        }
    }

    /// The `n` elements from `start`; out of bounds is a panic.
    ///
    /// # Safety
    ///
    /// No other range in use at the same time overlaps this one.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, start: usize, n: usize) -> &'a mut [T] {
        assert!(
            start.checked_add(n).is_some_and(|end| end <= self.len),
            "range {start}+{n} beyond {}",
            self.len
        );
        std::slice::from_raw_parts_mut(self.ptr.add(start), n)
    }
}
