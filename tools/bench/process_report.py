"""What a benchmark process actually ran with, read by the process itself at the end of its run.

The Python twin of `skyreels_runtime::loaded_libraries` (crates/runtime/src/loaded_libraries.rs):
the shared libraries that decide GPU speed (CUDA runtime, cuBLAS/cuBLASLt, cuDNN, NCCL, NVRTC,
nvJitLink, the driver, ONNX Runtime) as mapped in /proc/self/maps, each with the version in its
file name and the pip distribution whose RECORD lists it; plus, for PyTorch, the versions torch
itself reports and its allocator's peaks. Both sides print the same `libraries` records, so the
summariser compares like with like.
"""
import os
import subprocess

FAMILIES = [
    ("libcudart.so", "cudart"),
    ("libcublasLt.so", "cublasLt"),
    ("libcublas.so", "cublas"),
    ("libcudnn", "cudnn"),
    ("libnccl.so", "nccl"),
    ("libnvrtc", "nvrtc"),
    ("libnvJitLink.so", "nvjitlink"),
    ("libcuda.so", "cuda-driver"),
    ("libonnxruntime", "onnxruntime"),
]


def family_of(file_name):
    for prefix, family in FAMILIES:
        rest = file_name[len(prefix):]
        if file_name.startswith(prefix) and (rest == "" or rest[0] in "._"):
            return family
    return None


def mapped_paths(maps):
    seen, paths = set(), []
    for line in maps.splitlines():
        start = line.find("/")
        if start < 0:
            continue
        path = line[start:].rstrip()
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        if path not in seen:
            seen.add(path)
            paths.append(path)
    return paths


def file_version(file_name):
    _, sep, version = file_name.partition(".so.")
    return version if sep and version else None


_records = {}


def _owners(site):
    if site not in _records:
        owners = {}
        try:
            entries = os.listdir(site)
        except OSError:
            entries = []
        for folder in entries:
            if not folder.endswith(".dist-info"):
                continue
            distribution = folder[: -len(".dist-info")].replace("-", " ", 1)
            try:
                with open(os.path.join(site, folder, "RECORD"), encoding="utf-8") as record:
                    for line in record:
                        owners[line.split(",", 1)[0]] = distribution
            except OSError:
                continue
        _records[site] = owners
    return _records[site]


def distribution_of(path):
    parts = path.split("/")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] in ("site-packages", "dist-packages"):
            site = "/".join(parts[: i + 1])
            return _owners(site).get("/".join(parts[i + 1:]))
    return None


def libraries_from_maps(maps):
    libraries = []
    for path in mapped_paths(maps):
        name = os.path.basename(path)
        family = family_of(name)
        if family:
            libraries.append({"family": family, "path": path, "file_version": file_version(name),
                              "distribution": distribution_of(path)})
    return libraries


def query_gpu(field, device=0):
    try:
        result = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader", "-i", str(device)],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    value = result.stdout.strip()
    return value if result.returncode == 0 and value else None


def collect(device=None):
    """The same fields as the Rust ProcessReport, plus `torch` when torch is imported."""
    import sys

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            libraries, error = libraries_from_maps(maps.read()), None
    except OSError as exc:
        libraries, error = [], str(exc)
    report = {"pid": os.getpid(), "gpu": None, "driver": None, "onnxruntime_version": None, "libraries": libraries, "error": error,
              "ld_library_path": os.environ.get("LD_LIBRARY_PATH")}
    if device is not None:
        report["gpu"] = query_gpu("name", device)
        report["driver"] = query_gpu("driver_version", device)
    torch = sys.modules.get("torch")
    if torch is not None:
        info = {"version": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        if torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name()
            info["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            info["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
            try:
                info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
            except Exception:  # noqa: BLE001 - a torch without NCCL reports none
                info["nccl"] = None
        report["torch"] = info
    versions = {}
    for name in ("diffusers", "transformers", "triton"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", None)
    report["packages"] = versions
    return report
