//! The small dense linear algebra the fits need (normal equations, Gaussian elimination,
//! inverse of a few-by-few matrix). Written by hand: the matrices are at most 6 x 6 (a
//! tri-exponential fit, a GTM of six glands and the surround), and a linear-algebra crate
//! (nalgebra, ndarray-linalg with LAPACK) would be a large dependency for these.

/// JᵀJ and Jᵀr.
pub(crate) fn normal_equations(jac: &[Vec<f64>], r: &[f64]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let k = jac.first().map_or(0, |row| row.len());
    let mut a = vec![vec![0.0; k]; k];
    let mut g = vec![0.0; k];
    for (row, &ri) in jac.iter().zip(r) {
        for p in 0..k {
            g[p] += row[p] * ri;
            for q in 0..k {
                a[p][q] += row[p] * row[q];
            }
        }
    }
    (a, g)
}

/// Gaussian elimination with partial pivoting; None when (numerically) singular.
pub(crate) fn solve_linear(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    let scale = a
        .iter()
        .flat_map(|r| r.iter())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].is_nan() || a[p][c].abs() <= 1e-13 * scale {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for q in c..n {
                a[r][q] -= f * a[c][q];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|q| a[c][q] * x[q]).sum();
        x[c] = (b[c] - s) / a[c][c];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// The inverse of a (by columns of solves); None when singular.
pub(crate) fn invert(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut cols = Vec::with_capacity(n);
    for c in 0..n {
        let mut e = vec![0.0; n];
        e[c] = 1.0;
        cols.push(solve_linear(a.to_vec(), e)?);
    }
    Some(
        (0..n)
            .map(|r| (0..n).map(|c| cols[c][r]).collect())
            .collect(),
    )
}
