//! `skyreels info`: an engine directory in a few lines (variant, components, precision, target,
//! build), for people; the manifest itself stays the machine-readable form.

use std::fmt::Write;

use skyreels_contract::ModelVariant;
use skyreels_contract::variant::describe_architecture;

use crate::engine::Engine;

/// A short summary of `engine`, one `key: value` line each.
pub fn summary(engine: &Engine) -> String {
    let manifest = &engine.manifest;
    let mut text = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(text, "{:<12}{value}", format!("{key}:"));
    };
    line("engine", engine.dir.display().to_string());
    line("producer", manifest.producer.clone());
    match &manifest.dit {
        Some(dit) => {
            let variants: Vec<String> = ModelVariant::builtin()
                .into_iter()
                .filter(|v| v.matches(&dit.config))
                .map(|v| v.name)
                .collect();
            let variant = if variants.is_empty() {
                "unrecognised (no released SkyReels-V2 model has this architecture)".to_string()
            } else {
                variants.join(" or ")
            };
            line("variant", variant);
            line("dit", describe_architecture(&dit.config));
        }
        None => line("variant", "none (no DiT)".into()),
    }
    line(
        "weights",
        format!(
            "{} for --target {}, attention {}",
            manifest.precision, manifest.target, manifest.attention
        ),
    );
    let mut components = Vec::new();
    if let Some(dit) = &manifest.dit {
        let mut extras = Vec::new();
        if !dit.teacache.is_empty() {
            extras.push("teacache graphs");
        }
        components.push(if extras.is_empty() {
            "dit".to_string()
        } else {
            format!("dit ({})", extras.join(", "))
        });
    }
    if manifest.vae.is_some() {
        components.push("vae".into());
    }
    if let Some(text_encoder) = &manifest.text_encoder {
        components.push(format!("text encoder ({} tokens)", text_encoder.max_length));
    }
    if manifest.image_encoder.is_some() {
        components.push("image encoder".into());
    }
    line("components", components.join(", "));
    let io_dtypes = |graphs: &mut dyn Iterator<Item = &skyreels_contract::GraphEntry>| {
        let mut dtypes: Vec<&str> = graphs
            .flat_map(|g| g.inputs.iter().chain(&g.outputs))
            .map(|t| t.dtype.as_str())
            .filter(|d| d.starts_with("float") || d.starts_with("bfloat"))
            .collect();
        dtypes.sort_unstable();
        dtypes.dedup();
        dtypes.join("+")
    };
    let mut interfaces = Vec::new();
    if let Some(dit) = &manifest.dit {
        interfaces.push(format!("dit {}", io_dtypes(&mut dit.graphs.iter())));
    }
    if let Some(vae) = &manifest.vae {
        interfaces.push(format!("vae {}", io_dtypes(&mut vae.graphs.iter())));
    }
    if let Some(text_encoder) = &manifest.text_encoder {
        interfaces.push(format!(
            "text {}",
            io_dtypes(&mut text_encoder.graphs.iter())
        ));
    }
    if let Some(image_encoder) = &manifest.image_encoder {
        interfaces.push(format!(
            "image {}",
            io_dtypes(&mut image_encoder.graphs.iter())
        ));
    }
    line("graph I/O", interfaces.join(", "));
    line(
        "build",
        match &manifest.build {
            Some(build) => format!(
                "{} {}{} with ONNX Runtime {}",
                build.backend,
                build.precision,
                build
                    .gpu
                    .as_deref()
                    .map(|gpu| format!(" on {gpu}"))
                    .unwrap_or_default(),
                build.onnxruntime_version
            ),
            None => "none (the exported graphs run as they are)".into(),
        },
    );
    text
}
