//! Time-activity curves: least-squares fits of exponential models to a gland's activity at
//! a few times after injection, model choice by AICc, and the time-integrated activity
//! (TIA, MBq·h) with its uncertainty from the fit's covariance.
//!
//! Models (t in h after injection, every rate constrained to at least the physical decay
//! constant λp — biological clearance cannot be negative):
//!
//! | model | A(t) | TIA |
//! |---|---|---|
//! | `mono_exp` | A0·e^(−λt) | A0/λ |
//! | `bi_exp_uptake` | A·(e^(−λ1 t) − e^(−λ2 t)), λ2 > λ1 | A·(1/λ1 − 1/λ2) |
//! | `tri_exp` | A1·e^(−λ1 t) + A2·e^(−λ2 t) − (A1+A2)·e^(−λ3 t), λ3 > λ2 > λ1 | A1/λ1 + A2/λ2 − (A1+A2)/λ3 |
//! | `trapezoid` | linear from A(0) = 0 through the points, then physical decay | Σ trapezoids + A(t_n)/λp |
//!
//! Residuals are weighted by 1/A_i (a proportional error model, as quantitative SPECT's
//! noise roughly is); the solver is a small Levenberg-Marquardt with a central-difference
//! Jacobian on log-transformed parameters (positivity and the rate ordering hold by
//! construction), started from a grid of rates. It is written here rather than taken from
//! `levenberg-marquardt` + `nalgebra`: the models have 2-5 parameters and the whole solver
//! is ~60 lines, against a large dependency tree.
//!
//! Model choice: AICc = n·ln(WRSS/n) + 2k + 2k(k+1)/(n−k−1) over the models it is defined
//! for (n ≥ k + 2); the smallest wins, but a simpler model within 2 of it is preferred.
//! With 2-3 points only the mono-exponential is fitted. The trapezoid is reported beside
//! the fit for comparison and used when no fit converged.
//!
//! Uncertainty: covariance C = s²·(JᵀWJ)⁻¹ with s² = WRSS/(n−k), propagated to the TIA
//! through its gradient (delta method). None when n = k or the system is singular.
//!
//! Single time point: Hänscheid et al. 2018 (TIA = A(t)·2t/ln2, exact for a mono-
//! exponential whose effective half-life equals t) and Madsen et al. 2018 (TIA =
//! A(t)·e^(λ_eff t)/λ_eff with a population effective half-life).

use crate::linalg::{invert, normal_equations, solve_linear};
use crate::{DoseError, Nuclide, Result};
use serde::Serialize;
use std::f64::consts::LN_2;

/// A TAC model or single-time-point method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// A0·e^(−λt).
    MonoExp,
    /// A·(e^(−λ1 t) − e^(−λ2 t)).
    BiExpUptake,
    /// Two clearance phases and an uptake phase.
    TriExp,
    /// Trapezoids from A(0) = 0, then physical decay after the last point.
    Trapezoid,
    /// Single time point, Hänscheid's formula.
    Hanscheid,
    /// Single time point, Madsen's formula with a population effective half-life.
    Madsen,
}

impl Model {
    /// The name used in outputs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Model::MonoExp => "mono_exp",
            Model::BiExpUptake => "bi_exp_uptake",
            Model::TriExp => "tri_exp",
            Model::Trapezoid => "trapezoid",
            Model::Hanscheid => "hanscheid",
            Model::Madsen => "madsen",
        }
    }

    fn num_params(&self) -> usize {
        match self {
            Model::MonoExp => 2,
            Model::BiExpUptake => 3,
            Model::TriExp => 5,
            _ => 0,
        }
    }
}

/// One model's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelFit {
    /// Which model.
    pub model: Model,
    /// Amplitudes (MBq) then rates (1/h), as in the module's table; for `trapezoid` the
    /// physical decay constant, for the single-time-point methods [t, A(t)].
    pub params: Vec<f64>,
    /// Time-integrated activity, MBq·h.
    pub tia_mbq_h: f64,
    /// Standard deviation of the TIA from the fit covariance, MBq·h.
    pub tia_sd_mbq_h: Option<f64>,
    /// Effective half-life of the slowest (terminal) phase, h.
    pub t_eff_h: Option<f64>,
    /// Weighted residual sum of squares (relative residuals).
    pub wrss: Option<f64>,
    /// Corrected Akaike information criterion; None where it is undefined.
    pub aicc: Option<f64>,
}

impl ModelFit {
    /// Relative TIA uncertainty in percent.
    pub fn uncertainty_pct(&self) -> Option<f64> {
        self.tia_sd_mbq_h
            .map(|sd| 100.0 * sd / self.tia_mbq_h.abs().max(1e-300))
    }

    /// The fitted activity (MBq) at `t` hours; None for the trapezoid and single-point
    /// methods' non-exponential parts (the trapezoid is piecewise linear: see
    /// [`TacFit::trapezoid_curve`]).
    pub fn activity(&self, t: f64) -> Option<f64> {
        let p = &self.params;
        match self.model {
            Model::MonoExp | Model::BiExpUptake | Model::TriExp => exp_model(self.model, p, t),
            Model::Hanscheid | Model::Madsen => {
                let lam = LN_2 / self.t_eff_h?;
                Some(p[1] * (-lam * (t - p[0])).exp())
            }
            Model::Trapezoid => None,
        }
    }
}

/// The exponential models' activity at `t` from natural parameters.
fn exp_model(model: Model, p: &[f64], t: f64) -> Option<f64> {
    match model {
        Model::MonoExp => Some(p[0] * (-p[1] * t).exp()),
        Model::BiExpUptake => Some(p[0] * ((-p[1] * t).exp() - (-p[2] * t).exp())),
        Model::TriExp => Some(
            p[0] * (-p[2] * t).exp() + p[1] * (-p[3] * t).exp() - (p[0] + p[1]) * (-p[4] * t).exp(),
        ),
        _ => None,
    }
}

/// The fits of one TAC and the chosen one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TacFit {
    /// The model chosen by AICc (or the trapezoid when no fit converged).
    pub chosen: ModelFit,
    /// Every exponential model that was fitted, with its AICc.
    pub candidates: Vec<ModelFit>,
    /// Trapezoid + physical-decay tail, for comparison.
    pub trapezoid: ModelFit,
}

/// Checks times (h) and activities: same length, finite, times ≥ 0, strictly increasing.
pub fn check_tac(times: &[f64], activities: &[f64]) -> Result<()> {
    if times.len() != activities.len() {
        return Err(DoseError::invalid(
            "activities",
            format!("{} activities for {} times", activities.len(), times.len()),
        ));
    }
    if times.is_empty() {
        return Err(DoseError::invalid("times", "no time points"));
    }
    for (i, &t) in times.iter().enumerate() {
        if !t.is_finite() || t < 0.0 {
            return Err(DoseError::invalid(
                "times",
                format!(
                    "time {t} h (point {}) is not a finite time ≥ 0 after injection",
                    i + 1
                ),
            ));
        }
        if i > 0 && t <= times[i - 1] {
            let what = if t == times[i - 1] {
                "duplicated"
            } else {
                "out of order"
            };
            return Err(DoseError::invalid(
                "times",
                format!(
                    "time {t} h is {what} (after {} h): times must be strictly increasing",
                    times[i - 1]
                ),
            ));
        }
    }
    for (i, &a) in activities.iter().enumerate() {
        if !a.is_finite() {
            return Err(DoseError::invalid(
                "activities",
                format!("activity at {} h is not finite ({a})", times[i]),
            ));
        }
    }
    Ok(())
}

/// Trapezoid from A(0) = 0 through the points, then physical decay from the last one.
pub fn trapezoid(times: &[f64], activities: &[f64], nuclide: &Nuclide) -> Result<ModelFit> {
    check_tac(times, activities)?;
    let lp = nuclide.lambda_per_h();
    let mut tia = 0.5 * times[0] * activities[0];
    for i in 1..times.len() {
        tia += 0.5 * (times[i] - times[i - 1]) * (activities[i] + activities[i - 1]);
    }
    tia += activities[activities.len() - 1] / lp;
    Ok(ModelFit {
        model: Model::Trapezoid,
        params: vec![lp],
        tia_mbq_h: tia,
        tia_sd_mbq_h: None,
        t_eff_h: Some(nuclide.half_life_h),
        wrss: None,
        aicc: None,
    })
}

/// Hänscheid's single-time-point TIA: A(t)·2t/ln2 (MBq·h), t in h.
pub fn hanscheid(t_h: f64, activity_mbq: f64) -> Result<ModelFit> {
    check_tac(&[t_h], &[activity_mbq])?;
    if t_h <= 0.0 {
        return Err(DoseError::invalid(
            "times",
            "Hänscheid's method needs t > 0",
        ));
    }
    Ok(ModelFit {
        model: Model::Hanscheid,
        params: vec![t_h, activity_mbq],
        tia_mbq_h: activity_mbq * 2.0 * t_h / LN_2,
        tia_sd_mbq_h: None,
        t_eff_h: Some(t_h),
        wrss: None,
        aicc: None,
    })
}

/// Madsen's single-time-point TIA with a population effective half-life T_eff (h):
/// A(t)·e^(λ_eff t)/λ_eff, λ_eff = ln2/T_eff.
pub fn madsen(t_h: f64, activity_mbq: f64, t_eff_h: f64) -> Result<ModelFit> {
    check_tac(&[t_h], &[activity_mbq])?;
    if !(t_eff_h.is_finite() && t_eff_h > 0.0) {
        return Err(DoseError::invalid(
            "t_eff_h",
            format!("population effective half-life must be > 0 h, got {t_eff_h}"),
        ));
    }
    let lam = LN_2 / t_eff_h;
    Ok(ModelFit {
        model: Model::Madsen,
        params: vec![t_h, activity_mbq],
        tia_mbq_h: activity_mbq * (lam * t_h).exp() / lam,
        tia_sd_mbq_h: None,
        t_eff_h: Some(t_eff_h),
        wrss: None,
        aicc: None,
    })
}

/// Log-parameter bounds: rates from λp + e^-30 to λp + e^5 per hour.
const LO: f64 = -30.0;
const HI: f64 = 12.0;

/// Natural parameters (amplitudes, rates) from the log-transformed ones.
fn natural(model: Model, th: &[f64], lp: f64) -> Vec<f64> {
    match model {
        Model::MonoExp => vec![th[0].exp(), lp + th[1].exp()],
        Model::BiExpUptake => {
            let l1 = lp + th[1].exp();
            vec![th[0].exp(), l1, l1 + th[2].exp()]
        }
        Model::TriExp => {
            let l1 = lp + th[2].exp();
            let l2 = l1 + th[3].exp();
            vec![th[0].exp(), th[1].exp(), l1, l2, l2 + th[4].exp()]
        }
        _ => unreachable!("not a fitted model"),
    }
}

fn model_tia(model: Model, p: &[f64]) -> f64 {
    match model {
        Model::MonoExp => p[0] / p[1],
        Model::BiExpUptake => p[0] * (1.0 / p[1] - 1.0 / p[2]),
        Model::TriExp => p[0] / p[2] + p[1] / p[3] - (p[0] + p[1]) / p[4],
        _ => unreachable!("not a fitted model"),
    }
}

struct Problem<'a> {
    model: Model,
    t: &'a [f64],
    y: &'a [f64],
    /// 1/σ_i.
    sw: Vec<f64>,
    lp: f64,
}

impl Problem<'_> {
    fn eval(&self, p: &[f64], t: f64) -> f64 {
        exp_model(self.model, p, t).unwrap_or(f64::NAN)
    }

    fn residuals(&self, th: &[f64]) -> Vec<f64> {
        let p = natural(self.model, th, self.lp);
        self.t
            .iter()
            .zip(self.y)
            .zip(&self.sw)
            .map(|((&t, &y), &w)| (self.eval(&p, t) - y) * w)
            .collect()
    }

    fn cost(&self, th: &[f64]) -> f64 {
        let c: f64 = self.residuals(th).iter().map(|r| r * r).sum();
        if c.is_finite() {
            c
        } else {
            f64::INFINITY
        }
    }

    /// Central-difference Jacobian of the weighted residuals (n × k, row-major).
    fn jacobian(&self, th: &[f64]) -> Vec<Vec<f64>> {
        let k = th.len();
        let mut cols = Vec::with_capacity(k);
        for j in 0..k {
            let h = 1e-6 * th[j].abs().max(1.0);
            let (mut a, mut b) = (th.to_vec(), th.to_vec());
            a[j] += h;
            b[j] -= h;
            let (ra, rb) = (self.residuals(&a), self.residuals(&b));
            cols.push(
                ra.iter()
                    .zip(&rb)
                    .map(|(x, y)| (x - y) / (2.0 * h))
                    .collect::<Vec<_>>(),
            );
        }
        (0..self.t.len())
            .map(|i| (0..k).map(|j| cols[j][i]).collect())
            .collect()
    }

    /// Levenberg-Marquardt from `th0`; the minimiser and its cost.
    fn solve(&self, th0: Vec<f64>) -> (Vec<f64>, f64) {
        let k = th0.len();
        let mut th = th0;
        let mut cost = self.cost(&th);
        let mut mu = 1e-3;
        for _ in 0..300 {
            if !cost.is_finite() {
                break;
            }
            let r = self.residuals(&th);
            let jac = self.jacobian(&th);
            let (a, g) = normal_equations(&jac, &r);
            let mut improved = false;
            while mu < 1e12 {
                let mut m = a.clone();
                for d in 0..k {
                    m[d][d] += mu * a[d][d].max(1e-12);
                }
                let step = solve_linear(m, g.iter().map(|x| -x).collect());
                let Some(step) = step else {
                    mu *= 10.0;
                    continue;
                };
                let cand: Vec<f64> = th
                    .iter()
                    .zip(&step)
                    .map(|(x, s)| (x + s).clamp(LO, HI))
                    .collect();
                let c = self.cost(&cand);
                if c < cost {
                    let rel = (cost - c) / cost.max(1e-300);
                    let moved = th
                        .iter()
                        .zip(&cand)
                        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                    th = cand;
                    cost = c;
                    mu = (mu / 3.0).max(1e-12);
                    improved = rel > 1e-12 && moved > 1e-10;
                    break;
                }
                mu *= 4.0;
            }
            if !improved {
                break;
            }
        }
        (th, cost)
    }
}

/// Best amplitude for fixed shapes g_i (weighted linear least squares), at least tiny.
fn amplitude(prob: &Problem, shape: impl Fn(f64) -> f64) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for ((&t, &y), &w) in prob.t.iter().zip(prob.y).zip(&prob.sw) {
        let g = shape(t) * w;
        num += g * y * w;
        den += g * g;
    }
    (num / den.max(1e-300)).max(1e-12)
}

/// Fits one model from a grid of starting rates; None when nothing finite came out.
fn fit_model(model: Model, prob: &Problem) -> Option<ModelFit> {
    let lp = prob.lp;
    let bio = [1e-4, 1e-3, 1e-2, 0.1];
    let gaps = [0.03, 0.3, 3.0];
    let mut starts: Vec<Vec<f64>> = Vec::new();
    match model {
        Model::MonoExp => {
            for &b in &bio {
                let l = lp + b;
                let a = amplitude(prob, |t| (-l * t).exp());
                starts.push(vec![a.ln(), b.ln()]);
            }
        }
        Model::BiExpUptake => {
            for &b in &bio {
                for &d in &gaps {
                    let l1 = lp + b;
                    let l2 = l1 + d;
                    let a = amplitude(prob, |t| (-l1 * t).exp() - (-l2 * t).exp());
                    starts.push(vec![a.ln(), b.ln(), d.ln()]);
                }
            }
        }
        Model::TriExp => {
            for &b in &bio {
                for &d in &[0.01, 0.05, 0.2] {
                    for &e in &[0.1, 1.0] {
                        let (l1, l2) = (lp + b, lp + b + d);
                        let l3 = l2 + e;
                        let a = amplitude(prob, |t| {
                            (-l1 * t).exp() + (-l2 * t).exp() - 2.0 * (-l3 * t).exp()
                        });
                        starts.push(vec![a.ln(), a.ln(), b.ln(), d.ln(), e.ln()]);
                    }
                }
            }
        }
        _ => return None,
    }
    let mut best: Option<(Vec<f64>, f64)> = None;
    for s in starts {
        let s: Vec<f64> = s.into_iter().map(|x| x.clamp(LO, HI)).collect();
        let (th, c) = prob.solve(s);
        if c.is_finite() && best.as_ref().is_none_or(|b| c < b.1) {
            best = Some((th, c));
        }
    }
    let (th, wrss) = best?;
    let p = natural(model, &th, lp);
    let tia = model_tia(model, &p);
    if !(tia.is_finite() && tia > 0.0) {
        return None;
    }
    let n = prob.t.len();
    let k = model.num_params();
    let sd = (n > k)
        .then(|| {
            let r = prob.residuals(&th);
            let jac = prob.jacobian(&th);
            let (a, _) = normal_equations(&jac, &r);
            let cov = invert(&a)?;
            let s2 = wrss / (n - k) as f64;
            // Gradient of the TIA in the log parameters.
            let grad: Vec<f64> = (0..k)
                .map(|j| {
                    let h = 1e-6 * th[j].abs().max(1.0);
                    let (mut a, mut b) = (th.clone(), th.clone());
                    a[j] += h;
                    b[j] -= h;
                    (model_tia(model, &natural(model, &a, lp))
                        - model_tia(model, &natural(model, &b, lp)))
                        / (2.0 * h)
                })
                .collect();
            let mut var = 0.0;
            for p in 0..k {
                for q in 0..k {
                    var += grad[p] * cov[p][q] * grad[q];
                }
            }
            let var = var * s2;
            (var.is_finite() && var >= 0.0).then(|| var.sqrt())
        })
        .flatten();
    let aicc = (n >= k + 2).then(|| {
        let w = wrss.max(1e-20 * n as f64);
        n as f64 * (w / n as f64).ln()
            + 2.0 * k as f64
            + 2.0 * (k * (k + 1)) as f64 / (n - k - 1) as f64
    });
    Some(ModelFit {
        model,
        t_eff_h: Some(LN_2 / p[if model == Model::TriExp { 2 } else { 1 }]),
        params: p,
        tia_mbq_h: tia,
        tia_sd_mbq_h: sd,
        wrss: Some(wrss),
        aicc,
    })
}

/// Fits the TAC of one gland (times in h after injection, activities in MBq) and chooses
/// a model by AICc. At least two time points: a single one needs [`hanscheid`] or
/// [`madsen`].
pub fn fit_tac(times: &[f64], activities: &[f64], nuclide: &Nuclide) -> Result<TacFit> {
    check_tac(times, activities)?;
    if times.len() < 2 {
        return Err(DoseError::invalid(
            "times",
            "a multi-point fit needs at least 2 time points, got 1 (use a single-time-point \
             method: Hänscheid, or Madsen with a population effective half-life)",
        ));
    }
    let trap = trapezoid(times, activities, nuclide)?;
    let ymax = activities.iter().cloned().fold(0.0f64, f64::max);
    if ymax <= 0.0 {
        return Err(DoseError::invalid(
            "activities",
            "no positive activity at any time point",
        ));
    }
    let prob = |model| Problem {
        model,
        t: times,
        y: activities,
        sw: activities
            .iter()
            .map(|&a| 1.0 / a.max(0.01 * ymax))
            .collect(),
        lp: nuclide.lambda_per_h(),
    };
    let n = times.len();
    let mut candidates = Vec::new();
    for model in [Model::MonoExp, Model::BiExpUptake, Model::TriExp] {
        let k = model.num_params();
        // Mono is always fitted (with 2-3 points it is the only model); the others only
        // where AICc is defined.
        if (model == Model::MonoExp && n >= 2) || n >= k + 2 {
            if let Some(f) = fit_model(model, &prob(model)) {
                candidates.push(f);
            }
        }
    }
    let chosen = choose(&candidates).unwrap_or_else(|| trap.clone());
    Ok(TacFit {
        chosen,
        candidates,
        trapezoid: trap,
    })
}

/// Smallest AICc; a model with fewer parameters within 2 of it wins. Without any AICc
/// (2-3 points), the first (mono-exponential) fit.
fn choose(c: &[ModelFit]) -> Option<ModelFit> {
    let with: Vec<&ModelFit> = c.iter().filter(|f| f.aicc.is_some()).collect();
    if with.is_empty() {
        return c.first().cloned();
    }
    let min = with
        .iter()
        .map(|f| f.aicc.unwrap_or(f64::INFINITY))
        .fold(f64::INFINITY, f64::min);
    with.into_iter()
        .filter(|f| f.aicc.unwrap_or(f64::INFINITY) <= min + 2.0)
        .min_by_key(|f| f.model.num_params())
        .cloned()
}

impl TacFit {
    /// The trapezoid curve's points (t, A) from t = 0, for plotting.
    pub fn trapezoid_curve(times: &[f64], activities: &[f64]) -> Vec<(f64, f64)> {
        std::iter::once((0.0, 0.0))
            .chain(times.iter().cloned().zip(activities.iter().cloned()))
            .collect()
    }
}
