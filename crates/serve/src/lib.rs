//! `skyreels serve`: an HTTP video generation service over the runtime library, shaped like the
//! OpenAI Videos API. The models are loaded once; jobs wait in a bounded queue and run one at a
//! time on a blocking worker thread; finished videos are kept in a directory within a retention
//! limit. The web stack (axum, tokio) lives only in this crate, so the `skyreels` binary and the
//! runtime library stay free of it.

pub mod auth;
pub mod executor;
pub mod gpu;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod reference;
pub mod runtime_executor;
pub mod store;
pub mod upload;
