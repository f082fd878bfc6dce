//! Times the VAE decoder chunk loop on random latents and prints time per latent frame:
//! `cargo run --release -p skyreels-runtime --example vae_decode -- ENGINE_DIR FRAMES HEIGHT WIDTH [THREADS]`
//! (HEIGHT and WIDTH in latent pixels). Run it under `/usr/bin/time -v` for the peak memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use skyreels_runtime::engine::Engine;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::session::Backend;
use skyreels_runtime::vae::{DecodeState, VaeDecoder};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, frames, height, width, threads) = match args.as_slice() {
        [_, dir, f, h, w] => (dir, f, h, w, "0"),
        [_, dir, f, h, w, t] => (dir, f, h, w, t.as_str()),
        _ => bail!("usage: vae_decode ENGINE_DIR FRAMES HEIGHT WIDTH [THREADS]"),
    };
    let (frames, height, width): (usize, usize, usize) =
        (frames.parse()?, height.parse()?, width.parse()?);
    let engine = Engine::open(&PathBuf::from(dir))?;
    let started = Instant::now();
    let mut decoder = VaeDecoder::load(
        &engine,
        &Backend::Cpu {
            threads: threads.parse()?,
        },
    )
    .context("loading the decoder")?;
    eprintln!("loaded in {:.2}s", started.elapsed().as_secs_f64());
    let z_dim = decoder.config().z_dim;
    let mut noise = NoiseSource::seeded(0);
    let mut state = DecodeState::default();
    let mut checksum = 0.0f64;
    for index in 0..frames {
        let latent = noise.draw(&[1, z_dim, 1, height, width])?;
        let started = Instant::now();
        let video = decoder.decode_frame(&mut state, &latent)?;
        checksum += video.data.iter().map(|v| *v as f64).sum::<f64>();
        eprintln!(
            "latent frame {index}: {:?} in {:.2}s",
            video.shape,
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!("checksum {checksum:.3}");
    Ok(())
}
