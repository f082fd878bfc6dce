//! GPU memory for `/metrics`, read with `nvidia-smi` (installed with the NVIDIA driver wherever the
//! CUDA backend runs): the device's used and total memory, and what this process holds.

use std::process::Command;

use crate::executor::GpuMemory;

const MEBIBYTE: u64 = 1 << 20;

fn nvidia_smi(query: &str, device: i32) -> Option<String> {
    let output = Command::new("nvidia-smi")
        .args([
            query,
            "--format=csv,noheader,nounits",
            "-i",
            &device.to_string(),
        ])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `used, total` in MiB (the first line of `--query-gpu=memory.used,memory.total`), in bytes.
fn parse_device(text: &str) -> Option<(u64, u64)> {
    let mut fields = text
        .lines()
        .next()?
        .split(',')
        .map(|f| f.trim().parse::<u64>());
    let used = fields.next()?.ok()?;
    let total = fields.next()?.ok()?;
    Some((used * MEBIBYTE, total * MEBIBYTE))
}

/// The memory of process `pid` in `pid, used_memory` lines (MiB), in bytes.
fn parse_process(text: &str, pid: u32) -> Option<u64> {
    text.lines().find_map(|line| {
        let (line_pid, used) = line.split_once(',')?;
        (line_pid.trim().parse::<u32>().ok()? == pid)
            .then(|| used.trim().parse::<u64>().ok().map(|mib| mib * MEBIBYTE))
            .flatten()
    })
}

/// GPU `device`'s memory, or `None` when `nvidia-smi` is missing or fails.
pub fn gpu_memory(device: i32) -> Option<GpuMemory> {
    let (used_bytes, total_bytes) =
        parse_device(&nvidia_smi("--query-gpu=memory.used,memory.total", device)?)?;
    let process_bytes = nvidia_smi("--query-compute-apps=pid,used_memory", device)
        .and_then(|text| parse_process(&text, std::process::id()));
    Some(GpuMemory {
        device,
        process_bytes,
        used_bytes,
        total_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_csv() {
        assert_eq!(
            parse_device("23456, 143771\n"),
            Some((23456 * MEBIBYTE, 143771 * MEBIBYTE))
        );
        assert_eq!(parse_device("[N/A], 143771\n"), None);
        let apps = "1200, 500\n4321, 22000\n";
        assert_eq!(parse_process(apps, 4321), Some(22000 * MEBIBYTE));
        assert_eq!(parse_process(apps, 99), None);
        assert_eq!(parse_process("", 99), None);
    }
}
