fn main() {
    for c in [4usize, 7] {
        let spatial = 1000;
        let n = 2;
        let logits = vec![0f32; n * c * spatial];
        let labels: Vec<u8> = (0..n * spatial).map(|v| if v % 10 == 0 { (c - 1) as u8 } else if v % 10 == 1 { 1 } else { 0 }).collect();
        let r = glandseg_kernels::loss::dice_ce(&logits, &labels, n, c, spatial);
        // gradient at voxel 0 (label c-1) for each class
        let g: Vec<f32> = (0..c).map(|k| r.grad[k * spatial]).collect();
        let g1: Vec<f32> = (0..c).map(|k| r.grad[k * spatial + 1]).collect();
        println!("c={c} grad at last-class voxel {g:?}\n      at class-1 voxel {g1:?}");
    }
}
