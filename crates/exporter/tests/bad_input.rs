//! Bad checkpoints and options given to `skyreels-export`, run through the real binary: each must
//! exit non-zero with a message that names the problem and a fix, and leave no engine directory
//! (and no staging directory) behind (docs/BAD_INPUT.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use skyreels_exporter::tiny::{self, StorageDtype};

const BINARY: &str = env!("CARGO_BIN_EXE_skyreels-export");

/// A safetensors file as header entries (name → dtype, shape, bytes) in file order.
struct Tensors(Vec<(String, String, Vec<usize>, Vec<u8>)>);

impl Tensors {
    fn read(path: &Path) -> Tensors {
        let bytes = fs_err::read(path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        let data = &bytes[8 + header_len..];
        let mut tensors: Vec<_> = header
            .into_iter()
            .filter(|(name, _)| name != "__metadata__")
            .map(|(name, info)| {
                let offsets: Vec<usize> =
                    serde_json::from_value(info["data_offsets"].clone()).unwrap();
                let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).unwrap();
                (
                    offsets[0],
                    (
                        name,
                        info["dtype"].as_str().unwrap().to_string(),
                        shape,
                        data[offsets[0]..offsets[1]].to_vec(),
                    ),
                )
            })
            .collect();
        tensors.sort_by_key(|t| t.0);
        Tensors(tensors.into_iter().map(|(_, t)| t).collect())
    }

    fn header_and_data(&self) -> (serde_json::Map<String, Value>, Vec<u8>) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in &self.0 {
            header.insert(name.clone(), json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}));
            data.extend_from_slice(bytes);
        }
        (header, data)
    }

    fn get(&mut self, name: &str) -> &mut (String, String, Vec<usize>, Vec<u8>) {
        self.0
            .iter_mut()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }
}

fn write_safetensors(path: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let mut header = serde_json::to_vec(header).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    fs_err::write(path, bytes).unwrap();
}

/// A workspace holding a valid tiny DiT checkpoint at `checkpoint/`.
struct Case {
    directory: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let directory = tempfile::tempdir().unwrap();
        tiny::write_random_dit(
            &directory.path().join("checkpoint"),
            &tiny::tiny_dit_config(),
            StorageDtype::F32,
            0,
        )
        .unwrap();
        Case { directory }
    }

    fn checkpoint(&self) -> PathBuf {
        self.directory.path().join("checkpoint")
    }

    fn weights(&self) -> PathBuf {
        self.checkpoint().join("model.safetensors")
    }

    fn edit_tensors(&self, edit: impl FnOnce(&mut Tensors)) {
        let mut tensors = Tensors::read(&self.weights());
        edit(&mut tensors);
        let (header, data) = tensors.header_and_data();
        write_safetensors(&self.weights(), &header, &data);
    }

    fn edit_config(&self, edit: impl FnOnce(&mut Value)) {
        let path = self.checkpoint().join("config.json");
        let mut config: Value =
            serde_json::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
        edit(&mut config);
        fs_err::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    }

    fn out(&self) -> PathBuf {
        self.directory.path().join("engine")
    }

    /// Runs the exporter on the checkpoint; returns its output and stderr.
    fn export(&self, extra: &[&str]) -> (Output, String) {
        self.export_from(&self.checkpoint(), extra)
    }

    /// Runs the exporter on `source` with `--require dit` (the checkpoints here are DiTs alone).
    fn export_from(&self, source: &Path, extra: &[&str]) -> (Output, String) {
        let output = Command::new(BINARY)
            .env("RUST_BACKTRACE", "0")
            .arg(source)
            .arg("--out")
            .arg(self.out())
            .args(["--require", "dit"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output, stderr)
    }

    /// Exit 1, each needle in the message, a fix, and no engine or staging directory left.
    fn assert_refused(&self, (output, stderr): &(Output, String), needles: &[&str]) {
        assert_eq!(
            output.status.code(),
            Some(1),
            "expected exit 1, stderr:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
        }
        assert!(stderr.contains("fix:"), "no fix in:\n{stderr}");
        let mut left: Vec<String> = fs_err::read_dir(self.directory.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["checkpoint"], "the export left files behind");
    }
}

#[test]
fn the_untouched_checkpoint_exports() {
    let case = Case::new();
    let (output, stderr) = case.export(&[]);
    assert!(output.status.success(), "{stderr}");
    assert!(case.out().join("manifest.yaml").is_file());
}

#[test]
fn a_truncated_safetensors_file_is_refused_with_both_sizes() {
    let case = Case::new();
    let bytes = fs_err::read(case.weights()).unwrap();
    fs_err::write(case.weights(), &bytes[..bytes.len() / 2]).unwrap();
    let message = format!(
        "the header describes {} bytes but the file has {}",
        bytes.len(),
        bytes.len() / 2
    );
    case.assert_refused(
        &case.export(&[]),
        &[
            "model.safetensors is not a valid safetensors file",
            &message,
            "re-download",
        ],
    );
}

#[test]
fn a_file_shorter_than_its_length_prefix_is_refused() {
    let case = Case::new();
    fs_err::write(case.weights(), b"\x10\0\0").unwrap();
    case.assert_refused(
        &case.export(&[]),
        &[
            "model.safetensors is not a valid safetensors file",
            "header too small",
        ],
    );
}

#[test]
fn a_corrupt_header_is_refused() {
    let case = Case::new();
    let mut bytes = fs_err::read(case.weights()).unwrap();
    bytes[8..16].copy_from_slice(b"{\"a\": no");
    fs_err::write(case.weights(), &bytes).unwrap();
    case.assert_refused(
        &case.export(&[]),
        &["not a valid safetensors file", "invalid JSON in header"],
    );
}

#[test]
fn a_header_length_beyond_the_file_is_refused() {
    let case = Case::new();
    let mut bytes = fs_err::read(case.weights()).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    fs_err::write(case.weights(), &bytes).unwrap();
    case.assert_refused(
        &case.export(&[]),
        &["not a valid safetensors file", "header too large"],
    );
}

#[test]
fn a_header_that_lies_about_offsets_is_refused() {
    for lie in ["beyond", "overlap", "reversed"] {
        let case = Case::new();
        let tensors = Tensors::read(&case.weights());
        let (mut header, data) = tensors.header_and_data();
        let first = tensors.0[0].0.clone();
        let second = tensors.0[1].0.clone();
        let offsets = header[&first]["data_offsets"].clone();
        let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
        match lie {
            "beyond" => header[&first]["data_offsets"] = json!([start, end + 4096]),
            "overlap" => header[&second]["data_offsets"] = offsets,
            _ => header[&first]["data_offsets"] = json!([end, start]),
        }
        write_safetensors(&case.weights(), &header, &data);
        case.assert_refused(
            &case.export(&[]),
            &["not a valid safetensors file", "offset"],
        );
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let case = Case::new();
    case.edit_tensors(|t| t.0.retain(|t| t.0 != "blocks.1.ffn.2.weight"));
    case.assert_refused(
        &case.export(&[]),
        &["weight `blocks.1.ffn.2.weight` not found"],
    );
}

#[test]
fn a_layer_that_differs_from_the_first_is_named() {
    let case = Case::new();
    case.edit_tensors(|t| t.0.retain(|t| t.0 != "blocks.1.self_attn.q.bias"));
    case.assert_refused(
        &case.export(&[]),
        &["`blocks.1` and `blocks.0` differ", "`self_attn.q.bias`"],
    );
}

#[test]
fn an_extra_tensor_is_named() {
    let case = Case::new();
    case.edit_tensors(|t| {
        let mut extra = t.get("blocks.0.ffn.2.bias").clone();
        extra.0 = "blocks.0.adapter.weight".into();
        t.0.push(extra);
    });
    case.assert_refused(
        &case.export(&[]),
        &["1 unexpected weight(s)", "blocks.0.adapter.weight"],
    );
}

#[test]
fn a_misshapen_tensor_is_named_with_both_shapes() {
    let case = Case::new();
    case.edit_tensors(|t| t.get("blocks.0.ffn.2.weight").2.reverse());
    case.assert_refused(
        &case.export(&[]),
        &["weight `blocks.0.ffn.2.weight` has shape [64, 32] but the architecture needs [32, 64]"],
    );
}

#[test]
fn a_tensor_of_the_wrong_rank_is_named() {
    for name in [
        "time_embedding.0.weight",
        "blocks.0.ffn.0.weight",
        "head.head.weight",
        "text_embedding.0.weight",
    ] {
        let case = Case::new();
        case.edit_tensors(|t| {
            let tensor = t.get(name);
            tensor.2 = vec![tensor.2.iter().product()];
        });
        case.assert_refused(
            &case.export(&[]),
            &[
                &format!("weight `{name}` has shape"),
                "must be shaped [out, in]",
            ],
        );
    }
}

#[test]
fn a_wrong_dtype_is_named() {
    let case = Case::new();
    case.edit_tensors(|t| t.get("blocks.0.ffn.0.weight").1 = "I32".into());
    case.assert_refused(
        &case.export(&[]),
        &[
            "weight `blocks.0.ffn.0.weight` has dtype I32",
            "only F32, F16 and BF16",
        ],
    );
}

#[test]
fn weights_of_another_architecture_are_refused() {
    let case = Case::new();
    case.edit_tensors(|t| t.0.retain(|t| !t.0.starts_with("patch_embedding")));
    case.assert_refused(
        &case.export(&[]),
        &["weight `patch_embedding.weight` not found"],
    );
}

#[test]
fn a_config_that_contradicts_the_weights_is_refused() {
    let case = Case::new();
    case.edit_config(|c| c["dim"] = json!(5120));
    case.assert_refused(
        &case.export(&[]),
        &["config.json: dim = 5120 but the weights say 32"],
    );
}

#[test]
fn an_impossible_head_count_is_refused() {
    let case = Case::new();
    case.edit_config(|c| c["num_heads"] = json!(5));
    case.assert_refused(
        &case.export(&[]),
        &["dim 32 is not divisible by num_heads 5"],
    );
}

#[test]
fn a_malformed_config_json_is_refused() {
    let case = Case::new();
    fs_err::write(case.checkpoint().join("config.json"), "{\"dim\": ").unwrap();
    case.assert_refused(&case.export(&[]), &["config.json: not valid JSON"]);
}

#[test]
fn a_malformed_shard_index_is_refused() {
    let case = Case::new();
    fs_err::write(
        case.checkpoint().join("model.safetensors.index.json"),
        "{\"weight_map\": 3}",
    )
    .unwrap();
    case.assert_refused(
        &case.export(&[]),
        &["model.safetensors.index.json", "no `weight_map` object"],
    );
}

#[test]
fn a_shard_missing_from_its_index_is_named() {
    let case = Case::new();
    let index =
        json!({"weight_map": {"patch_embedding.weight": "model-00002-of-00002.safetensors"}});
    fs_err::write(
        case.checkpoint().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    case.assert_refused(
        &case.export(&[]),
        &[
            "model-00002-of-00002.safetensors",
            "is missing; download it",
        ],
    );
}

#[test]
fn a_corrupt_pth_is_refused() {
    let case = Case::new();
    fs_err::remove_file(case.weights()).unwrap();
    fs_err::write(
        case.checkpoint().join("model.pth"),
        b"PK\x03\x04 not a zip at all",
    )
    .unwrap();
    let source = case.checkpoint().join("model.pth");
    case.assert_refused(
        &case.export_from(&source, &[]),
        &["model.pth", "not a torch.save zip"],
    );
}

#[test]
fn a_missing_checkpoint_is_refused() {
    let case = Case::new();
    case.assert_refused(
        &case.export_from(&case.directory.path().join("nowhere"), &[]),
        &["no checkpoint found", "nowhere"],
    );
}

#[test]
fn an_existing_output_needs_force() {
    let case = Case::new();
    fs_err::create_dir(case.out()).unwrap();
    fs_err::write(case.out().join("keep"), b"mine").unwrap();
    let (output, stderr) = case.export(&[]);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(fs_err::read(case.out().join("keep")).unwrap(), b"mine");
}

#[test]
fn an_output_under_a_file_is_refused() {
    let case = Case::new();
    let blocker = case.directory.path().join("file");
    fs_err::write(&blocker, b"x").unwrap();
    let output = Command::new(BINARY)
        .env("RUST_BACKTRACE", "0")
        .arg(case.checkpoint())
        .arg("--out")
        .arg(blocker.join("engine"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("file") && stderr.contains("fix:"),
        "{stderr}"
    );
    assert_eq!(fs_err::read(&blocker).unwrap(), b"x");
}

#[test]
fn a_cpu_export_in_half_precision_is_refused() {
    let case = Case::new();
    case.assert_refused(
        &case.export(&["--dtype", "bf16"]),
        &[
            "--dtype bf16 is not supported on --target cpu",
            "--dtype fp32",
        ],
    );
}

/// A 1 KiB file-size limit with SIGXFSZ ignored: every write past 1 KiB fails with EFBIG, as on a
/// full disk; the staging directory must be removed and no engine appear.
#[test]
fn a_write_failure_midway_leaves_no_engine() {
    let case = Case::new();
    let output = Command::new("sh")
        .env("RUST_BACKTRACE", "0")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\"")
        .arg(BINARY)
        .arg(case.checkpoint())
        .arg("--out")
        .arg(case.out())
        .args(["--require", "dit"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    case.assert_refused(&(output, stderr), &["File too large"]);
}

/// A real full disk: the engine goes to a 64 KiB tmpfs. Needs root and a kernel that lets this
/// process mount; where it cannot mount, the test says so and passes (the file-size-limit test
/// above covers the path).
#[test]
fn a_full_disk_leaves_no_engine() {
    let case = Case::new();
    let mount_point = case.directory.path().join("tiny-disk");
    fs_err::create_dir(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mount_point)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the file-size-limit test covers the write-failure path"
        );
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount_point);
    let output = Command::new(BINARY)
        .env("RUST_BACKTRACE", "0")
        .arg(case.checkpoint())
        .arg("--out")
        .arg(mount_point.join("engine"))
        .args(["--require", "dit"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device") && stderr.contains("fix: free disk space"),
        "{stderr}"
    );
    assert_eq!(
        fs_err::read_dir(&mount_point).unwrap().count(),
        0,
        "the staging directory is removed"
    );
}

/// `skyreels-export ID` with the Hugging Face cache at `hub` (`HF_HUB_CACHE`).
fn export_model_id(case: &Case, hub: &Path, extra: &[&str]) -> (Output, String) {
    let output = Command::new(BINARY)
        .env("RUST_BACKTRACE", "0")
        .env("HF_HUB_CACHE", hub)
        .env_remove("HF_HUB_OFFLINE")
        .args(extra)
        .arg("--out")
        .arg(case.out())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

/// `skyreels-export CHECKPOINT --out OUT --require dit EXTRA` run in `directory` (the case's
/// checkpoint is a DiT alone).
fn export_in(directory: &Path, checkpoint: &Path, out: &str, extra: &[&str]) -> (Output, String) {
    let output = Command::new(BINARY)
        .env("RUST_BACKTRACE", "0")
        .current_dir(directory)
        .arg(checkpoint)
        .args(["--out", out, "--require", "dit"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

#[test]
fn a_model_id_that_is_not_in_the_cache_is_refused_and_nothing_is_downloaded() {
    let case = Case::new();
    let hub = case.directory.path().join("checkpoint");
    case.assert_refused(
        &export_model_id(&case, &hub, &["Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers"]),
        &[
            "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers: it is not in the Hugging Face cache",
            "(chosen by HF_HUB_CACHE; no models--Skywork--SkyReels-V2-DF-1.3B-540P-Diffusers)",
            "fix: download it first: `hf download Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers --revision main`",
        ],
    );
}

#[test]
fn a_revision_that_is_not_in_the_cache_is_refused_naming_the_cached_ones() {
    let case = Case::new();
    let hub = case.directory.path().join("checkpoint");
    let repository = hub.join("models--Org--Tiny");
    let commit = "f".repeat(40);
    fs_err::create_dir_all(repository.join("refs")).unwrap();
    fs_err::write(repository.join("refs/main"), &commit).unwrap();
    case.assert_refused(
        &export_model_id(&case, &hub, &["Org/Tiny"]),
        &[
            &format!("revision `main` points at commit `{commit}`"),
            "is missing (an interrupted download?)",
        ],
    );
    fs_err::create_dir_all(repository.join("snapshots").join(&commit)).unwrap();
    case.assert_refused(
        &export_model_id(&case, &hub, &["Org/Tiny", "--revision", "v2"]),
        &[
            "revision `v2` is not in the cache",
            &format!("cached: {commit}, main"),
            "fix: pass one of the cached revisions with --revision",
        ],
    );
    fs_err::remove_dir_all(&repository).unwrap();
}

#[test]
fn a_revision_with_a_folder_is_refused() {
    let case = Case::new();
    case.assert_refused(
        &case.export(&["--revision", "main"]),
        &[
            "--revision main applies to a Hugging Face model id",
            "drop --revision",
        ],
    );
}

#[test]
fn a_dit_without_its_vae_and_text_encoder_is_refused_unless_require_dit() {
    let case = Case::new();
    let output = Command::new(BINARY)
        .env("RUST_BACKTRACE", "0")
        .arg(case.checkpoint())
        .arg("--out")
        .arg(case.out())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    case.assert_refused(
        &(output, stderr),
        &[
            "no VAE in",
            "no text encoder in",
            "`skyreels generate` needs it",
            "or pass --require dit",
        ],
    );
    let (output, stderr) = case.export(&[]);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("missing: no VAE in") && stderr.contains("missing: no text encoder in"),
        "{stderr}"
    );
    let manifest = fs_err::read_to_string(case.out().join("manifest.yaml")).unwrap();
    assert!(
        manifest.contains("component: vae") && manifest.contains("component: text_encoder"),
        "{manifest}"
    );
}

#[test]
fn contrib_attention_for_tensorrt_is_refused() {
    let case = Case::new();
    case.assert_refused(
        &case.export(&["--target", "tensorrt", "--attention", "contrib-mha"]),
        &["--attention contrib-mha is not something TensorRT parses"],
    );
}

/// `--target tensorrt` picks the form TensorRT parses: opset-23 `Attention`, bf16, no
/// `com.microsoft` operator anywhere (the operator table check is `tests/integration/engines.rs`).
#[test]
fn the_tensorrt_target_exports_onnx_attention() {
    let directory = tempfile::tempdir().unwrap();
    let engine = directory.path().join("engine");
    let output = Command::new(BINARY)
        .args(["tiny", "--target", "tensorrt", "--out"])
        .arg(&engine)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest = skyreels_contract::Manifest::load(&engine).unwrap();
    assert_eq!(
        (manifest.target, manifest.precision, manifest.attention),
        (
            skyreels_contract::Target::TensorRt,
            skyreels_contract::Precision::Bf16,
            skyreels_contract::Attention::OnnxAttention
        )
    );
    let mut attention_nodes = 0;
    for entry in fs_err::read_dir(&engine).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "onnx") {
            let histogram = skyreels_graph::Model::load(&path).unwrap().op_histogram();
            assert!(
                histogram.keys().all(|op| !op.starts_with("com.microsoft")),
                "{}: {histogram:?}",
                path.display()
            );
            attention_nodes += histogram.get("Attention").copied().unwrap_or(0);
        }
    }
    assert_eq!(
        attention_nodes,
        1 + 1 + 1 + 2 + 1,
        "DiT self-attention (the attention graph, and attention_heads_1 for Ulysses degree 2 of the 2 heads) and cross-attention (block_out), shared by every layer, the 2 umT5 layers of the whole encoder graph and the one of its layer graph"
    );
}

fn names_in(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(directory)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn force_never_empties_the_working_directory_a_parent_or_a_folder_of_other_files() {
    let case = Case::new();
    let root = case.directory.path();
    fs_err::write(root.join("precious.txt"), b"mine").unwrap();
    for (cwd, out) in [
        (root.to_path_buf(), "."),
        (case.checkpoint(), ".."),
        (root.to_path_buf(), "/"),
    ] {
        let (output, stderr) = export_in(&cwd, &case.checkpoint(), out, &["--force"]);
        assert_eq!(output.status.code(), Some(1), "--out {out}: {stderr}");
        assert!(
            stderr.contains("fix: choose a new directory for the engine"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(names_in(root), ["checkpoint", "precious.txt"]);
    let folder = root.join("photos");
    fs_err::create_dir(&folder).unwrap();
    fs_err::write(folder.join("holiday.jpg"), b"jpeg").unwrap();
    let (output, stderr) = export_in(root, &case.checkpoint(), "photos", &["--force"]);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--force replaces only an engine directory (one with manifest.yaml) or an empty directory"),
        "{stderr}"
    );
    assert_eq!(names_in(&folder), ["holiday.jpg"]);
    assert_eq!(names_in(root), ["checkpoint", "photos", "precious.txt"]);
    // An engine directory and an empty one are replaced.
    for out in ["engine", "empty"] {
        fs_err::create_dir_all(root.join(out)).unwrap();
        let (output, stderr) = export_in(root, &case.checkpoint(), out, &["--force"]);
        assert!(output.status.success(), "{stderr}");
        assert!(root.join(out).join("manifest.yaml").is_file());
    }
    let (output, stderr) = export_in(root, &case.checkpoint(), "engine", &["--force"]);
    assert!(output.status.success(), "replacing an engine: {stderr}");
    assert_eq!(
        names_in(root),
        ["checkpoint", "empty", "engine", "photos", "precious.txt"]
    );
}

#[test]
fn a_bf16_vae_is_refused() {
    let case = Case::new();
    case.assert_refused(
        &case.export(&["--target", "cuda", "--vae-dtype", "bf16"]),
        &["--vae-dtype bf16 is not supported", "--vae-dtype fp16"],
    );
}

#[test]
fn a_fifo_or_a_directory_among_the_weights_is_refused_without_waiting() {
    let case = Case::new();
    let fifo = case.checkpoint().join("extra.safetensors");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    case.assert_refused(
        &case.export(&[]),
        &[
            "checkpoint file",
            "extra.safetensors is a FIFO, not a regular file",
        ],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    fs_err::remove_file(&fifo).unwrap();
    fs_err::create_dir(&fifo).unwrap();
    case.assert_refused(
        &case.export(&[]),
        &["extra.safetensors is a directory, not a regular file"],
    );
}

#[test]
fn a_folder_without_config_json_names_the_missing_file() {
    let case = Case::new();
    fs_err::remove_file(case.checkpoint().join("config.json")).unwrap();
    case.assert_refused(
        &case.export(&[]),
        &[
            "config.json is missing",
            "dim 32 is not a multiple of 128",
            "put the model's config.json",
        ],
    );
}

#[test]
fn a_zero_sized_tensor_is_refused_before_onnx_runtime() {
    let case = Case::new();
    case.edit_tensors(|t| {
        let tensor = t.get("blocks.0.ffn.2.bias");
        tensor.2 = vec![0];
        tensor.3.clear();
    });
    case.assert_refused(
        &case.export(&[]),
        &[
            "tensor `blocks.0.ffn.2.bias` has shape [0], with an empty dimension",
            "re-download",
        ],
    );
}

/// A zip of `entries` stored uncompressed, as `torch.save` writes one (CRCs left at 0: the reader
/// does not check them).
fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = Vec::new();
    let mut directory = Vec::new();
    for (name, data) in entries {
        let offset = zip.len() as u32;
        let size = data.len() as u32;
        zip.extend(0x0403_4b50u32.to_le_bytes());
        zip.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        zip.extend(size.to_le_bytes());
        zip.extend(size.to_le_bytes());
        zip.extend((name.len() as u16).to_le_bytes());
        zip.extend([0, 0]);
        zip.extend(name.as_bytes());
        zip.extend(*data);
        directory.extend(0x0201_4b50u32.to_le_bytes());
        directory.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        directory.extend(size.to_le_bytes());
        directory.extend(size.to_le_bytes());
        directory.extend((name.len() as u16).to_le_bytes());
        directory.extend([0; 12]);
        directory.extend(offset.to_le_bytes());
        directory.extend(name.as_bytes());
    }
    let directory_offset = zip.len() as u32;
    zip.extend(&directory);
    zip.extend(0x0605_4b50u32.to_le_bytes());
    zip.extend([0, 0, 0, 0]);
    zip.extend((entries.len() as u16).to_le_bytes());
    zip.extend((entries.len() as u16).to_le_bytes());
    zip.extend((directory.len() as u32).to_le_bytes());
    zip.extend(directory_offset.to_le_bytes());
    zip.extend([0, 0]);
    zip
}

/// A pickle that pushes three million `None`s (3 MB) used to grow the interpreter's stack to
/// gigabytes; a long text copied through the memo grew its strings the same way.
#[test]
fn a_pth_whose_pickle_floods_memory_is_refused() {
    let case = Case::new();
    let mut flood = b"\x80\x02".to_vec();
    flood.extend(std::iter::repeat_n(b'N', 3_000_000));
    flood.push(b'.');
    let mut copies = b"\x80\x02X".to_vec();
    copies.extend(65_536u32.to_le_bytes());
    copies.extend(vec![b'x'; 65_536]);
    copies.extend(b"q\x00");
    copies.extend(b"h\x00".repeat(5000));
    copies.push(b'.');
    for (program, needle) in [(flood, "opcodes"), (copies, "bytes of text")] {
        let source = case.checkpoint().join("model.pth");
        fs_err::write(&source, stored_zip(&[("archive/data.pkl", &program)])).unwrap();
        case.assert_refused(
            &case.export_from(&source, &[]),
            &["model.pth", needle, "re-download"],
        );
    }
}

/// SIGINT and SIGTERM during an export: the handler removes the staging directory and the process
/// exits with 128 + the signal; nothing is left beside --out. (A run that finishes before the
/// signal lands is repeated.)
#[test]
fn an_interrupted_export_leaves_nothing_behind() {
    for (signal, number) in [("INT", 2), ("TERM", 15)] {
        let mut interrupted = false;
        for _attempt in 0..10 {
            let directory = tempfile::tempdir().unwrap();
            let out = directory.path().join("engine");
            let mut child = Command::new(BINARY)
                .arg("tiny")
                .arg("--out")
                .arg(&out)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let staging = directory
                .path()
                .join(format!(".engine.partial-{}", child.id()));
            while !staging.exists() && child.try_wait().unwrap().is_none() {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            let sent = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status()
                .unwrap();
            let output = child.wait_with_output().unwrap();
            if !sent.success() || output.status.success() {
                continue;
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(128 + number), "{stderr}");
            assert!(
                stderr.contains(&format!("interrupted by SIG{signal}")),
                "{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert_eq!(
                names_in(directory.path()),
                Vec::<String>::new(),
                "SIG{signal} left files"
            );
            interrupted = true;
            break;
        }
        assert!(
            interrupted,
            "no export could be interrupted with SIG{signal}"
        );
    }
}

#[test]
fn stale_staging_of_a_dead_export_is_removed_and_nothing_else() {
    let case = Case::new();
    let root = case.directory.path();
    let dead = root.join(".engine.partial-4000000");
    fs_err::create_dir(&dead).unwrap();
    fs_err::write(
        dead.join(".skyreels-owner"),
        "skyreels export staging\npid 4000000\n",
    )
    .unwrap();
    fs_err::write(dead.join("dit_blocks.onnx"), b"half-written").unwrap();
    let foreign = root.join(".engine.partial-17");
    fs_err::create_dir(&foreign).unwrap();
    fs_err::write(foreign.join("notes.txt"), b"not an export's").unwrap();
    let alive = root.join(".engine.partial-4000001");
    fs_err::create_dir(&alive).unwrap();
    fs_err::write(
        alive.join(".skyreels-owner"),
        "skyreels export staging\npid 4000001\n",
    )
    .unwrap();
    let held = std::fs::File::open(alive.join(".skyreels-owner")).unwrap();
    held.try_lock().unwrap();
    let (output, stderr) = case.export(&[]);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        names_in(root),
        [
            ".engine.partial-17",
            ".engine.partial-4000001",
            "checkpoint",
            "engine"
        ]
    );
    assert!(
        !case.out().join(".skyreels-owner").exists(),
        "the marker does not ship in the engine"
    );
    drop(held);
}

#[test]
fn errors_name_the_problem_and_fix_without_a_backtrace_even_with_rust_backtrace_set() {
    let directory = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .arg(directory.path().join("no-checkpoint"))
        .arg("--out")
        .arg(directory.path().join("engine"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(stderr.contains("fix:"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}
