//! The README's tour on model folders laid out like the releases: an original SkyReels/Wan folder
//! (sharded DiT, `Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth` + `google/umt5-xxl/`) and a
//! diffusers snapshot (`model_index.json`, `transformer/`, `vae/`, `text_encoder/`, `tokenizer/`),
//! built from the tiny seeded fixtures, exported with `skyreels-export` and run with `skyreels
//! generate`, both real binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use skyreels_runtime::output::read_mp4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// `skyreels-export`, built beside `skyreels` by `cargo test --workspace`.
fn exporter() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_skyreels")).with_file_name("skyreels-export");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p skyreels-exporter` (cargo test --workspace does)",
        path.display()
    );
    path
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).expect("mkdir");
    for entry in fs_err::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        fs_err::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn original_folder(root: &Path) -> PathBuf {
    let folder = root.join("SkyReels-V2-DF-tiny");
    copy_dir(&fixtures().join("dit/df/original"), &folder);
    fs_err::copy(
        fixtures().join("vae/pth/Wan2.1_VAE.pth"),
        folder.join("Wan2.1_VAE.pth"),
    )
    .expect("vae");
    fs_err::copy(
        fixtures().join("text/wan_pth/model.pth"),
        folder.join("models_t5_umt5-xxl-enc-bf16.pth"),
    )
    .expect("t5");
    fs_err::create_dir_all(folder.join("google/umt5-xxl")).expect("mkdir");
    fs_err::copy(
        fixtures().join("text/tokenizer.json"),
        folder.join("google/umt5-xxl/tokenizer.json"),
    )
    .expect("tokenizer");
    folder
}

fn diffusers_snapshot(root: &Path) -> PathBuf {
    let folder = root.join("SkyReels-V2-DF-tiny-Diffusers");
    copy_dir(
        &fixtures().join("dit/df/diffusers"),
        &folder.join("transformer"),
    );
    copy_dir(&fixtures().join("vae/diffusers"), &folder.join("vae"));
    copy_dir(&fixtures().join("text/hf"), &folder.join("text_encoder"));
    fs_err::create_dir_all(folder.join("tokenizer")).expect("mkdir");
    fs_err::copy(
        fixtures().join("text/tokenizer.json"),
        folder.join("tokenizer/tokenizer.json"),
    )
    .expect("tokenizer");
    fs_err::write(
        folder.join("model_index.json"),
        r#"{"_class_name": "SkyReelsV2DiffusionForcingPipeline"}"#,
    )
    .expect("index");
    folder
}

#[test]
fn release_shaped_folders_export_every_component_and_generate() {
    let root = tempfile::tempdir().expect("tempdir");
    for (name, folder) in [
        ("original", original_folder(root.path())),
        ("diffusers", diffusers_snapshot(root.path())),
    ] {
        let engine = root.path().join(format!("engine-{name}"));
        let output = Command::new(exporter())
            .arg(&folder)
            .arg("--out")
            .arg(&engine)
            .args(["--target", "cpu"])
            .output()
            .expect("export");
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let manifest = skyreels_contract::Manifest::load(&engine).expect("manifest");
        assert!(
            manifest.dit.is_some() && manifest.vae.is_some() && manifest.text_encoder.is_some(),
            "{name}: a component is missing"
        );

        let video = root.path().join(format!("{name}.mp4"));
        let output = Command::new(env!("CARGO_BIN_EXE_skyreels"))
            .args([
                "generate",
                "--prompt",
                "a fox in the snow",
                "--num-frames",
                "5",
                "--height",
                "32",
                "--width",
                "48",
                "--steps",
                "2",
                "--engines",
            ])
            .arg(&engine)
            .arg("--out")
            .arg(&video)
            .output()
            .expect("generate");
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(read_mp4(&video).expect("mp4").num_frames(), 5, "{name}");
    }
}
