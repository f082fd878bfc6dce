//! Writes a DiT checkpoint of a real architecture with seeded random weights, for export
//! benchmarks: `cargo run --release -p skyreels-exporter --example write_random_dit -- 1.3b DIR`.

use std::path::PathBuf;

use anyhow::bail;
use skyreels_exporter::tiny::{self, StorageDtype};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, size, dir] = args.as_slice() else {
        bail!("usage: write_random_dit <tiny|1.3b|14b> DIR");
    };
    let config = match size.as_str() {
        "tiny" => tiny::tiny_dit_config(),
        "1.3b" => tiny::dit_1_3b_config(),
        "14b" => tiny::dit_14b_config(),
        other => bail!("unknown size `{other}`; use tiny, 1.3b or 14b"),
    };
    tiny::write_random_dit(&PathBuf::from(dir), &config, StorageDtype::BF16, 0)?;
    Ok(())
}
