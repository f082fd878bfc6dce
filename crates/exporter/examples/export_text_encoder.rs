//! Exports only a text encoder, for measurements:
//! `cargo run --release -p skyreels-exporter --example export_text_encoder -- CHECKPOINT TOKENIZER OUT fp32|bf16`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use skyreels_contract::Attention;
use skyreels_exporter::text::{self, TextExportOptions};
use skyreels_graph::DType;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, checkpoint, tokenizer, out, dtype] = args.as_slice() else {
        bail!("usage: export_text_encoder CHECKPOINT TOKENIZER OUT fp32|bf16");
    };
    let (compute, attention) = match dtype.as_str() {
        "fp32" => (DType::F32, Attention::MatMul),
        "bf16" => (DType::BF16, Attention::ContribMha),
        other => bail!("unknown dtype `{other}`"),
    };
    let out = PathBuf::from(out);
    fs_err::create_dir_all(&out)?;
    let started = Instant::now();
    let options = TextExportOptions {
        compute,
        attention,
        link_weights: true,
    };
    let export = text::export(
        &PathBuf::from(checkpoint),
        &PathBuf::from(tokenizer),
        &out,
        &options,
    )?;
    let (written, linked) = export.weight_bytes;
    eprintln!(
        "text encoder: {} layers, {} nodes, {:.2}s, {:.1} MB written, {:.1} MB referenced in place",
        export.component.config.num_layers,
        export.reports[0].nodes,
        started.elapsed().as_secs_f64(),
        written as f64 / 1e6,
        linked as f64 / 1e6
    );
    Ok(())
}
