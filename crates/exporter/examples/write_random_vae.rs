//! Writes a Wan VAE checkpoint (original names, float32) with seeded random weights, for export
//! benchmarks: `cargo run --release -p skyreels-exporter --example write_random_vae -- wan21 DIR`.

use std::path::PathBuf;

use anyhow::bail;
use skyreels_contract::vae::VaeConfig;
use skyreels_exporter::vae::random;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, size, dir] = args.as_slice() else {
        bail!("usage: write_random_vae <tiny|wan21> DIR");
    };
    let config = match size.as_str() {
        "tiny" => random::tiny_vae_config(),
        "wan21" => VaeConfig::wan21(),
        other => bail!("unknown size `{other}`; use tiny or wan21"),
    };
    random::write_random_vae(&PathBuf::from(dir), &config, 0)?;
    Ok(())
}
