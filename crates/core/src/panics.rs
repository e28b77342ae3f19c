//! Third-party decoders that panic on damaged input (burn's binary recorder unwraps its
//! decoding errors; dicom-rs' JPEG 2000 adapter indexes an empty fragment; found by
//! glandseg-fuzz) are called through [`quietly`], which turns the panic into an error
//! message instead of a crash or a "thread panicked" line on the terminal.

use std::sync::atomic::{AtomicUsize, Ordering};

static QUIET: AtomicUsize = AtomicUsize::new(0);
static INSTALL: std::sync::Once = std::sync::Once::new();

/// Runs `f`; a panic inside it becomes `Err(its message)`. While any `quietly` call runs,
/// panic messages are not printed (the hook installed before the first call is called
/// otherwise), so the caller's error is the only report.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.load(Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
    QUIET.fetch_add(1, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.fetch_sub(1, Ordering::SeqCst);
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the decoder failed".into())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(super::quietly(|| 3), Ok(3));
        let r: Result<(), String> = super::quietly(|| panic!("bad {}", 7));
        assert_eq!(r, Err("bad 7".to_string()));
    }
}
