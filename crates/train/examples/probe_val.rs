use burn::tensor::{Tensor, TensorData};
use glandseg_train::{AugmentConfig, Cache, ModelFolder, PatchSampler};
use rand::SeedableRng;
type B = glandseg_net::Cpu;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let dev = Default::default();
    let folder = ModelFolder::open(std::path::Path::new(&a[1])).unwrap();
    let plan = folder.plan.clone();
    let net = folder.load_network::<B>("all", &dev).unwrap();
    let cache = Cache::open(std::path::Path::new(&a[2])).unwrap();
    let p = plan.patch_size;
    let s = PatchSampler::for_plan(&plan, p, AugmentConfig::none());
    for ci in 0..2 {
        let case = cache.open_case(ci).unwrap();
        let lr = case.info.geometry.axis_along(0).0;
        for l in 1u8..(plan.labels.num_classes() as u8) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(l as u64);
            let pa = s.sample_at_label(&case, l, lr, &mut rng).unwrap();
            let x = Tensor::<B, 5>::from_data(TensorData::new(pa.image, [1, 2, p[2], p[1], p[0]]), &dev);
            let logits = net.forward(x);
            let c = plan.labels.num_classes();
            let lv: Vec<f32> = logits.clone().into_data().iter::<f32>().collect();
            let sp = p[0] * p[1] * p[2];
            let mut at = vec![0f64; c];
            let mut all = vec![0f64; c];
            let mut nat = 0.0;
            for v in 0..sp {
                for k in 0..c {
                    all[k] += lv[k * sp + v] as f64 / sp as f64;
                    if pa.labels[v] == l { at[k] += lv[k * sp + v] as f64; }
                }
                if pa.labels[v] == l { nat += 1.0; }
            }
            println!("mean logits at gt {:?} overall {:?}", at.iter().map(|x| (x / nat * 100.0).round() / 100.0).collect::<Vec<_>>(), all.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>());
            let pred: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
            let mut conf = [0usize; 7];
            let mut tot = [0usize; 7];
            let mut gtc = [0usize; 7];
            for (pr, &g) in pred.iter().zip(&pa.labels) {
                if g == l { conf[*pr as usize] += 1; }
                tot[*pr as usize] += 1;
                gtc[g as usize] += 1;
            }
            println!("case {ci} label {l}: at gt pred {conf:?}; pred totals {tot:?}; gt totals {gtc:?}");
        }
    }
}
