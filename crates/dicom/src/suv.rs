//! PET values to SUV, following the QIBA vendor-neutral SUV pseudo-code (as
//! @cornerstonejs/calculate-suv and OHIF implement it):
//!
//! - Units GML: the pixels already are SUVbw; the factor is 1.
//! - CorrectedImage must contain ATTN and DECY (otherwise the counts are not quantitative).
//! - Units BQML: SUVbw factor = weight (g) / decayed dose (Bq). DecayCorrection START
//!   decays the injected dose from the injection to the scan reference time; ADMIN means
//!   the images are already corrected to the injection time (dose used as is). NONE with
//!   BQML would need per-frame decay correction and is refused.
//! - Scan reference time: SeriesDate/SeriesTime, unless that is later than the
//!   (earliest) AcquisitionDate/AcquisitionTime — derived series get a later SeriesTime —
//!   then the acquisition time; GE's private post-injection date-time (0009,xx0d,
//!   GEMS_PETD_01) only when those are missing.
//! - Injection time: RadiopharmaceuticalStartDateTime, else SeriesDate +
//!   RadiopharmaceuticalStartTime, a day earlier when that would be after the scan
//!   (injection before midnight, scan after).
//! - Units CNTS (Philips): the private SUV scale factor (7053,xx00) when non-zero, else the
//!   activity-concentration factor (7053,xx09) times the BQML factor.
//!
//! Anything missing is an error that names the tag; a decay time that is negative or so
//! long that the dose has decayed away is an error too, never a 0 or infinite factor.

use crate::series::text;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SuvFactors {
    /// Multiply rescaled pixel values by this to get SUVbw (g/mL).
    pub suvbw: f64,
    /// SUV normalised to lean body mass, James formula as calculate-suv codes it
    /// (male 1.10 W - 120 (W/H)², female 1.07 W - 148 (W/H)², H in cm).
    pub suvlbm_james: Option<f64>,
    /// Lean body mass after Janmahasatian et al. 2005.
    pub suvlbm_janmahasatian: Option<f64>,
    /// Body-surface-area SUV (Du Bois), cm²/mL.
    pub suvbsa: Option<f64>,
    /// How the factor was obtained, with every value used, for `glandseg info`.
    pub derivation: Vec<String>,
}

fn number(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_float64().ok())
        .filter(|v| v.is_finite())
}

/// The first item of RadiopharmaceuticalInformationSequence.
fn radio_item(obj: &DefaultDicomObject) -> Option<&dicom_object::InMemDicomObject> {
    obj.element_opt(tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .and_then(|items| items.first())
}

fn item_text(item: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    item.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().trim_end_matches('\0').trim().to_string())
        .filter(|s| !s.is_empty())
}

fn item_number(item: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    item.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_float64().ok())
        .filter(|v| v.is_finite())
}

/// A private element: finds the block reserved by `creator` in `group` and reads element
/// `offset` of it.
fn private(obj: &DefaultDicomObject, group: u16, creator: &str, offset: u8) -> Option<String> {
    for block in 0x10u16..=0xFF {
        let c = text(obj, dicom_core::Tag(group, block));
        if c.as_deref().map(|s| s.eq_ignore_ascii_case(creator)) == Some(true) {
            return text(obj, dicom_core::Tag(group, (block << 8) | offset as u16));
        }
    }
    None
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// DA "YYYYMMDD" -> days.
pub fn parse_da(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (
        s[0..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..8].parse().ok()?,
    );
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

/// TM "HH[MM[SS[.F{1,6}]]]" -> seconds since midnight. The fraction is a decimal fraction
/// ('.071' is 71 ms).
pub fn parse_tm(s: &str) -> Option<f64> {
    let s = s.trim();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty()
        || whole.len() % 2 == 1
        || whole.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let h: f64 = whole[0..2].parse().ok()?;
    let m: f64 = if whole.len() >= 4 {
        whole[2..4].parse().ok()?
    } else {
        0.0
    };
    let sec: f64 = if whole.len() >= 6 {
        whole[4..6].parse().ok()?
    } else {
        0.0
    };
    let f: f64 = if frac.is_empty() {
        0.0
    } else {
        format!("0.{frac}").parse().ok()?
    };
    (h < 24.0 && m < 60.0 && sec < 61.0).then_some(h * 3600.0 + m * 60.0 + sec + f)
}

/// DT "YYYYMMDDHHMMSS.FFFFFF[&ZZXX]" -> seconds since 1970 (the offset is ignored: all
/// times of one study are in one zone).
pub fn parse_dt(s: &str) -> Option<f64> {
    let s = s.trim();
    let s = s.split(['+', '-']).next()?;
    if s.len() < 8 {
        return None;
    }
    let days = parse_da(&s[0..8])?;
    let t = if s.len() > 8 { parse_tm(&s[8..])? } else { 0.0 };
    Some(days as f64 * 86400.0 + t)
}

fn date_time(date: Option<String>, time: Option<String>) -> Option<f64> {
    Some(parse_da(&date?)? as f64 * 86400.0 + parse_tm(&time?)?)
}

/// SUV factors for one PET image file.
pub fn suv_factors(path: &Path, obj: &DefaultDicomObject) -> Result<SuvFactors, String> {
    let name = path.display();
    let mut why = Vec::new();
    let modality = text(obj, tags::MODALITY).unwrap_or_default();
    if modality != "PT" {
        return Err(format!(
            "{name}: Modality (0008,0060) is {modality:?}, not PT"
        ));
    }
    let units = text(obj, tags::UNITS).ok_or_else(|| format!("{name}: Units (0054,1001) is missing: cannot tell what the pixel values measure (is this a derived image or a secondary capture?)"))?;
    why.push(format!("Units (0054,1001) = {units}"));
    if units == "GML" {
        why.push("pixels already SUVbw: factor 1".into());
        return Ok(SuvFactors {
            suvbw: 1.0,
            suvlbm_james: None,
            suvlbm_janmahasatian: None,
            suvbsa: None,
            derivation: why,
        });
    }
    let corrected: Vec<String> = obj
        .element_opt(tags::CORRECTED_IMAGE)
        .ok()
        .flatten()
        .and_then(|e| {
            e.to_multi_str()
                .ok()
                .map(|v| v.iter().map(|s| s.trim().to_string()).collect())
        })
        .unwrap_or_default();
    if !(corrected.iter().any(|c| c == "ATTN") && corrected.iter().any(|c| c == "DECY")) {
        return Err(format!("{name}: CorrectedImage (0028,0051) = {corrected:?} lacks ATTN and/or DECY: the image is not attenuation- and decay-corrected, so SUV is not defined"));
    }
    let weight = number(obj, tags::PATIENT_WEIGHT)
        .filter(|w| *w > 0.0)
        .ok_or_else(|| format!("{name}: PatientWeight (0010,1030) is missing or 0"))?;
    why.push(format!("PatientWeight (0010,1030) = {weight} kg"));
    let sex = text(obj, tags::PATIENT_SEX);
    let height_m = number(obj, tags::PATIENT_SIZE).filter(|h| *h > 0.3 && *h < 3.0);

    if units == "CNTS" {
        let suv_scale = private(obj, 0x7053, "Philips PET Private Group", 0x00)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v != 0.0);
        if let Some(f) = suv_scale {
            why.push(format!("Philips SUV scale factor (7053,xx00) = {f}"));
            return Ok(SuvFactors {
                suvbw: f,
                suvlbm_james: None,
                suvlbm_janmahasatian: None,
                suvbsa: None,
                derivation: why,
            });
        }
        let act = private(obj, 0x7053, "Philips PET Private Group", 0x09)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v != 0.0);
        let Some(act) = act else {
            return Err(format!("{name}: Units CNTS but neither Philips private factor (7053,xx00 SUV scale, 7053,xx09 activity concentration) is present and non-zero"));
        };
        why.push(format!(
            "Philips activity concentration factor (7053,xx09) = {act} Bq/mL per count"
        ));
        let mut f = bqml(path, obj, weight, sex.as_deref(), height_m, &mut why)?;
        f.suvbw *= act;
        f.suvlbm_james = f.suvlbm_james.map(|x| x * act);
        f.suvlbm_janmahasatian = f.suvlbm_janmahasatian.map(|x| x * act);
        f.suvbsa = f.suvbsa.map(|x| x * act);
        f.derivation = why;
        return Ok(f);
    }
    if units != "BQML" {
        return Err(format!(
            "{name}: Units (0054,1001) = {units:?}; SUV needs BQML, CNTS (Philips) or GML"
        ));
    }
    let mut f = bqml(path, obj, weight, sex.as_deref(), height_m, &mut why)?;
    f.derivation = why;
    Ok(f)
}

fn bqml(
    path: &Path,
    obj: &DefaultDicomObject,
    weight: f64,
    sex: Option<&str>,
    height_m: Option<f64>,
    why: &mut Vec<String>,
) -> Result<SuvFactors, String> {
    let name = path.display();
    let decay_corr = text(obj, tags::DECAY_CORRECTION).unwrap_or_default();
    let item = radio_item(obj).ok_or_else(|| {
        format!("{name}: RadiopharmaceuticalInformationSequence (0054,0016) is missing")
    })?;
    let dose = item_number(item, tags::RADIONUCLIDE_TOTAL_DOSE)
        .filter(|d| *d > 0.0)
        .ok_or_else(|| format!("{name}: RadionuclideTotalDose (0018,1074) is missing or 0"))?;
    let half_life = item_number(item, tags::RADIONUCLIDE_HALF_LIFE)
        .filter(|h| *h > 0.0)
        .ok_or_else(|| format!("{name}: RadionuclideHalfLife (0018,1075) is missing or 0"))?;
    why.push(format!("RadionuclideTotalDose (0018,1074) = {dose} Bq, RadionuclideHalfLife (0018,1075) = {half_life} s, DecayCorrection (0054,1102) = {decay_corr}"));
    let decayed = match decay_corr.as_str() {
        "ADMIN" => {
            why.push("images decay-corrected to the injection: dose used as is".into());
            dose
        }
        "START" => {
            let series = date_time(text(obj, tags::SERIES_DATE), text(obj, tags::SERIES_TIME));
            let acq = date_time(text(obj, tags::ACQUISITION_DATE), text(obj, tags::ACQUISITION_TIME));
            let ge = private(obj, 0x0009, "GEMS_PETD_01", 0x0d).and_then(|s| parse_dt(&s));
            let scan = match (series, acq) {
                (Some(s), Some(a)) if s > a => {
                    why.push("scan time: AcquisitionDate/Time (SeriesTime is later: a derived series)".into());
                    a
                }
                (Some(s), _) => {
                    why.push("scan time: SeriesDate/SeriesTime".into());
                    s
                }
                (None, Some(a)) => {
                    why.push("scan time: AcquisitionDate/Time (no SeriesDate/Time)".into());
                    a
                }
                (None, None) => match ge {
                    Some(g) => {
                        why.push("scan time: GE private post-injection date-time (0009,xx0d)".into());
                        g
                    }
                    None => return Err(format!("{name}: no scan time: SeriesDate/SeriesTime (0008,0021/0031) and AcquisitionDate/Time (0008,0022/0032) are missing")),
                },
            };
            let start = match item_text(item, tags::RADIOPHARMACEUTICAL_START_DATE_TIME).and_then(|s| parse_dt(&s)) {
                Some(s) => {
                    why.push("injection time: RadiopharmaceuticalStartDateTime (0018,1078)".into());
                    s
                }
                None => {
                    let t = item_text(item, tags::RADIOPHARMACEUTICAL_START_TIME).and_then(|s| parse_tm(&s)).ok_or_else(|| format!("{name}: RadiopharmaceuticalStartDateTime (0018,1078) and RadiopharmaceuticalStartTime (0018,1072) are missing"))?;
                    let day = text(obj, tags::SERIES_DATE).and_then(|d| parse_da(&d)).map(|d| d as f64 * 86400.0).unwrap_or((scan / 86400.0).floor() * 86400.0);
                    let mut s = day + t;
                    if s > scan {
                        s -= 86400.0;
                        why.push("injection time: RadiopharmaceuticalStartTime on the day before the scan (midnight crossing)".into());
                    } else {
                        why.push("injection time: SeriesDate + RadiopharmaceuticalStartTime (0018,1072)".into());
                    }
                    s
                }
            };
            let decay_s = scan - start;
            if decay_s < 0.0 {
                return Err(format!("{name}: the injection (RadiopharmaceuticalStartDateTime) is {:.1} h after the scan time: the dates are inconsistent (often a de-identification date shift)", -decay_s / 3600.0));
            }
            if decay_s > 20.0 * half_life {
                return Err(format!("{name}: {:.1} days between injection and scan is more than 20 half-lives ({half_life} s): the injection date is wrong", decay_s / 86400.0));
            }
            why.push(format!("decay time {decay_s:.3} s"));
            dose * (-(decay_s) * std::f64::consts::LN_2 / half_life).exp()
        }
        "NONE" => return Err(format!("{name}: DecayCorrection (0054,1102) NONE with Units BQML: each frame would need its own decay correction, which glandseg does not do")),
        other => return Err(format!("{name}: DecayCorrection (0054,1102) = {other:?}; START or ADMIN expected")),
    };
    let w_g = weight * 1000.0;
    let male = matches!(sex, Some("M"));
    let female = matches!(sex, Some("F"));
    let (mut james, mut janma, mut bsa) = (None, None, None);
    if let Some(h) = height_m {
        let hcm = h * 100.0;
        bsa = Some(0.007184 * weight.powf(0.425) * hcm.powf(0.725) * 1e4 / decayed);
        let bmi = weight / (h * h);
        if male || female {
            let lbm = if male {
                1.10 * weight - 120.0 * (weight / hcm).powi(2)
            } else {
                1.07 * weight - 148.0 * (weight / hcm).powi(2)
            };
            james = Some(lbm * 1000.0 / decayed);
            let lbm_j = if male {
                9270.0 * weight / (6680.0 + 216.0 * bmi)
            } else {
                9270.0 * weight / (8780.0 + 244.0 * bmi)
            };
            janma = Some(lbm_j * 1000.0 / decayed);
        }
    }
    Ok(SuvFactors {
        suvbw: w_g / decayed,
        suvlbm_james: james,
        suvlbm_janmahasatian: janma,
        suvbsa: bsa,
        derivation: Vec::new(),
    })
}

/// Reads a PET file's header and computes its SUV factors.
pub fn suv_factors_of_file(path: &Path) -> Result<SuvFactors, String> {
    let obj = crate::read::open_header(path).map_err(|e| e.to_string())?;
    suv_factors(path, &obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_parsing() {
        assert_eq!(
            parse_tm("131815.071000"),
            Some(13.0 * 3600.0 + 18.0 * 60.0 + 15.071)
        );
        assert_eq!(parse_tm("1318"), Some(13.0 * 3600.0 + 18.0 * 60.0));
        assert_eq!(parse_tm("25"), None);
        assert_eq!(parse_tm("12:00"), None);
        assert_eq!(parse_da("19700102"), Some(1));
        assert_eq!(parse_da("20241301"), None);
        assert_eq!(parse_dt("19700101000001.5"), Some(1.5));
        assert_eq!(parse_dt("19700101000001+0100"), Some(1.0));
    }
}
