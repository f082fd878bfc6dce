//! `skyreels generate` conditioned on pixels, through the real binary: diffusion forcing from a
//! first and a last image, extending a video, and image-to-video with an I2V engine.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{TinyModel, export_tiny_engine};
use skyreels_runtime::Tensor;
use skyreels_runtime::output::{read_mp4, read_tensor, save_latents};

const BINARY: &str = env!("CARGO_BIN_EXE_skyreels");

fn engine(model: TinyModel) -> &'static Path {
    static DF: OnceLock<tempfile::TempDir> = OnceLock::new();
    static I2V: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cell = if model == TinyModel::DiffusionForcing {
        &DF
    } else {
        &I2V
    };
    cell.get_or_init(|| {
        let directory = tempfile::tempdir().expect("tempdir");
        export_tiny_engine(directory.path(), model);
        directory
    })
    .path()
}

/// `generate` at 48×32 with 3 steps, then `extra`.
fn generate(engine: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut command = Command::new(BINARY);
    command.args([
        "generate",
        "--prompt",
        "a fox",
        "--height",
        "32",
        "--width",
        "48",
        "--steps",
        "3",
        "--threads",
        "1",
        "--json",
        "--engines",
    ]);
    command.arg(engine).arg("--out").arg(out).args(extra);
    command.output().expect("run skyreels")
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "skyreels failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A seeded RGB picture of `width`×`height` (smooth gradients plus a pattern).
fn write_png(path: &Path, width: u32, height: u32, seed: u32) {
    let picture = image::RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| ((x * (3 + k + seed) + y * (5 + 2 * k) + 17 * seed * (k + 1)) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    });
    picture.save(path).expect("png");
}

fn latents(path: &Path) -> Tensor {
    read_tensor(path, "latents", &[None; 5]).expect("latents")
}

/// Latent frame `f` of `[1, C, F, H, W]`.
fn latent_frame(latents: &Tensor, f: usize) -> Vec<f32> {
    let (channels, frames, plane) = (
        latents.shape[1],
        latents.shape[2],
        latents.shape[3] * latents.shape[4],
    );
    (0..channels)
        .flat_map(|c| latents.data[(c * frames + f) * plane..(c * frames + f + 1) * plane].to_vec())
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The image as the video tensor `[1, 3, 1, H, W]` in [-1, 1] that `vae-encode` takes.
fn image_as_video(png: &Path, out: &Path) {
    let picture = image::open(png).expect("open").to_rgb8();
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let mut data = vec![0.0f32; 3 * w * h];
    for (i, pixel) in picture.pixels().enumerate() {
        for c in 0..3 {
            data[c * w * h + i] = pixel[c] as f32 / 127.5 - 1.0;
        }
    }
    save_latents(
        out,
        [(
            "video",
            &Tensor::new(vec![1, 3, 1, h, w], data).expect("tensor"),
        )],
    )
    .expect("save");
}

#[test]
fn diffusion_forcing_from_a_first_to_a_last_image() {
    let engine = engine(TinyModel::DiffusionForcing);
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, last, other_last) = (
        dir.path().join("first.png"),
        dir.path().join("last.png"),
        dir.path().join("other.png"),
    );
    write_png(&first, 48, 32, 1);
    write_png(&last, 48, 32, 2);
    write_png(&other_last, 48, 32, 3);
    let run = |last: &Path, name: &str| {
        let out = dir.path().join(format!("{name}.mp4"));
        let saved = dir.path().join(format!("{name}.safetensors"));
        let output = generate(
            engine,
            &out,
            &[
                "--num-frames",
                "9",
                "--ar-step",
                "1",
                "--addnoise-condition",
                "20",
                "--image",
                first.to_str().unwrap(),
                "--last-image",
                last.to_str().unwrap(),
                "--save-latents",
                saved.to_str().unwrap(),
            ],
        );
        assert_success(&output);
        assert_eq!(read_mp4(&out).expect("mp4").num_frames(), 9);
        latents(&saved)
    };
    let with_last = run(&last, "a");
    assert_eq!(
        with_last.shape,
        [1, 16, 3, 4, 6],
        "the last image's latent is not part of the output"
    );

    // Frame 0 is the first image's latent, untouched by sampling.
    let video = dir.path().join("first.safetensors");
    image_as_video(&first, &video);
    let encoded = dir.path().join("encoded.safetensors");
    let status = Command::new(BINARY)
        .args(["vae-encode", "--engines"])
        .arg(engine)
        .arg("--video")
        .arg(&video)
        .arg("--out")
        .arg(&encoded)
        .status()
        .expect("vae-encode");
    assert!(status.success());
    let diff = max_abs_diff(
        &latent_frame(&with_last, 0),
        &latent_frame(&latents(&encoded), 0),
    );
    assert!(
        diff < 1e-5,
        "frame 0 differs from the encoded first image by {diff}"
    );

    // The last image steers the frames before it.
    let with_other = run(&other_last, "b");
    assert_eq!(latent_frame(&with_other, 0), latent_frame(&with_last, 0));
    let diff = max_abs_diff(&latent_frame(&with_other, 2), &latent_frame(&with_last, 2));
    assert!(
        diff > 1e-3,
        "another last image changed the last generated frame by only {diff}"
    );
}

#[test]
fn a_generated_clip_is_extended() {
    let engine = engine(TinyModel::DiffusionForcing);
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = dir.path().join("clip.mp4");
    assert_success(&generate(
        engine,
        &clip,
        &["--num-frames", "9", "--seed", "3"],
    ));
    let frames_dir = dir.path().join("extended");
    let output = generate(
        engine,
        &frames_dir,
        &[
            "--video",
            clip.to_str().unwrap(),
            "--num-frames",
            "21",
            "--base-num-frames",
            "13",
            "--overlap-history",
            "5",
            "--addnoise-condition",
            "20",
        ],
    );
    assert_success(&output);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    // Windows of 4 latents continuing from 2 (5 pixel frames): 8 new frames each after the 9 given.
    assert_eq!(
        (summary["windows"].as_u64(), summary["frames"].as_u64()),
        (Some(2), Some(9 + 8 + 8)),
        "{summary}"
    );
    let input = read_mp4(&clip).expect("mp4");
    for f in 0..input.num_frames() {
        let png = image::open(frames_dir.join(format!("frame_{f:05}.png")))
            .expect("frame png")
            .to_rgb8();
        let worst = png
            .as_raw()
            .iter()
            .zip(input.frame(f))
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(
            worst <= 1,
            "input frame {f} is not kept (differs by {worst})"
        );
    }
}

#[test]
fn image_to_video_from_a_picture_of_another_size() {
    let engine = engine(TinyModel::ImageToVideo);
    let dir = tempfile::tempdir().expect("tempdir");
    let (picture, other) = (dir.path().join("picture.png"), dir.path().join("other.png"));
    write_png(&picture, 70, 40, 4);
    write_png(&other, 70, 40, 5);
    let run = |image: &Path, name: &str| {
        let out = dir.path().join(format!("{name}.mp4"));
        let saved = dir.path().join(format!("{name}.safetensors"));
        assert_success(&generate(
            engine,
            &out,
            &[
                "--num-frames",
                "5",
                "--image",
                image.to_str().unwrap(),
                "--save-latents",
                saved.to_str().unwrap(),
            ],
        ));
        assert_eq!(read_mp4(&out).expect("mp4").num_frames(), 5);
        latents(&saved)
    };
    let a = run(&picture, "a");
    let b = run(&other, "b");
    assert!(
        max_abs_diff(&a.data, &b.data) > 1e-3,
        "the image does not condition the video"
    );

    let output = generate(
        engine,
        &dir.path().join("c.mp4"),
        &[
            "--num-frames",
            "5",
            "--image",
            picture.to_str().unwrap(),
            "--last-image",
            other.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("diffusion-forcing (DF) engine") && stderr.contains("fix:"),
        "{stderr}"
    );
}

#[test]
fn conditioning_inputs_that_cannot_work_are_refused() {
    let engine = engine(TinyModel::DiffusionForcing);
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = dir.path().join("clip.mp4");
    assert_success(&generate(engine, &clip, &["--num-frames", "5"]));
    let first = dir.path().join("first.png");
    write_png(&first, 48, 32, 1);
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--video",
                clip.to_str().unwrap(),
                "--num-frames",
                "21",
                "--base-num-frames",
                "13",
                "--overlap-history",
                "9",
            ],
            "fewer than --overlap-history 9",
        ),
        (
            &[
                "--image",
                first.to_str().unwrap(),
                "--num-frames",
                "9",
                "--ar-step",
                "1",
                "--causal-block-size",
                "3",
            ],
            "--causal-block-size 1",
        ),
        (
            &["--video", clip.to_str().unwrap(), "--num-frames", "21"],
            "--overlap-history",
        ),
    ];
    for (extra, needle) in cases {
        let out = dir.path().join("out.mp4");
        let output = generate(engine, &out, extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("fix:"),
            "{extra:?}: {stderr}"
        );
        assert!(!out.exists());
    }
}
