//! The CSV and JSON files a user opens in a spreadsheet or a script, written atomically.
//! JSON has no infinity: an undefined (infinite) distance is `null`; in the CSV it is an
//! empty cell.

use glandseg_core::{atomic, Result};
use std::path::Path;

// The summary types lived here first; the CLI imports them from this module.
pub use crate::metrics::CaseMetrics;
pub use crate::summary::{stat, summarise, ClassSummary, Stat, Summary};

/// The CSV header, one column per [`crate::ClassMetrics`] field.
pub const CSV_HEADER: &str = "case,label,name,dice,iou,hd_mm,hd95_mm,assd_mm,nsd_1mm,nsd_2mm,volume_pred_ml,volume_ref_ml,volume_diff_ml,volume_diff_pct";

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// RFC 4180 quoting for free text (case and class names come from file names and
/// dataset.json, and may hold commas or quotes). Hand-written: two rules do not justify
/// the csv crate.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV text: one row per case and class, six decimals.
pub fn csv_string(cases: &[CaseMetrics]) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for c in cases {
        for m in &c.classes {
            s.push_str(&format!(
                "{},{},{},{:.6},{:.6},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{}\n",
                field(&c.case),
                m.label,
                field(&m.name),
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
    s
}

/// Writes [`csv_string`] to `path` atomically.
pub fn write_csv(path: &Path, cases: &[CaseMetrics]) -> Result<()> {
    atomic::write_bytes(path, csv_string(cases).as_bytes())
}

/// Writes `{"cases": [...], "summary": {...}}` to `path` atomically, full precision.
pub fn write_json(path: &Path, cases: &[CaseMetrics]) -> Result<()> {
    atomic::write_json(
        path,
        &serde_json::json!({"cases": cases, "summary": summarise(cases)}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClassMetrics;

    fn cases() -> Vec<CaseMetrics> {
        let m = ClassMetrics {
            label: 3,
            name: "submandibular_left".into(),
            dice: 0.0,
            iou: 0.0,
            hd: None,
            hd95: None,
            assd: None,
            nsd_1mm: 0.0,
            nsd_2mm: 0.0,
            volume_pred_ml: 0.0,
            volume_ref_ml: 7.5,
            volume_diff_ml: -7.5,
            volume_diff_pct: Some(-100.0),
        };
        vec![CaseMetrics {
            case: "odd, \"name\"".into(),
            classes: vec![m],
        }]
    }

    #[test]
    fn csv_leaves_undefined_cells_empty_and_quotes_names() {
        let s = csv_string(&cases());
        let mut lines = s.lines();
        assert_eq!(lines.next(), Some(CSV_HEADER));
        let row = lines.next().unwrap();
        assert!(
            row.starts_with("\"odd, \"\"name\"\"\",3,submandibular_left,"),
            "{row}"
        );
        assert!(row.contains(",0.000000,0.000000,,,,0.000000,"), "{row}");
        assert!(row.ends_with(",-7.500000,-100.000000"), "{row}");
        assert_eq!(CSV_HEADER.split(',').count(), 14);
    }

    #[test]
    fn files_are_written_and_json_has_null_for_infinite_distances() {
        let dir = tempfile::tempdir().unwrap();
        let (c, j) = (dir.path().join("m.csv"), dir.path().join("m.json"));
        write_csv(&c, &cases()).unwrap();
        write_json(&j, &cases()).unwrap();
        assert_eq!(std::fs::read_to_string(&c).unwrap(), csv_string(&cases()));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        assert!(v["cases"][0]["classes"][0]["hd95"].is_null());
        assert_eq!(v["cases"][0]["classes"][0]["volume_ref_ml"], 7.5);
        assert_eq!(v["summary"]["cases"], 1);
        assert_eq!(v["summary"]["classes"][0]["hd95"]["undefined"], 1);
        assert!(v["summary"]["classes"][0]["hd95"]["mean"].is_null());
    }
}
