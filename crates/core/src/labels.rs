//! Label values and their names. Laterality is part of a gland's label (parotid_left is
//! not parotid_right), so the label map knows which values are left/right partners and
//! builds the swap table that makes a left-right mirror anatomically correct. Names follow
//! `shared/LABELS.md`: a name ending in `_left`/`_right` pairs with the same stem on the
//! other side; "left" is the patient's left (+x in LPS).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Left,
    Right,
}

/// Value -> name for every label, background (0) included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelMap {
    /// Sorted by value; value 0 is the background.
    entries: Vec<(u8, String)>,
}

impl Default for LabelMap {
    /// The map of `shared/LABELS.md`, used by the synthetic cohort and the default model.
    fn default() -> Self {
        LabelMap::new(vec![
            (0, "background".into()),
            (1, "parotid_left".into()),
            (2, "parotid_right".into()),
            (3, "submandibular_left".into()),
            (4, "submandibular_right".into()),
            (5, "lacrimal_left".into()),
            (6, "lacrimal_right".into()),
        ])
        .expect("the built-in label map is valid")
    }
}

impl LabelMap {
    /// Values must be unique, names unique and non-empty, and 0 must be the background.
    pub fn new(mut entries: Vec<(u8, String)>) -> Result<Self> {
        entries.sort_by_key(|e| e.0);
        if entries.first().map(|e| e.0) != Some(0) {
            return Err(Error::Labels("value 0 (background) is missing".into()));
        }
        for w in entries.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::Labels(format!("value {} is used twice", w[0].0)));
            }
        }
        let mut names: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
        if names.iter().any(|n| n.trim().is_empty()) {
            return Err(Error::Labels("a label has an empty name".into()));
        }
        names.sort();
        for w in names.windows(2) {
            if w[0] == w[1] {
                return Err(Error::Labels(format!("name {:?} is used twice", w[0])));
            }
        }
        Ok(LabelMap { entries })
    }

    /// Reads the `"labels"` object of an nnU-Net `dataset.json`
    /// (`{"background": 0, "parotid_left": 1, ...}`). Region-based labels (lists of values)
    /// are refused: glandseg trains one class per value.
    pub fn from_nnunet_labels(labels: &serde_json::Value) -> Result<Self> {
        let obj = labels
            .as_object()
            .ok_or_else(|| Error::Labels("\"labels\" must be an object {name: value}".into()))?;
        let mut entries = Vec::new();
        for (name, v) in obj {
            let value = v.as_u64().filter(|x| *x <= 255).ok_or_else(|| {
                Error::Labels(format!(
                    "label {name:?} has value {v}; glandseg needs one integer 0..=255 per label \
                     (region-based labels are not supported)"
                ))
            })?;
            entries.push((value as u8, name.clone()));
        }
        LabelMap::new(entries)
    }

    /// The `"labels"` object for an nnU-Net `dataset.json`.
    pub fn to_nnunet_labels(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (v, n) in &self.entries {
            m.insert(n.clone(), serde_json::Value::from(*v));
        }
        serde_json::Value::Object(m)
    }

    pub fn entries(&self) -> &[(u8, String)] {
        &self.entries
    }

    /// Foreground labels (value > 0).
    pub fn foreground(&self) -> impl Iterator<Item = (u8, &str)> {
        self.entries
            .iter()
            .filter(|e| e.0 != 0)
            .map(|e| (e.0, e.1.as_str()))
    }

    /// Number of classes a network predicts: highest value + 1.
    pub fn num_classes(&self) -> usize {
        self.entries.last().map(|e| e.0 as usize + 1).unwrap_or(1)
    }

    pub fn name(&self, value: u8) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.0 == value)
            .map(|e| e.1.as_str())
    }

    pub fn value(&self, name: &str) -> Option<u8> {
        self.entries.iter().find(|e| e.1 == name).map(|e| e.0)
    }

    /// Side and stem of a label name: `parotid_left` -> (`parotid`, Left).
    pub fn side_of(name: &str) -> Option<(&str, Side)> {
        if let Some(stem) = name.strip_suffix("_left") {
            Some((stem, Side::Left))
        } else {
            name.strip_suffix("_right").map(|stem| (stem, Side::Right))
        }
    }

    /// `(left value, right value, stem)` for every complete left/right pair.
    pub fn lateral_pairs(&self) -> Vec<(u8, u8, String)> {
        let mut out = Vec::new();
        for (v, n) in self.foreground() {
            if let Some((stem, Side::Left)) = Self::side_of(n) {
                if let Some(r) = self.value(&format!("{stem}_right")) {
                    out.push((v, r, stem.to_string()));
                }
            }
        }
        out
    }

    /// The value that `value` becomes under a left-right mirror: its partner when it has
    /// one, itself otherwise. Index with any u8.
    pub fn swap_table(&self) -> [u8; 256] {
        let mut t = [0u8; 256];
        for (i, x) in t.iter_mut().enumerate() {
            *x = i as u8;
        }
        for (l, r, _) in self.lateral_pairs() {
            t[l as usize] = r;
            t[r as usize] = l;
        }
        t
    }

    /// Names by value, as a map (for JSON outputs).
    pub fn to_map(&self) -> BTreeMap<u8, String> {
        self.entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pairs_and_swap() {
        let m = LabelMap::default();
        assert_eq!(m.num_classes(), 7);
        let pairs = m.lateral_pairs();
        assert_eq!(pairs.len(), 3);
        let t = m.swap_table();
        assert_eq!(t[1], 2);
        assert_eq!(t[2], 1);
        assert_eq!(t[5], 6);
        assert_eq!(t[0], 0);
        assert_eq!(t[200], 200);
    }

    #[test]
    fn nnunet_round_trip_and_errors() {
        let m = LabelMap::default();
        let j = m.to_nnunet_labels();
        assert_eq!(LabelMap::from_nnunet_labels(&j).unwrap(), m);
        let bad = serde_json::json!({"background": 0, "x": [1, 2]});
        let e = LabelMap::from_nnunet_labels(&bad).unwrap_err().to_string();
        assert!(e.contains("\"x\""), "{e}");
        let nobg = serde_json::json!({"a": 1});
        assert!(LabelMap::from_nnunet_labels(&nobg).is_err());
        let dup = serde_json::json!({"background": 0, "a": 1, "b": 1});
        assert!(LabelMap::from_nnunet_labels(&dup).is_err());
    }

    #[test]
    fn unpaired_side_is_not_swapped() {
        let m = LabelMap::new(vec![
            (0, "background".into()),
            (1, "eye_left".into()),
            (2, "tumour".into()),
        ])
        .unwrap();
        assert!(m.lateral_pairs().is_empty());
        assert_eq!(m.swap_table()[1], 1);
    }
}
