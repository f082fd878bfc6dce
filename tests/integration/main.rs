//! The one integration-test binary: parity against the reference fixtures and end-to-end runs.

mod dit_parity;
mod engines;
mod feed_forward;
mod image_encoder;
mod pipeline_parity;
mod teacache;
mod text_encoder;
mod vae_parity;
