//! A backbone's forward pass as a walk over its layers, generic over what
//! each layer does. [`Run`] runs the layers on candle tensors (the networks'
//! forward pass is a walk with it); the ONNX exporter (`crate::export`) walks
//! the same code to write the layers as graph nodes, so the exported graph is
//! the network that trains, decisions that depend on sizes included.

use candle_core::{Result, Tensor};

use std::sync::Arc;

use super::cpu::conv::WeightGrads;
use super::cpu::Kernels;
use super::layers::{channel_dim, enter, global_avg_pool, ConvBn};
use super::pool::Pool2d;

/// What a backbone's layers do to the values flowing through it.
pub trait Ops {
    /// An activation.
    type Value: Clone;

    /// Images (N, 3, H, W) → the backbone's first activation.
    fn enter(&mut self, x: &Self::Value) -> Result<Self::Value>;

    /// Convolution and batch norm, then `residual` added, then the layer's
    /// ReLU if it has one.
    fn conv_bn(
        &mut self,
        layer: &ConvBn,
        x: &Self::Value,
        residual: Option<&Self::Value>,
    ) -> Result<Self::Value>;

    fn pool(&mut self, pool: &Pool2d, x: &Self::Value) -> Result<Self::Value>;

    /// Activations joined along the channels.
    fn concat(&mut self, xs: &[Self::Value]) -> Result<Self::Value>;

    /// An activation's height and width.
    fn spatial(&self, x: &Self::Value) -> Result<(usize, usize)>;

    /// Mean over height and width → (N, C).
    fn global_avg_pool(&mut self, x: &Self::Value) -> Result<Self::Value>;
}

/// The layers run on candle tensors, in training or evaluation, on the
/// given kernels.
#[derive(Clone, Debug)]
pub struct Run {
    pub train: bool,
    pub kernels: Kernels,
    /// The weights will not change again: evaluation may keep what it
    /// derives from them across calls ([`ConvBn::forward_with`]).
    pub fixed: bool,
    /// Where training's convolutions hand their weights' gradients, instead
    /// of to candle's gradient store ([`WeightGrads`]).
    pub aside: Option<Arc<WeightGrads>>,
}

impl Ops for Run {
    type Value = Tensor;

    fn enter(&mut self, x: &Tensor) -> Result<Tensor> {
        enter(x, self.kernels)
    }

    fn conv_bn(&mut self, layer: &ConvBn, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        layer.forward_with(x, residual, self.train, self.fixed, self.aside.as_ref())
    }

    fn pool(&mut self, pool: &Pool2d, x: &Tensor) -> Result<Tensor> {
        pool.forward(x)
    }

    fn concat(&mut self, xs: &[Tensor]) -> Result<Tensor> {
        let Some(first) = xs.first() else {
            candle_core::bail!("nothing to concatenate");
        };
        Tensor::cat(xs, channel_dim(first, self.kernels))
    }

    fn spatial(&self, x: &Tensor) -> Result<(usize, usize)> {
        // (N, C, H, W) or, channels first, (C, N, H, W): height and width last either way.
        let (_, _, h, w) = x.dims4()?;
        Ok((h, w))
    }

    fn global_avg_pool(&mut self, x: &Tensor) -> Result<Tensor> {
        global_avg_pool(x, self.kernels)
    }
}
