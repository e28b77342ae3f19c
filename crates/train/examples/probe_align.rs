use glandseg_train::trainer::make_batch;
use glandseg_train::{AugmentConfig, Cache, PatchSampler};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let plan: glandseg_plan::Plan = serde_json::from_slice(&std::fs::read(&a[2]).unwrap()).unwrap();
    let cache = Cache::open(std::path::Path::new(&a[1])).unwrap();
    let cases: Vec<_> = (0..cache.cases.len()).map(|i| cache.open_case(i).unwrap()).collect();
    let c = plan.labels.num_classes();
    for aug in [false, true] {
        let s = PatchSampler::for_plan(&plan, plan.patch_size, if aug { AugmentConfig::default() } else { AugmentConfig::none() });
        let vox = plan.patch_size.iter().product::<usize>();
        let mut sum = vec![[0f64; 2]; c];
        let mut cnt = vec![0f64; c];
        for t in 0..60u64 {
            let b = make_batch(&cases, &s, 2, 1.0, 1, "all", t);
            for sidx in 0..2 {
                for v in 0..vox {
                    let l = b.labels[sidx * vox + v] as usize;
                    for ch in 0..2 { sum[l][ch] += b.image[(sidx * 2 + ch) * vox + v] as f64; }
                    cnt[l] += 1.0;
                }
            }
        }
        for l in 0..c { println!("aug {aug} class {l}: n {} mean CT {:.2} PET {:.2}", cnt[l], sum[l][0] / cnt[l], sum[l][1] / cnt[l]); }
    }
}
