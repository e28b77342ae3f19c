//! Five-fold cross-validation splits, as nnU-Net makes them: the case list sorted, shuffled
//! with a fixed seed, cut into five interleaved folds, written once to `splits.json` and
//! read back afterwards so every fold of every run sees the same split.

use crate::error::{Result, TrainError};
use glandseg_core::atomic;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
/// One fold of the cross-validation split.
pub struct Split {
    /// Training case ids.
    pub train: Vec<String>,
    /// Validation case ids.
    pub val: Vec<String>,
}

/// `k` folds over `ids` (k is lowered to the number of cases when there are fewer).
pub fn make_splits(ids: &[String], k: usize, seed: u64) -> Vec<Split> {
    let mut ids = ids.to_vec();
    ids.sort();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    ids.shuffle(&mut rng);
    let k = k.min(ids.len()).max(1);
    (0..k)
        .map(|f| {
            let mut split = Split {
                train: Vec::new(),
                val: Vec::new(),
            };
            for (n, id) in ids.iter().enumerate() {
                if n % k == f {
                    split.val.push(id.clone());
                } else {
                    split.train.push(id.clone());
                }
            }
            split.train.sort();
            split.val.sort();
            split
        })
        .collect()
}

/// Reads `path` if it exists (and still names only known cases), else writes new splits.
pub fn load_or_create(path: &Path, ids: &[String], seed: u64) -> Result<Vec<Split>> {
    if path.exists() {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let splits: Vec<Split> = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
        let unknown: Vec<&String> = splits
            .iter()
            .flat_map(|s| s.train.iter().chain(&s.val))
            .filter(|id| !ids.contains(id))
            .collect();
        if !unknown.is_empty() {
            return Err(TrainError::Input(format!(
                "{}: names cases that are not in the dataset: {unknown:?}",
                path.display()
            )));
        }
        return Ok(splits);
    }
    let splits = make_splits(ids, 5, seed);
    atomic::write_json(path, &splits)?;
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_cases() {
        let ids: Vec<String> = (0..12).map(|i| format!("c{i:02}")).collect();
        let s = make_splits(&ids, 5, 3);
        assert_eq!(s.len(), 5);
        let mut vals: Vec<String> = s.iter().flat_map(|x| x.val.clone()).collect();
        vals.sort();
        assert_eq!(vals, ids);
        for f in &s {
            assert_eq!(f.train.len() + f.val.len(), 12);
            assert!(f.val.iter().all(|v| !f.train.contains(v)));
        }
        assert_eq!(s, make_splits(&ids, 5, 3), "same seed, same split");
        assert_ne!(s, make_splits(&ids, 5, 4));
    }
}
