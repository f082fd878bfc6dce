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

const MODEL_ID: &str = "Skywork/SkyReels-V2-DF-tiny-Diffusers";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Moves `folder` into a Hugging Face cache at `hub` as `huggingface_hub` lays it out: every file
/// becomes a blob in `models--Org--Name/blobs/`, linked from `snapshots/<COMMIT>/` by a relative
/// symlink (`../../blobs/…`, one `../` more per subfolder), and `refs/main` names the commit.
/// Returns the snapshot folder.
fn into_hub_cache(folder: &Path, hub: &Path) -> PathBuf {
    let repository = hub.join(format!("models--{}", MODEL_ID.replace('/', "--")));
    let snapshot = repository.join("snapshots").join(COMMIT);
    fs_err::create_dir_all(repository.join("blobs")).expect("mkdir");
    fs_err::create_dir_all(repository.join("refs")).expect("mkdir");
    fs_err::write(repository.join("refs/main"), COMMIT).expect("ref");
    let mut folders = vec![PathBuf::new()];
    let mut blobs = 0;
    while let Some(relative) = folders.pop() {
        fs_err::create_dir_all(snapshot.join(&relative)).expect("mkdir");
        for entry in fs_err::read_dir(folder.join(&relative)).expect("read_dir") {
            let entry = entry.expect("entry");
            let name = relative.join(entry.file_name());
            if entry.path().is_dir() {
                folders.push(name);
                continue;
            }
            blobs += 1;
            let blob = format!("{blobs:064x}");
            fs_err::rename(entry.path(), repository.join("blobs").join(&blob)).expect("blob");
            let up = "../".repeat(name.components().count() + 1);
            std::os::unix::fs::symlink(format!("{up}blobs/{blob}"), snapshot.join(&name))
                .expect("symlink");
        }
    }
    fs_err::remove_dir_all(folder).expect("remove the original");
    snapshot
}

/// `skyreels-export` with the Hugging Face cache at `home/hub` (`HF_HOME`), offline.
fn export_command(home: &Path, checkpoint: &Path, engine: &Path) -> Command {
    let mut command = Command::new(exporter());
    command
        .env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .arg(checkpoint)
        .arg("--out")
        .arg(engine)
        .args(["--target", "cpu"]);
    command
}

fn generate_video(engine: &Path, video: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skyreels"))
        .args(["generate", "--prompt", "a fox in the snow"])
        .args([
            "--num-frames",
            "5",
            "--height",
            "32",
            "--width",
            "48",
            "--steps",
            "2",
        ])
        .arg("--engines")
        .arg(engine)
        .arg("--out")
        .arg(video)
        .output()
        .expect("generate")
}

/// Every file of `engine` is a plain file (no symlink), and the weights referenced in place are
/// hard links to the cache's blobs, not to the snapshot's symlinks.
fn assert_links_resolve_to_blobs(engine: &Path, blobs: &Path) {
    use std::os::unix::fs::MetadataExt;
    let blob_inodes: Vec<u64> = fs_err::read_dir(blobs)
        .expect("blobs")
        .map(|e| e.expect("entry").metadata().expect("metadata").ino())
        .collect();
    let mut linked = 0;
    for entry in fs_err::read_dir(engine).expect("engine") {
        let path = entry.expect("entry").path();
        let metadata = fs_err::symlink_metadata(&path).expect("metadata");
        assert!(metadata.is_file(), "{} is not a plain file", path.display());
        if blob_inodes.contains(&metadata.ino()) {
            linked += 1;
        }
    }
    assert!(
        linked >= 3,
        "the DiT, VAE and text encoder weights are referenced in place ({linked} blob links in {})",
        engine.display()
    );
}

#[test]
fn a_hugging_face_cache_snapshot_exports_by_model_id_and_by_path_and_generates() {
    let root = tempfile::tempdir().expect("tempdir");
    let home = root.path().join("huggingface");
    let snapshot = into_hub_cache(&diffusers_snapshot(root.path()), &home.join("hub"));
    let blobs = snapshot.join("../../blobs");
    for (name, checkpoint) in [("id", PathBuf::from(MODEL_ID)), ("path", snapshot.clone())] {
        let engine = root.path().join(format!("engine-{name}"));
        let output = export_command(&home, &checkpoint, &engine)
            .output()
            .expect("export");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: {stderr}");
        assert!(!stderr.contains("missing:"), "{name}: {stderr}");
        assert_links_resolve_to_blobs(&engine, &blobs);
        let source = skyreels_contract::Manifest::load(&engine)
            .expect("manifest")
            .source
            .expect("source");
        match name {
            "id" => {
                assert!(
                    stderr.contains(&format!("{MODEL_ID} (main) is the cached snapshot")),
                    "{stderr}"
                );
                assert_eq!(
                    (source.revision.as_deref(), source.commit.as_deref()),
                    (Some("main"), Some(COMMIT))
                );
            }
            _ => assert_eq!((source.revision, source.commit), (None, None)),
        }
        let video = root.path().join(format!("{name}.mp4"));
        let output = generate_video(&engine, &video);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(read_mp4(&video).expect("mp4").num_frames(), 5, "{name}");
    }
}

#[test]
fn a_snapshot_without_its_text_encoder_is_refused_or_recorded_and_generate_says_how_to_fix_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let home = root.path().join("huggingface");
    let folder = diffusers_snapshot(root.path());
    fs_err::remove_dir_all(folder.join("text_encoder")).expect("remove text_encoder");
    let snapshot = into_hub_cache(&folder, &home.join("hub"));
    let engine = root.path().join("engine");

    let output = export_command(&home, Path::new(MODEL_ID), &engine)
        .output()
        .expect("export");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for needle in [
        &format!("no text encoder in {}", snapshot.display()),
        "looked for text_encoder/ with tokenizer/tokenizer.json",
        "`skyreels generate` needs it",
        &format!("fix: complete the cached snapshot (`hf download {MODEL_ID} --revision main`"),
        "or pass --require dit",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    assert!(!engine.exists(), "a refused export writes no engine");

    let output = export_command(&home, Path::new(MODEL_ID), &engine)
        .args(["--require", "dit"])
        .output()
        .expect("export");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "missing: no text encoder in {}",
            snapshot.display()
        )),
        "{stderr}"
    );
    let manifest = skyreels_contract::Manifest::load(&engine).expect("manifest");
    assert!(manifest.text_encoder.is_none() && manifest.vae.is_some());
    let missing = &manifest.source.expect("source").missing;
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(
        missing[0].component,
        skyreels_contract::manifest::Component::TextEncoder
    );

    let video = root.path().join("video.mp4");
    let output = generate_video(&engine, &video);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for needle in [
        "has no text encoder: skyreels-export found none in",
        "exported without it (--require dit)",
        &format!(
            "fix: complete the cached snapshot (`hf download {MODEL_ID} --revision main`), then export again: skyreels-export {MODEL_ID} --out {} --force",
            engine.display()
        ),
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    assert!(!video.exists());
}
