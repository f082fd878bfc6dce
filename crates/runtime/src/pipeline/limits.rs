//! Bounds on the sizes a user asks for, checked with overflow-free arithmetic before anything is
//! allocated or any model loads: each refusal names the flag, its value and the limit. Sizes the
//! machine could not hold are refused by a memory estimate instead of ending in an allocation abort.

use super::plan::{Request, Start};
use super::segments::latent_frames;
use crate::error::{Result, RuntimeError};

/// Largest `--height` or `--width`: twice the longest side of any released resolution (and more
/// than OpenH264's frames hold); the VAE's tiles and the DiT's tokens grow with its square.
pub const MAX_SIDE: usize = 8192;
/// Most `--steps`: the flow schedule spreads them over 1000 training timesteps.
pub const MAX_STEPS: usize = 1000;
/// Largest `--ar-step`: the lag between frame blocks, in steps.
pub const MAX_AR_STEP: usize = MAX_STEPS;
/// Most pixel frames of any frame-count flag (an hour at 24 fps).
pub const MAX_FRAMES: usize = 86_401;

fn above(flag: &str, value: usize, limit: usize, why: &str) -> RuntimeError {
    RuntimeError::Invalid(format!(
        "{flag} {value} is above {limit}, the largest this tool accepts ({why})\n  fix: use a value of at most {limit}"
    ))
}

/// Refuses `--threads` beyond the machine's CPU threads (0 means all of them).
pub fn check_threads(threads: usize) -> Result<()> {
    let available = std::thread::available_parallelism().map_or(1, usize::from);
    if threads > available {
        return Err(RuntimeError::Invalid(format!(
            "--threads {threads} is more than the {available} CPU threads of this machine\n  fix: use --threads 0 (all of them) or at most {available}"
        )));
    }
    Ok(())
}

/// Refuses a frame size beyond [`MAX_SIDE`]; checked before a `--video` is resized to it.
pub fn check_frame_size(width: usize, height: usize) -> Result<()> {
    for (flag, value) in [("--height", height), ("--width", width)] {
        if value > MAX_SIDE {
            return Err(above(
                flag,
                value,
                MAX_SIDE,
                "twice the side of any released resolution",
            ));
        }
    }
    Ok(())
}

fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Checks every size of `request` against its limit, then estimates the memory of the largest
/// buffers it implies (the decoded video, kept as float32 twice and as 8-bit frames, and the
/// timestep matrix of a window) against the machine's memory.
pub fn check_request_sizes(request: &Request) -> Result<()> {
    let r = request;
    check_frame_size(r.width, r.height)?;
    let frame_flags = [
        ("--num-frames", Some(r.num_frames)),
        ("--base-num-frames", r.base_num_frames),
        ("--overlap-history", r.overlap_history),
    ];
    for (flag, value) in frame_flags {
        if let Some(value) = value
            && value > MAX_FRAMES
        {
            return Err(above(flag, value, MAX_FRAMES, "an hour at 24 fps"));
        }
    }
    if r.steps > MAX_STEPS {
        return Err(above(
            "--steps",
            r.steps,
            MAX_STEPS,
            "the flow schedule has 1000 training timesteps",
        ));
    }
    if r.ar_step > MAX_AR_STEP {
        return Err(above(
            "--ar-step",
            r.ar_step,
            MAX_AR_STEP,
            "the lag between blocks is counted in steps",
        ));
    }
    if r.causal_block_size > latent_frames(MAX_FRAMES) {
        return Err(above(
            "--causal-block-size",
            r.causal_block_size,
            latent_frames(MAX_FRAMES),
            "the latent frames of the longest video",
        ));
    }
    let input_frames = match r.start {
        Start::Video { frames } => frames as u128,
        Start::Noise | Start::Image => 0,
    };
    // All factors are bounded above, so u128 cannot overflow.
    let frames = r.num_frames as u128 + input_frames;
    let video_bytes = frames * r.height as u128 * r.width as u128 * 3 * (4 + 4 + 1);
    let window_latents = latent_frames(r.base_num_frames.unwrap_or(r.num_frames)) as u128;
    let rows = r.steps as u128 + r.ar_step as u128 * window_latents;
    let matrix_bytes = rows * window_latents * 16;
    let total = video_bytes + matrix_bytes;
    let memory = u128::from(skyreels_contract::files::physical_memory());
    if total > memory {
        return Err(RuntimeError::Invalid(format!(
            "--num-frames {} at --width {} × --height {} (--steps {}, --ar-step {}) needs about {} (decoded video {}, timestep matrix {}), more than this machine's {} of memory\n  fix: generate fewer frames or a smaller size",
            r.num_frames,
            r.width,
            r.height,
            r.steps,
            r.ar_step,
            gib(total),
            gib(video_bytes),
            gib(matrix_bytes),
            gib(memory)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_their_limits_are_refused_naming_flag_value_and_limit() {
        let base = Request::upstream(97, 544, 960, 30);
        check_request_sizes(&base).unwrap();
        for (request, needle) in [
            (
                Request {
                    num_frames: usize::MAX,
                    ..base.clone()
                },
                "--num-frames 18446744073709551615 is above 86401",
            ),
            (
                Request {
                    width: 1 << 40,
                    ..base.clone()
                },
                "--width 1099511627776 is above 8192",
            ),
            (
                Request {
                    steps: 1 << 33,
                    ..base.clone()
                },
                "--steps 8589934592 is above 1000",
            ),
            (
                Request {
                    ar_step: usize::MAX,
                    ..base.clone()
                },
                "--ar-step 18446744073709551615 is above 1000",
            ),
            (
                Request {
                    overlap_history: Some(1 << 20),
                    ..base.clone()
                },
                "--overlap-history 1048576 is above 86401",
            ),
        ] {
            let error = check_request_sizes(&request).unwrap_err().to_string();
            assert!(error.contains(needle) && error.contains("fix:"), "{error}");
        }
        let huge = Request::upstream(86_401, 8192, 8192, 30);
        let error = check_request_sizes(&huge).unwrap_err().to_string();
        assert!(
            error.contains("needs about") && error.contains("of memory"),
            "{error}"
        );
    }

    #[test]
    fn threads_beyond_the_machine_are_refused() {
        check_threads(0).unwrap();
        check_threads(1).unwrap();
        let error = check_threads(100_000).unwrap_err().to_string();
        assert!(
            error.contains("--threads 100000 is more than the") && error.contains("fix:"),
            "{error}"
        );
    }
}
