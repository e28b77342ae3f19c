//! Review pages in the browser: `OUT/index.html`, the cohort's index (one row per case
//! with its glands' volumes and SUVmax, linking each case's review image and page).

use crate::error::Result;
use std::path::Path;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One cell per gland of a case's `stats.json`: `volume mL / SUVmax`.
fn gland_cells(out: &Path, id: &str) -> (Vec<String>, Vec<String>) {
    let Ok(bytes) = std::fs::read(out.join(id).join("stats.json")) else {
        return (Vec::new(), Vec::new());
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return (Vec::new(), Vec::new());
    };
    let mut names = Vec::new();
    let mut cells = Vec::new();
    for g in v["glands"].as_array().into_iter().flatten() {
        names.push(g["name"].as_str().unwrap_or("?").to_string());
        let vol = g["volume_ml"].as_f64();
        let suv = g["suv_max"].as_f64();
        cells.push(match (vol, suv) {
            (Some(v), Some(s)) => format!("{v:.2} mL / {s:.1}"),
            (Some(v), None) => format!("{v:.2} mL"),
            _ => "-".into(),
        });
    }
    (names, cells)
}

/// Writes `OUT/index.html` for `cases` (atomically): a self-contained table, no scripts.
pub fn write_index(out: &Path, cases: &[String]) -> Result<()> {
    let mut head: Vec<String> = Vec::new();
    let mut rows = String::new();
    for id in cases {
        let (names, cells) = gland_cells(out, id);
        if head.is_empty() {
            head = names;
        }
        let e = esc(id);
        let page = if out.join(id).join("review.html").is_file() {
            format!("<a href=\"{e}/review.html\">page</a> ")
        } else {
            String::new()
        };
        let png = if out.join(id).join("review.png").is_file() {
            format!("<a href=\"{e}/review.png\">image</a>")
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr><td>{e}</td><td>{page}{png}</td>{}</tr>\n",
            cells
                .iter()
                .map(|c| format!("<td>{}</td>", esc(c)))
                .collect::<String>()
        ));
    }
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>glandseg cohort</title>\n\
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:2px 6px;text-align:right}}td:first-child{{text-align:left}}</style></head>\n\
<body><h1>glandseg: {} case(s)</h1>\n<p>Per gland: volume and SUVmax. Cohort tables: <a href=\"stats.csv\">stats.csv</a>, <a href=\"stats.json\">stats.json</a>.</p>\n\
<table><tr><th>case</th><th>review</th>{}</tr>\n{rows}</table></body></html>\n",
        cases.len(),
        head.iter()
            .map(|h| format!("<th>{}</th>", esc(h)))
            .collect::<String>()
    );
    glandseg_core::atomic::write_bytes(&out.join("index.html"), html.as_bytes())?;
    Ok(())
}
