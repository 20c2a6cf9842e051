//! Finite-difference gradient checks (f64), for every layer and loss wfrun
//! writes or composes.

use candle_core::{DType, Result, Tensor, Var};

/// Fixed pseudo-random weights in [-1, 1), so `sum(w · f(x))` exercises every
/// output element with a different weight.
fn weights(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Compares the gradient candle computes for `f` at `x` (f64) with central
/// finite differences of step `eps`; fails if any element differs by more
/// than `tol · max(1, |g|)`. Checks at most 400 input elements, spread evenly.
pub fn check_gradient(
    x: &Tensor,
    f: impl Fn(&Tensor) -> Result<Tensor>,
    eps: f64,
    tol: f64,
) -> Result<()> {
    if x.dtype() != DType::F64 {
        candle_core::bail!("gradient checks run in f64");
    }
    let var = Var::from_tensor(x)?;
    let out = f(var.as_tensor())?;
    let w = Tensor::from_vec(weights(out.elem_count(), 7), out.shape(), x.device())?;
    let objective = |t: &Tensor| -> Result<f64> { (f(t)? * &w)?.sum_all()?.to_scalar::<f64>() };
    let loss = (out * &w)?.sum_all()?;
    let grads = loss.backward()?;
    let analytic = grads
        .get(var.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("no gradient reached the input".into()))?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let base = x.flatten_all()?.to_vec1::<f64>()?;
    let n = base.len();
    let stride = n.div_ceil(400).max(1);
    let mut worst = (0.0f64, 0usize, 0.0, 0.0);
    for i in (0..n).step_by(stride) {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let fp = objective(&Tensor::from_vec(plus, x.shape(), x.device())?)?;
        let fm = objective(&Tensor::from_vec(minus, x.shape(), x.device())?)?;
        let numeric = (fp - fm) / (2.0 * eps);
        let err = (numeric - analytic[i]).abs() / analytic[i].abs().max(1.0);
        if err > worst.0 {
            worst = (err, i, analytic[i], numeric);
        }
    }
    if worst.0 > tol {
        candle_core::bail!(
            "gradient mismatch at element {}: analytic {} vs finite differences {} (relative error {:.2e})",
            worst.1,
            worst.2,
            worst.3,
            worst.0
        );
    }
    Ok(())
}
