//! Exact cosine nearest neighbours: the queries' and the index's unit vectors
//! multiplied on the tensors' device, a block of queries at a time, and the
//! top k of each row kept on the host (a bounded insertion list, one pass).

use candle_core::{Result, Tensor};

use super::Matrix;

/// One query's neighbours, best first: (index row, cosine similarity).
pub type Neighbours = Vec<(u32, f32)>;

/// Queries per matrix product: bounds the similarity block to
/// `BLOCK × index rows` floats.
const BLOCK: usize = 256;

/// Rows of `x` scaled to unit length (zero rows stay zero).
pub fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&norm)
}

/// The rows of `x` scaled to unit length, on the host.
pub fn unit_matrix(x: &Tensor) -> Result<Matrix> {
    let mut m = Matrix::from_tensor(x)?;
    let cols = m.cols;
    for row in m.data.chunks_mut(cols.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    Ok(m)
}

/// [`search`] of unit rows on the CPU.
pub fn search_unit(
    queries: &Matrix,
    index: &Matrix,
    k: usize,
    exclude: &(dyn Fn(usize) -> Option<usize> + Sync),
) -> Vec<Neighbours> {
    super::cpu::search(queries, index, k, exclude)
}

/// The `k` most similar rows of `index` for every row of `queries` (both
/// `rows × dim`, not necessarily unit length). `exclude(q)` names an index row
/// query `q` may not return (itself, when the queries are in the index).
pub fn search(
    queries: &Tensor,
    index: &Tensor,
    k: usize,
    exclude: &(dyn Fn(usize) -> Option<usize> + Sync),
) -> Result<Vec<Neighbours>> {
    if queries.device().is_cpu() {
        let (q, x) = (unit_matrix(queries)?, unit_matrix(index)?);
        return Ok(search_unit(&q, &x, k, exclude));
    }
    let q = unit_rows(queries)?;
    let x = unit_rows(index)?;
    let xt = x.t()?.contiguous()?;
    let n = x.dim(0)?;
    let rows = q.dim(0)?;
    let mut out = Vec::with_capacity(rows);
    let mut start = 0;
    while start < rows {
        let len = BLOCK.min(rows - start);
        let sim = q.narrow(0, start, len)?.matmul(&xt)?;
        let sim = sim.flatten_all()?.to_vec1::<f32>()?;
        let tops: Vec<Neighbours> = std::thread::scope(|scope| {
            let workers = super::cpu::threads();
            let per = len.div_ceil(workers).max(1);
            let handles: Vec<_> = (0..len)
                .step_by(per)
                .map(|first| {
                    let sim = &sim;
                    scope.spawn(move || {
                        (first..(first + per).min(len))
                            .map(|r| top_k(&sim[r * n..(r + 1) * n], k, exclude(start + r)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        out.extend(tops);
        start += len;
    }
    Ok(out)
}

/// The `k` largest scores seen so far, best first (ties: the first seen first).
pub struct TopK {
    k: usize,
    best: Neighbours,
    /// The k-th best score once there are k; scores at or below it are out.
    floor: f32,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            best: Vec::with_capacity(k + 1),
            floor: f32::NEG_INFINITY,
        }
    }

    /// Whether `score` would be kept (a cheap test before [`TopK::push`]).
    #[inline]
    pub fn admits(&self, score: f32) -> bool {
        self.best.len() < self.k || score > self.floor
    }

    #[inline]
    pub fn push(&mut self, index: u32, score: f32) {
        if !self.admits(score) || score.is_nan() {
            return;
        }
        let at = self.best.partition_point(|&(_, b)| b >= score);
        self.best.insert(at, (index, score));
        if self.best.len() > self.k {
            self.best.pop();
        }
        if self.best.len() == self.k {
            self.floor = self.best[self.k - 1].1;
        }
    }

    pub fn into_vec(self) -> Neighbours {
        self.best
    }
}

/// The `k` largest of `row` (ties: the lower index first), skipping `skip`.
pub fn top_k(row: &[f32], k: usize, skip: Option<usize>) -> Neighbours {
    let mut top = TopK::new(k);
    for (i, &s) in row.iter().enumerate() {
        if Some(i) != skip {
            top.push(i as u32, s);
        }
    }
    top.into_vec()
}

/// Retrieval quality when concepts are known: (recall@1, recall@k, mAP@k).
/// recall@k: the share of queries with a neighbour of a shared concept among
/// the first k. mAP@k: the mean over queries of the average precision of the
/// first k, normalised by min(k, relevant rows in the index).
pub fn retrieval_metrics(
    neighbours: &[Neighbours],
    query_concepts: &[Vec<usize>],
    index_concepts: &[Vec<usize>],
    k: usize,
    exclude: &(dyn Fn(usize) -> Option<usize> + Sync),
) -> (f64, f64, f64) {
    let shares = |q: &[usize], i: u32| index_concepts[i as usize].iter().any(|c| q.contains(c));
    let (mut r1, mut rk, mut map, mut counted) = (0.0, 0.0, 0.0, 0usize);
    for (qi, (found, concepts)) in neighbours.iter().zip(query_concepts).enumerate() {
        if concepts.is_empty() {
            continue;
        }
        counted += 1;
        let relevant = index_concepts
            .iter()
            .enumerate()
            .filter(|(i, c)| Some(*i) != exclude(qi) && c.iter().any(|x| concepts.contains(x)))
            .count();
        if found.first().is_some_and(|&(i, _)| shares(concepts, i)) {
            r1 += 1.0;
        }
        if found.iter().take(k).any(|&(i, _)| shares(concepts, i)) {
            rk += 1.0;
        }
        let (mut hits, mut ap) = (0.0, 0.0);
        for (rank, &(i, _)) in found.iter().take(k).enumerate() {
            if shares(concepts, i) {
                hits += 1.0;
                ap += hits / (rank + 1) as f64;
            }
        }
        if relevant > 0 {
            map += ap / relevant.min(k) as f64;
        }
    }
    let n = counted.max(1) as f64;
    (r1 / n, rk / n, map / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn top_k_matches_a_full_sort() {
        let mut rng = crate::data::Rng::new(5);
        let row: Vec<f32> = (0..1000).map(|_| rng.normal() as f32).collect();
        let mut sorted: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as u32, s))
            .collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(top_k(&row, 10, None), sorted[..10].to_vec());
        assert_eq!(
            top_k(&row, 10, Some(sorted[0].0 as usize)),
            sorted[1..11].to_vec()
        );
        assert_eq!(top_k(&row[..3], 10, None).len(), 3);
    }

    #[test]
    fn search_is_exact_and_excludes_the_query() {
        let (m, labels) = super::super::kmeans::tests::blobs(4, 50, 8, 2);
        let x = m.to_tensor(&Device::Cpu).unwrap();
        let exclude = |q: usize| Some(q);
        let found = search(&x, &x, 5, &exclude).unwrap();
        assert!(found
            .iter()
            .enumerate()
            .all(|(q, n)| n.iter().all(|&(i, _)| i as usize != q)));
        // Against the cosine computed directly.
        let unit: Vec<Vec<f32>> = (0..m.rows)
            .map(|r| {
                let v = m.row(r);
                let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                v.iter().map(|a| a / n).collect()
            })
            .collect();
        for (q, n) in found.iter().enumerate().take(20) {
            let mut all: Vec<(usize, f32)> = (0..m.rows)
                .filter(|&i| i != q)
                .map(|i| (i, unit[q].iter().zip(&unit[i]).map(|(a, b)| a * b).sum()))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (j, &(i, s)) in n.iter().enumerate() {
                assert!((s - all[j].1).abs() < 1e-4);
                assert!(i as usize == all[j].0 || (s - all[j].1).abs() < 1e-6);
            }
        }
        let concepts: Vec<Vec<usize>> = labels.iter().map(|&c| vec![c]).collect();
        let (r1, rk, map) = retrieval_metrics(&found, &concepts, &concepts, 5, &exclude);
        assert!(r1 > 0.99 && rk > 0.99 && map > 0.99, "{r1} {rk} {map}");
        // Shuffled concepts: retrieval near chance (1 in 4).
        let shuffled: Vec<Vec<usize>> = (0..m.rows).map(|i| vec![(i * 7 / 3) % 4]).collect();
        let (r1, _, _) = retrieval_metrics(&found, &shuffled, &shuffled, 5, &exclude);
        assert!(r1 < 0.5, "{r1}");
    }
}
