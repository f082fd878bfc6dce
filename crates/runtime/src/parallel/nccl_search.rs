//! Where `libnccl.so.2` may be. cudarc's own loader tries `libnccl.so`, `libnccl.so.<CUDA major>`
//! and a few others, but not `libnccl.so.2`, the only name in PyTorch's `nvidia-nccl-cu13` wheel,
//! so the runtime loads NCCL itself, in this order: `SKYREELS_NCCL_LIBRARY` (that file only), the
//! dynamic linker's search (`libnccl.so.2`, `libnccl.so`: `LD_LIBRARY_PATH`, system paths), the
//! `nvidia/nccl/lib` folder of any `site-packages` that `LD_LIBRARY_PATH` or `ORT_DYLIB_PATH` point
//! into (where pip puts the wheel next to ONNX Runtime's and CUDA's), then the one that `python3`
//! (or `SKYREELS_PYTHON`) imports `nvidia.nccl` from.

use std::path::{Path, PathBuf};

/// The file name NCCL 2 ships under.
pub const NCCL_SONAME: &str = "libnccl.so.2";

/// Variable naming the NCCL library file to load.
pub const NCCL_LIBRARY_VARIABLE: &str = "SKYREELS_NCCL_LIBRARY";

/// The environment the search reads, captured once (tests build their own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NcclSearch {
    /// `SKYREELS_NCCL_LIBRARY`: when set, the only candidate.
    pub explicit: Option<PathBuf>,
    /// `LD_LIBRARY_PATH` entries.
    pub library_path: Vec<PathBuf>,
    /// `ORT_DYLIB_PATH`.
    pub onnxruntime: Option<PathBuf>,
    /// The Python to ask for the `nvidia.nccl` wheel (`SKYREELS_PYTHON`, default `python3`);
    /// `None` skips that step.
    pub python: Option<PathBuf>,
}

impl NcclSearch {
    /// The search as this process's environment defines it.
    pub fn from_environment() -> NcclSearch {
        NcclSearch {
            explicit: std::env::var_os(NCCL_LIBRARY_VARIABLE).map(PathBuf::from),
            library_path: std::env::var_os("LD_LIBRARY_PATH")
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default(),
            onnxruntime: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
            python: Some(
                std::env::var_os("SKYREELS_PYTHON")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("python3")),
            ),
        }
    }

    /// Candidates before asking Python, in order: paths or bare names for `dlopen`.
    pub fn candidates(&self) -> Vec<PathBuf> {
        if let Some(explicit) = &self.explicit {
            return vec![explicit.clone()];
        }
        let mut candidates = vec![PathBuf::from(NCCL_SONAME), PathBuf::from("libnccl.so")];
        let hints = self.library_path.iter().chain(self.onnxruntime.as_ref());
        for hint in hints {
            if let Some(packages) = hint.ancestors().find(|a| is_site_packages(a)) {
                let candidate = wheel_library(&packages.join("nvidia").join("nccl"));
                if !candidates.contains(&candidate) {
                    candidates.push(candidate);
                }
            }
        }
        candidates
    }

    /// The wheel's library as the configured Python sees it (runs `python -c`), if any.
    pub fn python_candidate(&self) -> Option<PathBuf> {
        let python = self.python.as_ref()?;
        if self.explicit.is_some() {
            return None;
        }
        let output = std::process::Command::new(python)
            .args(["-c", "import nvidia.nccl as m; print(list(m.__path__)[0])"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let folder = String::from_utf8_lossy(&output.stdout).trim().to_string();
        (!folder.is_empty()).then(|| wheel_library(Path::new(&folder)))
    }
}

fn is_site_packages(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("site-packages" | "dist-packages")
    )
}

fn wheel_library(package: &Path) -> PathBuf {
    package.join("lib").join(NCCL_SONAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_library_is_the_only_candidate() {
        let search = NcclSearch {
            explicit: Some(PathBuf::from("/opt/nccl/libnccl.so.2")),
            library_path: vec![PathBuf::from("/x/site-packages/nvidia/cu13/lib")],
            ..Default::default()
        };
        assert_eq!(
            search.candidates(),
            vec![PathBuf::from("/opt/nccl/libnccl.so.2")]
        );
    }

    #[test]
    fn the_wheel_is_found_beside_cuda_and_onnxruntime_wheels() {
        let search = NcclSearch {
            explicit: None,
            library_path: vec![
                PathBuf::from("/venv/lib/python3.12/site-packages/nvidia/cu13/lib"),
                PathBuf::from("/venv/lib/python3.12/site-packages/nvidia/cudnn/lib"),
                PathBuf::from("/usr/local/cuda/lib64"),
            ],
            onnxruntime: Some(PathBuf::from(
                "/other/dist-packages/onnxruntime/capi/libonnxruntime.so.1.31.1",
            )),
            python: None,
        };
        assert_eq!(
            search.candidates(),
            vec![
                PathBuf::from("libnccl.so.2"),
                PathBuf::from("libnccl.so"),
                PathBuf::from("/venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2"),
                PathBuf::from("/other/dist-packages/nvidia/nccl/lib/libnccl.so.2"),
            ]
        );
    }
}
