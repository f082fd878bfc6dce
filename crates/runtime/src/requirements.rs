//! What a backend needs on this machine, checked before any work: ONNX Runtime's provider
//! libraries next to the loaded `libonnxruntime.so`, the shared libraries they link (found the way
//! the dynamic linker finds them), and a GPU. The lists are the `NEEDED` entries of PyPI's
//! `onnxruntime-gpu` 1.31.1 provider libraries (read with `readelf -d`).

use std::path::{Path, PathBuf};

use skyreels_contract::Target;

/// A library a backend needs, and what it is.
struct Needed {
    file: &'static str,
    what: &'static str,
}

const PROVIDERS_SHARED: Needed = Needed {
    file: "libonnxruntime_providers_shared.so",
    what: "ONNX Runtime's provider bridge",
};
const PROVIDERS_CUDA: Needed = Needed {
    file: "libonnxruntime_providers_cuda.so",
    what: "ONNX Runtime's CUDA execution provider",
};
const PROVIDERS_TENSORRT: Needed = Needed {
    file: "libonnxruntime_providers_tensorrt.so",
    what: "ONNX Runtime's TensorRT execution provider",
};

const CUDA_LIBRARIES: [Needed; 5] = [
    Needed {
        file: "libcudart.so.13",
        what: "CUDA 13 runtime",
    },
    Needed {
        file: "libcublas.so.13",
        what: "cuBLAS of CUDA 13",
    },
    Needed {
        file: "libcublasLt.so.13",
        what: "cuBLASLt of CUDA 13",
    },
    Needed {
        file: "libcurand.so.10",
        what: "cuRAND of CUDA 13",
    },
    Needed {
        file: "libcuda.so.1",
        what: "the NVIDIA driver",
    },
];

const TENSORRT_LIBRARIES: [Needed; 5] = [
    Needed {
        file: "libnvinfer.so.10",
        what: "TensorRT 10",
    },
    Needed {
        file: "libnvonnxparser.so.10",
        what: "TensorRT 10's ONNX parser",
    },
    Needed {
        file: "libcudart.so.13",
        what: "CUDA 13 runtime",
    },
    Needed {
        file: "libcublas.so.13",
        what: "cuBLAS of CUDA 13",
    },
    Needed {
        file: "libcudnn.so.9",
        what: "cuDNN 9",
    },
];

const FIX_ORT_GPU: &str = "use ONNX Runtime's GPU build: the PyPI wheel onnxruntime-gpu==1.31.1 holds libonnxruntime.so.1.31.1 and libonnxruntime_providers_{shared,cuda,tensorrt}.so in onnxruntime/capi/; keep them in one folder and set ORT_DYLIB_PATH to its libonnxruntime.so.1.31.1";
const FIX_CUDA: &str = "install the CUDA 13 runtime, cuBLAS and cuRAND (the CUDA toolkit, or PyPI's nvidia-*-cu13 wheels) and the NVIDIA driver, and add their lib folders to LD_LIBRARY_PATH";
const FIX_TENSORRT: &str = "install TensorRT 10 for CUDA 13 (NVIDIA's TensorRT 10.x tar or deb packages, or PyPI tensorrt-cu13-libs 10.x; TensorRT 11 ships libnvinfer.so.11, which ONNX Runtime 1.31's provider does not load) and cuDNN 9, and add their lib folders to LD_LIBRARY_PATH";
const FIX_GPU: &str = "use a machine with an NVIDIA GPU, and build and run on the same GPU model: optimised CUDA graphs and TensorRT engines are specific to a GPU";

/// Folders the dynamic linker searches, in its order: `LD_LIBRARY_PATH`, the `ld.so` cache, the
/// default folders.
fn linker_search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .map(|v| {
            v.split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if let Ok(output) = std::process::Command::new("ldconfig").arg("-p").output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some((_, path)) = line.split_once(" => ")
                && let Some(dir) = Path::new(path.trim()).parent()
                && !dirs.iter().any(|d| d == dir)
            {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    for dir in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(dir));
    }
    dirs
}

/// Where the dynamic linker would find `file`, if anywhere.
pub fn find_library(file: &str) -> Option<PathBuf> {
    linker_search_dirs()
        .into_iter()
        .map(|dir| dir.join(file))
        .find(|p| p.is_file())
}

/// What a backend lacks on this machine: every missing library or device, and how to get them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The backend.
    pub target: Target,
    /// One line per missing library or device.
    pub missing: Vec<String>,
    /// How to get them (one fix per kind of piece, joined).
    pub fix: String,
}

impl Unavailable {
    /// `cannot {doing} {target} here:` followed by one `  - missing` line each and the fix.
    pub fn describe(&self, doing: &str) -> String {
        let lines: Vec<String> = self.missing.iter().map(|m| format!("  - {m}")).collect();
        format!(
            "cannot {doing} {} here:\n{}\n  fix: {}",
            self.target,
            lines.join("\n"),
            self.fix
        )
    }
}

/// Checks that `target` can run here (ONNX Runtime at `onnxruntime_library`, GPU `device`);
/// returns the GPU's name for GPU targets. Fails listing every missing piece and its fix.
pub fn check(
    target: Target,
    onnxruntime_library: &Path,
    device: i32,
) -> Result<Option<String>, Unavailable> {
    let (providers, libraries): (Vec<Needed>, &[Needed]) = match target {
        Target::Cpu => return Ok(None),
        Target::Cuda => (vec![PROVIDERS_SHARED, PROVIDERS_CUDA], &CUDA_LIBRARIES),
        Target::TensorRt => (
            vec![PROVIDERS_SHARED, PROVIDERS_TENSORRT],
            &TENSORRT_LIBRARIES,
        ),
    };
    let onnxruntime_dir = onnxruntime_library.parent().unwrap_or(Path::new("."));
    let mut missing = Vec::new();
    let mut fixes = Vec::new();
    for needed in providers
        .iter()
        .filter(|n| !onnxruntime_dir.join(n.file).is_file())
    {
        missing.push(format!(
            "{} ({}) is not next to {}",
            needed.file,
            needed.what,
            onnxruntime_library.display()
        ));
        if !fixes.contains(&FIX_ORT_GPU) {
            fixes.push(FIX_ORT_GPU);
        }
    }
    for needed in libraries.iter().filter(|n| find_library(n.file).is_none()) {
        missing.push(format!(
            "{} ({}) is not on the library path (LD_LIBRARY_PATH, ldconfig, system folders)",
            needed.file, needed.what
        ));
        let fix = if needed.file.starts_with("libnv") || needed.file.starts_with("libcudnn") {
            FIX_TENSORRT
        } else {
            FIX_CUDA
        };
        if !fixes.contains(&fix) {
            fixes.push(fix);
        }
    }
    let gpu = crate::engine::gpu_name(device);
    if gpu.is_none() {
        missing.push(format!("no NVIDIA GPU {device} (nvidia-smi reports none)"));
        fixes.push(FIX_GPU);
    }
    if missing.is_empty() {
        return Ok(gpu);
    }
    Err(Unavailable {
        target,
        missing,
        fix: fixes.join(";\n       "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libc_and_not_a_made_up_library() {
        assert!(find_library("libc.so.6").is_some());
        assert!(find_library("libdoes-not-exist.so.99").is_none());
    }

    #[test]
    fn cpu_needs_nothing() {
        assert_eq!(
            check(Target::Cpu, Path::new("/nowhere/libonnxruntime.so"), 0).expect("cpu"),
            None
        );
    }

    #[test]
    fn tensorrt_names_the_provider_library_when_onnxruntime_is_the_cpu_build() {
        let error = check(
            Target::TensorRt,
            Path::new("/nowhere/libonnxruntime.so.1.31.1"),
            0,
        )
        .unwrap_err()
        .describe("run on");
        assert!(error.starts_with("cannot run on tensorrt here:"), "{error}");
        assert!(
            error.contains("libnvinfer.so.10 (TensorRT 10) is not on the library path"),
            "{error}"
        );
        assert!(error.contains("libonnxruntime_providers_tensorrt.so (ONNX Runtime's TensorRT execution provider) is not next to /nowhere/libonnxruntime.so.1.31.1"), "{error}");
        assert!(error.contains("onnxruntime-gpu==1.31.1"), "{error}");
    }
}
