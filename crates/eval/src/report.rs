//! Per-class summaries over cases and the CSV / JSON files a user opens in a spreadsheet
//! or a script. JSON has no infinity: undefined distances are `null`.

use crate::metrics::ClassMetrics;
use glandseg_core::{atomic, Result};
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct CaseMetrics {
    pub case: String,
    pub classes: Vec<ClassMetrics>,
}

/// Mean, standard deviation (sample, n-1) and median of the defined values.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stat {
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub median: Option<f64>,
    pub n: usize,
}

pub fn stat(values: impl Iterator<Item = Option<f64>>) -> Stat {
    let mut v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return Stat {
            mean: None,
            std: None,
            median: None,
            n,
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
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassSummary {
    pub label: u8,
    pub name: String,
    pub dice: Stat,
    pub iou: Stat,
    pub hd: Stat,
    pub hd95: Stat,
    pub assd: Stat,
    pub nsd_1mm: Stat,
    pub nsd_2mm: Stat,
    pub volume_diff_ml: Stat,
    pub volume_diff_pct: Stat,
}

pub fn summarise(cases: &[CaseMetrics]) -> Vec<ClassSummary> {
    let Some(first) = cases.first() else {
        return Vec::new();
    };
    first
        .classes
        .iter()
        .map(|c0| {
            let of = |f: &dyn Fn(&ClassMetrics) -> Option<f64>| {
                stat(
                    cases
                        .iter()
                        .flat_map(|c| c.classes.iter().filter(|m| m.label == c0.label).map(f)),
                )
            };
            ClassSummary {
                label: c0.label,
                name: c0.name.clone(),
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
        .collect()
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// One row per case and class; empty cells where a distance is undefined.
pub fn write_csv(path: &Path, cases: &[CaseMetrics]) -> Result<()> {
    let mut s = String::from("case,label,name,dice,iou,hd_mm,hd95_mm,assd_mm,nsd_1mm,nsd_2mm,volume_pred_ml,volume_ref_ml,volume_diff_ml,volume_diff_pct\n");
    for c in cases {
        for m in &c.classes {
            s.push_str(&format!(
                "{},{},{},{:.6},{:.6},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{}\n",
                c.case,
                m.label,
                m.name,
                m.dice,
                m.iou,
                opt(m.hd),
                opt(m.hd95),
                opt(m.assd),
                m.nsd_1mm,
                m.nsd_2mm,
                m.volume_pred_ml,
                m.volume_ref_ml,
                m.volume_diff_ml,
                opt(m.volume_diff_pct)
            ));
        }
    }
    atomic::write_bytes(path, s.as_bytes())
}

pub fn write_json(path: &Path, cases: &[CaseMetrics]) -> Result<()> {
    atomic::write_json(
        path,
        &serde_json::json!({"cases": cases, "summary": summarise(cases)}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_skip_undefined() {
        let s = stat([Some(1.0), None, Some(3.0), Some(2.0)].into_iter());
        assert_eq!(s.n, 3);
        assert_eq!(s.mean, Some(2.0));
        assert_eq!(s.median, Some(2.0));
        assert_eq!(s.std, Some(1.0));
        assert_eq!(stat([None].into_iter()).mean, None);
    }
}
