//! Times a full VAE decode (the chunk loop, one latent frame per call) on random latents and
//! prints one JSON line: `vae_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH [--vae-tiling]` (latent
//! sizes; `--vae-tiling`: diffusers' 256-pixel tiles every 192, warm-up and timed decode). On
//! CUDA the line carries the arena's statistics after the warm-up, after the decode and after each
//! of the first latent frames of one more (untimed) decode.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use skyreels_runtime::engine::Engine;
use skyreels_runtime::loaded_libraries::ProcessReport;
use skyreels_runtime::noise::NoiseSource;
use skyreels_runtime::session::Backend;
use skyreels_runtime::vae::{DecodeState, VaeDecoder};
use skyreels_runtime::vae_tiling::{VaeTiling, decode_tiled};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (args, tiling) = match args.split_last() {
        Some((last, rest)) if last == "--vae-tiling" => (rest, Some(VaeTiling::DIFFUSERS)),
        _ => (args.as_slice(), None),
    };
    let [_, dir, backend, frames, height, width] = args else {
        bail!("usage: vae_bench ENGINE_DIR cpu|cuda FRAMES HEIGHT WIDTH [--vae-tiling]");
    };
    let backend = match backend.as_str() {
        "cpu" => Backend::Cpu { threads: 0 },
        "cuda" => Backend::Cuda { device: 0 },
        other => bail!("unknown backend {other}"),
    };
    let (frames, height, width): (usize, usize, usize) =
        (frames.parse()?, height.parse()?, width.parse()?);
    let engine = Engine::open(&PathBuf::from(dir))?;
    let mut decoder = VaeDecoder::load(&engine, &backend)?;
    let mut noise = NoiseSource::seeded(0);
    let latents = noise.draw(&[1, decoder.config().z_dim, frames, height, width])?;
    let warm = Instant::now();
    let decode = |decoder: &mut VaeDecoder, latents: &_| match &tiling {
        Some(tiling) => decode_tiled(decoder, latents, tiling),
        None => decoder.decode(latents),
    };
    let warmup = noise.draw(&[1, decoder.config().z_dim, 2, height, width])?;
    let _ = decode(&mut decoder, &warmup)?;
    let warm_seconds = warm.elapsed().as_secs_f64();
    let arena_after_warmup = decoder.arena_stats()?;
    let started = Instant::now();
    let video = decode(&mut decoder, &latents)?;
    let seconds = started.elapsed().as_secs_f64();
    let arena_after_decode = decoder.arena_stats()?;
    // Untimed: the arena after each of the first latent frames of another video, to tell what
    // one chunk holds from what accumulates over chunks.
    let mut state = DecodeState::default();
    let mut arena_per_frame = Vec::new();
    for index in 0..frames.min(4) {
        let latent = noise.draw(&[1, decoder.config().z_dim, 1, height, width])?;
        decoder.decode_frame(&mut state, &latent)?;
        arena_per_frame
            .push(serde_json::json!({"latent_frame": index, "arena": decoder.arena_stats()?}));
    }
    #[expect(clippy::print_stdout, reason = "the benchmark's result line")]
    {
        println!(
            "{}",
            serde_json::json!({"bench": "vae_decode", "impl": "skyreels-onnxruntime", "latent_frames": frames, "video": video.shape, "vae_tiling": tiling,
                "warmup_s": warm_seconds, "decode_s": seconds, "finite": video.data.iter().all(|v| v.is_finite()),
                "arena_after_warmup": arena_after_warmup, "arena_after_decode": arena_after_decode, "arena_per_frame": arena_per_frame,
                "process": ProcessReport::collect(&backend)})
        );
    }
    Ok(())
}
