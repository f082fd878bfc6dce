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

    fn export_from(&self, source: &Path, extra: &[&str]) -> (Output, String) {
        let output = Command::new(BINARY)
            .env("RUST_BACKTRACE", "0")
            .arg(source)
            .arg("--out")
            .arg(self.out())
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
            "--dtype Bf16 is not supported on --target cpu",
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
