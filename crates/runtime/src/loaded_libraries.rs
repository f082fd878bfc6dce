//! What a process actually runs with: the shared libraries that decide GPU speed (CUDA runtime,
//! cuBLAS/cuBLASLt, cuDNN, NCCL, NVRTC, nvJitLink, the driver, ONNX Runtime) as mapped into it
//! (`/proc/self/maps`), each with the version its file name or its pip distribution carries.
//! Benchmarks print this at the end of a run, so a comparison shows which libraries each side
//! really loaded rather than which ones its environment seemed to offer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::Result;
use crate::session::Backend;

/// One mapped library of a family that matters for GPU speed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadedLibrary {
    /// `cudart`, `cublas`, `cublasLt`, `cudnn`, `nccl`, `nvrtc`, `nvjitlink`, `cuda-driver` or `onnxruntime`.
    pub family: &'static str,
    /// The mapped file, as the kernel names it (symbolic links already followed).
    pub path: PathBuf,
    /// The version in the file name after `.so.` (`13.1.0.3` for `libcublas.so.13.1.0.3`).
    pub file_version: Option<String>,
    /// The pip distribution that installed the file, `name version` (from its `.dist-info/RECORD`).
    pub distribution: Option<String>,
}

const FAMILIES: &[(&str, &str)] = &[
    ("libcudart.so", "cudart"),
    ("libcublasLt.so", "cublasLt"),
    ("libcublas.so", "cublas"),
    ("libcudnn", "cudnn"),
    ("libnccl.so", "nccl"),
    ("libnvrtc", "nvrtc"),
    ("libnvJitLink.so", "nvjitlink"),
    ("libcuda.so", "cuda-driver"),
    ("libonnxruntime", "onnxruntime"),
];

/// The family of a library file name, if it is one worth reporting.
pub fn family_of(file_name: &str) -> Option<&'static str> {
    FAMILIES
        .iter()
        .find(|(prefix, _)| {
            file_name.starts_with(prefix)
                && file_name[prefix.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| matches!(c, '.' | '_'))
        })
        .map(|(_, family)| *family)
}

/// The distinct file paths mapped in a `/proc/<pid>/maps` text, in first-mapped order.
pub fn mapped_paths(maps: &str) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    maps.lines()
        .filter_map(|line| line.find('/').map(|start| &line[start..]))
        .map(|path| path.trim_end().trim_end_matches(" (deleted)"))
        .filter(|path| seen.insert(path.to_string()))
        .map(PathBuf::from)
        .collect()
}

/// The version after `.so.` in a library file name (`libcudnn.so.9` → `9`).
pub fn file_version(file_name: &str) -> Option<String> {
    let (_, version) = file_name.split_once(".so.")?;
    (!version.is_empty()).then(|| version.to_string())
}

/// The libraries of the reported families in a maps text, with their pip distributions looked up
/// on disk.
pub fn from_maps(maps: &str) -> Vec<LoadedLibrary> {
    let mut distributions = Distributions::default();
    mapped_paths(maps)
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_string();
            let family = family_of(&name)?;
            Some(LoadedLibrary {
                family,
                file_version: file_version(&name),
                distribution: distributions.owner(&path),
                path,
            })
        })
        .collect()
}

/// The libraries of the reported families this process has mapped now.
pub fn current() -> Result<Vec<LoadedLibrary>> {
    Ok(from_maps(&fs_err::read_to_string("/proc/self/maps")?))
}

/// What a benchmark process ran with, for its result line: the GPU and driver `nvidia-smi` names,
/// the ONNX Runtime version, and the libraries mapped at the moment it is collected (collect it at
/// the end of the run, after every library was loaded).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessReport {
    /// This process.
    pub pid: u32,
    /// GPU `device`'s name, when a device was given and `nvidia-smi` answers.
    pub gpu: Option<String>,
    /// The NVIDIA driver version, likewise.
    pub driver: Option<String>,
    /// ONNX Runtime's version, when its library can be found.
    pub onnxruntime_version: Option<String>,
    /// The reported libraries mapped now.
    pub libraries: Vec<LoadedLibrary>,
    /// Why the libraries could not be read, if they could not.
    pub error: Option<String>,
}

impl ProcessReport {
    /// Collects the report of a run on `backend`.
    pub fn collect(backend: &Backend) -> ProcessReport {
        let device = backend.device();
        let (libraries, error) = match current() {
            Ok(libraries) => (libraries, None),
            Err(error) => (Vec::new(), Some(error.to_string())),
        };
        ProcessReport {
            pid: std::process::id(),
            gpu: device.and_then(|d| query_gpu("name", d)),
            driver: device.and_then(|d| query_gpu("driver_version", d)),
            onnxruntime_version: crate::engine::onnxruntime_version().ok(),
            libraries,
            error,
        }
    }
}

fn query_gpu(field: &str, device: i32) -> Option<String> {
    let output = std::process::Command::new("nvidia-smi")
        .args([
            &format!("--query-gpu={field}"),
            "--format=csv,noheader",
            "-i",
            &device.to_string(),
        ])
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !value.is_empty()).then_some(value)
}

/// Owners of files under `site-packages` folders, read from each distribution's `RECORD` once.
#[derive(Default)]
struct Distributions {
    by_site: BTreeMap<PathBuf, BTreeMap<String, String>>,
}

impl Distributions {
    fn owner(&mut self, path: &Path) -> Option<String> {
        let site = path.ancestors().find(|a| {
            a.file_name()
                .is_some_and(|n| n == "site-packages" || n == "dist-packages")
        })?;
        let relative = path.strip_prefix(site).ok()?.to_str()?.to_string();
        let records = self
            .by_site
            .entry(site.to_path_buf())
            .or_insert_with(|| read_records(site));
        records.get(&relative).cloned()
    }
}

/// Maps each file listed in the `*.dist-info/RECORD` files of `site` to `name version`.
fn read_records(site: &Path) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    let Ok(entries) = fs_err::read_dir(site) else {
        return owners;
    };
    for entry in entries.flatten() {
        let folder = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = folder.strip_suffix(".dist-info") else {
            continue;
        };
        let distribution = stem.replacen('-', " ", 1);
        let Ok(record) = fs_err::read_to_string(entry.path().join("RECORD")) else {
            continue;
        };
        for line in record.lines() {
            if let Some((file, _)) = line.split_once(',') {
                owners.insert(file.to_string(), distribution.clone());
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234                       /usr/bin/dit_bench
7f0000000000-7f0000100000 r-xp 00000000 fd:01 42                         /opt/ortgpu/ortlib/libonnxruntime.so.1.31.1
7f0000100000-7f0000200000 r--p 00100000 fd:01 42                         /opt/ortgpu/ortlib/libonnxruntime.so.1.31.1
7f0000200000-7f0000300000 r-xp 00000000 fd:01 43                         /opt/ortgpu/ortlib/libonnxruntime_providers_cuda.so
7f0000300000-7f0000400000 r-xp 00000000 fd:01 44                         /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublasLt.so.13.0.0.19
7f0000400000-7f0000500000 r-xp 00000000 fd:01 45                         /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublas.so.13.0.0.19
7f0000500000-7f0000600000 r-xp 00000000 fd:01 46                         /site/lib/python3.12/site-packages/nvidia/cu13/lib/libcudnn_graph.so.9
7f0000600000-7f0000700000 r-xp 00000000 fd:01 47                         /usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04
7f0000700000-7f0000800000 r-xp 00000000 fd:01 48                         /usr/lib/x86_64-linux-gnu/libcudart_static_fake.so.1 (deleted)
7f0000800000-7f0000900000 rw-p 00000000 00:00 0                          [heap]
7f0000900000-7f0000a00000 r-xp 00000000 fd:01 49                         /usr/lib/x86_64-linux-gnu/libc.so.6
";

    #[test]
    fn picks_the_reported_families_once_each_with_their_file_versions() {
        let libraries = from_maps(MAPS);
        let summary: Vec<(&str, String, Option<String>)> = libraries
            .iter()
            .map(|l| {
                (
                    l.family,
                    l.path.file_name().unwrap().to_string_lossy().into_owned(),
                    l.file_version.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "onnxruntime",
                    "libonnxruntime.so.1.31.1".into(),
                    Some("1.31.1".into())
                ),
                (
                    "onnxruntime",
                    "libonnxruntime_providers_cuda.so".into(),
                    None
                ),
                (
                    "cublasLt",
                    "libcublasLt.so.13.0.0.19".into(),
                    Some("13.0.0.19".into())
                ),
                (
                    "cublas",
                    "libcublas.so.13.0.0.19".into(),
                    Some("13.0.0.19".into())
                ),
                ("cudnn", "libcudnn_graph.so.9".into(), Some("9".into())),
                (
                    "cuda-driver",
                    "libcuda.so.580.159.04".into(),
                    Some("580.159.04".into())
                ),
            ]
        );
    }

    #[test]
    fn family_needs_a_separator_after_the_prefix() {
        assert_eq!(family_of("libcudart.so.13"), Some("cudart"));
        assert_eq!(family_of("libcudart_static_fake.so.1"), None);
        assert_eq!(family_of("libcudnn.so.9"), Some("cudnn"));
        assert_eq!(family_of("libcudnn_ops.so.9"), Some("cudnn"));
        assert_eq!(family_of("libcudnnfoo.so"), None);
        assert_eq!(family_of("libcublasLt.so.13"), Some("cublasLt"));
        assert_eq!(family_of("libc.so.6"), None);
    }

    #[test]
    fn deleted_and_repeated_mappings_count_once() {
        let paths = mapped_paths(MAPS);
        assert_eq!(paths.len(), 9);
        assert!(paths.contains(&PathBuf::from(
            "/usr/lib/x86_64-linux-gnu/libcudart_static_fake.so.1"
        )));
    }

    #[test]
    fn pip_distribution_comes_from_the_record_that_lists_the_file() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let site = root.path().join("lib/python3.12/site-packages");
        let library = site.join("nvidia/cu13/lib/libcublas.so.13");
        fs_err::create_dir_all(library.parent().unwrap())?;
        fs_err::write(&library, b"")?;
        let info = site.join("nvidia_cublas-13.1.0.3.dist-info");
        fs_err::create_dir_all(&info)?;
        fs_err::write(
            info.join("RECORD"),
            "nvidia/cu13/lib/libcublas.so.13,sha256=x,1\nnvidia_cublas-13.1.0.3.dist-info/RECORD,,\n",
        )?;
        let other = site.join("nvidia_cudnn_cu13-9.14.0.64.dist-info");
        fs_err::create_dir_all(&other)?;
        fs_err::write(
            other.join("RECORD"),
            "nvidia/cu13/lib/libcudnn.so.9,sha256=y,1\n",
        )?;
        let maps = format!(
            "7f00-7f01 r-xp 00000000 fd:01 1 {}\n7f01-7f02 r-xp 00000000 fd:01 2 {}\n",
            library.display(),
            site.join("nvidia/cu13/lib/libnccl.so.2").display()
        );
        let libraries = from_maps(&maps);
        assert_eq!(libraries.len(), 2);
        assert_eq!(
            libraries[0].distribution.as_deref(),
            Some("nvidia_cublas 13.1.0.3")
        );
        assert_eq!(libraries[0].file_version.as_deref(), Some("13"));
        assert_eq!(libraries[1].family, "nccl");
        assert_eq!(libraries[1].distribution, None);
        Ok(())
    }

    #[test]
    fn this_process_reads_its_own_maps() -> anyhow::Result<()> {
        let maps = fs_err::read_to_string("/proc/self/maps")?;
        let executable = fs_err::canonicalize(std::env::current_exe()?)?;
        assert!(mapped_paths(&maps).contains(&executable));
        let report = ProcessReport::collect(&Backend::Cpu { threads: 0 });
        assert_eq!(report.pid, std::process::id());
        assert_eq!(report.error, None);
        assert_eq!(report.libraries, from_maps(&maps));
        Ok(())
    }
}
