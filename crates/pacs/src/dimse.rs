//! DICOM C-STORE over the DICOM upper layer (dicom-rs `dicom-ul`), for sites whose PACS
//! speaks only classic DICOM networking: [`send_files`] is a storage SCU (push files to an
//! AE), [`Receiver`] a storage SCP (accept pushed instances into a folder, one
//! sub-folder per study) that also answers C-ECHO.
//!
//! Files are sent in the transfer syntax they are stored in (an uncompressed file may go
//! as Explicit or Implicit VR Little Endian, whichever the peer accepts); the receiver
//! accepts every transfer syntax dicom-rs can parse, compressed pixel data included, and
//! stores it as received.

use crate::dicomweb::write_atomic;
use crate::error::{PacsError, Result};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::Association;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociationOptions, Pdu, ServerAssociationOptions};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const VERIFICATION: &str = "1.2.840.10008.1.1";

/// A DICOM application entity's address: `AET@HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AeAddress {
    /// Application entity title (1-16 characters).
    pub aet: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for AeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.aet, self.host, self.port)
    }
}

/// Checks an AE title: 1-16 characters of printable ASCII other than `\`.
pub fn check_aet(aet: &str) -> Result<()> {
    let t = aet.trim();
    if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\') {
        return Err(PacsError::Usage(format!(
            "AE title {aet:?}: 1 to 16 printable ASCII characters, no backslash"
        )));
    }
    Ok(())
}

impl std::str::FromStr for AeAddress {
    type Err = PacsError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            PacsError::Usage(format!(
                "{s:?}: expected AET@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242)"
            ))
        };
        let (aet, addr) = s.split_once('@').ok_or_else(bad)?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        check_aet(aet)?;
        Ok(AeAddress {
            aet: aet.trim().to_string(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        })
    }
}

fn u16_elem(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

fn ui_elem(tag: dicom_core::Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(v.to_string()))
}

/// A command set (always Implicit VR Little Endian, with its group length) as bytes.
fn command_bytes(elems: Vec<DataElement<InMemDicomObject>>) -> Result<Vec<u8>> {
    let cmd = InMemDicomObject::command_from_element_iter(elems);
    let ts = TransferSyntaxRegistry
        .get(IMPLICIT_VR_LE)
        .ok_or_else(|| PacsError::Usage("Implicit VR Little Endian is not registered".into()))?;
    let mut out = Vec::with_capacity(256);
    cmd.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| PacsError::Usage(format!("cannot encode a DIMSE command: {e}")))?;
    Ok(out)
}

fn read_command(bytes: &[u8]) -> std::result::Result<InMemDicomObject, String> {
    let ts = TransferSyntaxRegistry
        .get(IMPLICIT_VR_LE)
        .ok_or("Implicit VR Little Endian is not registered")?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts)
        .map_err(|e| format!("cannot read a DIMSE command: {e}"))
}

fn cmd_u16(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u16> {
    obj.element_opt(tag).ok().flatten()?.to_int::<u16>().ok()
}

fn cmd_str(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()?
        .to_str()
        .ok()
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
}

struct Outgoing {
    path: PathBuf,
    sop_class: String,
    sop_instance: String,
    ts: String,
}

fn is_uncompressed_le(ts: &str) -> bool {
    ts == IMPLICIT_VR_LE || ts == EXPLICIT_VR_LE
}

/// Sends `files` to `to` with C-STORE in one association as `calling_aet`. Returns the
/// number stored; fails naming the first file the peer refused or the association
/// problem.
pub fn send_files(
    to: &AeAddress,
    calling_aet: &str,
    files: &[PathBuf],
    timeout: Duration,
) -> Result<usize> {
    check_aet(calling_aet)?;
    if files.is_empty() {
        return Ok(0);
    }
    let peer = to.to_string();
    let mut out = Vec::new();
    for f in files {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(f)
            .map_err(|e| PacsError::file(f, format!("not a DICOM file: {e}")))?;
        let meta = obj.meta();
        out.push(Outgoing {
            path: f.clone(),
            sop_class: meta
                .media_storage_sop_class_uid()
                .trim_end_matches('\0')
                .to_string(),
            sop_instance: meta
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string(),
            ts: meta.transfer_syntax().trim_end_matches('\0').to_string(),
        });
    }
    // One presentation context per (SOP class, transfer syntax); an uncompressed file may
    // also go in the other little-endian syntax.
    let mut contexts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for o in &out {
        let mut ts = vec![o.ts.clone()];
        if is_uncompressed_le(&o.ts) {
            for alt in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
                if alt != o.ts {
                    ts.push(alt.to_string());
                }
            }
        }
        contexts.insert((o.sop_class.clone(), o.ts.clone()), ts);
    }
    if contexts.len() > 127 {
        return Err(PacsError::Usage(format!(
            "{} kinds of files (SOP class x transfer syntax) are more than one association can carry (127)",
            contexts.len()
        )));
    }
    let mut opts = ClientAssociationOptions::new()
        .calling_ae_title(calling_aet.trim())
        .called_ae_title(to.aet.as_str())
        .read_timeout(timeout)
        .write_timeout(timeout)
        .connection_timeout(timeout.min(Duration::from_secs(10)));
    for ((class, _), ts) in &contexts {
        opts =
            opts.with_presentation_context(class.as_str(), ts.iter().map(|t| t.as_str()).collect());
    }
    let mut assoc = opts
        .establish((to.host.as_str(), to.port))
        .map_err(|e| {
            PacsError::server(
                &peer,
                format!("cannot open a DICOM association (is the peer running, and does it accept AE title {}?): {e}", calling_aet.trim()),
            )
        })?;
    let pcs = assoc.presentation_contexts().to_vec();
    let mut stored = 0;
    let result = (|| -> Result<()> {
        for (n, o) in out.iter().enumerate() {
            let pc = pcs
                .iter()
                .filter(|pc| {
                    pc.reason == PresentationContextResultReason::Acceptance
                        && pc.abstract_syntax.trim_end_matches('\0') == o.sop_class
                })
                .find(|pc| {
                    let ts = pc.transfer_syntax.trim_end_matches('\0');
                    ts == o.ts || (is_uncompressed_le(ts) && is_uncompressed_le(&o.ts))
                })
                .ok_or_else(|| {
                    PacsError::server(
                        &peer,
                        format!(
                            "{}: the peer accepts no presentation context for SOP class {} in transfer syntax {}",
                            o.path.display(),
                            o.sop_class,
                            o.ts
                        ),
                    )
                })?;
            let ts_uid = pc.transfer_syntax.trim_end_matches('\0').to_string();
            let ts = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| {
                PacsError::server(&peer, format!("unknown transfer syntax {ts_uid}"))
            })?;
            let obj = OpenFileOptions::new()
                .open_file(&o.path)
                .map_err(|e| PacsError::file(&o.path, format!("cannot read: {e}")))?;
            let mut data = Vec::new();
            obj.write_dataset_with_ts(&mut data, ts)
                .map_err(|e| PacsError::file(&o.path, format!("cannot encode in {ts_uid}: {e}")))?;
            let msg_id = (n % 65535 + 1) as u16;
            let cmd = command_bytes(vec![
                ui_elem(tags::AFFECTED_SOP_CLASS_UID, &o.sop_class),
                u16_elem(tags::COMMAND_FIELD, 0x0001),
                u16_elem(tags::MESSAGE_ID, msg_id),
                u16_elem(tags::PRIORITY, 0),
                u16_elem(tags::COMMAND_DATA_SET_TYPE, 0x0000),
                ui_elem(tags::AFFECTED_SOP_INSTANCE_UID, &o.sop_instance),
            ])?;
            let net = |e: dicom_ul::association::Error| {
                PacsError::server(&peer, format!("sending {}: {e}", o.path.display()))
            };
            assoc
                .send(&Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: pc.id,
                        value_type: PDataValueType::Command,
                        is_last: true,
                        data: cmd,
                    }],
                })
                .map_err(net)?;
            {
                let mut w = assoc.send_pdata(pc.id);
                w.write_all(&data).map_err(|e| {
                    PacsError::server(&peer, format!("sending {}: {e}", o.path.display()))
                })?;
            }
            let rsp = assoc.receive().map_err(net)?;
            let Pdu::PData { data } = rsp else {
                return Err(PacsError::server(
                    &peer,
                    format!(
                        "unexpected answer to C-STORE of {}: {}",
                        o.path.display(),
                        rsp.short_description()
                    ),
                ));
            };
            let cmd = data
                .first()
                .ok_or_else(|| PacsError::server(&peer, "empty C-STORE response"))
                .and_then(|d| read_command(&d.data).map_err(|e| PacsError::server(&peer, e)))?;
            let status = cmd_u16(&cmd, tags::STATUS).unwrap_or(0xFFFF);
            match status {
                0x0000 | 0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => stored += 1,
                s => {
                    return Err(PacsError::server(
                        &peer,
                        format!(
                            "the peer refused {} (C-STORE status {s:04X}H)",
                            o.path.display()
                        ),
                    ))
                }
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            assoc
                .release()
                .map_err(|e| PacsError::server(&peer, format!("releasing the association: {e}")))?;
            Ok(stored)
        }
        Err(e) => {
            let _ = assoc.abort();
            Err(e)
        }
    }
}

/// What one association delivered.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    /// The sender's AE title.
    pub calling_aet: String,
    /// Study folders written to, by StudyInstanceUID, with the number of instances.
    pub studies: BTreeMap<String, (PathBuf, usize)>,
    /// Set when the association ended abnormally.
    pub error: Option<String>,
}

/// A storage SCP writing what it receives under a folder (`DIR/STUDYUID/SOPUID.dcm`).
pub struct Receiver {
    listener: TcpListener,
    aet: String,
    incoming: PathBuf,
    timeout: Duration,
}

impl Receiver {
    /// Binds `addr` (e.g. `127.0.0.1:11112`; port 0 picks a free port) as AE `aet`.
    pub fn bind(addr: &str, aet: &str, incoming: &Path, timeout: Duration) -> Result<Self> {
        check_aet(aet)?;
        let listener = TcpListener::bind(addr)
            .map_err(|e| PacsError::server(addr, format!("cannot listen: {e}")))?;
        std::fs::create_dir_all(incoming).map_err(|e| PacsError::file(incoming, e))?;
        Ok(Receiver {
            listener,
            aet: aet.trim().to_string(),
            incoming: incoming.to_path_buf(),
            timeout,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| PacsError::server(&self.aet, e.to_string()))
    }

    /// Accepts associations one after the other, calling `on_delivery` after each; stops
    /// when `on_delivery` returns false.
    pub fn serve(&self, mut on_delivery: impl FnMut(Delivery) -> bool) -> Result<()> {
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(_) => continue,
            };
            let d = self.handle(stream);
            if !on_delivery(d) {
                break;
            }
        }
        Ok(())
    }

    fn handle(&self, stream: TcpStream) -> Delivery {
        let mut d = Delivery::default();
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        let mut opts = ServerAssociationOptions::new()
            .accept_any()
            .ae_title(self.aet.as_str())
            .promiscuous(true)
            .with_abstract_syntax(VERIFICATION);
        for ts in TransferSyntaxRegistry.iter() {
            if !ts.is_unsupported() {
                opts = opts.with_transfer_syntax(ts.uid());
            }
        }
        let mut assoc = match opts.establish(stream) {
            Ok(a) => a,
            Err(e) => {
                d.error = Some(format!("association refused: {e}"));
                return d;
            }
        };
        d.calling_aet = assoc.peer_ae_title().trim().to_string();
        let pcs = assoc.presentation_contexts().to_vec();
        let mut buffer: Vec<u8> = Vec::new();
        let mut current: Option<(u16, String, String)> = None;
        loop {
            let pdu = match assoc.receive() {
                Ok(p) => p,
                Err(e) => {
                    d.error = Some(format!("connection ended: {e}"));
                    return d;
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    for v in data {
                        match v.value_type {
                            PDataValueType::Command => {
                                let cmd = match read_command(&v.data) {
                                    Ok(c) => c,
                                    Err(e) => {
                                        d.error = Some(e);
                                        let _ = assoc.abort();
                                        return d;
                                    }
                                };
                                let field = cmd_u16(&cmd, tags::COMMAND_FIELD).unwrap_or(0);
                                let msg_id = cmd_u16(&cmd, tags::MESSAGE_ID).unwrap_or(1);
                                if field == 0x0030 {
                                    let rsp = command_bytes(vec![
                                        ui_elem(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION),
                                        u16_elem(tags::COMMAND_FIELD, 0x8030),
                                        u16_elem(tags::MESSAGE_ID_BEING_RESPONDED_TO, msg_id),
                                        u16_elem(tags::COMMAND_DATA_SET_TYPE, 0x0101),
                                        u16_elem(tags::STATUS, 0),
                                    ]);
                                    if let Ok(rsp) = rsp {
                                        let _ = assoc.send(&Pdu::PData {
                                            data: vec![PDataValue {
                                                presentation_context_id: v.presentation_context_id,
                                                value_type: PDataValueType::Command,
                                                is_last: true,
                                                data: rsp,
                                            }],
                                        });
                                    }
                                } else if field == 0x0001 {
                                    current = Some((
                                        msg_id,
                                        cmd_str(&cmd, tags::AFFECTED_SOP_CLASS_UID)
                                            .unwrap_or_default(),
                                        cmd_str(&cmd, tags::AFFECTED_SOP_INSTANCE_UID)
                                            .unwrap_or_default(),
                                    ));
                                    buffer.clear();
                                }
                            }
                            PDataValueType::Data => {
                                buffer.extend_from_slice(&v.data);
                                if !v.is_last {
                                    continue;
                                }
                                let Some((msg_id, class, instance)) = current.take() else {
                                    buffer.clear();
                                    continue;
                                };
                                let ts = pcs
                                    .iter()
                                    .find(|pc| pc.id == v.presentation_context_id)
                                    .map(|pc| pc.transfer_syntax.trim_end_matches('\0').to_string())
                                    .unwrap_or_default();
                                let status = match self.store(&buffer, &ts, &class, &instance) {
                                    Ok((study, dir)) => {
                                        let e = d.studies.entry(study).or_insert((dir, 0));
                                        e.1 += 1;
                                        0x0000
                                    }
                                    Err(e) => {
                                        d.error = Some(e);
                                        0xA700
                                    }
                                };
                                buffer.clear();
                                let rsp = command_bytes(vec![
                                    ui_elem(tags::AFFECTED_SOP_CLASS_UID, &class),
                                    u16_elem(tags::COMMAND_FIELD, 0x8001),
                                    u16_elem(tags::MESSAGE_ID_BEING_RESPONDED_TO, msg_id),
                                    u16_elem(tags::COMMAND_DATA_SET_TYPE, 0x0101),
                                    u16_elem(tags::STATUS, status),
                                    ui_elem(tags::AFFECTED_SOP_INSTANCE_UID, &instance),
                                ]);
                                let sent = rsp.ok().map(|rsp| {
                                    assoc.send(&Pdu::PData {
                                        data: vec![PDataValue {
                                            presentation_context_id: v.presentation_context_id,
                                            value_type: PDataValueType::Command,
                                            is_last: true,
                                            data: rsp,
                                        }],
                                    })
                                });
                                if !matches!(sent, Some(Ok(()))) {
                                    d.error = Some("cannot answer the C-STORE".into());
                                    return d;
                                }
                            }
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    let _ = assoc.send(&Pdu::ReleaseRP);
                    return d;
                }
                Pdu::AbortRQ { .. } => {
                    d.error = Some("the sender aborted the association".into());
                    return d;
                }
                other => {
                    d.error = Some(format!("unexpected PDU {}", other.short_description()));
                    let _ = assoc.abort();
                    return d;
                }
            }
        }
    }

    /// Writes one received instance as a DICOM file; returns its study and folder.
    fn store(
        &self,
        data: &[u8],
        ts_uid: &str,
        class: &str,
        instance: &str,
    ) -> std::result::Result<(String, PathBuf), String> {
        let ts = TransferSyntaxRegistry
            .get(ts_uid)
            .ok_or_else(|| format!("unknown transfer syntax {ts_uid}"))?;
        let obj = InMemDicomObject::read_dataset_with_ts(data, ts)
            .map_err(|e| format!("instance {instance}: cannot parse: {e}"))?;
        let study = cmd_str_obj(&obj, tags::STUDY_INSTANCE_UID)
            .ok_or_else(|| format!("instance {instance}: no StudyInstanceUID"))?;
        crate::dicomweb::check_uid(&study).map_err(|e| e.to_string())?;
        crate::dicomweb::check_uid(instance).map_err(|e| e.to_string())?;
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(ts_uid)
                    .media_storage_sop_class_uid(class)
                    .media_storage_sop_instance_uid(instance),
            )
            .map_err(|e| format!("instance {instance}: {e}"))?;
        let mut bytes = Vec::with_capacity(data.len() + 512);
        file.write_all(&mut bytes)
            .map_err(|e| format!("instance {instance}: cannot encode: {e}"))?;
        let dir = self.incoming.join(&study);
        write_atomic(&dir.join(format!("{instance}.dcm")), &bytes).map_err(|e| e.to_string())?;
        Ok((study, dir))
    }
}

fn cmd_str_obj(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    cmd_str(obj, tag).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_addresses() {
        let a: AeAddress = "ORTHANC@127.0.0.1:4242".parse().unwrap();
        assert_eq!(a.aet, "ORTHANC");
        assert_eq!(a.port, 4242);
        assert_eq!(a.to_string(), "ORTHANC@127.0.0.1:4242");
        for bad in [
            "x",
            "A@host",
            "A@host:0",
            "@host:1",
            "WAY_TOO_LONG_AE_TITLE@h:1",
        ] {
            assert!(bad.parse::<AeAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn send_and_receive_between_our_own_ends() {
        // Build a tiny Secondary Capture-like object and push it to our own receiver.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.dcm");
        let obj = InMemDicomObject::from_element_iter([
            ui_elem(tags::SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.7"),
            ui_elem(tags::SOP_INSTANCE_UID, "1.2.3.4.5"),
            ui_elem(tags::STUDY_INSTANCE_UID, "1.2.3.4"),
            ui_elem(tags::SERIES_INSTANCE_UID, "1.2.3.4.1"),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("OT")),
        ]);
        obj.with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(EXPLICIT_VR_LE)
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                .media_storage_sop_instance_uid("1.2.3.4.5"),
        )
        .unwrap()
        .write_to_file(&src)
        .unwrap();
        let incoming = dir.path().join("incoming");
        let rx = Receiver::bind(
            "127.0.0.1:0",
            "GLANDSEG",
            &incoming,
            Duration::from_secs(10),
        )
        .unwrap();
        let port = rx.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.serve(|d| {
                got.push(d);
                false
            })
            .unwrap();
            got
        });
        let to = AeAddress {
            aet: "GLANDSEG".into(),
            host: "127.0.0.1".into(),
            port,
        };
        let n = send_files(
            &to,
            "TESTSCU",
            std::slice::from_ref(&src),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(n, 1);
        let got = server.join().unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].error.is_none(), "{:?}", got[0].error);
        assert_eq!(got[0].calling_aet, "TESTSCU");
        let (folder, count) = &got[0].studies["1.2.3.4"];
        assert_eq!(*count, 1);
        let back = dicom_object::open_file(folder.join("1.2.3.4.5.dcm")).unwrap();
        assert_eq!(
            back.element(tags::MODALITY)
                .unwrap()
                .to_str()
                .unwrap()
                .trim(),
            "OT"
        );
        // Nobody listening: a message naming the peer.
        let closed = AeAddress {
            aet: "X".into(),
            host: "127.0.0.1".into(),
            port: 1,
        };
        let e = send_files(&closed, "TESTSCU", &[src], Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("X@127.0.0.1:1") && e.contains("association"),
            "{e}"
        );
    }
}
