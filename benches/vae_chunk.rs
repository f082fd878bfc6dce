//! The tiny VAE decoder on ONNX Runtime CPU: one `decode_chunk` call (a latent frame after the
//! first, `[1, 16, 1, 8, 12]` → 4 video frames `[1, 3, 4, 64, 96]`) with its causal caches warm.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use skyreels_benches::TinyEngine;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::session::Backend;
use skyreels_runtime::vae::{DecodeState, VaeDecoder};

fn vae_chunk(c: &mut Criterion) {
    let tiny = TinyEngine::export().expect("exporting the tiny engine");
    let engine = Engine::open(&tiny.dir()).expect("opening the tiny engine");
    let mut decoder =
        VaeDecoder::load(&engine, &Backend::Cpu { threads: 0 }).expect("loading the VAE decoder");
    let mut noise = NoiseSource::seeded(0);
    let first = noise.draw(&[1, 16, 1, 8, 12]).expect("noise");
    let latent = noise.draw(&[1, 16, 1, 8, 12]).expect("noise");
    let mut state = DecodeState::default();
    assert_eq!(
        decoder
            .decode_frame(&mut state, &first)
            .expect("first frame")
            .shape,
        [1, 3, 1, 64, 96]
    );
    assert_eq!(
        decoder
            .decode_frame(&mut state, &latent)
            .expect("second frame")
            .shape,
        [1, 3, 4, 64, 96]
    );
    c.bench_function("tiny_vae_decode_chunk_8x12", |b| {
        b.iter(|| {
            decoder
                .decode_frame(&mut state, black_box(&latent))
                .expect("decode_chunk")
        })
    });
}

criterion_group!(benches, vae_chunk);
criterion_main!(benches);
