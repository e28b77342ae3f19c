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

// ---------------------------------------------------------------------------------------
// The case page: CT, PET and the gland outlines in niivue's three linked planes.

use glandseg_core::geometry::GRID_TOLERANCE;
use glandseg_core::{LabelMap, Volume};
use glandseg_ops::resample::{resample, Interpolation};
use std::path::PathBuf;
use std::sync::OnceLock;

/// niivue's file in the npm package (`@niivue/niivue`, `dist/niivue.umd.js`), as
/// `scripts/fetch_niivue.sh` leaves it in the source tree.
pub const NIIVUE_FILE: &str = "niivue.umd.js";

/// CT in the page: at most this fine (mm); PET at most [`PET_MM`]; labels on their own grid.
const CT_MM: f64 = 2.0;
const PET_MM: f64 = 3.0;
/// Margin around the glands kept in the page (mm).
const MARGIN_MM: f64 = 25.0;

/// Where niivue is looked for: `$GLANDSEG_NIIVUE`, then `third_party/niivue/` of the
/// source tree glandseg was built from, then beside the executable.
pub fn niivue_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("GLANDSEG_NIIVUE") {
        v.push(PathBuf::from(p));
    }
    v.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../third_party/niivue")
            .join(NIIVUE_FILE),
    );
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        v.push(dir.join(NIIVUE_FILE));
    }
    v
}

/// niivue gzip-compressed and base64-encoded for the page (read once per process), or
/// why there is none.
fn niivue_payload() -> std::result::Result<&'static str, String> {
    static P: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    P.get_or_init(|| {
        let cands = niivue_candidates();
        let Some(path) = cands.iter().find(|p| p.is_file()) else {
            return Err(format!(
                "niivue not found (run scripts/fetch_niivue.sh, or set GLANDSEG_NIIVUE to {NIIVUE_FILE}); looked at {}",
                cands.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        let js = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !js.starts_with(b"(function(") || !js.windows(6).any(|w| w == b"niivue") {
            return Err(format!("{}: not niivue's UMD bundle", path.display()));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &js).map_err(|e| e.to_string())?;
        Ok(base64(&gz.finish().map_err(|e| e.to_string())?))
    })
    .as_ref()
    .map(String::as_str)
    .map_err(Clone::clone)
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The page's crop: the glands' box plus a margin (the whole region when none was found).
fn gland_crop(labels: &Volume<u8>) -> ([usize; 3], [usize; 3]) {
    let g = labels.geometry();
    match labels.bbox_nonzero() {
        Some((lo, hi)) => {
            let mut a = [0; 3];
            let mut b = [0; 3];
            for ax in 0..3 {
                let m = (MARGIN_MM / g.spacing[ax]).ceil() as usize;
                a[ax] = lo[ax].saturating_sub(m);
                b[ax] = (hi[ax] + m).min(g.shape[ax]);
            }
            (a, b)
        }
        None => ([0; 3], g.shape),
    }
}

fn coarser(v: &Volume<f32>, mm: f64, interp: Interpolation) -> Volume<f32> {
    let g = v.geometry();
    if g.spacing.iter().all(|&s| s >= mm * 0.99) {
        return v.clone();
    }
    let target = g.with_spacing(g.spacing.map(|s| s.max(mm)));
    resample(v, &target, interp, -1024.0)
}

fn percentile(values: &mut [f32], q: f64) -> f32 {
    if values.is_empty() {
        return 1.0;
    }
    let k = ((values.len() - 1) as f64 * q).round() as usize;
    *values.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1
}

/// Writes `CASE/review.html`: the CT (HU, at most 2 mm), the PET (SUV, at most 3 mm) and
/// the labels (their own grid) cropped to the glands plus 25 mm, embedded as base64
/// NIfTI; niivue embedded (gzip + base64, unpacked by the browser's DecompressionStream);
/// the uptake table beside the views, a click on a gland moving the crosshair to its
/// centroid. `ct`, `pet` and `labels` share a grid (the segmented region). Returns
/// `Ok(false)` without writing when niivue is not available (`review.png` stays the
/// review; the reason is printed once per process).
pub fn write_case_page(
    case_dir: &Path,
    id: &str,
    ct: &Volume<f32>,
    pet: Option<&Volume<f32>>,
    labels: &Volume<u8>,
    map: &LabelMap,
    stats: &[glandseg_stats::GlandStats],
) -> Result<bool> {
    let nv = match niivue_payload() {
        Ok(p) => p,
        Err(why) => {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| eprintln!("note: no review.html pages (review.png only): {why}"));
            return Ok(false);
        }
    };
    let (lo, hi) = gland_crop(labels);
    let labels = labels.crop(lo, hi)?;
    let same = |v: &Volume<f32>| v.geometry().same_grid(ct.geometry(), GRID_TOLERANCE);
    let ct_c = coarser(&ct.crop(lo, hi)?, CT_MM, Interpolation::Linear);
    let ct_i16 = ct_c.map(|&x| x.round().clamp(-1024.0, 3071.0) as i16);
    let pet_c = match pet {
        Some(p) if same(p) => Some(coarser(&p.crop(lo, hi)?, PET_MM, Interpolation::Linear)),
        Some(p) => {
            let g = labels.geometry();
            let target = g.with_spacing(g.spacing.map(|s| s.max(PET_MM)));
            Some(resample(p, &target, Interpolation::Linear, 0.0))
        }
        None => None,
    };
    let enc = |r: std::io::Result<Vec<u8>>| {
        r.map(|b| base64(&b))
            .map_err(|e| glandseg_core::Error::io(case_dir.join("review.html"), e))
    };
    let ct_b64 = enc(glandseg_nifti::encode_volume_gz(&ct_i16, 0))?;
    let lab_b64 = enc(glandseg_nifti::encode_volume_gz(&labels, 1002))?;
    let (pet_b64, pet_max) = match &pet_c {
        Some(p) => {
            // SUV to 0.01: the page's PET compresses several times better, and nothing a
            // reader sees changes.
            let q = p.map(|&x| (x * 100.0).round() / 100.0);
            let mut vals: Vec<f32> = q
                .as_slice()
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            let top = percentile(&mut vals, 0.999).max(1.0);
            (enc(glandseg_nifti::encode_volume_gz(&q, 0))?, top)
        }
        None => (String::new(), 1.0),
    };
    // niivue's label colour table: index = label value, background transparent.
    let max_label = map.entries().iter().map(|(v, _)| *v).max().unwrap_or(0) as usize;
    let mut lut = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for v in 0..=max_label {
        let rgb = glandseg_dicom::seg::label_colour(v as u8);
        lut.0.push(rgb[0].to_string());
        lut.1.push(rgb[1].to_string());
        lut.2.push(rgb[2].to_string());
        lut.3.push(if v == 0 { "0" } else { "255" }.to_string());
        lut.4.push(v.to_string());
        lut.5
            .push(serde_json::to_string(map.name(v as u8).unwrap_or("")).unwrap_or_default());
    }
    let lut_js = format!(
        "{{R:[{}],G:[{}],B:[{}],A:[{}],I:[{}],labels:[{}]}}",
        lut.0.join(","),
        lut.1.join(","),
        lut.2.join(","),
        lut.3.join(","),
        lut.4.join(","),
        lut.5.join(",")
    );
    let f = |x: Option<f64>, d: usize| x.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    let mut rows = String::new();
    for s in stats {
        let rgb = glandseg_dicom::seg::label_colour(s.label);
        // niivue works in RAS: LPS x and y negated.
        let at = s
            .centroid_lps_mm
            .map(|c| format!(" data-ras=\"{:.1},{:.1},{:.1}\"", -c[0], -c[1], c[2]))
            .unwrap_or_default();
        rows.push_str(&format!(
            "<tr{at}><td class=\"n\"><span class=\"sw\" style=\"background:rgb({},{},{})\"></span>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            rgb[0], rgb[1], rgb[2],
            esc(&s.name),
            f(Some(s.volume_ml), 2),
            f(s.suv_mean, 2),
            f(s.suv_max, 2),
            f(s.suv_peak, 2),
            f(s.ct_hu_mean, 0),
        ));
    }
    let start = stats
        .iter()
        .find_map(|s| s.centroid_lps_mm)
        .map(|c| format!("[{:.1},{:.1},{:.1}]", -c[0], -c[1], c[2]))
        .unwrap_or_else(|| "null".into());
    let html = PAGE
        .replace("{{ID}}", &esc(id))
        .replace("{{ROWS}}", &rows)
        .replace("{{PET_MAX}}", &format!("{pet_max:.2}"))
        .replace("{{START}}", &start)
        .replace("{{LUT}}", &lut_js)
        .replace("{{CT}}", &ct_b64)
        .replace("{{PET}}", &pet_b64)
        .replace("{{LABELS}}", &lab_b64)
        .replace("{{NIIVUE}}", nv);
    glandseg_core::atomic::write_bytes(&case_dir.join("review.html"), html.as_bytes())?;
    Ok(true)
}

/// The page; `{{...}}` are filled in by [`write_case_page`] (the volumes and niivue last,
/// so that no placeholder can appear inside them).
const PAGE: &str = include_str!("review_page.html");
