//! Per-class statistics over a cohort of cases: mean, sample standard deviation and
//! median of each metric, over the cases where the metric is defined.

use crate::metrics::{CaseMetrics, ClassMetrics};
use serde::Serialize;
use std::collections::BTreeMap;

/// Mean, standard deviation (sample, n-1) and median of the defined values of one
/// metric. `n` counts the values used; `undefined` the cases left out because the
/// metric was undefined there (an infinite distance: one mask empty), so a mean HD95
/// over 9 of 10 cases is never mistaken for one over all 10.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stat {
    /// Mean over the cases where the metric is defined.
    pub mean: Option<f64>,
    /// Sample standard deviation (n - 1), when n > 1.
    pub std: Option<f64>,
    /// Median over the defined cases.
    pub median: Option<f64>,
    /// Cases where the metric is defined.
    pub n: usize,
    /// Cases where it is not (an infinite distance).
    pub undefined: usize,
}

/// Statistics of the `Some` finite values; `None` and non-finite ones count as undefined.
pub fn stat(values: impl Iterator<Item = Option<f64>>) -> Stat {
    let mut v = Vec::new();
    let mut undefined = 0;
    for x in values {
        match x {
            Some(x) if x.is_finite() => v.push(x),
            _ => undefined += 1,
        }
    }
    let n = v.len();
    if n == 0 {
        return Stat {
            mean: None,
            std: None,
            median: None,
            n,
            undefined,
        };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = (n > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        mean: Some(mean),
        std,
        median: Some(median),
        n,
        undefined,
    }
}

/// The statistics of every metric for one class.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassSummary {
    /// Label value.
    pub label: u8,
    /// Class name.
    pub name: String,
    /// Dice.
    pub dice: Stat,
    /// IoU.
    pub iou: Stat,
    /// Hausdorff distance, mm.
    pub hd: Stat,
    /// HD95, mm.
    pub hd95: Stat,
    /// Average symmetric surface distance, mm.
    pub assd: Stat,
    /// Surface Dice at 1 mm.
    pub nsd_1mm: Stat,
    /// Surface Dice at 2 mm.
    pub nsd_2mm: Stat,
    /// Volume difference, mL.
    pub volume_diff_ml: Stat,
    /// Volume difference, % of the reference.
    pub volume_diff_pct: Stat,
}

/// A cohort's summary: one [`ClassSummary`] per label, in label order. Iterating over it
/// yields the classes.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Cases summarised.
    pub cases: usize,
    /// One summary per class, in label order.
    pub classes: Vec<ClassSummary>,
}

impl IntoIterator for Summary {
    type Item = ClassSummary;
    type IntoIter = std::vec::IntoIter<ClassSummary>;
    fn into_iter(self) -> Self::IntoIter {
        self.classes.into_iter()
    }
}

impl<'a> IntoIterator for &'a Summary {
    type Item = &'a ClassSummary;
    type IntoIter = std::slice::Iter<'a, ClassSummary>;
    fn into_iter(self) -> Self::IntoIter {
        self.classes.iter()
    }
}

/// Summarises every label that occurs in any case (cases evaluated with different label
/// maps still summarise per label value; a label missing from a case is left out of that
/// class's statistics rather than counted as a failure).
pub fn summarise(cases: &[CaseMetrics]) -> Summary {
    let mut by_label: BTreeMap<u8, (String, Vec<&ClassMetrics>)> = BTreeMap::new();
    for c in cases {
        for m in &c.classes {
            by_label
                .entry(m.label)
                .or_insert_with(|| (m.name.clone(), Vec::new()))
                .1
                .push(m);
        }
    }
    let classes = by_label
        .into_iter()
        .map(|(label, (name, ms))| {
            let of = |f: &dyn Fn(&ClassMetrics) -> Option<f64>| stat(ms.iter().map(|m| f(m)));
            ClassSummary {
                label,
                name,
                dice: of(&|m| Some(m.dice)),
                iou: of(&|m| Some(m.iou)),
                hd: of(&|m| m.hd),
                hd95: of(&|m| m.hd95),
                assd: of(&|m| m.assd),
                nsd_1mm: of(&|m| Some(m.nsd_1mm)),
                nsd_2mm: of(&|m| Some(m.nsd_2mm)),
                volume_diff_ml: of(&|m| Some(m.volume_diff_ml)),
                volume_diff_pct: of(&|m| m.volume_diff_pct),
            }
        })
        .collect();
    Summary {
        cases: cases.len(),
        classes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(label: u8, dice: f64, hd95: Option<f64>) -> ClassMetrics {
        ClassMetrics {
            label,
            name: format!("c{label}"),
            dice,
            iou: dice / (2.0 - dice),
            hd: hd95,
            hd95,
            assd: hd95,
            nsd_1mm: dice,
            nsd_2mm: dice,
            volume_pred_ml: 1.0,
            volume_ref_ml: 1.0,
            volume_diff_ml: 0.0,
            volume_diff_pct: Some(0.0),
        }
    }

    #[test]
    fn stats_skip_undefined_and_count_them() {
        let s = stat([Some(1.0), None, Some(3.0), Some(2.0), Some(f64::INFINITY)].into_iter());
        assert_eq!((s.n, s.undefined), (3, 2));
        assert_eq!(s.mean, Some(2.0));
        assert_eq!(s.median, Some(2.0));
        assert_eq!(s.std, Some(1.0));
        let none = stat([None].into_iter());
        assert_eq!((none.mean, none.undefined), (None, 1));
        assert_eq!(stat([Some(4.0)].into_iter()).std, None);
    }

    #[test]
    fn summary_per_class_over_cases() {
        let cases = vec![
            CaseMetrics {
                case: "a".into(),
                classes: vec![class(2, 0.8, Some(2.0)), class(1, 0.5, None)],
            },
            CaseMetrics {
                case: "b".into(),
                classes: vec![class(1, 0.7, Some(4.0)), class(2, 0.6, Some(6.0))],
            },
        ];
        let s = summarise(&cases);
        assert_eq!(s.cases, 2);
        let labels: Vec<u8> = (&s).into_iter().map(|c| c.label).collect();
        assert_eq!(labels, vec![1, 2]);
        let c1 = &s.classes[0];
        assert!((c1.dice.mean.unwrap() - 0.6).abs() < 1e-12);
        assert!((c1.dice.std.unwrap() - 0.02f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            (c1.hd95.mean, c1.hd95.n, c1.hd95.undefined),
            (Some(4.0), 1, 1)
        );
        assert_eq!(s.classes[1].hd95.median, Some(4.0));
        assert!(summarise(&[]).classes.is_empty());
    }
}
