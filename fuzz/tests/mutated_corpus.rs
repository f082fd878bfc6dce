//! The fuzz targets as stable property tests: each runs its body over the committed seeds
//! (`seeds/<target>/`) and a fixed number of seeded mutations of them (`SKYREELS_FUZZ_ITERATIONS`, default 3000). An
//! input that panics is saved under `artifacts/<target>/` and fails the test with its path.

use std::path::{Path, PathBuf};

/// SplitMix64: a tiny deterministic generator, so a failure reproduces from its iteration number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Values that tend to break length and offset arithmetic.
const INTERESTING: [u64; 12] = [0, 1, 2, 7, 8, 255, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 32, u64::MAX / 2, u64::MAX - 7, u64::MAX];

/// Text fragments for the YAML targets: types, structure, and numbers at the edges.
const TOKENS: [&str; 16] =
    ["0", "-1", "1e308", ".nan", "-.inf", "null", "[", "]", "{", "}", ": ", "\n  ", "- ", "'", "&a", "*a"];

fn mutate(rng: &mut Rng, seed: &[u8], text: bool) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(if text { 8 } else { 7 }) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => data.truncate(at),
            3 if !data.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                data.drain(at.min(end)..end);
            }
            4 => {
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let end = (at + width).min(data.len());
                let n = end - at.min(end);
                data[at.min(end)..end].copy_from_slice(&value[..n]);
            }
            5 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(128)).min(data.len());
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            6 if !data.is_empty() => {
                let i = rng.below(data.len());
                let digit = b"0123456789"[rng.below(10)];
                if data[i].is_ascii_digit() {
                    data[i] = digit;
                } else {
                    data.insert(at, digit);
                }
            }
            7 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            _ => {}
        }
    }
    data
}

fn fuzz_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let directory = fuzz_directory().join("seeds").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&directory)
        .unwrap_or_else(|e| panic!("{}: {e}", directory.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", directory.display());
    seeds
}

fn iterations() -> usize {
    std::env::var("SKYREELS_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

/// Runs `body` on every seed, then on `iterations()` mutations; saves and reports a panicking input.
fn run(target: &str, body: fn(&[u8]), text: bool) {
    let seeds = seeds(target);
    let check = |label: &str, input: &[u8]| {
        if std::panic::catch_unwind(|| body(input)).is_err() {
            let directory = fuzz_directory().join("artifacts").join(target);
            std::fs::create_dir_all(&directory).unwrap();
            let path = directory.join(format!("crash-{label}"));
            std::fs::write(&path, input).unwrap();
            panic!("{target}: input {label} panics; saved to {} (replay: cargo fuzz run --features libfuzzer {target} {})", path.display(), path.display());
        }
    };
    for (name, seed) in &seeds {
        check(&format!("seed-{name}"), seed);
    }
    for iteration in 0..iterations() {
        let mut rng = Rng(iteration as u64 ^ 0x5EED_0000);
        let (_, seed) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, text);
        check(&format!("iteration-{iteration}"), &input);
    }
}

#[test]
fn the_checkpoint_seeds_are_valid() {
    for target in ["checkpoint", "pth"] {
        for (name, seed) in seeds(target).into_iter().filter(|(name, _)| !name.starts_with("regression_")) {
            let scratch = tempfile::tempdir().unwrap();
            let path = scratch.path().join(&name);
            std::fs::write(&path, seed).unwrap();
            let checkpoint = skyreels_exporter::checkpoint::Checkpoint::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(checkpoint.names().count() >= 1, "{name}");
        }
    }
    for fixture in ["clip/wan_pth/model.pth", "text/wan_pth/model.pth", "vae/pth/Wan2.1_VAE.pth"] {
        let path = fuzz_directory().join("../tests/fixtures").join(fixture);
        let checkpoint = skyreels_exporter::checkpoint::Checkpoint::open(&path).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert!(checkpoint.names().count() >= 10, "{fixture}");
    }
    let dit = seeds("checkpoint").into_iter().find(|(name, _)| name.starts_with("dit_")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("model.safetensors"), dit.1).unwrap();
    std::fs::write(scratch.path().join("config.json"), skyreels_fuzz::CONFIG_JSON).unwrap();
    skyreels_exporter::dit::inspect(&scratch.path().join("model.safetensors")).unwrap();
}

#[test]
fn the_regression_seeds_are_refused() {
    for (name, seed) in seeds("pth").into_iter().filter(|(name, _)| name.starts_with("regression_")) {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join(&name);
        std::fs::write(&path, seed).unwrap();
        let error = skyreels_exporter::checkpoint::Checkpoint::open(&path).err().unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(error.to_string().contains(&name), "{name}: {error}");
    }
    for (name, seed) in seeds("manifest").into_iter().filter(|(name, _)| name.starts_with("regression_")) {
        let scratch = tempfile::tempdir().unwrap();
        std::fs::write(scratch.path().join("manifest.yaml"), seed).unwrap();
        let error = skyreels_contract::Manifest::load(scratch.path()).err().unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(error.to_string().contains("no control characters"), "{name}: {error}");
    }
}

#[test]
fn checkpoint_reader_survives_mutated_safetensors() {
    run("checkpoint", skyreels_fuzz::checkpoint, false);
}

#[test]
fn pth_reader_survives_mutated_torch_save_files() {
    run("pth", skyreels_fuzz::pth, false);
}

#[test]
fn model_variant_configs_survive_mutation() {
    run("model_variant", skyreels_fuzz::model_variant, true);
}

#[test]
fn manifests_survive_mutation() {
    run("manifest", skyreels_fuzz::manifest, true);
}

#[test]
fn mp4_reader_survives_mutated_videos() {
    run("mp4", skyreels_fuzz::mp4, false);
}

#[test]
fn tensor_file_readers_survive_mutated_safetensors() {
    run("tensor_file", skyreels_fuzz::tensor_file, false);
}

#[test]
fn the_runtime_seeds_are_valid() {
    for (name, seed) in seeds("mp4").into_iter().filter(|(name, _)| !name.starts_with("regression_")) {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join(&name);
        std::fs::write(&path, seed).unwrap();
        let video = skyreels_runtime::output::read_mp4(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(video.num_frames() >= 1, "{name}");
    }
    for (name, seed) in seeds("tensor_file").into_iter().filter(|(name, _)| !name.starts_with("regression_")) {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join(&name);
        std::fs::write(&path, seed).unwrap();
        let tensors = skyreels_runtime::tensor_file::read_f32_tensors(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!tensors.is_empty(), "{name}");
    }
}

/// Regenerates the MP4 and tensor-file seeds (`cargo test -- --ignored`).
#[test]
#[ignore = "rewrites fuzz/seeds"]
fn write_runtime_seed_corpus() {
    use skyreels_runtime::Tensor;
    use skyreels_runtime::output::{Mp4Options, Video, save_latents, write_mp4};
    let corpus = fuzz_directory().join("seeds");
    std::fs::create_dir_all(corpus.join("mp4")).unwrap();
    std::fs::create_dir_all(corpus.join("tensor_file")).unwrap();
    let (width, height, frames) = (16, 16, 3);
    let mut pixels = Vec::new();
    for t in 0..frames {
        for y in 0..height {
            for x in 0..width {
                pixels.extend([(x * 16) as u8, (y * 16) as u8, (t * 80) as u8]);
            }
        }
    }
    let video = Video::new(width, height, pixels).unwrap();
    let options = Mp4Options { keyframe_interval: 2, ..Mp4Options::default() };
    write_mp4(&video, &corpus.join("mp4").join("gradient_16x16_3_frames.mp4"), &options).unwrap();
    let ramp = |count: usize| (0..count).map(|i| i as f32 / 8.0 - 1.0).collect::<Vec<f32>>();
    let noise = [Tensor::new(vec![1, 16, 1, 2, 2], ramp(64)).unwrap(), Tensor::new(vec![2, 3], ramp(6)).unwrap()];
    save_latents(&corpus.join("tensor_file").join("noise_two_draws.safetensors"), [("0", &noise[0]), ("1", &noise[1])]).unwrap();
    let latents = Tensor::new(vec![1, 16, 2, 2, 2], ramp(128)).unwrap();
    save_latents(&corpus.join("tensor_file").join("latents.safetensors"), [("latents", &latents)]).unwrap();
    let clip = Tensor::new(vec![1, 3, 1, 2, 2], ramp(12)).unwrap();
    save_latents(&corpus.join("tensor_file").join("video.safetensors"), [("video", &clip)]).unwrap();
}

/// Regenerates the safetensors, variant and manifest seeds (`cargo test -- --ignored`); the `.pth`
/// seeds come from `make_seeds.py`.
#[test]
#[ignore = "rewrites fuzz/seeds"]
fn write_seed_corpus() {
    use skyreels_exporter::tiny::{self, StorageDtype};
    let corpus = fuzz_directory().join("seeds");
    let scratch = tempfile::tempdir().unwrap();
    let mut config = tiny::tiny_dit_config();
    (config.dim, config.ffn_dim, config.num_heads, config.num_layers, config.freq_dim, config.text_dim) = (8, 16, 1, 1, 8, 8);
    tiny::write_random_dit(scratch.path(), &config, StorageDtype::BF16, 0).unwrap();
    std::fs::copy(scratch.path().join("model.safetensors"), corpus.join("checkpoint").join("dit_8_wide_bf16.safetensors")).unwrap();
    let mut small = b"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[8,12]},\"__metadata__\":{\"format\":\"pt\"}}".to_vec();
    while small.len() % 8 != 0 {
        small.push(b' ');
    }
    let mut file = (small.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&small);
    file.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64, 0, 60, 0, 192]);
    std::fs::write(corpus.join("checkpoint").join("two_tensors.safetensors"), file).unwrap();
    for entry in std::fs::read_dir(fuzz_directory().join("../configs/models")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, corpus.join("model_variant").join(path.file_name().unwrap())).unwrap();
    }
    let dit = skyreels_exporter::dit::inspect(&scratch.path().join("model.safetensors")).unwrap().2;
    let manifest = skyreels_contract::Manifest {
        format_version: skyreels_contract::manifest::FORMAT_VERSION,
        producer: "seed".into(),
        target: skyreels_contract::Target::Cpu,
        precision: skyreels_contract::Precision::Fp32,
        attention: skyreels_contract::Attention::MatMul,
        dit: Some(skyreels_contract::manifest::DitComponent {
            config: dit,
            graphs: vec![skyreels_contract::GraphEntry {
                name: "embed".into(),
                file: "dit_embed.onnx".into(),
                inputs: vec![skyreels_contract::TensorSpec { name: "latents".into(), dtype: "float32".into(), shape: vec!["batch".into(), "16".into()] }],
                outputs: vec![],
            }],
            layers: Vec::new(),
            teacache: Vec::new(),
        }),
        vae: None,
        text_encoder: None,
        image_encoder: None,
        build: None,
        source: None,
    };
    std::fs::write(corpus.join("manifest").join("small_dit.yaml"), skyreels_contract::to_yaml(&manifest).unwrap()).unwrap();
}
