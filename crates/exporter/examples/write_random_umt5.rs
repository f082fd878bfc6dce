//! Writes a umT5-XXL-width encoder (Wan names, bf16, seeded random weights) plus the tiny
//! tokenizer, for export measurements:
//! `cargo run --release -p skyreels-exporter --example write_random_umt5 -- LAYERS DIR`
//! (`DIR/text_encoder/model.safetensors`, `DIR/tokenizer/tokenizer.json`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use skyreels_exporter::text::tiny;
use skyreels_exporter::tiny::StorageDtype;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, layers, dir] = args.as_slice() else {
        bail!("usage: write_random_umt5 LAYERS DIR");
    };
    let layers: usize = layers
        .parse()
        .context("LAYERS must be a number (24 for umT5-XXL)")?;
    let dir = PathBuf::from(dir);
    tiny::write_random_text_encoder(
        &dir.join("text_encoder"),
        &tiny::umt5_xxl_config(layers),
        StorageDtype::BF16,
        0,
    )?;
    fs_err::create_dir_all(dir.join("tokenizer"))?;
    fs_err::write(
        dir.join("tokenizer").join("tokenizer.json"),
        tiny::tiny_tokenizer_json(),
    )?;
    Ok(())
}
