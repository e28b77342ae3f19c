//! Checkpoints: the model's weights, the optimiser's state and the run's own state (epoch,
//! log, best score) in ONE file written atomically, so a kill at any moment leaves either
//! the previous checkpoint or the new one, never a mix of the two.
//!
//! Layout (little-endian): `GLSGCKPT`, u32 format version, then three length-prefixed
//! (u64) blocks: run state as JSON, the model's weights, the optimiser's record (burn's
//! binary record format, full precision). The model block alone is what prediction needs.
//!
//! The model block of format 2 is glandseg's own ([`model_to_bytes`]): per float parameter
//! in the network's visiting order its id, rank, dimensions and f32 values. Format 1 held
//! burn's binary record there, which a damaged file could make burn's decoder allocate
//! terabytes from (an abort, not an error: found by glandseg-fuzz); in format 2 every
//! dimension is checked against the planned network before a value is read, so nothing is
//! allocated from a number in the file. Format 1 files are still read (burn's decoder,
//! with an allocation limit and the block's length checked against the planned network's).

use crate::error::{ModelError, Result};
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::Backend;
use glandseg_core::atomic;
use glandseg_net::UNet;
use std::path::Path;

const MAGIC: &[u8; 8] = b"GLSGCKPT";
/// The format this glandseg writes.
pub const VERSION: u32 = 2;
/// The format before glandseg wrote its own model block (burn's record there).
const VERSION_BURN_RECORD: u32 = 1;

/// The three blocks of a checkpoint, as bytes.
pub struct CheckpointBlocks {
    /// The run's own state (epoch, log, best score), JSON.
    pub state_json: Vec<u8>,
    /// The model's weights ([`model_to_bytes`]; burn's binary record in format 1).
    pub model: Vec<u8>,
    /// The optimiser's state (burn's binary record).
    pub optim: Vec<u8>,
    /// The format version of the blocks (what [`write`] puts in the file).
    pub version: u32,
}

impl CheckpointBlocks {
    /// Blocks of the current format ([`VERSION`]).
    pub fn new(state_json: Vec<u8>, model: Vec<u8>, optim: Vec<u8>) -> Self {
        CheckpointBlocks {
            state_json,
            model,
            optim,
            version: VERSION,
        }
    }
}

/// Writes the blocks to `path` atomically.
pub fn write(path: &Path, blocks: &CheckpointBlocks) -> Result<()> {
    let mut out =
        Vec::with_capacity(32 + blocks.state_json.len() + blocks.model.len() + blocks.optim.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&blocks.version.to_le_bytes());
    for b in [&blocks.state_json, &blocks.model, &blocks.optim] {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }
    atomic::write_bytes(path, &out)?;
    Ok(())
}

/// Reads the blocks of a checkpoint, checking the magic bytes, the version and the lengths.
pub fn read(path: &Path) -> Result<CheckpointBlocks> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let bad = |msg: &str| ModelError::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad("not a glandseg checkpoint (magic bytes missing)"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION && version != VERSION_BURN_RECORD {
        return Err(bad(&format!(
            "checkpoint format version {version}, this glandseg reads {VERSION_BURN_RECORD} and {VERSION}"
        )));
    }
    let mut pos = 12;
    let mut blocks = Vec::new();
    for name in ["state", "model", "optimiser"] {
        if bytes.len() < pos + 8 {
            return Err(bad(&format!("truncated before the {name} block")));
        }
        let len = u64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes")) as usize;
        pos += 8;
        if bytes.len() < pos.saturating_add(len) {
            return Err(bad(&format!("truncated inside the {name} block")));
        }
        blocks.push(bytes[pos..pos + len].to_vec());
        pos += len;
    }
    let optim = blocks.pop().expect("three blocks");
    let model = blocks.pop().expect("three blocks");
    let state_json = blocks.pop().expect("three blocks");
    Ok(CheckpointBlocks {
        state_json,
        model,
        optim,
        version,
    })
}

/// The recorder of the model and optimiser blocks (full precision, binary).
pub fn recorder() -> BinBytesRecorder<FullPrecisionSettings> {
    BinBytesRecorder::<FullPrecisionSettings>::default()
}

/// Decodes a record written by [`recorder`] (burn's `BinBytesRecorder`: bincode's standard
/// configuration around a `BurnRecord`), with an allocation limit.
///
/// burn's own loader decodes without a limit and unwraps: a damaged length prefix in a
/// model block (glandseg-fuzz, `model` reader) made bincode allocate 7.9e18 bytes, which
/// aborts the process rather than panicking. bincode checks a configured limit before it
/// allocates a container, and an intact record never claims more than a few times its own
/// size (a `Vec<f32>` claims 4 bytes per 4 bytes read), so the limit grows with the block:
/// 16 times its length, in powers of two (the limit is a type-level constant in bincode).
/// Written by hand because burn 0.21's recorders take no decoder configuration.
pub fn load_record<B: Backend, R: burn::record::Record<B>>(
    bytes: &[u8],
    device: &B::Device,
) -> std::result::Result<R, String> {
    type Item<B, R> =
        burn::record::BurnRecord<<R as burn::record::Record<B>>::Item<FullPrecisionSettings>, B>;
    fn decode<const LIMIT: usize, B: Backend, R: burn::record::Record<B>>(
        bytes: &[u8],
    ) -> std::result::Result<Item<B, R>, String> {
        let config = bincode::config::standard().with_limit::<LIMIT>();
        bincode::serde::decode_from_slice::<Item<B, R>, _>(bytes, config)
            .map(|(record, _)| record)
            .map_err(|e| format!("damaged record: {e}"))
    }
    const MIB: usize = 1 << 20;
    // burn's tensor data asserts while it deserialises (a shape whose product overflows:
    // glandseg-fuzz, seed 4), so the decoding runs under `quietly` too.
    let record = glandseg_core::panics::quietly(|| {
        if bytes.len() <= MIB {
            decode::<{ 16 * MIB }, B, R>(bytes)
        } else if bytes.len() <= 16 * MIB {
            decode::<{ 256 * MIB }, B, R>(bytes)
        } else if bytes.len() <= 256 * MIB {
            decode::<{ 4096 * MIB }, B, R>(bytes)
        } else {
            decode::<{ 65536 * MIB }, B, R>(bytes)
        }
    })
    .map_err(|e| format!("damaged record: {e}"))??;
    // Building tensors from the decoded values asserts that shapes and lengths agree.
    glandseg_core::panics::quietly(|| R::from_item(record.item, device))
}

/// Magic bytes opening a format-2 model block.
const WEIGHTS_MAGIC: &[u8; 8] = b"GLSGWTS2";

/// The model's weights as a checkpoint's model block (format 2): `GLSGWTS2`, u32 parameter
/// count, then per float parameter in visiting order: u64 id (burn's `ParamId`, which the
/// optimiser's record is keyed by), u8 rank, u32 per dimension, the values as f32.
pub fn model_to_bytes<B: Backend>(model: &UNet<B>) -> Result<Vec<u8>> {
    struct Write {
        out: Vec<u8>,
        count: u32,
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Write {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let value = param.val();
            self.out.extend_from_slice(&param.id.val().to_le_bytes());
            self.out.push(D as u8);
            for d in value.dims() {
                self.out.extend_from_slice(&(d as u32).to_le_bytes());
            }
            for v in value.into_data().convert::<f32>().iter::<f32>() {
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            self.count += 1;
        }
    }
    let mut w = Write {
        out: Vec::new(),
        count: 0,
    };
    model.visit(&mut w);
    let mut out = Vec::with_capacity(12 + w.out.len());
    out.extend_from_slice(WEIGHTS_MAGIC);
    out.extend_from_slice(&w.count.to_le_bytes());
    out.extend_from_slice(&w.out);
    Ok(out)
}

/// Loads weights into a freshly built network of the same configuration, from a model
/// block of the checkpoint format `version`.
pub fn model_from_bytes<B: Backend>(
    model: UNet<B>,
    bytes: Vec<u8>,
    version: u32,
    device: &B::Device,
    path: &Path,
) -> Result<UNet<B>> {
    let bad = |msg: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("weights do not fit the planned network: {msg}"),
    };
    if version == VERSION_BURN_RECORD {
        // An intact record of this network is exactly as long as a fresh one's (ids are
        // fixed-length strings): a length prefix damaged into a huge number changes it.
        let fresh = Recorder::<B>::record(&recorder(), model.clone().into_record(), ())
            .map_err(|e| ModelError::Input(format!("serialising the model: {e}")))?;
        if fresh.len() != bytes.len() {
            return Err(bad(format!(
                "a model block of {} bytes where the planned network's record has {}",
                bytes.len(),
                fresh.len()
            )));
        }
        let record =
            load_record::<B, glandseg_net::model::UNetRecord<B>>(&bytes, device).map_err(bad)?;
        // burn asserts that the record fits the module (a panic on a damaged block).
        return glandseg_core::panics::quietly(|| model.load_record(record)).map_err(bad);
    }
    if bytes.len() < 12 || &bytes[..8] != WEIGHTS_MAGIC {
        return Err(bad(
            "the model block is not glandseg weights (magic bytes missing)".into(),
        ));
    }
    let count = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let mut read = ReadWeights {
        bytes: &bytes,
        pos: 12,
        index: 0,
        device: device.clone(),
        error: None,
    };
    let model = model.map(&mut read);
    if let Some(e) = read.error {
        return Err(bad(e));
    }
    if read.index != count {
        return Err(bad(format!(
            "the block lists {count} parameters, the planned network has {}",
            read.index
        )));
    }
    if read.pos != bytes.len() {
        return Err(bad(format!(
            "{} bytes left over after the last parameter",
            bytes.len() - read.pos
        )));
    }
    Ok(model)
}

/// Replaces each float parameter of a fresh network by the next one of a format-2 block,
/// after checking its rank and dimensions against the network's own; the first problem is
/// kept and every later parameter left as it is.
struct ReadWeights<'a, B: Backend> {
    bytes: &'a [u8],
    pos: usize,
    index: usize,
    device: B::Device,
    error: Option<String>,
}

impl<B: Backend> ReadWeights<'_, B> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            format!(
                "the block ends inside parameter {} (at byte {})",
                self.index, self.pos
            )
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn next<const D: usize>(
        &mut self,
        dims: [usize; D],
    ) -> std::result::Result<(u64, Vec<f32>), String> {
        let id = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        let rank = self.take(1)?[0] as usize;
        if rank != D {
            return Err(format!(
                "parameter {} has rank {rank}, the network's has {D}",
                self.index
            ));
        }
        for (a, &want) in dims.iter().enumerate() {
            let got = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
            if got != want {
                return Err(format!(
                    "parameter {} has size {got} along axis {a}, the network's has {want}",
                    self.index
                ));
            }
        }
        // The count comes from the network, not from the file.
        let n: usize = dims.iter().product();
        let raw = self.take(n * 4)?;
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok((id, values))
    }
}

impl<B: Backend> burn::module::ModuleMapper<B> for ReadWeights<'_, B> {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<B, D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let dims = param.val().dims();
        match self.next(dims) {
            Ok((id, values)) => {
                self.index += 1;
                let data = burn::tensor::TensorData::new(values, dims);
                let tensor = burn::tensor::Tensor::<B, D>::from_data(data, &self.device);
                param.transform_for_load(tensor, burn::module::ParamId::from(id))
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// Every float parameter's values in visiting order: weights compared across runs (the
/// serialised record also holds parameter ids, which differ between runs).
pub fn weight_values<B: Backend>(model: &UNet<B>) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// The weights stored in a checkpoint file, as [`weight_values`] lists them.
pub fn checkpoint_weight_values<B: Backend>(
    plan: &glandseg_plan::Plan,
    path: &Path,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let blocks = read(path)?;
    let model = glandseg_net::UNetConfig::from_plan(plan).init::<B>(device);
    Ok(weight_values(&model_from_bytes(
        model,
        blocks.model,
        blocks.version,
        device,
        path,
    )?))
}
