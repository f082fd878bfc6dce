//! One CUDA memory arena per GPU shared by every session (ONNX Runtime's environment allocators),
//! instead of one per session, and one CPU arena for the CPU's sessions likewise. Each session's
//! arena keeps the blocks it ever used, so with separate arenas the DiT's and the VAE's peaks add
//! up; with one shared arena the VAE reuses the memory the DiT's activations left free.
#![expect(
    unsafe_code,
    reason = "ort has no wrapper for ONNX Runtime's environment allocators; the C API is called directly"
)]

use std::collections::HashSet;
use std::ffi::{CStr, CString, c_char};
use std::sync::Mutex;

use ort::AsPointer;
use ort::environment::Environment;

use crate::error::{Result, RuntimeError};

static REGISTERED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Whether sessions share one arena per GPU (default, `SKYREELS_CUDA_ARENA=mempool` and
/// `=direct`) or keep their own (`SKYREELS_CUDA_ARENA=session`).
pub fn shared_arena_enabled() -> bool {
    std::env::var("SKYREELS_CUDA_ARENA").map_or(true, |v| v != "session")
}

/// Whether GPU memory comes straight from CUDA, tensor by tensor, with no arena to shrink
/// (`SKYREELS_CUDA_ARENA=direct`, [`crate::direct_allocator`]).
pub fn cuda_direct() -> bool {
    std::env::var("SKYREELS_CUDA_ARENA").is_ok_and(|v| v == "direct")
}

pub(crate) fn check(status: ort::sys::OrtStatusPtr, what: &str) -> Result<()> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status from the C API holds a NUL-terminated message until released.
    let message = unsafe { CStr::from_ptr((api.GetErrorMessage)(status.0)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: the status is owned by us and released once.
    unsafe { (api.ReleaseStatus)(status.0) };
    Err(RuntimeError::Ort {
        context: what.to_string(),
        message,
    })
}

/// Registers a shared CUDA arena for `device` in `environment` (once per process and GPU).
pub fn register(environment: &Environment, device: i32) -> Result<()> {
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    let devices = registered.get_or_insert_with(HashSet::new);
    if devices.contains(&device) {
        return Ok(());
    }
    if cuda_direct() {
        crate::direct_allocator::register_cuda(environment, device)?;
        devices.insert(device);
        return Ok(());
    }
    let api = ort::api();
    let what = format!("registering a shared CUDA arena for GPU {device}");
    // Grow by what is asked, as the per-session arenas do (see `session::Backend`), unless
    // SKYREELS_CUDA_ARENA_EXTEND=pow2; SKYREELS_CUDA_ARENA_INITIAL_MB sets the first region.
    let strategy =
        usize::from(std::env::var("SKYREELS_CUDA_ARENA_EXTEND").map_or(true, |v| v != "pow2"));
    let mut keys: Vec<*const c_char> = vec![c"arena_extend_strategy".as_ptr()];
    let mut values: Vec<usize> = vec![strategy];
    // SKYREELS_CUDA_ARENA_MAX_EXTEND_MB caps each growth under SKYREELS_CUDA_ARENA_EXTEND=pow2.
    for (variable, key) in [
        (
            "SKYREELS_CUDA_ARENA_INITIAL_MB",
            c"initial_chunk_size_bytes",
        ),
        (
            "SKYREELS_CUDA_ARENA_MAX_EXTEND_MB",
            c"max_power_of_two_extend_bytes",
        ),
    ] {
        if let Some(megabytes) = std::env::var(variable)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            keys.push(key.as_ptr());
            values.push(megabytes << 20);
        }
    }
    // SKYREELS_CUDA_ARENA=mempool: CUDA's own stream-ordered pool (cudaMallocFromPoolAsync)
    // instead of ONNX Runtime's best-fit arena, for measuring what the arena's fragmentation costs.
    // The pool gives its free memory back to CUDA at every synchronisation (the end of each
    // run) unless SKYREELS_CUDA_MEMPOOL_KEEP_MB keeps that much.
    if std::env::var("SKYREELS_CUDA_ARENA").is_ok_and(|v| v == "mempool") {
        keys.push(c"use_cuda_mempool".as_ptr());
        values.push(1);
        if let Some(megabytes) = std::env::var("SKYREELS_CUDA_MEMPOOL_KEEP_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            keys.push(c"cuda_mempool_release_threshold".as_ptr());
            values.push(megabytes << 20);
        }
    }
    let memory = crate::session::cuda_memory(device).map_err(|e| RuntimeError::Ort {
        context: what.clone(),
        message: e.to_string(),
    })?;
    let device_id = CString::new(device.to_string()).expect("digits have no NUL");
    let option_keys: [*const c_char; 1] = [c"device_id".as_ptr()];
    let option_values: [*const c_char; 1] = [device_id.as_ptr()];
    register_arena(&keys, &values, &what, |config| {
        // SAFETY: every pointer is valid for the call; ONNX Runtime copies what it keeps.
        unsafe {
            (api.CreateAndRegisterAllocatorV2)(
                environment.ptr().cast_mut(),
                c"CUDAExecutionProvider".as_ptr(),
                memory.ptr(),
                config,
                option_keys.as_ptr(),
                option_values.as_ptr(),
                1,
            )
        }
    })?;
    devices.insert(device);
    Ok(())
}

/// Makes an arena configuration from `keys` and `values` (ONNX Runtime's arena options), hands
/// it to `create` (which registers the allocator and returns its status) and releases it.
fn register_arena(
    keys: &[*const c_char],
    values: &[usize],
    what: &str,
    create: impl FnOnce(*const ort::sys::OrtArenaCfg) -> ort::sys::OrtStatusPtr,
) -> Result<()> {
    let api = ort::api();
    let mut config: *mut ort::sys::OrtArenaCfg = std::ptr::null_mut();
    // SAFETY: keys and values have the length passed; `config` receives an owned pointer.
    check(
        unsafe { (api.CreateArenaCfgV2)(keys.as_ptr(), values.as_ptr(), keys.len(), &mut config) },
        what,
    )?;
    let status = create(config);
    // SAFETY: `config` came from CreateArenaCfgV2 and is released once.
    unsafe { (api.ReleaseArenaCfg)(config) };
    check(status, what)
}

/// Registers one CPU allocator in `environment` for every session of the process (once): the
/// direct one ([`crate::direct_allocator`]) or, with `SKYREELS_CPU_ARENA=arena`, one shared arena.
/// Without a shared allocator each session keeps its own arena and its own peak, so the stages of
/// a VAE chunk call and the models of a generation would add up their peaks on the CPU as they
/// did on the GPU.
pub fn register_cpu(environment: &Environment) -> Result<()> {
    static CPU_REGISTERED: Mutex<bool> = Mutex::new(false);
    let mut registered = CPU_REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    if *registered {
        return Ok(());
    }
    // By default every tensor comes from the C library and goes back when freed: the arena kept
    // 1.62 GB for at most 0.91 GB of live tensors in a real-size VAE decode at 136x240, and a
    // 17-frame generation with that VAE took 2.13 GB peak RSS and 35.6 s with it, 1.77 GB and
    // 32.7 s without (2 cores). SKYREELS_CPU_ARENA=arena brings the arena back.
    if std::env::var("SKYREELS_CPU_ARENA").map_or(true, |v| v != "arena") {
        crate::direct_allocator::register_host(environment)?;
        *registered = true;
        return Ok(());
    }
    let api = ort::api();
    let what = "registering a shared CPU arena".to_string();
    let memory = crate::session::cpu_memory().map_err(|e| RuntimeError::Ort {
        context: what.clone(),
        message: e.to_string(),
    })?;
    // Grow by what is asked (ONNX Runtime's CPU default doubles), as the CUDA arena does.
    let keys: [*const c_char; 1] = [c"arena_extend_strategy".as_ptr()];
    let values: [usize; 1] = [1];
    register_arena(&keys, &values, &what, |config| {
        // SAFETY: every pointer is valid for the call; ONNX Runtime copies what it keeps.
        unsafe {
            (api.CreateAndRegisterAllocator)(environment.ptr().cast_mut(), memory.ptr(), config)
        }
    })?;
    *registered = true;
    Ok(())
}

/// What an ONNX Runtime arena reports about itself (`AllocatorGetStats`), in bytes: what its
/// live tensors hold now and at most (`in_use`, `max_in_use`), what it took from CUDA
/// (`reserved`, never given back), its largest single allocation and how often it grew. The
/// difference between `reserved` and `max_in_use` is what fragmentation cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArenaStats {
    /// Bytes held by live allocations now.
    pub in_use: u64,
    /// The largest `in_use` so far.
    pub max_in_use: u64,
    /// Bytes the arena holds from CUDA.
    pub reserved: u64,
    /// The largest single allocation.
    pub max_allocation: u64,
    /// Times the arena grew.
    pub extensions: u64,
    /// Allocations served.
    pub allocations: u64,
}

impl ArenaStats {
    /// From ONNX Runtime's key-value pairs (`InUse`, `MaxInUse`, `TotalAllocated`,
    /// `MaxAllocSize`, `NumArenaExtensions`, `NumAllocs`); `None` without `InUse` (an allocator
    /// that is not an arena).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let mut stats = ArenaStats::default();
        let mut found = false;
        for (key, value) in pairs {
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            let field = match key {
                "InUse" => {
                    found = true;
                    &mut stats.in_use
                }
                "MaxInUse" => &mut stats.max_in_use,
                "TotalAllocated" => &mut stats.reserved,
                "MaxAllocSize" => &mut stats.max_allocation,
                "NumArenaExtensions" => &mut stats.extensions,
                "NumAllocs" => &mut stats.allocations,
                _ => continue,
            };
            *field = value;
        }
        found.then_some(stats)
    }

    /// One line in MiB for logs.
    pub fn describe(&self) -> String {
        let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
        format!(
            "arena in use {:.0} MiB (at most {:.0} MiB), reserved {:.0} MiB, largest allocation {:.0} MiB, {} extensions, {} allocations",
            mib(self.in_use),
            mib(self.max_in_use),
            mib(self.reserved),
            mib(self.max_allocation),
            self.extensions,
            self.allocations
        )
    }
}

/// The statistics of `allocator`'s arena, `None` where ONNX Runtime keeps none for it.
pub fn stats(allocator: &ort::memory::Allocator) -> Result<Option<ArenaStats>> {
    let api = ort::api();
    let mut pairs: *mut ort::sys::OrtKeyValuePairs = std::ptr::null_mut();
    // SAFETY: the allocator pointer is valid while `allocator` lives; `pairs` receives an owned
    // pointer or stays null.
    check(
        unsafe { (api.AllocatorGetStats)(allocator.ptr(), &mut pairs) },
        "reading the CUDA arena's statistics",
    )?;
    if pairs.is_null() {
        return Ok(None);
    }
    let mut keys: *const *const c_char = std::ptr::null();
    let mut values: *const *const c_char = std::ptr::null();
    let mut count = 0usize;
    // SAFETY: `pairs` is valid; the arrays stay valid until `pairs` is released below.
    unsafe { (api.GetKeyValuePairs)(pairs, &mut keys, &mut values, &mut count) };
    let mut owned = Vec::with_capacity(count);
    for index in 0..count {
        // SAFETY: `index < count`, and each entry is a NUL-terminated string owned by `pairs`.
        let (key, value) = unsafe {
            (
                CStr::from_ptr(*keys.add(index))
                    .to_string_lossy()
                    .into_owned(),
                CStr::from_ptr(*values.add(index))
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        owned.push((key, value));
    }
    // SAFETY: `pairs` came from AllocatorGetStats and is released once.
    unsafe { (api.ReleaseKeyValuePairs)(pairs) };
    Ok(ArenaStats::from_pairs(
        owned.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_read_from_onnx_runtimes_keys() {
        let pairs = [
            ("Limit", "0"),
            ("InUse", "1048576"),
            ("TotalAllocated", "3145728"),
            ("MaxInUse", "2097152"),
            ("NumAllocs", "7"),
            ("NumReserves", "0"),
            ("NumArenaExtensions", "2"),
            ("NumArenaShrinkages", "0"),
            ("MaxAllocSize", "1048576"),
        ];
        let stats = ArenaStats::from_pairs(pairs).unwrap();
        assert_eq!(
            stats,
            ArenaStats {
                in_use: 1 << 20,
                max_in_use: 2 << 20,
                reserved: 3 << 20,
                max_allocation: 1 << 20,
                extensions: 2,
                allocations: 7,
            }
        );
        assert_eq!(
            stats.describe(),
            "arena in use 1 MiB (at most 2 MiB), reserved 3 MiB, largest allocation 1 MiB, 2 extensions, 7 allocations"
        );
        assert_eq!(ArenaStats::from_pairs([("Limit", "0")]), None);
    }
}
