//! Seeded clustered unit vectors, the data of the index benches (`index_vs_faiss`,
//! `index_sizes`): `c` Gaussian centres in `d` dimensions, each vector a centre plus noise of
//! standard deviation 0.6 per coordinate, normalised.

use georag::util::rng::Rng;

pub struct Clusters {
    rng: Rng,
    d: usize,
    centres: Vec<f32>,
}

impl Clusters {
    pub fn new(seed: u64, c: usize, d: usize) -> Self {
        let mut rng = Rng::new(seed);
        let centres = (0..c * d).map(|_| rng.normal() as f32).collect();
        Clusters { rng, d, centres }
    }

    /// `m` vectors, row-major.
    pub fn draw(&mut self, m: usize) -> Vec<f32> {
        let (d, c) = (self.d, self.centres.len() / self.d);
        let mut v = Vec::with_capacity(m * d);
        let mut row = vec![0f32; d];
        for _ in 0..m {
            let k = self.rng.below(c);
            for (j, x) in row.iter_mut().enumerate() {
                *x = self.centres[k * d + j] + 0.6 * self.rng.normal() as f32;
            }
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.extend(row.iter().map(|x| x / norm));
        }
        v
    }
}
