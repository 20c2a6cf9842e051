//! The downstream steps on the embeddings (feature `train`): a classifier
//! head, k-means clustering and exact cosine search, with their metrics.
//! [`run_steps`](crate::exec) calls them after training (or with a base
//! model); they are also usable on their own.

mod cpu;
pub mod head;
pub mod judge;
pub mod kmeans;
pub mod search;

use candle_core::{Device, Result, Tensor};

/// A dense row-major `f32` matrix on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl Matrix {
    pub fn new(data: Vec<f32>, rows: usize, cols: usize) -> Matrix {
        assert_eq!(data.len(), rows * cols, "a {rows} × {cols} matrix");
        Matrix { data, rows, cols }
    }

    pub fn from_rows<'a>(rows: impl Iterator<Item = &'a [f32]>, cols: usize) -> Matrix {
        let mut data = Vec::new();
        let mut n = 0;
        for r in rows {
            data.extend_from_slice(r);
            n += 1;
        }
        Matrix::new(data, n, cols)
    }

    pub fn from_tensor(t: &Tensor) -> Result<Matrix> {
        let (rows, cols) = t.dims2()?;
        Ok(Matrix::new(t.flatten_all()?.to_vec1::<f32>()?, rows, cols))
    }

    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.data.clone(), (self.rows, self.cols), device)
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn column_means(&self) -> Vec<f64> {
        let mut mean = vec![0f64; self.cols];
        for r in 0..self.rows {
            for (m, v) in mean.iter_mut().zip(self.row(r)) {
                *m += *v as f64;
            }
        }
        let n = self.rows.max(1) as f64;
        mean.iter_mut().for_each(|m| *m /= n);
        mean
    }
}
