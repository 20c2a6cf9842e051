//! The templates' losses: the additive angular margin (ArcFace) loss, softmax
//! cross-entropy (`logreg = 0`) and sigmoid binary cross-entropy
//! (`logreg = 1`, several concepts per image).

use candle_core::{DType, Result, Tensor, D};

/// A (N, classes) mask that is true at each row's class index.
pub fn one_hot(labels: &Tensor, classes: usize) -> Result<Tensor> {
    labels
        .to_dtype(DType::U32)?
        .unsqueeze(1)?
        .broadcast_eq(&Tensor::arange(0u32, classes as u32, labels.device())?.unsqueeze(0)?)
}

/// Rows scaled to unit length.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// The additive angular margin loss (Deng et al., 2019): the logit of the true
/// class is `s·cos(θ + m)`, the others `s·cos θ`, where θ is the angle between
/// the embedding and the class's weight vector. When `θ + m > π`, `cos(θ + m)`
/// would start increasing again, so the target logit becomes
/// `s·(cos θ − m·sin m)`, which keeps decreasing in θ (the usual fix).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AngularMargin {
    /// The radius `s`.
    pub scale: f64,
    /// The margin `m`, in radians.
    pub margin: f64,
}

impl AngularMargin {
    /// Logits (N, C) for unit embeddings (N, E), class weights (C, E) (normalised
    /// here) and class indices (N, u32).
    pub fn logits(&self, embeddings: &Tensor, weight: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (cos_m, sin_m) = (self.margin.cos(), self.margin.sin());
        let threshold = (std::f64::consts::PI - self.margin).cos();
        let fallback = (std::f64::consts::PI - self.margin).sin() * self.margin;
        let cos = embeddings
            .matmul(&l2_normalize(weight)?.t()?)?
            .clamp(-1.0 + 1e-7, 1.0 - 1e-7)?;
        let sin = (1.0 - cos.sqr()?)?.sqrt()?;
        // cos(θ + m) = cos θ cos m − sin θ sin m
        let with_margin = ((&cos * cos_m)? - (&sin * sin_m)?)?;
        let keeps_decreasing = cos.gt(threshold)?;
        let target = keeps_decreasing.where_cond(&with_margin, &(&cos - fallback)?)?;
        let classes = cos.dim(1)?;
        let one_hot = one_hot(labels, classes)?;
        one_hot.where_cond(&target, &cos)? * self.scale
    }

    /// The mean loss over the batch.
    pub fn loss(&self, embeddings: &Tensor, weight: &Tensor, labels: &Tensor) -> Result<Tensor> {
        softmax_cross_entropy(&self.logits(embeddings, weight, labels)?, labels)
    }
}

/// Mean softmax cross-entropy of logits (N, C) against class indices (N).
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, &labels.to_dtype(DType::U32)?)
}

/// Mean sigmoid binary cross-entropy of logits (N, C) against targets in
/// [0, 1] (N, C), computed stably: `max(x, 0) − x·t + log(1 + e^{−|x|})`.
pub fn sigmoid_binary_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.to_dtype(logits.dtype())?;
    let positive = logits.relu()?;
    let soft = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((positive - (logits * targets)?)? + soft)?.mean_all()
}

/// Softmax probabilities with a gradient (candle's `softmax_last_dim` has none).
pub fn softmax(logits: &Tensor) -> Result<Tensor> {
    candle_nn::ops::log_softmax(logits, D::Minus1)?.exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gradcheck::check_gradient;
    use candle_core::Device;

    fn t(v: &[f64], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn angular_margin_matches_its_definition() {
        let arc = AngularMargin {
            scale: 10.0,
            margin: 0.5,
        };
        // Embedding at angle 0.3 from class 0, and at π/2 + 0.3 from class 1.
        let e = t(&[0.3f64.cos(), 0.3f64.sin()], (1, 2));
        let w = t(&[2.0, 0.0, 0.0, -3.0], (2, 2)); // normalised inside
        let labels = Tensor::new(&[0u32], &Device::Cpu).unwrap();
        let l = arc
            .logits(&e, &w, &labels)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert!((l[0][0] - 10.0 * 0.8f64.cos()).abs() < 1e-6, "{l:?}");
        assert!((l[0][1] - 10.0 * (-(0.3f64.sin()))).abs() < 1e-6, "{l:?}");
        // θ + m > π: the target logit is cos θ − m sin m, below cos(π − m) − m sin m.
        let e = t(&[-(0.1f64.cos()), 0.1f64.sin()], (1, 2)); // θ = π − 0.1 from class 0
        let l = arc
            .logits(&e, &w, &labels)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let cos = -(0.1f64.cos());
        let expected = 10.0 * (cos - (std::f64::consts::PI - 0.5).sin() * 0.5);
        assert!((l[0][0] - expected).abs() < 1e-6, "{l:?} vs {expected}");
    }

    #[test]
    fn target_logit_keeps_decreasing_past_pi_minus_m() {
        let arc = AngularMargin {
            scale: 1.0,
            margin: 0.5,
        };
        let w = t(&[1.0, 0.0], (1, 2));
        let labels = Tensor::new(&[0u32], &Device::Cpu).unwrap();
        let mut last = f64::INFINITY;
        for i in 0..=60 {
            let theta = i as f64 * std::f64::consts::PI / 60.0;
            let e = t(&[theta.cos(), theta.sin()], (1, 2));
            let l = arc
                .logits(&e, &w, &labels)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap()[0][0];
            assert!(l <= last + 1e-9, "increases at θ = {theta}: {l} > {last}");
            last = l;
        }
    }

    #[test]
    fn loss_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let labels = Tensor::new(&[0u32, 2, 1, 2], &dev).unwrap();
        let x = Tensor::randn(0f64, 1.0, (4, 5), &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (3, 5), &dev).unwrap();
        let arc = AngularMargin {
            scale: 8.0,
            margin: 0.4,
        };
        check_gradient(&x, |x| arc.loss(&l2_normalize(x)?, &w, &labels), 1e-6, 1e-5).unwrap();
        check_gradient(&w, |w| arc.loss(&l2_normalize(&x)?, w, &labels), 1e-6, 1e-5).unwrap();
        let logits = Tensor::randn(0f64, 3.0, (4, 3), &dev).unwrap();
        check_gradient(&logits, |l| softmax_cross_entropy(l, &labels), 1e-6, 1e-6).unwrap();
        let targets = t(&[1., 0., 1., 0., 0., 1., 1., 1., 0., 0., 0., 1.], (4, 3));
        check_gradient(
            &logits,
            |l| sigmoid_binary_cross_entropy(l, &targets),
            1e-6,
            1e-6,
        )
        .unwrap();
        check_gradient(&logits, softmax, 1e-6, 1e-6).unwrap();
    }

    #[test]
    fn binary_cross_entropy_is_stable_and_correct() {
        let logits = t(&[1000.0, -1000.0, 0.0, 2.0], (1, 4));
        let targets = t(&[1.0, 0.0, 1.0, 0.0], (1, 4));
        let l = sigmoid_binary_cross_entropy(&logits, &targets)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let expected = (0.0 + 0.0 + 2f64.ln() + (1.0 + 2f64.exp()).ln()) / 4.0;
        assert!((l - expected).abs() < 1e-12, "{l} vs {expected}");
    }
}
