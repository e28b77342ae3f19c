//! nibabel reads what glandseg writes the way glandseg describes it: the files and a JSON
//! report go to a temp folder and `scripts/check_nifti_roundtrip.py` compares them.
//!
//! Needs `python3` with nibabel. Without it the test prints a note and passes, unless
//! `GLANDSEG_REQUIRE_NIBABEL=1` is set (CI installs nibabel and should set it), where a
//! missing nibabel is a failure.

use glandseg_core::{Geometry, Volume};
use glandseg_nifti::{write_ct_i16, write_volume};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_nifti_roundtrip.py")
}

/// True when nibabel can be imported; otherwise prints why the test is skipped, or panics
/// when `GLANDSEG_REQUIRE_NIBABEL` asks for the check.
fn nibabel_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import nibabel"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let required = std::env::var("GLANDSEG_REQUIRE_NIBABEL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "GLANDSEG_REQUIRE_NIBABEL=1 but `python3 -c 'import nibabel'` fails"
        );
        eprintln!("note: python3 with nibabel not found; nibabel cross-check skipped");
    }
    ok
}

fn matmul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            m[r][c] = (0..3).map(|t| a[r][t] * b[t][c]).sum();
        }
    }
    m
}

fn rot_x(deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = deg.to_radians().sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

fn rot_z(deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// Grids that exercise the quaternion: oblique about two axes, left-handed (qfac = -1),
/// RAS-stored (180 degrees about z, quaternion `a` = 0), left-handed and oblique, identity.
fn geometries() -> Vec<(&'static str, Geometry)> {
    let mirror_i = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    vec![
        (
            "oblique",
            Geometry::new([7, 5, 4], [0.8, 1.1, 2.5], [-30.0, 12.5, 100.0])
                .with_direction(matmul(rot_z(23.0), rot_x(-11.0))),
        ),
        (
            "las",
            Geometry::new([6, 5, 3], [1.0, 2.0, 3.0], [5.0, -7.0, 1.0]).with_direction(mirror_i),
        ),
        (
            "ras",
            Geometry::new([4, 6, 5], [1.5, 1.5, 2.0], [10.0, 20.0, -5.0])
                .with_direction(rot_z(180.0)),
        ),
        (
            "las_oblique",
            Geometry::new([5, 4, 6], [0.7, 0.9, 1.3], [-1.0, 2.0, 3.0])
                .with_direction(matmul(rot_x(30.0), mirror_i)),
        ),
        ("lps", Geometry::new([5, 6, 7], [0.9, 0.9, 3.0], [0.0; 3])),
    ]
}

/// The report entry the script checks: glandseg's view of the file it wrote.
fn entry(file: &str, g: &Geometry, dtype: &str, values: &[f64]) -> Value {
    let [ni, nj, _] = g.shape;
    let sum: f64 = values.iter().sum();
    // Corners and an interior voxel: a transposed or mirrored voxel order moves them.
    let idx = [
        [0, 0, 0],
        [g.shape[0] - 1, 0, 0],
        [0, g.shape[1] - 1, 0],
        [0, 0, g.shape[2] - 1],
        [1, 2, 1],
    ];
    let samples: Vec<Value> = idx
        .iter()
        .map(|&[i, j, k]| json!({"index": [i, j, k], "value": values[i + ni * (j + nj * k)]}))
        .collect();
    json!({
        "file": file,
        "shape": g.shape,
        "affine_lps": g.affine(),
        "dtype": dtype,
        "sum": sum,
        "samples": samples,
    })
}

fn run_script(dir: &Path, report: &Value) -> (bool, String) {
    let rp = dir.join("report.json");
    std::fs::write(&rp, serde_json::to_vec_pretty(report).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg(script())
        .arg(dir)
        .arg(&rp)
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn nibabel_sees_the_grid_and_values_glandseg_wrote() {
    if !nibabel_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, g) in geometries() {
        let nv = g.num_voxels();
        let img = Volume::from_vec(
            g.clone(),
            (0..nv).map(|x| x as f32 * 0.25 - 7.5).collect::<Vec<f32>>(),
        )
        .unwrap();
        for ext in ["nii", "nii.gz"] {
            let f = format!("{name}_f32.{ext}");
            write_volume(&dir.path().join(&f), &img).unwrap();
            let vals: Vec<f64> = img.as_slice().iter().map(|&x| x as f64).collect();
            files.push(entry(&f, &g, "float32", &vals));
        }
        let lab = img.map(|x| (x.abs() as u32 % 7) as u8);
        let f = format!("{name}_u8.nii.gz");
        write_volume(&dir.path().join(&f), &lab).unwrap();
        let vals: Vec<f64> = lab.as_slice().iter().map(|&x| x as f64).collect();
        files.push(entry(&f, &g, "uint8", &vals));
        let ct = img.map(|x| x * 97.3);
        let f = format!("{name}_i16.nii.gz");
        write_ct_i16(&dir.path().join(&f), &ct).unwrap();
        let vals: Vec<f64> = ct
            .as_slice()
            .iter()
            .map(|&x| x.round().clamp(-32768.0, 32767.0) as f64)
            .collect();
        files.push(entry(&f, &g, "int16", &vals));
    }
    let report = json!({ "files": files });
    let (ok, text) = run_script(dir.path(), &report);
    assert!(ok, "nibabel disagrees with glandseg:\n{text}");

    // The checker itself can fail: an affine left in LPS at the file (x and y not
    // negated) and a mirrored sample must both be caught.
    let mut wrong = report.clone();
    let a = &mut wrong["files"][0]["affine_lps"];
    for r in 0..2 {
        for c in 0..4 {
            a[r][c] = json!(-a[r][c].as_f64().unwrap());
        }
    }
    let (ok, text) = run_script(dir.path(), &wrong);
    assert!(
        !ok && text.contains("affine"),
        "checker missed an RAS/LPS mix-up:\n{text}"
    );
    let mut wrong = report;
    wrong["files"][1]["samples"][1]["index"] = json!([0, 0, 0]);
    let (ok, text) = run_script(dir.path(), &wrong);
    assert!(
        !ok && text.contains("value at"),
        "checker missed a wrong voxel:\n{text}"
    );
}
