//! Where the shared real-file fixtures are (`shared/testdata` beside the checkout), for
//! the tests of every crate that reads real files. One place, so a moved folder is fixed
//! once; `GLANDSEG_TESTDATA` overrides it.

use std::path::PathBuf;

/// The test-data folder seen from a crate's `CARGO_MANIFEST_DIR`, checked to contain
/// `subfolder`. Panics with a message saying where it looked: a test without its fixtures
/// must fail, not pass silently.
pub fn dir(manifest_dir: &str, subfolder: &str) -> PathBuf {
    let p = std::env::var_os("GLANDSEG_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(manifest_dir).join("../../../shared/testdata"));
    assert!(
        p.join(subfolder).is_dir(),
        "test data not found at {} (set GLANDSEG_TESTDATA to the shared/testdata folder)",
        p.join(subfolder).display()
    );
    p
}
