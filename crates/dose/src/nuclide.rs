//! Radionuclide decay data for dosimetry, from ICRP Publication 107 (2008): physical
//! half-life and the mean energy emitted per decay as electrons (beta, conversion and Auger
//! electrons: deposited locally at organ scale) and as photons (gamma and X-rays).
//!
//! Lu-177 is the nuclide the project is validated for. I-131 and Y-90 are in the table
//! with their ICRP-107 / MIRD values for completeness (check them against ICRP-107 before
//! clinical use). Ac-225 is out of scope: its alpha-emitting daughters (Fr-221, At-217,
//! Bi-213, Po-213) need a decay-chain model with daughter redistribution, which this
//! table (one nuclide, one half-life) cannot express.
//!
//! The two transport parameters (`electron_range_mm`, `photon_mu_en_per_mm`) are not
//! ICRP-107 data: they are the simple approximations the sphere model and the voxel
//! kernel use (see [`crate::organ`] and [`crate::voxel`]).

use crate::{DoseError, Result};
use serde::Serialize;

/// Energy of one MeV in joules.
pub const MEV_J: f64 = 1.602_176_634e-13;
/// Decays in one MBq·h: 1e6 Bq × 3600 s.
pub const DECAYS_PER_MBQ_H: f64 = 3.6e9;

/// One radionuclide's decay data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Nuclide {
    /// Canonical name, e.g. `Lu-177`.
    pub name: &'static str,
    /// Physical half-life in hours.
    pub half_life_h: f64,
    /// Mean electron energy per decay (MeV): betas, conversion and Auger electrons.
    pub electron_mev: f64,
    /// Mean photon energy per decay (MeV): gammas and X-rays.
    pub photon_mev: f64,
    /// Effective straight-line electron range in water (mm): the CSDA range at the mean
    /// beta energy (ESTAR). Used only by the sphere model's electron absorbed fraction.
    pub electron_range_mm: f64,
    /// Effective linear energy-absorption coefficient of the photon spectrum in water
    /// (1/mm): μ_en/ρ of water weighted by the energy emitted at each line.
    pub photon_mu_en_per_mm: f64,
    /// Where the numbers come from.
    pub source: &'static str,
}

const TABLE: &[Nuclide] = &[
    Nuclide {
        name: "Lu-177",
        half_life_h: 6.647 * 24.0,
        electron_mev: 0.147924,
        photon_mev: 0.035098,
        // Mean beta energy 133.6 keV: CSDA range in water 0.023 g/cm².
        electron_range_mm: 0.23,
        // 208 keV (10.4 %), 113 keV (6.2 %), Hf K X-rays ~55-63 keV: μ_en/ρ 0.0297,
        // 0.0256, 0.032 cm²/g, energy-weighted 0.0293 cm²/g.
        photon_mu_en_per_mm: 0.00293,
        source: "ICRP-107",
    },
    Nuclide {
        name: "I-131",
        half_life_h: 8.0252 * 24.0,
        electron_mev: 0.1916,
        photon_mev: 0.3816,
        electron_range_mm: 0.39,
        // 364 keV dominates: μ_en/ρ ≈ 0.0325 cm²/g.
        photon_mu_en_per_mm: 0.00325,
        source: "ICRP-107 (check before clinical use)",
    },
    Nuclide {
        name: "Y-90",
        half_life_h: 2.6684 * 24.0,
        electron_mev: 0.9327,
        // Internal pair production / 1.76 MeV gamma only: ~1e-4 MeV per decay.
        photon_mev: 0.0,
        electron_range_mm: 4.0,
        photon_mu_en_per_mm: 0.003,
        source: "ICRP-107 (check before clinical use)",
    },
];

/// The names [`Nuclide::lookup`] knows, comma-separated.
pub fn known_names() -> String {
    TABLE.iter().map(|n| n.name).collect::<Vec<_>>().join(", ")
}

/// `lu177`, `Lu-177`, `177Lu`, `lu_177` → `lu177`.
fn normalise(s: &str) -> String {
    let s: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let letters: String = s.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    format!("{letters}{digits}")
}

impl Nuclide {
    /// Looks a nuclide up by name (`Lu-177`, `lu177`, `177Lu` all work). Ac-225 and any
    /// other nuclide not in the table is an error that lists the known ones.
    pub fn lookup(name: &str) -> Result<Nuclide> {
        let key = normalise(name);
        if key == "ac225" {
            return Err(DoseError::invalid(
                "nuclide",
                "Ac-225 is out of scope: its alpha-emitting daughters need a decay-chain model",
            ));
        }
        TABLE
            .iter()
            .find(|n| normalise(n.name) == key)
            .cloned()
            .ok_or_else(|| DoseError::UnknownNuclide(name.to_string()))
    }

    /// Physical decay constant (1/h).
    pub fn lambda_per_h(&self) -> f64 {
        std::f64::consts::LN_2 / self.half_life_h
    }

    /// Absorbed dose (Gy) per MBq·h in 1 g when all the electron energy stays there:
    /// E_e (MeV) × 1.602e-13 J/MeV × 3.6e9 decays/(MBq·h) / 1e-3 kg/g. Lu-177: 0.08532.
    pub fn electron_gy_g_per_mbq_h(&self) -> f64 {
        energy_gy_g_per_mbq_h(self.electron_mev)
    }

    /// As [`Self::electron_gy_g_per_mbq_h`] for the photon energy.
    pub fn photon_gy_g_per_mbq_h(&self) -> f64 {
        energy_gy_g_per_mbq_h(self.photon_mev)
    }
}

/// Gy·g per MBq·h for `mev` MeV deposited per decay.
pub fn energy_gy_g_per_mbq_h(mev: f64) -> f64 {
    mev * MEV_J * DECAYS_PER_MBQ_H / 1e-3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lu177_by_any_spelling() {
        for s in ["Lu-177", "lu177", "177Lu", "LU_177", "177-lu"] {
            assert_eq!(Nuclide::lookup(s).unwrap().name, "Lu-177", "{s}");
        }
        let lu = Nuclide::lookup("Lu-177").unwrap();
        assert!((lu.half_life_h - 159.528).abs() < 1e-9);
        assert!((lu.electron_gy_g_per_mbq_h() - 0.08532).abs() < 5e-6);
    }

    #[test]
    fn unknown_nuclide_is_a_clear_error() {
        let e = Nuclide::lookup("Xx-999").unwrap_err().to_string();
        assert!(
            e.contains("nuclide") && e.contains("Xx-999") && e.contains("Lu-177"),
            "{e}"
        );
        let e = Nuclide::lookup("Ac-225").unwrap_err().to_string();
        assert!(e.contains("out of scope"), "{e}");
    }
}
