//! `multipart/related` bodies (RFC 2387) as DICOMweb uses them: WADO-RS answers a series
//! with one `application/dicom` part per instance; STOW-RS sends instances the same way.
//!
//! The reader streams: a part is handed to the caller as it ends, so a 500 MB series never
//! sits in memory whole (only one instance at a time does).

use std::io::Read;

/// The `boundary` parameter of a `multipart/related` Content-Type, unquoted.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let kind = parts.next()?.trim().to_ascii_lowercase();
    if !kind.starts_with("multipart/") {
        return None;
    }
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim().trim_matches('"');
            if !v.is_empty() && v.len() <= 200 {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// One part of a multipart body.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// Its Content-Type header (empty when it has none).
    pub content_type: String,
    /// Its body.
    pub body: Vec<u8>,
}

/// Upper bound on one part's headers (bytes); a body without the expected structure is
/// rejected rather than buffered without end.
const MAX_HEADER: usize = 16 * 1024;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a multipart body from `r`, calling `on_part` for each part in order. Returns the
/// number of parts. Errors name what was wrong with the body.
pub fn read_parts<R: Read>(
    mut r: R,
    boundary: &str,
    mut on_part: impl FnMut(Part) -> Result<(), String>,
) -> Result<usize, String> {
    let delim = format!("\r\n--{boundary}").into_bytes();
    // The body starts with "--boundary" (no CRLF before it); prefixing CRLF makes the first
    // delimiter look like every other one. Anything before the first delimiter is the
    // preamble and ignored.
    let mut buf: Vec<u8> = b"\r\n".to_vec();
    let mut chunk = vec![0u8; 1 << 16];
    let mut eof = false;
    let mut fill = |buf: &mut Vec<u8>, eof: &mut bool| -> Result<(), String> {
        if *eof {
            return Ok(());
        }
        loop {
            match r.read(&mut chunk) {
                Ok(0) => {
                    *eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the body: {e}")),
            }
        }
    };
    // Skip the preamble up to the first delimiter.
    let mut start = loop {
        if let Some(p) = find(&buf, &delim) {
            break p + delim.len();
        }
        if eof {
            return Err(format!(
                "the body has no part (no boundary \"--{boundary}\")"
            ));
        }
        if buf.len() > MAX_HEADER {
            let keep = buf.len() - delim.len();
            buf.drain(..keep);
        }
        fill(&mut buf, &mut eof)?;
    };
    let mut count = 0;
    loop {
        // After a delimiter: "--" closes the body, otherwise optional whitespace and CRLF.
        while buf.len() < start + 2 && !eof {
            fill(&mut buf, &mut eof)?;
        }
        if buf[start..].starts_with(b"--") {
            return Ok(count);
        }
        // Headers up to the blank line.
        let headers_end = loop {
            if let Some(p) = find(&buf[start..], b"\r\n\r\n") {
                break start + p;
            }
            if eof {
                return Err(format!("part {} ends inside its headers", count + 1));
            }
            if buf.len() - start > MAX_HEADER {
                return Err(format!("part {}: headers longer than 16 KiB", count + 1));
            }
            fill(&mut buf, &mut eof)?;
        };
        let headers = String::from_utf8_lossy(&buf[start..headers_end]).to_string();
        let mut content_type = String::new();
        for line in headers.split("\r\n") {
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-type") {
                    content_type = v.trim().to_string();
                }
            }
        }
        // The body up to the next delimiter; searched only in what is new since the last
        // look, less the delimiter's length.
        let body_start = headers_end + 4;
        let mut searched = body_start;
        let body_end = loop {
            if let Some(p) = find(&buf[searched..], &delim) {
                break searched + p;
            }
            if eof {
                return Err(format!(
                    "part {} is cut short: the body ends without the closing boundary",
                    count + 1
                ));
            }
            searched = buf.len().saturating_sub(delim.len()).max(body_start);
            fill(&mut buf, &mut eof)?;
        };
        let body = buf[body_start..body_end].to_vec();
        count += 1;
        on_part(Part { content_type, body })?;
        buf.drain(..body_end);
        start = delim.len();
    }
}

/// A fresh boundary (random, never inside a DICOM file by chance in practice; the builder
/// checks anyway).
pub fn new_boundary() -> String {
    format!("glandseg-{:032x}", rand::random::<u128>())
}

/// A `multipart/related` body of `application/dicom` parts, and its Content-Type header.
pub fn build_related(files: &[Vec<u8>]) -> (Vec<u8>, String) {
    let mut boundary = new_boundary();
    while files.iter().any(|f| find(f, boundary.as_bytes()).is_some()) {
        boundary = new_boundary();
    }
    let mut body = Vec::with_capacity(files.iter().map(|f| f.len() + 128).sum());
    for f in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(f);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    (body, ct)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `n` bytes per read.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn parse(body: &[u8], boundary: &str, step: usize) -> Result<Vec<Part>, String> {
        let mut parts = Vec::new();
        read_parts(Trickle(body, step), boundary, |p| {
            parts.push(p);
            Ok(())
        })?;
        Ok(parts)
    }

    #[test]
    fn round_trip_at_every_chunk_size() {
        let files: Vec<Vec<u8>> = vec![
            b"DICM\r\n--not-the-boundary\r\n".to_vec(),
            vec![],
            (0..5000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ];
        let (body, ct) = build_related(&files);
        let b = boundary_of(&ct).unwrap();
        for step in [1, 2, 3, 7, 64, 1000, 1 << 20] {
            let parts = parse(&body, &b, step).unwrap();
            assert_eq!(parts.len(), 3, "step {step}");
            for (p, f) in parts.iter().zip(&files) {
                assert_eq!(&p.body, f, "step {step}");
                assert_eq!(p.content_type, "application/dicom");
            }
        }
    }

    #[test]
    fn preamble_quoted_boundary_and_headers() {
        let body = b"preamble\r\n--abc\r\nContent-Type: application/dicom\r\nContent-Location: x\r\n\r\nONE\r\n--abc\r\ncontent-type:application/octet-stream\r\n\r\nTWO\r\n--abc--\r\nepilogue";
        let b =
            boundary_of("multipart/related; type=\"application/dicom\"; boundary=\"abc\"").unwrap();
        assert_eq!(b, "abc");
        let parts = parse(body, &b, 5).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, b"ONE");
        assert_eq!(parts[1].content_type, "application/octet-stream");
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(parse(b"no parts here", "abc", 4)
            .unwrap_err()
            .contains("no part"));
        assert!(
            parse(b"--abc\r\nContent-Type: x\r\n\r\nhalf a file", "abc", 4)
                .unwrap_err()
                .contains("cut short")
        );
        assert!(parse(b"--abc\r\nContent-Type: x", "abc", 4)
            .unwrap_err()
            .contains("headers"));
        assert_eq!(parse(b"--abc--\r\n", "abc", 4).unwrap().len(), 0);
        assert!(boundary_of("application/dicom+json").is_none());
        assert!(boundary_of("multipart/related; type=x").is_none());
    }
}
