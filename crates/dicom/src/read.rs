//! Opening a DICOM file the way every reader in this crate needs it (issue #13):
//!
//! - **VR UN** elements of a known attribute (a converter bug writes ImagePositionPatient
//!   and friends as UN) are decoded with the data dictionary's VR, as pydicom's
//!   `replace_un_with_known_vr` does; private creators (gggg,0010-00FF) become LO, and the
//!   few private elements glandseg reads (Philips' SUV factors, GE's post-injection time)
//!   get their VR through their private creator. In Implicit VR every private element is
//!   UN, so this is also what makes the Philips factor readable there.
//! - **Bytes after the Pixel Data** (zero padding some archives leave) are ignored, as
//!   pydicom ignores them: the data set is read up to the end of the Pixel Data element.
//! - A **truncated** file is refused with where it ends: the file size, the element being
//!   read and the offset and length it declares.
//! - An element, item or sequence that **declares more bytes than the file holds** (a
//!   corrupt length such as 0xFFFFFFF0) is refused before dicom-rs reads it: dicom-rs sizes
//!   its buffer from the declared length first, so such a file cost seconds and gigabytes
//!   of memory before it failed (found by `glandseg-fuzz`).

use crate::series::DicomError;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, C};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_parser::dataset::{DataSetReader, DataToken};
use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

fn file_err(path: &Path, msg: impl Into<String>) -> DicomError {
    DicomError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Opens the header (everything before the Pixel Data) of a DICOM file.
pub(crate) fn open_header(path: &Path) -> Result<DefaultDicomObject, DicomError> {
    open(path, true)
}

/// Opens a whole DICOM file, Pixel Data included.
pub(crate) fn open_full(path: &Path) -> Result<DefaultDicomObject, DicomError> {
    open(path, false)
}

/// Where the file ends when it ends inside an element (dicom-rs ends a data set quietly
/// there), for readers that found an attribute missing.
pub(crate) fn truncation(path: &Path) -> Option<String> {
    diagnose(path).ok()?.truncation
}

fn open(path: &Path, header_only: bool) -> Result<DefaultDicomObject, DicomError> {
    if !path.is_file() {
        return Err(file_err(path, "no such file"));
    }
    preflight(path, header_only)?;
    let opts = || {
        let o = OpenFileOptions::new();
        if header_only {
            o.read_until(tags::PIXEL_DATA)
        } else {
            o
        }
    };
    let mut obj = match opts().open_file(path) {
        Ok(obj) => {
            // dicom-rs hands back a short value when the file ends inside the Pixel Data.
            if !header_only && pixel_data_is_short(&obj) {
                if let Some(msg) = diagnose(path)?.truncation {
                    return Err(file_err(path, msg));
                }
            }
            obj
        }
        Err(e) => {
            let first = crate::dataset::error_chain(&e);
            let d = diagnose(path)
                .map_err(|_| file_err(path, format!("not a DICOM file ({first})")))?;
            if let Some(msg) = d.truncation {
                return Err(file_err(path, msg));
            }
            match d.pixel_data_end {
                // Everything after the Pixel Data is padding: read up to its end.
                Some(end) if d.trailing_is_padding => {
                    let bytes = std::fs::read(path)
                        .map_err(|e| file_err(path, format!("cannot read: {e}")))?;
                    opts()
                        .read_preamble(ReadPreamble::Never)
                        .from_reader(&bytes[d.magic_at..end])
                        .map_err(|e| {
                            file_err(
                                path,
                                format!(
                                    "not a readable DICOM file ({})",
                                    crate::dataset::error_chain(&e)
                                ),
                            )
                        })?
                }
                _ => {
                    return Err(file_err(
                        path,
                        format!(
                            "not a DICOM file ({first}){}",
                            d.stopped.map(|s| format!("; {s}")).unwrap_or_default()
                        ),
                    ))
                }
            }
        }
    };
    let big_endian = obj.meta().transfer_syntax() == "1.2.840.10008.1.2.2";
    fix_vrs(&mut obj, big_endian);
    Ok(obj)
}

/// True when the (native) Pixel Data holds fewer bytes than its header declares.
fn pixel_data_is_short(obj: &DefaultDicomObject) -> bool {
    use dicom_core::header::HasLength;
    // dicom-rs ends the data set quietly when the file ends inside an element: a missing
    // Pixel Data is checked too.
    let Ok(e) = obj.element(tags::PIXEL_DATA) else {
        return true;
    };
    match (e.length().get(), e.value().primitive()) {
        (Some(declared), Some(v)) => v.calculate_byte_len() < declared as usize,
        // Encapsulated: a cut fragment is kept short without complaint; only a pass over
        // the file can tell.
        _ => true,
    }
}

/// What a token-by-token pass over the file found.
struct Diagnosis {
    /// Offset of "DICM" (128 with a preamble, else 0).
    magic_at: usize,
    /// Absolute offset just after a complete top-level Pixel Data element.
    pixel_data_end: Option<usize>,
    /// Every byte after the Pixel Data is 0 (or a space): padding, not data.
    trailing_is_padding: bool,
    /// Set when the file ends inside an element: the message.
    truncation: Option<String>,
    /// Where parsing stopped, when it stopped early for another reason.
    stopped: Option<String>,
}

/// A reader that counts the bytes consumed, shared with the caller (the parser owns the
/// reader while it runs).
struct Counting<'a> {
    inner: &'a [u8],
    pos: Rc<Cell<usize>>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let p = self.pos.get();
        let n = buf.len().min(self.inner.len().saturating_sub(p));
        buf[..n].copy_from_slice(&self.inner[p..p + n]);
        self.pos.set(p + n);
        Ok(n)
    }
}

fn tag_name(tag: Tag) -> String {
    let name = StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.alias().to_string())
        .unwrap_or_else(|| "element".into());
    format!("{name} ({:04X},{:04X})", tag.0, tag.1)
}

/// Walks the data set token by token, recording where each top-level element lies, to
/// say where a file ends or what follows its Pixel Data.
fn diagnose(path: &Path) -> Result<Diagnosis, DicomError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let magic_at = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        128
    } else if bytes.starts_with(b"DICM") {
        0
    } else {
        return Err(file_err(path, "no DICM prefix"));
    };
    // The meta group's and the header's lengths first (dicom-rs sizes buffers from them).
    if let Err(DicomError::File { msg, .. }) = preflight(path, true) {
        return Ok(Diagnosis {
            magic_at,
            pixel_data_end: None,
            trailing_is_padding: false,
            truncation: Some(msg),
            stopped: None,
        });
    }
    let mut cur = std::io::Cursor::new(&bytes[magic_at..]);
    let meta = dicom_object::FileMetaTable::from_reader(&mut cur).map_err(|e| {
        file_err(
            path,
            format!(
                "file meta group unreadable ({})",
                crate::dataset::error_chain(&e)
            ),
        )
    })?;
    let start = magic_at + cur.position() as usize;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(meta.transfer_syntax())
        .ok_or_else(|| file_err(path, "unknown transfer syntax"))?;
    let pos = Rc::new(Cell::new(0usize));
    let reader = Counting {
        inner: &bytes[start..],
        pos: pos.clone(),
    };
    let mut d = Diagnosis {
        magic_at,
        pixel_data_end: None,
        trailing_is_padding: false,
        truncation: None,
        stopped: None,
    };
    let total = bytes.len();
    let Ok(tokens) = DataSetReader::new_with_ts(reader, ts) else {
        return Ok(d);
    };
    let mut depth = 0usize;
    let mut in_pixel_seq = false;
    // (tag, absolute offset of the element, absolute offset of its value, declared length)
    let mut current: Option<(Tag, usize, usize, Option<u32>)> = None;
    let mut last_complete: Option<Tag> = None;
    let mut before = 0usize;
    // (absolute offset of the value, declared length) of the current item.
    let mut item: Option<(usize, u32)> = None;
    for tok in tokens {
        match tok {
            Ok(DataToken::ElementHeader(h)) => {
                current = Some((h.tag, start + before, start + pos.get(), h.len.get()));
                // Refused before the parser sizes a buffer for it.
                if let Some(len) = h.len.get() {
                    if start + pos.get() + len as usize > total {
                        d.truncation = Some(truncated_msg(total, h.tag, start + pos.get(), len));
                        return Ok(d);
                    }
                }
            }
            Ok(DataToken::PrimitiveValue(_)) => {
                if let Some((tag, _, value_at, Some(len))) = current {
                    if value_at + len as usize > total {
                        d.truncation = Some(truncated_msg(total, tag, value_at, len));
                        return Ok(d);
                    }
                    if depth == 0 {
                        last_complete = Some(tag);
                        if tag == tags::PIXEL_DATA {
                            d.pixel_data_end = Some(start + pos.get());
                            if padding_after(&bytes, &mut d) {
                                return Ok(d);
                            }
                        }
                    }
                }
                current = None;
            }
            Ok(DataToken::SequenceStart { tag, .. }) => {
                if depth == 0 {
                    current = Some((tag, start + before, start + pos.get(), None));
                }
                depth += 1;
            }
            Ok(DataToken::PixelSequenceStart) => {
                if depth == 0 {
                    current = Some((tags::PIXEL_DATA, start + before, start + pos.get(), None));
                }
                in_pixel_seq = depth == 0;
                depth += 1;
            }
            Ok(DataToken::SequenceEnd) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    if let Some((tag, ..)) = current.take() {
                        last_complete = Some(tag);
                    }
                    if in_pixel_seq {
                        d.pixel_data_end = Some(start + pos.get());
                        in_pixel_seq = false;
                        if padding_after(&bytes, &mut d) {
                            return Ok(d);
                        }
                    }
                }
            }
            Ok(DataToken::ItemStart { len }) => {
                item = len.get().map(|l| (start + pos.get(), l));
                if let Some((at, len)) = item {
                    if at + len as usize > total {
                        d.truncation = Some(format!(
                            "the file is truncated: it ends at byte {total}, {} bytes into an \
                             item of {} which starts at byte {at} and declares {len} bytes",
                            total.saturating_sub(at),
                            tag_name(current.map(|c| c.0).unwrap_or(tags::PIXEL_DATA))
                        ));
                        return Ok(d);
                    }
                }
            }
            Ok(DataToken::ItemValue(v)) => {
                if let Some((at, len)) = item {
                    if v.len() < len as usize {
                        d.truncation = Some(format!(
                            "the file is truncated: it ends at byte {total}, {} bytes into a \
                             {} fragment which starts at byte {at} and declares {len} bytes",
                            total.saturating_sub(at),
                            tag_name(current.map(|c| c.0).unwrap_or(tags::PIXEL_DATA))
                        ));
                        return Ok(d);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let at = start + pos.get();
                if at >= total {
                    d.truncation = Some(match current {
                        Some((tag, elem_at, value_at, Some(len))) if value_at + len as usize > total => {
                            let _ = elem_at;
                            truncated_msg(total, tag, value_at, len)
                        }
                        Some((tag, elem_at, ..)) => format!(
                            "the file is truncated: it ends at byte {total}, inside {} which starts at byte {elem_at}",
                            tag_name(tag)
                        ),
                        None => format!(
                            "the file is truncated: it ends at byte {total}, in the middle of an element header{}",
                            last_complete.map(|t| format!(" after {}", tag_name(t))).unwrap_or_default()
                        ),
                    });
                } else {
                    d.stopped = Some(format!(
                        "parsing stopped at byte {at} of {total}{} ({})",
                        last_complete
                            .map(|t| format!(", after {}", tag_name(t)))
                            .unwrap_or_default(),
                        crate::dataset::error_chain(&e)
                    ));
                }
                break;
            }
        }
        before = pos.get();
    }
    // The parser ends quietly when the input runs out inside a header or a sequence.
    if d.truncation.is_none() && d.stopped.is_none() {
        let after = last_complete
            .map(|t| format!(" after {}", tag_name(t)))
            .unwrap_or_default();
        d.truncation = match current {
            Some((tag, _, value_at, Some(len))) if value_at + len as usize > total => {
                Some(truncated_msg(total, tag, value_at, len))
            }
            Some((tag, elem_at, ..)) if depth > 0 || pos.get() != before => Some(format!(
                "the file is truncated: it ends at byte {total}, inside {} which starts at byte {elem_at}",
                tag_name(tag)
            )),
            _ if depth > 0 => Some(format!(
                "the file is truncated: it ends at byte {total}, inside a sequence{after}"
            )),
            _ if pos.get() != before => Some(format!(
                "the file is truncated: it ends at byte {total}, in the middle of an element header{after}"
            )),
            _ => None,
        };
    }
    Ok(d)
}

/// VRs whose length field is 2 bytes in Explicit VR (every other one, unknown ones
/// included, has 2 reserved bytes and a 4-byte length).
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// How far past the end of the file a declared length may reach before the preflight
/// refuses it (the buffer dicom-rs would allocate for it first).
const PREFLIGHT_SLACK: u64 = 16 << 20;

/// A reader over a file that counts the bytes consumed (shared with the caller).
struct CountingFile<R> {
    inner: R,
    pos: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingFile<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos.set(self.pos.get() + n as u64);
        Ok(n)
    }
}

/// Refuses a file in which an element, item or sequence declares more bytes than are left
/// in it, before any value of that length is read. Reads the header only (up to the Pixel
/// Data) when `header_only`; otherwise walks the Pixel Data's fragments too. Anything else
/// wrong is left to the real parse, which words it better.
fn preflight(path: &Path, header_only: bool) -> Result<(), DicomError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let total = f
        .metadata()
        .map_err(|e| file_err(path, format!("cannot read: {e}")))?
        .len();
    let mut head = Vec::new();
    (&mut f)
        .take(132)
        .read_to_end(&mut head)
        .map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let magic_at: u64 = if head.len() >= 132 && &head[128..132] == b"DICM" {
        128
    } else if head.starts_with(b"DICM") {
        0
    } else {
        return Ok(());
    };
    use std::io::{BufReader, Seek, SeekFrom};
    f.seek(SeekFrom::Start(magic_at + 4))
        .map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let mut r = BufReader::new(f);
    // The file meta group: Explicit VR Little Endian, walked by hand as dicom-rs reads
    // it (every element up to the group length, whatever its group), because its reader
    // sizes its buffers from the declared lengths too.
    let mut at = magic_at + 4;
    let mut group_length: Option<u64> = None;
    let mut consumed = 0u64;
    loop {
        let mut h = [0u8; 8];
        if r.read_exact(&mut h).is_err() {
            return Ok(());
        }
        let tag = Tag(
            u16::from_le_bytes([h[0], h[1]]),
            u16::from_le_bytes([h[2], h[3]]),
        );
        let (len, header) = if SHORT_VRS.iter().any(|v| **v == [h[4], h[5]]) {
            (u16::from_le_bytes([h[6], h[7]]) as u32, 8)
        } else {
            let mut l = [0u8; 4];
            if r.read_exact(&mut l).is_err() {
                return Ok(());
            }
            (u32::from_le_bytes(l), 12)
        };
        let value_at = at + header;
        if len == u32::MAX {
            // dicom-rs refuses it with a clear message.
            return Ok(());
        }
        if value_at + len as u64 > total {
            return Err(file_err(
                path,
                truncated_msg(total as usize, tag, value_at as usize, len),
            ));
        }
        let Some(gl) = group_length else {
            if tag != Tag(0x0002, 0x0000) || len != 4 {
                return Ok(());
            }
            let mut v = [0u8; 4];
            if r.read_exact(&mut v).is_err() {
                return Ok(());
            }
            group_length = Some(u32::from_le_bytes(v) as u64);
            at = value_at + 4;
            continue;
        };
        if r.seek_relative(len as i64).is_err() {
            return Ok(());
        }
        at = value_at + len as u64;
        consumed += header + len as u64;
        if consumed >= gl {
            break;
        }
    }
    // The data set, token by token, after the meta group (read again from "DICM").
    let mut r = r.into_inner();
    r.seek(SeekFrom::Start(magic_at))
        .map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let mut r = BufReader::new(r);
    let Ok(meta) = dicom_object::FileMetaTable::from_reader(&mut r) else {
        return Ok(());
    };
    let Some(ts) =
        dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(meta.transfer_syntax())
    else {
        return Ok(());
    };
    if ts.uid() == "1.2.840.10008.1.2.1.99" {
        // Lengths count inflated bytes: not comparable with the file's size.
        return Ok(());
    }
    let Ok(start) = r.stream_position() else {
        return Ok(());
    };
    let pos = Rc::new(Cell::new(start));
    let reader = CountingFile {
        inner: r,
        pos: pos.clone(),
    };
    let Ok(tokens) = DataSetReader::new_with_ts(reader, ts) else {
        return Ok(());
    };
    let too_long = |tag: Tag, len: Option<u32>| -> Result<(), DicomError> {
        // The position is where the value starts: the header was just read (a buffered
        // reader may have read ahead, so this counts what the parser consumed).
        // Only lengths far past the end (what costs memory) are refused here; a file cut
        // short is left to the parse and its diagnosis, which say where it ends.
        match len {
            Some(len) if pos.get() + len as u64 > total + PREFLIGHT_SLACK => Err(file_err(
                path,
                truncated_msg(total as usize, tag, pos.get() as usize, len),
            )),
            _ => Ok(()),
        }
    };
    let mut last_tag = tags::PIXEL_DATA;
    // Sequences open: a Pixel Data inside an item (an icon image, or the rest of a file
    // whose item never ends) is read by the header-only parse too, and so is what follows
    // it: only a top-level Pixel Data ends the header. (A damaged file whose undefined-
    // length item was never closed had its Pixel Data read as part of the item and the
    // element after it, declaring 2 GB, sized a buffer; found by `glandseg-fuzz`.)
    let mut depth = 0usize;
    for tok in tokens {
        match tok {
            Ok(DataToken::ElementHeader(h)) => {
                // A header-only read leaves the Pixel Data to the pixel reader, which says
                // where a cut file ends (the scan must still list the slice).
                if header_only && depth == 0 && h.tag == tags::PIXEL_DATA {
                    return Ok(());
                }
                too_long(h.tag, h.len.get())?;
                last_tag = h.tag;
            }
            Ok(DataToken::SequenceStart { tag, len }) => {
                too_long(tag, len.get())?;
                last_tag = tag;
                depth += 1;
            }
            Ok(DataToken::PixelSequenceStart) if header_only && depth == 0 => return Ok(()),
            Ok(DataToken::PixelSequenceStart) => depth += 1,
            Ok(DataToken::SequenceEnd) => depth = depth.saturating_sub(1),
            Ok(DataToken::ItemStart { len }) => too_long(last_tag, len.get())?,
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Whether everything after the Pixel Data is padding (zeros or spaces); sets
/// `trailing_is_padding`.
fn padding_after(bytes: &[u8], d: &mut Diagnosis) -> bool {
    let end = d.pixel_data_end.unwrap_or(bytes.len()).min(bytes.len());
    d.trailing_is_padding = bytes[end..].iter().all(|b| *b == 0 || *b == b' ');
    d.trailing_is_padding
}

fn truncated_msg(total: usize, tag: Tag, value_at: usize, len: u32) -> String {
    format!(
        "the file is truncated: it ends at byte {total}, {} bytes into the value of {}, \
         which starts at byte {value_at} and declares {len} bytes",
        total.saturating_sub(value_at),
        tag_name(tag)
    )
}

/// Private elements glandseg reads, by (creator, group, element offset): their VR, so that
/// they decode in Implicit VR (where every private element is UN).
const PRIVATE_VRS: [(&str, u16, u8, VR); 3] = [
    ("Philips PET Private Group", 0x7053, 0x00, VR::DS),
    ("Philips PET Private Group", 0x7053, 0x09, VR::DS),
    ("GEMS_PETD_01", 0x0009, 0x0d, VR::DT),
];

/// Decodes every UN element whose VR is known (standard dictionary, private creators,
/// [`PRIVATE_VRS`]), in the data set and in its sequences' items.
pub(crate) fn fix_vrs(obj: &mut InMemDicomObject, big_endian: bool) {
    let un: Vec<Tag> = obj
        .iter()
        .filter(|e| e.vr() == VR::UN)
        .map(|e| e.tag())
        .collect();
    let sq: Vec<Tag> = obj
        .iter()
        .filter(|e| e.vr() == VR::SQ)
        .map(|e| e.tag())
        .collect();
    for tag in un {
        let vr = known_vr(obj, tag);
        let Some(vr) = vr else { continue };
        let Ok(elem) = obj.element(tag) else { continue };
        let Ok(bytes) = elem.to_bytes() else { continue };
        if let Some(v) = decode_as(&bytes, vr, big_endian) {
            obj.put(DataElement::new(tag, vr, v));
        }
    }
    for tag in sq {
        if let Ok(mut e) = obj.take_element(tag) {
            if let Some(items) = e.items_mut() {
                for item in items.iter_mut() {
                    fix_vrs(item, big_endian);
                }
            }
            obj.put(e);
        }
    }
}

fn known_vr(obj: &InMemDicomObject, tag: Tag) -> Option<VR> {
    if !tag.0.is_multiple_of(2) {
        if (0x0010..=0x00FF).contains(&tag.1) {
            return Some(VR::LO);
        }
        let block = tag.1 >> 8;
        let creator = obj
            .element(Tag(tag.0, block))
            .ok()
            .and_then(|e| e.to_bytes().ok())
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_string()
            })?;
        return PRIVATE_VRS
            .iter()
            .find(|(c, g, off, _)| {
                c.eq_ignore_ascii_case(&creator) && *g == tag.0 && *off as u16 == (tag.1 & 0xFF)
            })
            .map(|p| p.3);
    }
    match StandardDataDictionary.by_tag(tag)?.vr() {
        VirtualVr::Exact(VR::UN) | VirtualVr::Exact(VR::SQ) => None,
        VirtualVr::Exact(vr) => Some(vr),
        VirtualVr::Xs => Some(VR::US),
        _ => None,
    }
}

/// UN bytes as a value of `vr`; `None` for the VRs left as bytes (OB, OW, SQ, ...).
fn decode_as(b: &[u8], vr: VR, big: bool) -> Option<PrimitiveValue> {
    use VR::*;
    let text = |multi: bool| {
        let s = String::from_utf8_lossy(b);
        let s = s.trim_end_matches(['\0', ' ']);
        if multi {
            PrimitiveValue::Strs(s.split('\\').map(|p| p.trim().to_string()).collect())
        } else {
            PrimitiveValue::from(s.to_string())
        }
    };
    fn words<const N: usize>(b: &[u8], big: bool) -> Option<Vec<[u8; N]>> {
        if !b.len().is_multiple_of(N) {
            return None;
        }
        Some(
            b.chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    if big {
                        a.reverse();
                    }
                    a
                })
                .collect(),
        )
    }
    Some(match vr {
        AE | AS | CS | DA | DS | DT | IS | LO | PN | SH | TM | UC | UI => text(true),
        LT | ST | UT | UR => text(false),
        US => PrimitiveValue::U16(C::from_iter(
            words::<2>(b, big)?.into_iter().map(u16::from_le_bytes),
        )),
        SS => PrimitiveValue::I16(C::from_iter(
            words::<2>(b, big)?.into_iter().map(i16::from_le_bytes),
        )),
        UL => PrimitiveValue::U32(C::from_iter(
            words::<4>(b, big)?.into_iter().map(u32::from_le_bytes),
        )),
        SL => PrimitiveValue::I32(C::from_iter(
            words::<4>(b, big)?.into_iter().map(i32::from_le_bytes),
        )),
        FL => PrimitiveValue::F32(C::from_iter(
            words::<4>(b, big)?.into_iter().map(f32::from_le_bytes),
        )),
        FD => PrimitiveValue::F64(C::from_iter(
            words::<8>(b, big)?.into_iter().map(f64::from_le_bytes),
        )),
        _ => return None,
    })
}
