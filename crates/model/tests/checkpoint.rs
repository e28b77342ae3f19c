//! The checkpoint's model block: glandseg's own weight format (2) round-trips the weights
//! and the parameter ids, format-1 files (burn's record) are still read, and damage is an
//! error naming the file.

use burn::module::Module;
use glandseg_model::checkpoint::{self, CheckpointBlocks};
use glandseg_net::{Cpu, UNet, UNetConfig};
use glandseg_plan::Preset;

fn network(seed: u64) -> UNet<Cpu> {
    use burn::tensor::backend::Backend;
    let device = Default::default();
    Cpu::seed(&device, seed);
    UNetConfig {
        in_channels: 2,
        num_classes: 3,
        stages: glandseg_plan::plan::topology([16, 16, 16], [1.0; 3], Preset::Tiny),
    }
    .init::<Cpu>(&device)
}

fn ids(model: &UNet<Cpu>) -> Vec<u64> {
    struct Ids(Vec<u64>);
    impl burn::module::ModuleVisitor<Cpu> for Ids {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<Cpu, D>>,
        ) {
            self.0.push(param.id.val());
        }
    }
    let mut v = Ids(Vec::new());
    model.visit(&mut v);
    v.0
}

fn load(bytes: Vec<u8>, version: u32) -> Result<UNet<Cpu>, String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.ckpt");
    let blocks = CheckpointBlocks {
        version,
        ..CheckpointBlocks::new(b"{}".to_vec(), bytes, Vec::new())
    };
    checkpoint::write(&p, &blocks).unwrap();
    let read = checkpoint::read(&p).unwrap();
    assert_eq!(read.version, version);
    checkpoint::model_from_bytes(
        network(99),
        read.model,
        read.version,
        &Default::default(),
        &p,
    )
    .map_err(|e| e.to_string())
}

#[test]
fn weights_and_ids_round_trip_in_both_formats() {
    let trained = network(1);
    let want = checkpoint::weight_values(&trained);
    assert!(want.len() > 1000);
    let v2 = load(
        checkpoint::model_to_bytes(&trained).unwrap(),
        checkpoint::VERSION,
    )
    .unwrap();
    assert!(checkpoint::weight_values(&v2) == want);
    // The optimiser's record is keyed by these ids: a resumed run needs them back.
    assert_eq!(ids(&v2), ids(&trained));
    assert_ne!(ids(&network(99)), ids(&trained));

    use burn::record::Recorder;
    let v1 = Recorder::<Cpu>::record(&checkpoint::recorder(), trained.clone().into_record(), ())
        .unwrap();
    let v1 = load(v1, 1).unwrap();
    assert!(checkpoint::weight_values(&v1) == want);
    assert_eq!(ids(&v1), ids(&trained));
}

#[test]
fn a_damaged_model_block_is_an_error() {
    let good = checkpoint::model_to_bytes(&network(1)).unwrap();
    // The first parameter's first dimension (after magic, count, id and rank) made huge:
    // the network's own dimensions decide what is read, so nothing is allocated from it.
    let mut huge = good.clone();
    huge[21..25].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = load(huge, checkpoint::VERSION).err().unwrap();
    assert!(
        e.contains("c.ckpt") && e.contains("parameter 0 has size"),
        "{e}"
    );

    let mut short = good.clone();
    short.truncate(good.len() - 3);
    let e = load(short, checkpoint::VERSION).err().unwrap();
    assert!(e.contains("ends inside parameter"), "{e}");

    let mut long = good.clone();
    long.extend_from_slice(&[0; 4]);
    let e = load(long, checkpoint::VERSION).err().unwrap();
    assert!(e.contains("4 bytes left over"), "{e}");

    let e = load(good[8..].to_vec(), checkpoint::VERSION).err().unwrap();
    assert!(e.contains("magic"), "{e}");

    // Format 1: a block of the wrong length never reaches burn's decoder.
    let e = load(good, 1).err().unwrap();
    assert!(e.contains("planned network's record has"), "{e}");
}
