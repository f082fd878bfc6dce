//! One CUDA memory arena per GPU shared by every session (ONNX Runtime's environment allocators),
//! instead of one per session. Each session's arena keeps the blocks it ever used, so with
//! separate arenas the DiT's and the VAE's peaks add up; with one shared arena the VAE reuses the
//! memory the DiT's activations left free.
#![expect(
    unsafe_code,
    reason = "ort has no wrapper for ONNX Runtime's environment allocators; the C API is called directly"
)]

use std::collections::HashSet;
use std::ffi::{CStr, CString, c_char};
use std::sync::Mutex;

use ort::AsPointer;
use ort::environment::Environment;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};

use crate::error::{Result, RuntimeError};

static REGISTERED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Whether sessions share one arena per GPU (default) or keep their own
/// (`SKYREELS_CUDA_ARENA=session`).
pub fn shared_arena_enabled() -> bool {
    std::env::var("SKYREELS_CUDA_ARENA").map_or(true, |v| v != "session")
}

fn check(status: ort::sys::OrtStatusPtr, what: &str) -> Result<()> {
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
    let api = ort::api();
    let what = format!("registering a shared CUDA arena for GPU {device}");
    // Grow by what is asked, as the per-session arenas do (see `session::Backend`), unless
    // SKYREELS_CUDA_ARENA_EXTEND=pow2; SKYREELS_CUDA_ARENA_INITIAL_MB sets the first region.
    let strategy =
        usize::from(std::env::var("SKYREELS_CUDA_ARENA_EXTEND").map_or(true, |v| v != "pow2"));
    let mut keys: Vec<*const c_char> = vec![c"arena_extend_strategy".as_ptr()];
    let mut values: Vec<usize> = vec![strategy];
    if let Some(megabytes) = std::env::var("SKYREELS_CUDA_ARENA_INITIAL_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        keys.push(c"initial_chunk_size_bytes".as_ptr());
        values.push(megabytes << 20);
    }
    let mut config: *mut ort::sys::OrtArenaCfg = std::ptr::null_mut();
    // SAFETY: keys and values have the length passed; `config` receives an owned pointer.
    check(
        unsafe { (api.CreateArenaCfgV2)(keys.as_ptr(), values.as_ptr(), keys.len(), &mut config) },
        &what,
    )?;
    let memory = MemoryInfo::new(
        AllocationDevice::CUDA,
        device,
        AllocatorType::Device,
        MemoryType::Default,
    )
    .map_err(|e| RuntimeError::Ort {
        context: what.clone(),
        message: e.to_string(),
    })?;
    let device_id = CString::new(device.to_string()).expect("digits have no NUL");
    let option_keys: [*const c_char; 1] = [c"device_id".as_ptr()];
    let option_values: [*const c_char; 1] = [device_id.as_ptr()];
    // SAFETY: every pointer is valid for the call; ONNX Runtime copies what it keeps.
    let status = unsafe {
        (api.CreateAndRegisterAllocatorV2)(
            environment.ptr().cast_mut(),
            c"CUDAExecutionProvider".as_ptr(),
            memory.ptr(),
            config,
            option_keys.as_ptr(),
            option_values.as_ptr(),
            1,
        )
    };
    // SAFETY: `config` came from CreateArenaCfgV2 and is released once.
    unsafe { (api.ReleaseArenaCfg)(config) };
    check(status, &what)?;
    devices.insert(device);
    Ok(())
}
