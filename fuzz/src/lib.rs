//! Fuzz target bodies, shared by the cargo-fuzz binaries (`fuzz_targets/`, nightly + libFuzzer)
//! and the seeded property tests (`tests/mutated_corpus.rs`, stable `cargo test`). A body may
//! return early on input it refuses; it must never panic, hang or allocate without bound.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use skyreels_contract::manifest::MANIFEST_FILE;
use skyreels_contract::{Manifest, ModelVariant, parse_yaml, recognise, to_yaml};
use skyreels_exporter::checkpoint::Checkpoint;

/// The `config.json` beside every scratch checkpoint.
pub const CONFIG_JSON: &str = r#"{"num_heads": 1}"#;

thread_local! {
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Writes `data` to `name` in a per-thread scratch directory and returns its path.
fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let directory = scratch.get_or_insert_with(|| {
            let directory = tempfile::tempdir().expect("a temporary directory");
            // Real configs name the head count; without it the exporter assumes head_dim 128,
            // which the seeds (8 wide) do not have.
            std::fs::write(directory.path().join("config.json"), CONFIG_JSON).expect("writing config.json");
            directory
        });
        let path = directory.path().join(name);
        std::fs::write(&path, data).expect("writing the scratch file");
        path
    })
}

/// Opens `path` as a checkpoint and touches every tensor's bytes, then derives a DiT
/// architecture from it, as `skyreels-export` does.
fn read_checkpoint(path: &Path) {
    if let Ok(checkpoint) = Checkpoint::open(path) {
        let names: Vec<String> = checkpoint.names().map(str::to_string).collect();
        for name in &names {
            let tensor = checkpoint.get(name).expect("a listed tensor");
            let bytes = checkpoint.bytes(tensor);
            assert_eq!(bytes.len() as u64, tensor.length, "`{name}`: byte range and length disagree");
            let elements: u128 = tensor.shape.iter().map(|&d| d as u128).product();
            assert_eq!(elements * tensor.dtype.size() as u128, bytes.len() as u128, "`{name}`: shape {:?} does not fit its bytes", tensor.shape);
            let _ = checkpoint.to_f32(tensor);
        }
    }
    let _ = skyreels_exporter::dit::inspect(path);
}

/// The safetensors reader: `Checkpoint::open` on a `.safetensors` file.
pub fn checkpoint(data: &[u8]) {
    read_checkpoint(&scratch_file("model.safetensors", data));
}

/// The `torch.save` reader (zip directory and pickle interpreter): `Checkpoint::open` on a `.pth` file.
pub fn pth(data: &[u8]) {
    read_checkpoint(&scratch_file("model.pth", data));
}

fn builtin_variants() -> &'static [ModelVariant] {
    static VARIANTS: OnceLock<Vec<ModelVariant>> = OnceLock::new();
    VARIANTS.get_or_init(ModelVariant::builtin)
}

/// `configs/models/*.yaml`: parse, check, recognise against the released variants, and render
/// back to the same value.
pub fn model_variant(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(variant) = parse_yaml::<ModelVariant>(text, Path::new("fuzz.yaml"), "model variant config") else { return };
    if variant.validate().is_err() {
        return;
    }
    let _ = recognise(builtin_variants(), &variant.architecture, variant.resolution, Some(variant.pipeline));
    let _ = variant.teacache.coefficients(true);
    let rendered = to_yaml(&variant).expect("a parsed variant renders");
    let again: ModelVariant = parse_yaml(&rendered, Path::new("fuzz.yaml"), "model variant config").expect("rendered YAML parses");
    assert_eq!(to_yaml(&again).expect("renders"), rendered, "the variant does not survive a round trip");
}

/// `ENGINE_DIR/manifest.yaml`: `Manifest::load` from a directory, then the architecture checks the
/// exporter and runtime rely on, and a round trip.
pub fn manifest(data: &[u8]) {
    let path = scratch_file(MANIFEST_FILE, data);
    let directory = path.parent().expect("a scratch directory");
    let Ok(manifest) = Manifest::load(directory) else { return };
    if let Some(dit) = &manifest.dit {
        if dit.config.validate().is_ok() {
            let _ = dit.config.rope_split();
        }
        let _ = recognise(builtin_variants(), &dit.config, skyreels_contract::Resolution::P540, None);
    }
    let rendered = to_yaml(&manifest).expect("a parsed manifest renders");
    let again: Manifest = parse_yaml(&rendered, &path, "engine manifest").expect("rendered YAML parses");
    assert_eq!(to_yaml(&again).expect("renders"), rendered, "the manifest does not survive a round trip");
}

/// The runtime's MP4 reader (`--video`, `vae-encode --video`): demux, check the sample tables,
/// decode every frame with OpenH264; a decoded clip must fill its frames.
pub fn mp4(data: &[u8]) {
    let path = scratch_file("clip.mp4", data);
    if let Ok(video) = skyreels_runtime::output::read_mp4(&path) {
        assert_eq!(video.pixels().len(), video.num_frames() * video.width() * video.height() * 3, "frames do not fill the clip");
    }
}

/// The runtime's safetensors tensor readers: pre-drawn noise (`--noise`, every tensor, then draws
/// in order), latents (`vae-decode --latents`, work-directory windows) and videos (`--video`).
pub fn tensor_file(data: &[u8]) {
    let path = scratch_file("tensors.safetensors", data);
    if let Ok(mut noise) = skyreels_runtime::noise::NoiseSource::from_file(&path) {
        let mut shapes = Vec::new();
        for (name, tensor) in skyreels_runtime::tensor_file::read_f32_tensors(&path).expect("read once, read again") {
            assert!(tensor.data.iter().all(|value| value.is_finite()), "`{name}`: a non-finite value was accepted");
            if name.parse::<usize>().is_ok_and(|index| index == shapes.len()) {
                shapes.push(tensor.shape);
            }
        }
        for shape in &shapes {
            noise.draw(shape).expect("a draw of the recorded shape");
        }
    }
    for (name, expected) in [("latents", [None; 5]), ("video", [Some(1), Some(3), None, None, None])] {
        if let Ok(tensor) = skyreels_runtime::output::read_tensor(&path, name, &expected) {
            assert_eq!(tensor.shape.iter().product::<usize>(), tensor.data.len(), "`{name}`: shape and data disagree");
            assert!(tensor.data.iter().all(|value| value.is_finite()), "`{name}`: a non-finite value was accepted");
        }
    }
}
