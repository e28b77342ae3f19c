//! Checkpoints: the model's weights, the optimiser's state and the run's own state (epoch,
//! log, best score) in ONE file written atomically, so a kill at any moment leaves either
//! the previous checkpoint or the new one, never a mix of the two.
//!
//! Layout (little-endian): `GLSGCKPT`, u32 format version, then three length-prefixed
//! (u64) blocks: run state as JSON, model record, optimiser record (burn's binary record
//! format, full precision). The model block alone is what prediction needs.

use crate::error::{ModelError, Result};
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::Backend;
use glandseg_core::atomic;
use glandseg_net::UNet;
use std::path::Path;

const MAGIC: &[u8; 8] = b"GLSGCKPT";
const VERSION: u32 = 1;

/// The three blocks of a checkpoint, as bytes.
pub struct CheckpointBlocks {
    /// The run's own state (epoch, log, best score), JSON.
    pub state_json: Vec<u8>,
    /// The model's weights (burn's binary record).
    pub model: Vec<u8>,
    /// The optimiser's state (burn's binary record).
    pub optim: Vec<u8>,
}

/// Writes the blocks to `path` atomically.
pub fn write(path: &Path, blocks: &CheckpointBlocks) -> Result<()> {
    let mut out =
        Vec::with_capacity(32 + blocks.state_json.len() + blocks.model.len() + blocks.optim.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
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
    if version != VERSION {
        return Err(bad(&format!(
            "checkpoint format version {version}, this glandseg reads {VERSION}"
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
    let record = if bytes.len() <= MIB {
        decode::<{ 16 * MIB }, B, R>(bytes)
    } else if bytes.len() <= 16 * MIB {
        decode::<{ 256 * MIB }, B, R>(bytes)
    } else if bytes.len() <= 256 * MIB {
        decode::<{ 4096 * MIB }, B, R>(bytes)
    } else {
        decode::<{ 65536 * MIB }, B, R>(bytes)
    }?;
    // Building tensors from the decoded values asserts that shapes and lengths agree.
    glandseg_core::panics::quietly(|| R::from_item(record.item, device))
}

/// The model's weights as a checkpoint's model block.
pub fn model_to_bytes<B: Backend>(model: &UNet<B>) -> Result<Vec<u8>> {
    Recorder::<B>::record(&recorder(), model.clone().into_record(), ())
        .map_err(|e| ModelError::Input(format!("serialising the model: {e}")))
}

/// Loads weights into a freshly built network of the same configuration.
pub fn model_from_bytes<B: Backend>(
    model: UNet<B>,
    bytes: Vec<u8>,
    device: &B::Device,
    path: &Path,
) -> Result<UNet<B>> {
    let bad = |msg: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("weights do not fit the planned network: {msg}"),
    };
    let record =
        load_record::<B, glandseg_net::model::UNetRecord<B>>(&bytes, device).map_err(bad)?;
    // burn asserts that the record fits the module (a panic on a damaged block).
    glandseg_core::panics::quietly(|| model.load_record(record)).map_err(bad)
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
        device,
        path,
    )?))
}
