//! The NCCL transport: GPU buffers, collectives queued on one CUDA stream this communicator owns
//! (hand [`NcclCommunicator::stream_handle`] to ONNX Runtime's CUDA provider as
//! `user_compute_stream` so graphs and collectives are ordered without host waits), staging
//! buffers for the all-to-all allocated once at creation. NCCL is loaded at run time from
//! `libnccl.so.2` (see `nccl_search`); the types come from cudarc's NCCL bindings, streams and
//! memory from cudarc's driver API. NCCL has no all-to-all in older versions, so it is grouped
//! send/receive, as PyTorch does; each chunk's pack and unpack is one `cuMemcpy2DAsync`.
#![expect(
    unsafe_code,
    reason = "NCCL is loaded at run time and called through its C ABI; CUDA 2-D copies take raw descriptors"
)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys as cuda;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use cudarc::nccl::sys::{cudaStream_t, ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};

use super::axis::{AllToAll, Concat, StridedCopy};
use super::communicator::Communicator;
use super::error::{ParallelError, Result};
use super::nccl_search::NcclSearch;
use super::rendezvous::UNIQUE_ID_BYTES;

type Status = c_int;

struct Functions {
    path: PathBuf,
    get_version: unsafe extern "C" fn(*mut c_int) -> Status,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> Status,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> Status,
    comm_split:
        unsafe extern "C" fn(ncclComm_t, c_int, c_int, *mut ncclComm_t, *mut c_void) -> Status,
    comm_destroy: unsafe extern "C" fn(ncclComm_t) -> Status,
    get_error_string: unsafe extern "C" fn(Status) -> *const c_char,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclRedOp_t,
        ncclComm_t,
        cudaStream_t,
    ) -> Status,
    all_gather: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclComm_t,
        cudaStream_t,
    ) -> Status,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> Status,
    send: unsafe extern "C" fn(
        *const c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> Status,
    recv: unsafe extern "C" fn(
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> Status,
    group_start: unsafe extern "C" fn() -> Status,
    group_end: unsafe extern "C" fn() -> Status,
    _library: libloading::Library,
}

static FUNCTIONS: OnceLock<std::result::Result<Functions, String>> = OnceLock::new();

fn open(search: &NcclSearch) -> std::result::Result<Functions, String> {
    let mut tried = Vec::new();
    let mut candidates = search.candidates();
    let mut asked_python = false;
    let mut index = 0;
    loop {
        if index == candidates.len() {
            if asked_python {
                break;
            }
            asked_python = true;
            match search.python_candidate() {
                Some(candidate) => candidates.push(candidate),
                None => {
                    if let (None, Some(python)) = (&search.explicit, &search.python) {
                        tried.push(format!("{} has no nvidia.nccl package", python.display()));
                    }
                    break;
                }
            }
        }
        let candidate = candidates[index].clone();
        index += 1;
        // SAFETY: loading NCCL runs its initialisers, which only set up NCCL's own state.
        match unsafe { libloading::Library::new(&candidate) } {
            Ok(library) => match resolve(library, candidate.clone()) {
                Ok(functions) => return Ok(functions),
                Err(missing) => tried.push(missing),
            },
            Err(e) => {
                let reason = std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), ToString::to_string);
                tried.push(format!("{} ({reason})", candidate.display()));
            }
        }
    }
    Err(tried.join("; "))
}

fn resolve(library: libloading::Library, path: PathBuf) -> std::result::Result<Functions, String> {
    macro_rules! symbol {
        ($name:literal) => {
            // SAFETY: the symbol is NCCL's C function of that name; the field's type is its
            // prototype from nccl.h (status as int, the config pointer as void*).
            *unsafe { library.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("{} has no {}: {e}", path.display(), $name))?
        };
    }
    Ok(Functions {
        get_version: symbol!("ncclGetVersion"),
        get_unique_id: symbol!("ncclGetUniqueId"),
        comm_init_rank: symbol!("ncclCommInitRank"),
        comm_split: symbol!("ncclCommSplit"),
        comm_destroy: symbol!("ncclCommDestroy"),
        get_error_string: symbol!("ncclGetErrorString"),
        all_reduce: symbol!("ncclAllReduce"),
        all_gather: symbol!("ncclAllGather"),
        broadcast: symbol!("ncclBroadcast"),
        send: symbol!("ncclSend"),
        recv: symbol!("ncclRecv"),
        group_start: symbol!("ncclGroupStart"),
        group_end: symbol!("ncclGroupEnd"),
        path,
        _library: library,
    })
}

/// What was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NcclLibrary {
    /// The file (or name) that loaded.
    pub path: PathBuf,
    /// `ncclGetVersion`, e.g. 22703 for 2.27.3.
    pub version: i32,
}

/// Loads NCCL (once per process) with the search `search`; later calls return the first outcome.
/// Also sets `NCCL_NVLS_ENABLE=0` (NVLink multicast off) unless the variable already is 0: call
/// it before the process starts other threads that read the environment.
pub fn load(search: &NcclSearch) -> Result<NcclLibrary> {
    let functions = functions_with(search)?;
    let mut version = 0;
    // SAFETY: `version` is a valid out pointer.
    let status = unsafe { (functions.get_version)(&mut version) };
    check(functions, status, "ncclGetVersion", 0)?;
    Ok(NcclLibrary {
        path: functions.path.clone(),
        version,
    })
}

fn functions_with(search: &NcclSearch) -> Result<&'static Functions> {
    FUNCTIONS
        .get_or_init(|| {
            if std::env::var("NCCL_NVLS_ENABLE").as_deref() != Ok("0") {
                // SAFETY: documented precondition of `load`: no other thread reads or writes the
                // environment while NCCL is first loaded (before any communicator exists).
                unsafe { std::env::set_var("NCCL_NVLS_ENABLE", "0") };
            }
            open(search)
        })
        .as_ref()
        .map_err(|tried| ParallelError::NcclMissing {
            tried: tried.clone(),
        })
}

fn functions() -> Result<&'static Functions> {
    functions_with(&NcclSearch::from_environment())
}

/// Tries `search` without caching (tests of the error path).
pub fn probe(search: &NcclSearch) -> Result<PathBuf> {
    open(search)
        .map(|f| f.path.clone())
        .map_err(|tried| ParallelError::NcclMissing { tried })
}

fn check(functions: &Functions, status: Status, call: &'static str, rank: usize) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any status.
    let message = unsafe { CStr::from_ptr((functions.get_error_string)(status)) }
        .to_string_lossy()
        .into_owned();
    Err(ParallelError::Nccl {
        call,
        rank,
        message: format!("{message} (status {status})"),
        fix: "run with NCCL_DEBUG=WARN for NCCL's own account; check that every rank runs and sees its GPU",
    })
}

fn cuda_error(
    context: impl Into<String>,
) -> impl FnOnce(cudarc::driver::DriverError) -> ParallelError {
    let context = context.into();
    move |e| ParallelError::Cuda {
        context,
        message: e.to_string(),
    }
}

/// Checks that the CUDA driver library loads (cudarc's loader would panic instead).
fn check_driver() -> Result<()> {
    let mut messages = Vec::new();
    for name in ["libcuda.so.1", "libcuda.so"] {
        // SAFETY: loading the CUDA driver runs its initialisers only; the handle is dropped.
        match unsafe { libloading::Library::new(name) } {
            Ok(_) => return Ok(()),
            Err(e) => messages.push(
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
            ),
        }
    }
    Err(ParallelError::CudaDriverMissing {
        message: messages.join("; "),
    })
}

/// GPUs the CUDA driver sees (after checking that the driver library loads).
pub fn device_count() -> Result<usize> {
    check_driver()?;
    CudaContext::device_count()
        .map(|count| count.max(0) as usize)
        .map_err(cuda_error("counting GPUs"))
}

/// A new NCCL unique id (rank 0 creates it; the rendezvous hands it to the others).
pub fn unique_id() -> Result<[u8; UNIQUE_ID_BYTES]> {
    let functions = functions()?;
    let mut id = ncclUniqueId {
        internal: [0; UNIQUE_ID_BYTES],
    };
    // SAFETY: `id` is a valid out pointer.
    let status = unsafe { (functions.get_unique_id)(&mut id) };
    check(functions, status, "ncclGetUniqueId", 0)?;
    Ok(id.internal.map(|c| c as u8))
}

/// Device memory of the NCCL transport.
pub struct DeviceBuffer {
    memory: CudaSlice<u8>,
}

impl DeviceBuffer {
    /// Bytes.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.memory.len() == 0
    }
}

/// A group of GPU ranks connected by NCCL.
pub struct NcclCommunicator {
    functions: &'static Functions,
    comm: ncclComm_t,
    rank: usize,
    size: usize,
    stream: Arc<CudaStream>,
    send_staging: CudaSlice<u8>,
    receive_staging: CudaSlice<u8>,
    barrier_buffer: CudaSlice<u8>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
// overlap; every call here takes `&mut self` (or `&self` only to read plain fields), and the CUDA
// stream and memory handles belong to the primary context, which is valid on every thread.
unsafe impl Send for NcclCommunicator {}

impl NcclCommunicator {
    /// Joins the communicator `unique_id` as `rank` of `world_size` on GPU `device`, with staging
    /// buffers of `staging_bytes` (the largest all-to-all or all-gather output it will run).
    pub fn new(
        device: usize,
        rank: usize,
        world_size: usize,
        unique_id: [u8; UNIQUE_ID_BYTES],
        staging_bytes: usize,
    ) -> Result<NcclCommunicator> {
        let functions = functions()?;
        check_driver()?;
        let context =
            CudaContext::new(device).map_err(cuda_error(format!("opening GPU {device}")))?;
        let stream = context
            .new_stream()
            .map_err(cuda_error("creating the communication stream"))?;
        let id = ncclUniqueId {
            internal: unique_id.map(|b| b as c_char),
        };
        let mut comm: ncclComm_t = std::ptr::null_mut();
        context
            .bind_to_thread()
            .map_err(cuda_error(format!("making GPU {device} current")))?;
        // SAFETY: `comm` is a valid out pointer; the id came from ncclGetUniqueId on rank 0.
        let status = unsafe {
            (functions.comm_init_rank)(&mut comm, world_size as c_int, id, rank as c_int)
        };
        check(functions, status, "ncclCommInitRank", rank)?;
        NcclCommunicator::with_comm(functions, comm, rank, world_size, stream, staging_bytes)
    }

    fn with_comm(
        functions: &'static Functions,
        comm: ncclComm_t,
        rank: usize,
        size: usize,
        stream: Arc<CudaStream>,
        staging_bytes: usize,
    ) -> Result<NcclCommunicator> {
        let allocate = |bytes: usize| {
            stream
                .alloc_zeros::<u8>(bytes.max(1))
                .map_err(cuda_error(format!(
                    "allocating {bytes} bytes of staging memory"
                )))
        };
        Ok(NcclCommunicator {
            functions,
            comm,
            rank,
            size,
            send_staging: allocate(staging_bytes)?,
            receive_staging: allocate(staging_bytes)?,
            barrier_buffer: allocate(4)?,
            stream,
        })
    }

    /// The CUDA stream every collective is queued on, as the `cudaStream_t` value to pass to
    /// ONNX Runtime's CUDA provider (`user_compute_stream`).
    pub fn stream_handle(&self) -> usize {
        self.stream.cu_stream() as usize
    }

    /// `provider` set to run on this communicator's stream (`user_compute_stream`), so ONNX
    /// Runtime's kernels and the collectives run in one order without host waits. The stream is
    /// kept alive for the rest of the process, as ONNX Runtime requires.
    pub fn cuda_provider(&self, provider: ort::ep::CUDA) -> ort::ep::CUDA {
        static KEPT: std::sync::Mutex<Vec<Arc<CudaStream>>> = std::sync::Mutex::new(Vec::new());
        KEPT.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&self.stream));
        // SAFETY: the stream is never destroyed (a clone of its handle is kept above), so it
        // outlives every session configured with it.
        unsafe { provider.with_compute_stream(self.stream.cu_stream() as *mut ()) }
    }

    /// Waits for everything queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(cuda_error("waiting for the communication stream"))
    }

    /// The communicator's stream, with its GPU made current on this thread (every copy and
    /// collective is queued there).
    fn current_stream(&self) -> Result<Arc<CudaStream>> {
        self.stream
            .context()
            .bind_to_thread()
            .map_err(cuda_error("making the communicator's GPU current"))?;
        Ok(Arc::clone(&self.stream))
    }

    fn calls(&self) -> Calls {
        Calls {
            functions: self.functions,
            comm: self.comm,
            rank: self.rank,
            stream: self.stream.cu_stream() as cudaStream_t,
        }
    }

    fn check_capacity(&self, what: &str, bytes: usize) -> Result<()> {
        if bytes > self.send_staging.len() {
            return Err(ParallelError::Buffer(format!(
                "{what} of {bytes} bytes exceeds the {} bytes of staging memory allocated at start-up\n  fix: create the communicator with the largest exchange it will run",
                self.send_staging.len()
            )));
        }
        Ok(())
    }
}

/// Queues a 2-D device-to-device copy on `stream`.
fn copy_2d(
    stream: cuda::CUstream,
    copy: &StridedCopy,
    source: cuda::CUdeviceptr,
    destination: cuda::CUdeviceptr,
) -> Result<()> {
    if copy.rows == 0 || copy.row_bytes == 0 {
        return Ok(());
    }
    let descriptor = cuda::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: cuda::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: source + copy.source_offset as u64,
        srcArray: std::ptr::null_mut(),
        srcPitch: copy.source_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: cuda::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: destination + copy.destination_offset as u64,
        dstArray: std::ptr::null_mut(),
        dstPitch: copy.destination_pitch,
        WidthInBytes: copy.row_bytes,
        Height: copy.rows,
    };
    // SAFETY: both pointers are device allocations whose extents the caller checked against the
    // exchange the copy was derived from (rows × pitch stay inside the buffers).
    let result = unsafe { cuda::cuMemcpy2DAsync_v2(&descriptor, stream) };
    if result != cuda::CUresult::CUDA_SUCCESS {
        return Err(ParallelError::Cuda {
            context: "a strided copy for a collective".into(),
            message: format!("{result:?}"),
        });
    }
    Ok(())
}

/// The plain values an NCCL call needs, copied out so device-pointer guards can borrow buffers.
#[derive(Clone, Copy)]
struct Calls {
    functions: &'static Functions,
    comm: ncclComm_t,
    rank: usize,
    stream: cudaStream_t,
}

impl Calls {
    fn check(&self, status: Status, call: &'static str) -> Result<()> {
        check(self.functions, status, call, self.rank)
    }
}

impl Drop for NcclCommunicator {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        // SAFETY: `comm` came from ncclCommInitRank/ncclCommSplit and is destroyed once.
        unsafe { (self.functions.comm_destroy)(self.comm) };
    }
}

impl Communicator for NcclCommunicator {
    type Buffer = DeviceBuffer;

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn split(&mut self, color: usize) -> Result<NcclCommunicator> {
        let calls = self.calls();
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out pointer; a null config inherits the parent's.
        let status = unsafe {
            (calls.functions.comm_split)(
                calls.comm,
                color as c_int,
                self.rank as c_int,
                &mut comm,
                std::ptr::null_mut(),
            )
        };
        calls.check(status, "ncclCommSplit")?;
        let mut size: usize = 0;
        let mut rank: usize = 0;
        // ncclCommSplit orders the new group by key (our rank): find our place by a gather of
        // colors on the parent, as the TCP transport does.
        let mut colors = self.allocate(8 * self.size)?;
        let mut mine = self.allocate(8)?;
        self.write(&mut mine, &(color as u64).to_le_bytes())?;
        let concat = Concat::new(vec![8], 0, self.size, 1)?;
        self.all_gather(&mine, &mut colors, &concat)?;
        let mut host = vec![0u8; 8 * self.size];
        self.read(&colors, &mut host)?;
        for (member, bytes) in host.chunks(8).enumerate() {
            if u64::from_le_bytes(bytes.try_into().expect("8 bytes")) == color as u64 {
                if member == self.rank {
                    rank = size;
                }
                size += 1;
            }
        }
        NcclCommunicator::with_comm(
            self.functions,
            comm,
            rank,
            size,
            Arc::clone(&self.stream),
            self.send_staging.len(),
        )
    }

    fn allocate(&mut self, bytes: usize) -> Result<DeviceBuffer> {
        let memory = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(cuda_error(format!("allocating {bytes} bytes")))?;
        Ok(DeviceBuffer { memory })
    }

    fn write(&mut self, buffer: &mut DeviceBuffer, host: &[u8]) -> Result<()> {
        if host.len() > buffer.len() {
            return Err(ParallelError::Buffer(format!(
                "write of {} bytes into a buffer of {}",
                host.len(),
                buffer.len()
            )));
        }
        let mut view = buffer.memory.slice_mut(0..host.len());
        self.stream
            .memcpy_htod(host, &mut view)
            .map_err(cuda_error("copying to the GPU"))
    }

    fn read(&mut self, buffer: &DeviceBuffer, host: &mut [u8]) -> Result<()> {
        if host.len() > buffer.len() {
            return Err(ParallelError::Buffer(format!(
                "read of {} bytes from a buffer of {}",
                host.len(),
                buffer.len()
            )));
        }
        let view = buffer.memory.slice(0..host.len());
        self.stream
            .memcpy_dtoh(&view, host)
            .map_err(cuda_error("copying from the GPU"))?;
        self.synchronize()
    }

    fn all_to_all(
        &mut self,
        send: &DeviceBuffer,
        receive: &mut DeviceBuffer,
        exchange: &AllToAll,
    ) -> Result<()> {
        if exchange.parts != self.size
            || send.len() < exchange.bytes()
            || receive.len() < exchange.bytes()
        {
            return Err(ParallelError::Buffer(format!(
                "all-to-all of {} bytes over {} parts: buffers of {} and {} bytes in a group of {}",
                exchange.bytes(),
                exchange.parts,
                send.len(),
                receive.len(),
                self.size
            )));
        }
        self.check_capacity("all-to-all", exchange.bytes())?;
        let stream = self.current_stream()?;
        let calls = self.calls();
        let part = exchange.part_bytes();
        let (input, _input_guard) = send.memory.device_ptr(&stream);
        let (send_staging, _send_guard) = self.send_staging.device_ptr_mut(&stream);
        for destination in 0..self.size {
            copy_2d(
                stream.cu_stream(),
                &exchange.pack_copy(destination),
                input,
                send_staging,
            )?;
        }
        {
            let (receive_staging, _receive_guard) = self.receive_staging.device_ptr_mut(&stream);
            // SAFETY: grouped point-to-point calls on valid device ranges of `part` bytes
            // (offsets below the checked capacity), queued on this communicator's stream.
            unsafe {
                calls.check((calls.functions.group_start)(), "ncclGroupStart")?;
                for peer in 0..self.size {
                    let offset = (peer * part) as u64;
                    let status = (calls.functions.send)(
                        (send_staging + offset) as *const c_void,
                        part,
                        ncclDataType_t::ncclUint8,
                        peer as c_int,
                        calls.comm,
                        calls.stream,
                    );
                    calls.check(status, "ncclSend")?;
                    let status = (calls.functions.recv)(
                        (receive_staging + offset) as *mut c_void,
                        part,
                        ncclDataType_t::ncclUint8,
                        peer as c_int,
                        calls.comm,
                        calls.stream,
                    );
                    calls.check(status, "ncclRecv")?;
                }
                calls.check((calls.functions.group_end)(), "ncclGroupEnd")?;
            }
        }
        let concat = exchange.concat();
        let (receive_staging, _staging_guard) = self.receive_staging.device_ptr(&stream);
        let (output, _output_guard) = receive.memory.device_ptr_mut(&stream);
        for source in 0..self.size {
            copy_2d(
                stream.cu_stream(),
                &concat.copy(source),
                receive_staging,
                output,
            )?;
        }
        Ok(())
    }

    fn all_gather(
        &mut self,
        send: &DeviceBuffer,
        receive: &mut DeviceBuffer,
        concat: &Concat,
    ) -> Result<()> {
        if concat.parts != self.size
            || send.len() < concat.part_bytes()
            || receive.len() < concat.output_bytes()
        {
            return Err(ParallelError::Buffer(format!(
                "all-gather of {} × {} bytes: buffers of {} and {} bytes in a group of {}",
                concat.parts,
                concat.part_bytes(),
                send.len(),
                receive.len(),
                self.size
            )));
        }
        let stream = self.current_stream()?;
        let calls = self.calls();
        if concat.is_contiguous() {
            let (input, _input_guard) = send.memory.device_ptr(&stream);
            let (output, _output_guard) = receive.memory.device_ptr_mut(&stream);
            // SAFETY: input holds part_bytes, output parts × part_bytes (checked above).
            let status = unsafe {
                (calls.functions.all_gather)(
                    input as *const c_void,
                    output as *mut c_void,
                    concat.part_bytes(),
                    ncclDataType_t::ncclUint8,
                    calls.comm,
                    calls.stream,
                )
            };
            return calls.check(status, "ncclAllGather");
        }
        self.check_capacity("all-gather", concat.output_bytes())?;
        {
            let (input, _input_guard) = send.memory.device_ptr(&stream);
            let (staging, _staging_guard) = self.receive_staging.device_ptr_mut(&stream);
            // SAFETY: input holds part_bytes, staging holds parts × part_bytes (checked above).
            let status = unsafe {
                (calls.functions.all_gather)(
                    input as *const c_void,
                    staging as *mut c_void,
                    concat.part_bytes(),
                    ncclDataType_t::ncclUint8,
                    calls.comm,
                    calls.stream,
                )
            };
            calls.check(status, "ncclAllGather")?;
        }
        let (staging, _staging_guard) = self.receive_staging.device_ptr(&stream);
        let (output, _output_guard) = receive.memory.device_ptr_mut(&stream);
        for source in 0..self.size {
            copy_2d(stream.cu_stream(), &concat.copy(source), staging, output)?;
        }
        Ok(())
    }

    fn all_reduce_sum(&mut self, buffer: &mut DeviceBuffer, count: usize) -> Result<()> {
        if buffer.len() < count * 4 {
            return Err(ParallelError::Buffer(format!(
                "all-reduce of {count} floats in a buffer of {} bytes",
                buffer.len()
            )));
        }
        let stream = self.current_stream()?;
        let calls = self.calls();
        let (data, _guard) = buffer.memory.device_ptr_mut(&stream);
        // SAFETY: in-place reduction over `count` floats inside the buffer (checked above).
        let status = unsafe {
            (calls.functions.all_reduce)(
                data as *const c_void,
                data as *mut c_void,
                count,
                ncclDataType_t::ncclFloat32,
                ncclRedOp_t::ncclSum,
                calls.comm,
                calls.stream,
            )
        };
        calls.check(status, "ncclAllReduce")
    }

    fn broadcast(&mut self, buffer: &mut DeviceBuffer, bytes: usize, root: usize) -> Result<()> {
        if buffer.len() < bytes || root >= self.size {
            return Err(ParallelError::Buffer(format!(
                "broadcast of {bytes} bytes from rank {root}: buffer of {} bytes in a group of {}",
                buffer.len(),
                self.size
            )));
        }
        let stream = self.current_stream()?;
        let calls = self.calls();
        let (data, _guard) = buffer.memory.device_ptr_mut(&stream);
        // SAFETY: in-place broadcast of `bytes` bytes inside the buffer (checked above).
        let status = unsafe {
            (calls.functions.broadcast)(
                data as *const c_void,
                data as *mut c_void,
                bytes,
                ncclDataType_t::ncclUint8,
                root as c_int,
                calls.comm,
                calls.stream,
            )
        };
        calls.check(status, "ncclBroadcast")
    }

    fn reserve_staging(&mut self, bytes: usize) -> Result<()> {
        if bytes <= self.send_staging.len() {
            return Ok(());
        }
        // Never reallocate while a collective may be in flight: drain the stream first.
        self.synchronize()?;
        let allocate = |stream: &Arc<CudaStream>| {
            stream.alloc_zeros::<u8>(bytes).map_err(cuda_error(format!(
                "allocating {bytes} bytes of staging memory"
            )))
        };
        self.send_staging = allocate(&self.stream)?;
        self.receive_staging = allocate(&self.stream)?;
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        let stream = self.current_stream()?;
        let calls = self.calls();
        {
            let (data, _guard) = self.barrier_buffer.device_ptr_mut(&stream);
            // SAFETY: in-place sum of one float in a 4-byte buffer owned by this communicator.
            let status = unsafe {
                (calls.functions.all_reduce)(
                    data as *const c_void,
                    data as *mut c_void,
                    1,
                    ncclDataType_t::ncclFloat32,
                    ncclRedOp_t::ncclSum,
                    calls.comm,
                    calls.stream,
                )
            };
            calls.check(status, "ncclAllReduce (barrier)")?;
        }
        self.synchronize()
    }
}

/// A device-to-device copy of `bytes` queued on `stream`.
fn copy_device(
    stream: cuda::CUstream,
    source: cuda::CUdeviceptr,
    destination: cuda::CUdeviceptr,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: both pointers lie in device allocations with `bytes` bytes after them (the callers check
    // the buffer's length and size the tensor from its own shape and dtype).
    let result = unsafe { cuda::cuMemcpyDtoDAsync_v2(destination, source, bytes, stream) };
    if result != cuda::CUresult::CUDA_SUCCESS {
        return Err(ParallelError::Cuda {
            context: "copying a tensor between ONNX Runtime and a collective's buffer".into(),
            message: format!("{result:?}"),
        });
    }
    Ok(())
}

impl super::values::ValueTransfer for NcclCommunicator {
    fn write_value(
        &mut self,
        buffer: &mut DeviceBuffer,
        value: &ort::value::DynValue,
    ) -> crate::error::Result<()> {
        use super::values::{element_bytes, tensor_type};
        let (dtype, shape) = tensor_type(value)?;
        let bytes = shape.iter().product::<usize>() * element_bytes(dtype)?;
        self.write_value_range(buffer, value, 0..bytes)
    }

    fn write_value_range(
        &mut self,
        buffer: &mut DeviceBuffer,
        value: &ort::value::DynValue,
        range: std::ops::Range<usize>,
    ) -> crate::error::Result<()> {
        use super::values::{element_bytes, host_bytes, tensor_type};
        let (dtype, shape) = tensor_type(value)?;
        let total = shape.iter().product::<usize>() * element_bytes(dtype)?;
        let bytes = range.len();
        if range.end > total {
            return Err(ParallelError::Buffer(format!(
                "bytes {range:?} of a tensor of {total} bytes"
            ))
            .into());
        }
        if bytes > buffer.len() {
            return Err(ParallelError::Buffer(format!(
                "a tensor of {bytes} bytes into a buffer of {}",
                buffer.len()
            ))
            .into());
        }
        let view = value.view();
        let tensor = view
            .downcast::<ort::value::DynTensorValueType>()
            .map_err(crate::error::ort_error("reading a tensor for a collective"))?;
        if tensor.memory_info().is_cpu_accessible() {
            return Ok(self.write(buffer, &host_bytes(value)?[range])?);
        }
        // ONNX Runtime returns from a run once its outputs are written (it synchronises its
        // stream after each run), so `value` is complete before this copy is queued.
        let source = tensor.data_ptr() as cuda::CUdeviceptr + range.start as cuda::CUdeviceptr;
        let stream = self.current_stream()?;
        let (destination, _guard) = buffer.memory.device_ptr_mut(&stream);
        Ok(copy_device(stream.cu_stream(), source, destination, bytes)?)
    }

    fn read_value(
        &mut self,
        buffer: &DeviceBuffer,
        dtype: ort::value::TensorElementType,
        shape: &[usize],
        allocator: Option<&ort::memory::Allocator>,
    ) -> crate::error::Result<ort::value::DynValue> {
        use super::values::{element_bytes, host_value};
        let bytes = shape.iter().product::<usize>() * element_bytes(dtype)?;
        if bytes > buffer.len() {
            return Err(ParallelError::Buffer(format!(
                "a tensor of {bytes} bytes from a buffer of {}",
                buffer.len()
            ))
            .into());
        }
        let Some(allocator) = allocator else {
            let mut host = vec![0u8; bytes];
            self.read(buffer, &mut host)?;
            return host_value(&host, dtype, shape);
        };
        let mut value = ort::value::DynTensor::new(allocator, dtype, shape.to_vec()).map_err(
            crate::error::ort_error("allocating a tensor for a collective's output"),
        )?;
        let destination = value.data_ptr_mut() as cuda::CUdeviceptr;
        let stream = self.current_stream()?;
        {
            let (source, _guard) = buffer.memory.device_ptr(&stream);
            copy_device(stream.cu_stream(), source, destination, bytes)?;
        }
        // The graphs run on ONNX Runtime's own stream unless it was given this one: wait.
        self.synchronize()?;
        Ok(value.into_dyn())
    }
}
