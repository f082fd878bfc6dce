//! A generation job as every front end runs it (the `skyreels` CLI, a server, batch files):
//! request → plan → models → generate → write.
//!
//! ```text
//! let mut models = Models::open(engine_dir, backend, Residency::KeepLoaded)?;   // once
//! let plan = JobPlan::new(models.engine(), models.backend(), &request, &output)?; // every refusal
//! let report = run_job(&plan, &mut models, &mut observer)?;                       // progress, cancel
//! ```
//!
//! The plan owns every decision before any model loads; [`Models`] keeps loaded sessions between
//! jobs; the [`crate::pipeline::progress::Observer`] sees every stage and step and may cancel.

pub mod batch;
pub mod inputs;
pub mod json;
pub mod models;
pub mod outputs;
pub mod plan;
pub mod request;
pub mod run;
pub mod summary;
pub mod variant;

pub use models::{Models, Residency};
pub use outputs::{OutputPlan, VideoFormat};
pub use plan::{JobPlan, JobSettings};
pub use request::{GenerateRequest, OutputRequest};
pub use run::{
    GeneratedVideo, JobReport, StageTimings, WrittenVideo, generate_job, generate_job_with_noise,
    run_job, write_job,
};
pub use variant::VariantChoice;
