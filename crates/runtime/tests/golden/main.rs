//! Golden tests of the runtime's reference ports against fixtures written by the Python originals
//! (`tools/reference/make_*_fixtures.py`, committed under `tests/fixtures/`).

mod scheduler;
mod timestep_matrix;

use std::path::PathBuf;

/// `tests/fixtures/<name>` at the workspace root.
fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}
