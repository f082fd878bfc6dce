//! An allocator without an arena for ONNX Runtime's environment (the CPU's default,
//! `SKYREELS_CPU_ARENA=arena` turns it off; on GPUs `SKYREELS_CUDA_ARENA=direct`): every tensor is
//! one allocation from CUDA (`cuMemAlloc`) or the C library, given back when ONNX Runtime frees it. An arena keeps what it ever took and
//! fragments (the VAE decode reserved 10.1 GB for at most 6.7 GB of live tensors, H200 run 10);
//! this holds exactly the live tensors, at the cost of a driver call per tensor. `cuMemFree` waits
//! for the work queued on the GPU, so a freed block is never still in use by a kernel.
//! ONNX Runtime has no such allocator for CUDA (its mempool option is stream-ordered and names its
//! memory differently), so this implements its C allocator interface.
#![expect(
    unsafe_code,
    reason = "ONNX Runtime's allocator interface is a C vtable of raw pointers"
)]

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::sync::{Arc, Mutex};

use cudarc::driver::CudaContext;
use ort::AsPointer;
use ort::environment::Environment;
use ort::memory::MemoryInfo;

use crate::cuda_arena::ArenaStats;
use crate::error::{Result, RuntimeError};

/// Where the blocks come from.
trait Memory: Send + Sync {
    /// A block of `size` bytes (more than zero), or `None` when there is no memory.
    fn allocate(&self, size: usize) -> Option<*mut c_void>;
    /// Gives back a block `allocate` returned.
    fn free(&self, block: *mut c_void, size: usize);
}

/// GPU memory of one device through the CUDA driver.
struct CudaMemory(Arc<CudaContext>);

impl Memory for CudaMemory {
    fn allocate(&self, size: usize) -> Option<*mut c_void> {
        self.0.bind_to_thread().ok()?;
        // SAFETY: a plain device allocation in the context just made current.
        let pointer = unsafe { cudarc::driver::result::malloc_sync(size) }.ok()?;
        Some(pointer as *mut c_void)
    }

    fn free(&self, block: *mut c_void, _size: usize) {
        if self.0.bind_to_thread().is_err() {
            return;
        }
        // SAFETY: `block` came from `allocate` in this context and is freed once. A failure
        // leaves the block allocated; there is no caller to report it to.
        let _ =
            unsafe { cudarc::driver::result::free_sync(block as cudarc::driver::sys::CUdeviceptr) };
    }
}

/// Host memory from the C library (which gives large blocks back to the system when freed).
struct HostMemory;

/// The alignment ONNX Runtime's CPU kernels expect (its own CPU allocator's).
const HOST_ALIGNMENT: usize = 64;

impl Memory for HostMemory {
    fn allocate(&self, size: usize) -> Option<*mut c_void> {
        let layout = std::alloc::Layout::from_size_align(size, HOST_ALIGNMENT).ok()?;
        // SAFETY: `size` is not zero (checked by the caller).
        let pointer = unsafe { std::alloc::alloc(layout) };
        (!pointer.is_null()).then_some(pointer.cast())
    }

    fn free(&self, block: *mut c_void, size: usize) {
        let layout = std::alloc::Layout::from_size_align(size, HOST_ALIGNMENT)
            .expect("the layout allocate accepted");
        // SAFETY: `block` came from `allocate` with this size and is freed once.
        unsafe { std::alloc::dealloc(block.cast(), layout) };
    }
}

/// What the allocator has handed out.
#[derive(Default)]
struct Ledger {
    sizes: HashMap<usize, usize>,
    in_use: u64,
    max_in_use: u64,
    max_allocation: u64,
    allocations: u64,
}

/// Blocks from `memory`, each recorded in the ledger until it is freed.
struct Blocks {
    memory: Box<dyn Memory>,
    ledger: Mutex<Ledger>,
}

/// ONNX Runtime's allocator vtable followed by our state; ONNX Runtime passes the vtable's
/// address back, which is this struct's (`repr(C)`, vtable first).
#[repr(C)]
struct DirectAllocator {
    vtable: ort::sys::OrtAllocator,
    info: MemoryInfo<'static>,
    blocks: Blocks,
}

impl DirectAllocator {
    /// # Safety
    /// `this` must be the vtable of a live `DirectAllocator`.
    unsafe fn blocks<'a>(this: *const ort::sys::OrtAllocator) -> &'a Blocks {
        // SAFETY: the vtable is the struct's first field (repr(C)) and the allocator is leaked.
        unsafe { &(*this.cast::<DirectAllocator>()).blocks }
    }
}

impl Blocks {
    fn new(memory: Box<dyn Memory>) -> Blocks {
        Blocks {
            memory,
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn allocate(&self, size: usize) -> *mut c_void {
        if size == 0 {
            return std::ptr::null_mut();
        }
        let Some(block) = self.memory.allocate(size) else {
            return std::ptr::null_mut();
        };
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        ledger.sizes.insert(block as usize, size);
        ledger.in_use += size as u64;
        ledger.max_in_use = ledger.max_in_use.max(ledger.in_use);
        ledger.max_allocation = ledger.max_allocation.max(size as u64);
        ledger.allocations += 1;
        block
    }

    fn free(&self, block: *mut c_void) {
        if block.is_null() {
            return;
        }
        let size = {
            let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let Some(size) = ledger.sizes.remove(&(block as usize)) else {
                return;
            };
            ledger.in_use -= size as u64;
            size
        };
        self.memory.free(block, size);
    }

    /// Arena-like statistics: `reserved` is what it held at most (it holds only live tensors).
    fn stats(&self) -> ArenaStats {
        let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        ArenaStats {
            in_use: ledger.in_use,
            max_in_use: ledger.max_in_use,
            reserved: ledger.max_in_use,
            max_allocation: ledger.max_allocation,
            extensions: ledger.allocations,
            allocations: ledger.allocations,
        }
    }
}

unsafe extern "system" fn alloc(this: *mut ort::sys::OrtAllocator, size: usize) -> *mut c_void {
    // SAFETY: ONNX Runtime calls with the vtable it was registered with.
    unsafe { DirectAllocator::blocks(this) }.allocate(size)
}

unsafe extern "system" fn free(this: *mut ort::sys::OrtAllocator, block: *mut c_void) {
    // SAFETY: as in `alloc`.
    unsafe { DirectAllocator::blocks(this) }.free(block);
}

unsafe extern "system" fn memory_info(
    this: *const ort::sys::OrtAllocator,
) -> *const ort::sys::OrtMemoryInfo {
    // SAFETY: as in `alloc`.
    unsafe { &*this.cast::<DirectAllocator>() }.info.ptr()
}

unsafe extern "system" fn reserve(this: *const ort::sys::OrtAllocator, size: usize) -> *mut c_void {
    // SAFETY: as in `alloc`.
    unsafe { DirectAllocator::blocks(this) }.allocate(size)
}

unsafe extern "system" fn get_stats(
    this: *const ort::sys::OrtAllocator,
    out: *mut *mut ort::sys::OrtKeyValuePairs,
) -> ort::sys::OrtStatusPtr {
    // SAFETY: as in `alloc`.
    let stats = unsafe { DirectAllocator::blocks(this) }.stats();
    let api = ort::api();
    let mut pairs: *mut ort::sys::OrtKeyValuePairs = std::ptr::null_mut();
    // SAFETY: ONNX Runtime owns and releases the pairs it receives through `out`.
    unsafe { (api.CreateKeyValuePairs)(&mut pairs) };
    for (key, value) in [
        (c"InUse", stats.in_use),
        (c"MaxInUse", stats.max_in_use),
        (c"TotalAllocated", stats.reserved),
        (c"MaxAllocSize", stats.max_allocation),
        (c"NumArenaExtensions", stats.extensions),
        (c"NumAllocs", stats.allocations),
    ] {
        let value = CString::new(value.to_string()).expect("digits have no NUL");
        // SAFETY: both strings are valid for the call; ONNX Runtime copies them.
        unsafe { (api.AddKeyValuePair)(pairs, key.as_ptr(), value.as_ptr()) };
    }
    // SAFETY: `out` is ONNX Runtime's slot for the result.
    unsafe { *out = pairs };
    ort::sys::OrtStatusPtr(std::ptr::null_mut())
}

/// Registers `memory` under `info` in `environment`, for every session that uses the
/// environment's allocators. The allocator lives as long as the process (as the environment).
fn register(
    environment: &Environment,
    info: MemoryInfo<'static>,
    memory: Box<dyn Memory>,
    what: &str,
) -> Result<()> {
    // SAFETY: a vtable whose entries are all filled in below or left empty (optional ones).
    let mut vtable = unsafe { ort::sys::OrtAllocator::default() };
    vtable.Alloc = Some(alloc);
    vtable.Free = Some(free);
    vtable.Info = Some(memory_info);
    vtable.Reserve = Some(reserve);
    vtable.GetStats = Some(get_stats);
    let allocator = Box::leak(Box::new(DirectAllocator {
        vtable,
        info,
        blocks: Blocks::new(memory),
    }));
    let api = ort::api();
    // SAFETY: the environment is live and the allocator outlives it (leaked).
    let status =
        unsafe { (api.RegisterAllocator)(environment.ptr().cast_mut(), &mut allocator.vtable) };
    crate::cuda_arena::check(status, what)
}

/// Registers a direct allocator of GPU `device`'s memory.
pub fn register_cuda(environment: &Environment, device: i32) -> Result<()> {
    let what = format!("registering a direct CUDA allocator for GPU {device}");
    let ordinal = usize::try_from(device)
        .map_err(|_| RuntimeError::Invalid(format!("GPU index {device} is negative")))?;
    let context = CudaContext::new(ordinal).map_err(|e| RuntimeError::Cuda {
        context: what.clone(),
        message: e.to_string(),
    })?;
    let info = crate::session::cuda_memory(device).map_err(|e| RuntimeError::Ort {
        context: what.clone(),
        message: e.to_string(),
    })?;
    register(environment, info, Box::new(CudaMemory(context)), &what)
}

/// Registers a direct allocator of host memory for the CPU's sessions.
pub fn register_host(environment: &Environment) -> Result<()> {
    let what = "registering a direct CPU allocator";
    // ONNX Runtime takes only allocators registered as plain device allocators.
    let info = MemoryInfo::new(
        ort::memory::AllocationDevice::CPU,
        0,
        ort::memory::AllocatorType::Device,
        ort::memory::MemoryType::Default,
    )
    .map_err(|e| RuntimeError::Ort {
        context: what.to_string(),
        message: e.to_string(),
    })?;
    register(environment, info, Box::new(HostMemory), what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_counts_live_bytes_and_their_peak() {
        let allocator = Blocks::new(Box::new(HostMemory));
        let a = allocator.allocate(1000);
        let b = allocator.allocate(24);
        assert!(!a.is_null() && !b.is_null());
        assert_eq!(a as usize % HOST_ALIGNMENT, 0);
        allocator.free(a);
        let c = allocator.allocate(500);
        let stats = allocator.stats();
        assert_eq!(
            stats,
            ArenaStats {
                in_use: 524,
                max_in_use: 1024,
                reserved: 1024,
                max_allocation: 1000,
                extensions: 3,
                allocations: 3,
            }
        );
        allocator.free(b);
        allocator.free(c);
        // A pointer it never handed out, and null, are ignored rather than freed.
        allocator.free(std::ptr::null_mut());
        allocator.free(8usize as *mut c_void);
        assert_eq!(allocator.stats().in_use, 0);
        assert!(allocator.allocate(0).is_null());
    }
}
