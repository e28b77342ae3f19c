//! Which series of a study glandseg segments, decided from QIDO-RS and instance metadata
//! alone (nothing is downloaded before the choice): the CT series with the most instances
//! and, in its frame of reference, the PET series with the most instances — the same rule
//! as the local study loader (`glandseg_dicom::study`), ties broken by SeriesInstanceUID.

use crate::dicomweb::{attr_str, DicomWeb, SeriesRow};
use crate::error::{PacsError, Result};

/// The CT and PET series of a study, in one frame of reference.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PetCt {
    /// StudyInstanceUID.
    pub study: String,
    /// The CT series.
    pub ct: SeriesRow,
    /// The PET series.
    pub pet: SeriesRow,
    /// Their FrameOfReferenceUID.
    pub frame_of_reference: String,
    /// Choices made among several candidates.
    pub notes: Vec<String>,
}

fn by_size<'a>(series: &'a [SeriesRow], modality: &str) -> Vec<&'a SeriesRow> {
    let mut v: Vec<&SeriesRow> = series.iter().filter(|s| s.modality == modality).collect();
    v.sort_by(|a, b| {
        b.instances
            .cmp(&a.instances)
            .then(a.series_uid.cmp(&b.series_uid))
    });
    v
}

/// Finds the CT + PET pair of `study` on the server. A study without CT or PET, or whose
/// PET shares no CT's frame of reference, is [`PacsError::NotPetCt`].
pub fn find_pet_ct(client: &DicomWeb, study: &str) -> Result<PetCt> {
    let series = client.series_of(study)?;
    if series.is_empty() {
        return Err(PacsError::study(
            study,
            format!("not found on {} (no series)", client.base()),
        ));
    }
    let modalities: Vec<String> = {
        let mut m: Vec<String> = series.iter().map(|s| s.modality.clone()).collect();
        m.sort();
        m.dedup();
        m
    };
    let cts = by_size(&series, "CT");
    let pets = by_size(&series, "PT");
    let not = |msg: String| PacsError::NotPetCt {
        study: study.to_string(),
        msg,
    };
    if pets.is_empty() {
        return Err(not(format!(
            "has no PET series (modality PT); its modalities: {}",
            modalities.join(", ")
        )));
    }
    if cts.is_empty() {
        return Err(not(format!(
            "has no CT series; its modalities: {}",
            modalities.join(", ")
        )));
    }
    let for_of = |s: &SeriesRow| -> Result<String> {
        let meta = client.first_instance_metadata(study, &s.series_uid)?;
        attr_str(&meta, "00200052").ok_or_else(|| {
            PacsError::study(
                study,
                format!(
                    "series {} ({}) has no FrameOfReferenceUID (0020,0052)",
                    s.series_uid, s.modality
                ),
            )
        })
    };
    let ct_for: Vec<(&SeriesRow, String)> = cts
        .iter()
        .map(|s| for_of(s).map(|f| (*s, f)))
        .collect::<Result<_>>()?;
    let pet_for: Vec<(&SeriesRow, String)> = pets
        .iter()
        .map(|s| for_of(s).map(|f| (*s, f)))
        .collect::<Result<_>>()?;
    for (ct, f) in &ct_for {
        if let Some((pet, _)) = pet_for.iter().find(|(_, pf)| pf == f) {
            let mut notes = Vec::new();
            if cts.len() > 1 {
                notes.push(format!(
                    "{} CT series; used {} ({:?}, {} instances)",
                    cts.len(),
                    ct.series_uid,
                    ct.description,
                    ct.instances
                ));
            }
            let n_pet = pet_for.iter().filter(|(_, pf)| pf == f).count();
            if n_pet > 1 {
                notes.push(format!(
                    "{n_pet} PET series in the frame of reference; used {} ({:?}, {} instances)",
                    pet.series_uid, pet.description, pet.instances
                ));
            }
            return Ok(PetCt {
                study: study.to_string(),
                ct: (*ct).clone(),
                pet: (*pet).clone(),
                frame_of_reference: f.clone(),
                notes,
            });
        }
    }
    Err(not(format!(
        "no PET series shares a CT's frame of reference (CT: {}; PET: {})",
        ct_for
            .iter()
            .map(|(_, f)| f.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        pet_for
            .iter()
            .map(|(_, f)| f.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}
