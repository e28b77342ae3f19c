//! The cohort tables of a prediction folder: every case's `CASE/stats.csv` and
//! `CASE/stats.json` merged into `OUT/stats.csv` and `OUT/stats.json`, cases in sorted
//! order. A single `glandseg predict` run writes them at its end; after a cluster run,
//! whose array tasks each predicted one shard into the same folder, `glandseg gather`
//! writes them once every task is done — the same files either way.

use crate::error::{PredictError, Result};
use glandseg_plan::naming::strip_nifti;
use std::path::Path;

/// What [`gather`] found and wrote.
#[derive(Clone, Debug, Default)]
pub struct Gathered {
    /// Cases merged, sorted.
    pub cases: Vec<String>,
    /// Rows of the cohort `stats.csv` (one per gland and case).
    pub rows: usize,
}

/// The predicted cases in `out`: a `CASE.nii.gz` label map with its `CASE/` folder.
pub fn predicted_cases(out: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(out)
        .map_err(|e| PredictError::Input(format!("reading folder {}: {e}", out.display())))?;
    let mut ids = Vec::new();
    for e in rd {
        let e =
            e.map_err(|e| PredictError::Input(format!("reading folder {}: {e}", out.display())))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(id) = strip_nifti(&name) {
            if out.join(id).is_dir() {
                ids.push(id.to_string());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

/// Merges the per-case tables in `out` into the cohort's `stats.csv` / `stats.json`
/// (atomically). With `expect`, every one of those case ids must have been predicted:
/// the missing ones are an error listing them (an array task that failed). A case folder
/// without its tables, or a table whose header differs from the others, is an error
/// naming the file.
pub fn gather(out: &Path, expect: Option<&[String]>) -> Result<Gathered> {
    let cases = predicted_cases(out)?;
    if let Some(want) = expect {
        let missing: Vec<&String> = want.iter().filter(|w| !cases.contains(w)).collect();
        if !missing.is_empty() {
            return Err(PredictError::Input(format!(
                "{}: {} of {} case(s) not predicted: {}",
                out.display(),
                missing.len(),
                want.len(),
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut header: Option<(String, std::path::PathBuf)> = None;
    let mut csv = String::new();
    let mut rows = 0;
    let mut json = Vec::new();
    for id in &cases {
        let p = out.join(id).join("stats.csv");
        let text = std::fs::read_to_string(&p).map_err(|e| {
            PredictError::Input(format!(
                "{}: {e} (was the prediction of {id} interrupted?)",
                p.display()
            ))
        })?;
        let mut lines = text.lines();
        let head = lines
            .next()
            .ok_or_else(|| PredictError::Input(format!("{}: empty table", p.display())))?;
        match &header {
            None => {
                csv.push_str(head);
                csv.push('\n');
                header = Some((head.to_string(), p.clone()));
            }
            Some((h, first)) if h != head => {
                return Err(PredictError::Input(format!(
                    "{}: header differs from {}'s ({head:?} vs {h:?})",
                    p.display(),
                    first.display()
                )));
            }
            Some(_) => {}
        }
        for l in lines.filter(|l| !l.is_empty()) {
            csv.push_str(l);
            csv.push('\n');
            rows += 1;
        }
        let pj = out.join(id).join("stats.json");
        let bytes = std::fs::read(&pj).map_err(|e| glandseg_core::Error::io(&pj, e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| PredictError::Input(format!("{}: {e}", pj.display())))?;
        json.push(v);
    }
    if header.is_some() {
        glandseg_core::atomic::write_bytes(&out.join("stats.csv"), csv.as_bytes())?;
    }
    glandseg_core::atomic::write_json(
        &out.join("stats.json"),
        &serde_json::json!({ "cases": json }),
    )?;
    crate::review_html::write_index(out, &cases)?;
    Ok(Gathered { cases, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(out: &Path, id: &str, rows: &[&str]) {
        std::fs::write(out.join(format!("{id}.nii.gz")), b"x").unwrap();
        std::fs::create_dir_all(out.join(id)).unwrap();
        let mut t = String::from("case,label,name\n");
        for r in rows {
            t.push_str(&format!("{id},{r}\n"));
        }
        std::fs::write(out.join(id).join("stats.csv"), t).unwrap();
        std::fs::write(
            out.join(id).join("stats.json"),
            format!("{{\"case\":\"{id}\",\"glands\":[]}}"),
        )
        .unwrap();
    }

    #[test]
    fn merges_in_sorted_order_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        case(out, "B", &["1,parotid_left", "2,parotid_right"]);
        case(out, "A", &["1,parotid_left"]);
        std::fs::create_dir_all(out.join("evaluation")).unwrap();
        let g = gather(out, None).unwrap();
        assert_eq!(g.cases, ["A", "B"]);
        assert_eq!(g.rows, 3);
        let csv = std::fs::read_to_string(out.join("stats.csv")).unwrap();
        assert_eq!(
            csv,
            "case,label,name\nA,1,parotid_left\nB,1,parotid_left\nB,2,parotid_right\n"
        );
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
        assert_eq!(j["cases"][1]["case"], "B");
        let e = gather(out, Some(&["A".into(), "C".into()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 of 2") && e.contains('C'), "{e}");
        std::fs::write(out.join("B").join("stats.csv"), "case,other\n").unwrap();
        let e = gather(out, None).unwrap_err().to_string();
        assert!(e.contains("B/stats.csv") && e.contains("header"), "{e}");
        std::fs::remove_file(out.join("B").join("stats.csv")).unwrap();
        let e = gather(out, None).unwrap_err().to_string();
        assert!(
            e.contains("B/stats.csv") && e.contains("interrupted"),
            "{e}"
        );
    }
}
