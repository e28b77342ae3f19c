//! nnU-Net's file naming, in one place: `CASE_XXXX.nii.gz` is channel `XXXX` of case
//! `CASE`, `CASE.nii.gz` its label map (or a prediction). Dataset reading, prediction's
//! case discovery, evaluation and the demo's hold-out all name files through here.

use std::path::Path;

/// The name without a NIfTI ending (`.nii.gz` or `.nii`), or `None` for other files.
pub fn strip_nifti(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// True for a `.nii` or `.nii.gz` path.
pub fn is_nifti(path: &Path) -> bool {
    let n = path.to_string_lossy();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

/// The file of channel `channel` of case `id`: `ID_XXXX{ending}`.
pub fn channel_file(id: &str, channel: usize, ending: &str) -> String {
    format!("{id}_{channel:04}{ending}")
}

/// The label map (or prediction) file of case `id`: `ID{ending}`.
pub fn label_file(id: &str, ending: &str) -> String {
    format!("{id}{ending}")
}

/// Case id and channel of an image file name in the nnU-Net layout (`CASE_0001.nii.gz` ->
/// `("CASE", 1)`); `None` for a name that does not follow it (exactly four digits).
pub fn parse_channel_file(name: &str) -> Option<(&str, usize)> {
    let stem = strip_nifti(name)?;
    let (case, ch) = stem.rsplit_once('_')?;
    let c = ch.parse::<usize>().ok()?;
    if c.to_string().len() > 4 || stem.len() - case.len() != 5 {
        return None;
    }
    Some((case, c))
}

/// The case id a label map or prediction file stands for: its name without the NIfTI
/// ending (`GLAND_002.nii.gz` -> `GLAND_002`).
pub fn case_of_label_file(name: &str) -> String {
    name.trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_files_round_trip() {
        let f = channel_file("GLAND_002", 1, ".nii.gz");
        assert_eq!(f, "GLAND_002_0001.nii.gz");
        assert_eq!(parse_channel_file(&f), Some(("GLAND_002", 1)));
        assert_eq!(parse_channel_file("GLAND_002.nii.gz"), None);
        assert_eq!(parse_channel_file("a_01.nii.gz"), None);
        assert_eq!(case_of_label_file("GLAND_002.nii.gz"), "GLAND_002");
    }
}
