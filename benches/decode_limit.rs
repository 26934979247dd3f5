//! The decode limit of this machine on a folder of JPEGs: every file decoded at full size on
//! ONE thread by `georag::decode::decode_rgb` (libjpeg-turbo, ISLOW, fancy upsampling), each
//! repeated `--reps` times after a warm-up pass; the per-image time is the mean over the files
//! of each file's fastest repeat. limit = cores / per-image time, the images/s that no ingest
//! doing a full decode check can beat with that many cores. For comparison the same files are
//! also decoded by zune-jpeg through the `image` crate (georag's previous decoder).
//! Run: `cargo bench --bench decode_limit -- DIR [--reps N]` (benches/decode_limit.sh does it).

use georag::decode::{DEFAULT_MAX_PIXELS, decode_rgb};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let dir = args.iter().find(|a| !a.starts_with('-')).expect("usage: decode_limit DIR [--reps N]");
    let reps: usize = args.iter().position(|a| a == "--reps").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(5);
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| {
        p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
    }).collect();
    files.sort();
    let data: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!data.is_empty(), "no JPEGs in {dir}");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let megapixels: f64 = data.iter().map(|b| {
        let i = georag::decode::inspect(b).unwrap();
        i.width as f64 * i.height as f64 / 1e6
    }).sum();
    let time = |f: &dyn Fn(&[u8])| -> f64 {
        for b in &data {
            f(b); // warm-up
        }
        let mut total = 0.0;
        for b in &data {
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t = Instant::now();
                f(b);
                best = best.min(t.elapsed().as_secs_f64());
            }
            total += best;
        }
        total / data.len() as f64
    };
    let turbo = time(&|b| {
        std::hint::black_box(decode_rgb(b, DEFAULT_MAX_PIXELS).unwrap());
    });
    let zune = time(&|b| {
        std::hint::black_box(image::load_from_memory_with_format(b, image::ImageFormat::Jpeg).unwrap().into_rgb8());
    });
    println!("files: {} JPEGs, {:.2} megapixels on average, {:.0} KB on average", data.len(), megapixels / data.len() as f64,
             data.iter().map(|b| b.len()).sum::<usize>() as f64 / data.len() as f64 / 1024.0);
    println!("single-core full decode, libjpeg-turbo (decode_rgb): {:.3} ms/image", turbo * 1e3);
    println!("single-core full decode, zune-jpeg (image crate):    {:.3} ms/image ({:.2}x libjpeg-turbo)", zune * 1e3, zune / turbo);
    println!("decode limit: {cores} cores / {:.3} ms = {:.0} images/s", turbo * 1e3, cores as f64 / turbo);
    println!("LIMIT_IMAGES_PER_S={:.1}", cores as f64 / turbo);
}
