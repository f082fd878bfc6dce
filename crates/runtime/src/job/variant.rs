//! Which released model an engine holds, and so which defaults a request starts from: the
//! variant's generation settings and TeaCache fits (`configs/models/*.yaml`), recognised from the
//! DiT's architecture, the resolution class and the sampling loop, never from a path.

use serde::Serialize;
use skyreels_contract::variant::{GenerationDefaults, describe_architecture};
use skyreels_contract::{
    DitConfig, ModelVariant, Pipeline, RecognitionError, Resolution, recognise,
};

use crate::pipeline::defaults::DEFAULT_NEGATIVE_PROMPT;

/// The variant whose defaults a job uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantChoice {
    /// The released variant (`df-1.3b-540p`), or `None` for an architecture never released.
    pub name: Option<String>,
    /// The resolution class the defaults are for.
    pub resolution: Resolution,
    /// The DiT's architecture in one line.
    pub architecture: String,
    /// The defaults it gives.
    #[serde(skip)]
    pub defaults: GenerationDefaults,
    /// The variant itself (TeaCache fits), when recognised.
    #[serde(skip)]
    pub variant: Option<ModelVariant>,
    /// Why the choice is what it is, when that is not obvious (unrecognised, resolution fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The defaults the runtime used before it knew the released variants (upstream's DF-540P CLI):
/// 544×960, 97 frames, 30 steps, guidance 6, shift 8, 24 fps and the DF negative prompt.
pub fn fallback_defaults(resolution: Resolution) -> GenerationDefaults {
    let (height, width) = resolution.size();
    GenerationDefaults {
        height,
        width,
        num_frames: 97,
        steps: 30,
        guidance: 6.0,
        shift: 8.0,
        fps: 24,
        negative_prompt: DEFAULT_NEGATIVE_PROMPT.to_string(),
    }
}

/// Why a variant cannot be chosen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct VariantError(pub RecognitionError);

/// Picks the variant of `architecture` run with `pipeline`: at `requested` resolution when given
/// (an error when the model was not released there); else at the class of `size` (width, height)
/// or 540P, falling back to the resolution the model was released at. An architecture that was
/// never released gets [`fallback_defaults`] and a note saying so.
pub fn choose_variant(
    architecture: &DitConfig,
    requested: Option<Resolution>,
    size: Option<(usize, usize)>,
    pipeline: Pipeline,
) -> Result<VariantChoice, VariantError> {
    let variants = ModelVariant::builtin();
    let wanted = requested.unwrap_or_else(|| match size {
        Some((width, height)) => Resolution::of_size(height, width),
        None => Resolution::P540,
    });
    let described = describe_architecture(architecture);
    let found = |resolution| recognise(&variants, architecture, resolution, Some(pipeline));
    let (variant, note) = match found(wanted) {
        Ok(variant) => (variant.clone(), None),
        Err(RecognitionError::NoSuchResolution { .. }) if requested.is_none() => {
            let other = match wanted {
                Resolution::P540 => Resolution::P720,
                Resolution::P720 => Resolution::P540,
            };
            let variant = found(other).map_err(VariantError)?;
            let note = format!(
                "{} was released at {other} only; its defaults and TeaCache fit apply to the {wanted} size asked for",
                variant.name
            );
            (variant.clone(), Some(note))
        }
        Err(RecognitionError::UnknownArchitecture { .. }) => {
            return Ok(VariantChoice {
                name: None,
                resolution: wanted,
                architecture: described.clone(),
                defaults: fallback_defaults(wanted),
                variant: None,
                note: Some(format!(
                    "no released SkyReels-V2 model has this architecture ({described}); using the built-in defaults (DF-540P's: 97 frames, 30 steps, guidance 6, shift 8)"
                )),
            });
        }
        Err(error) => return Err(VariantError(error)),
    };
    Ok(VariantChoice {
        name: Some(variant.name.clone()),
        resolution: variant.resolution,
        architecture: described,
        defaults: variant.generation.clone(),
        variant: Some(variant),
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn architecture(name: &str) -> DitConfig {
        ModelVariant::builtin()
            .into_iter()
            .find(|v| v.name == name)
            .expect("variant")
            .architecture
    }

    #[test]
    fn each_released_architecture_gets_its_own_defaults() {
        let i2v = choose_variant(
            &architecture("i2v-1.3b-540p"),
            None,
            None,
            Pipeline::Synchronous,
        )
        .expect("i2v");
        assert_eq!(i2v.name.as_deref(), Some("i2v-1.3b-540p"));
        assert_eq!(
            (i2v.defaults.guidance, i2v.defaults.shift),
            (5.0, 5.0),
            "I2V samples with guidance 5, shift 5"
        );
        let df_720 = choose_variant(
            &architecture("df-14b-720p"),
            Some(Resolution::P720),
            None,
            Pipeline::DiffusionForcing,
        )
        .expect("df 720p");
        assert_eq!(df_720.name.as_deref(), Some("df-14b-720p"));
        assert_eq!(
            (
                df_720.defaults.width,
                df_720.defaults.height,
                df_720.defaults.num_frames
            ),
            (1280, 720, 121)
        );
        let t2v_by_size = choose_variant(
            &architecture("t2v-14b-720p"),
            None,
            Some((1280, 720)),
            Pipeline::Synchronous,
        )
        .expect("t2v by size");
        assert_eq!(t2v_by_size.name.as_deref(), Some("t2v-14b-720p"));
    }

    #[test]
    fn a_size_the_model_was_not_released_at_falls_back_with_a_note() {
        let choice = choose_variant(
            &architecture("df-1.3b-540p"),
            None,
            Some((1280, 720)),
            Pipeline::DiffusionForcing,
        )
        .expect("fallback");
        assert_eq!(choice.name.as_deref(), Some("df-1.3b-540p"));
        assert!(
            choice
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("540P only"),
            "{choice:?}"
        );
        let error = choose_variant(
            &architecture("df-1.3b-540p"),
            Some(Resolution::P720),
            None,
            Pipeline::DiffusionForcing,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("was not released at 720P") && error.contains("fix:"),
            "{error}"
        );
    }

    #[test]
    fn an_unreleased_architecture_keeps_the_built_in_defaults_and_says_so() {
        let mut tiny = architecture("df-1.3b-540p");
        tiny.dim = 32;
        let choice = choose_variant(&tiny, None, None, Pipeline::DiffusionForcing).expect("tiny");
        assert_eq!(choice.name, None);
        assert_eq!(choice.defaults, fallback_defaults(Resolution::P540));
        assert_eq!(
            choice.defaults,
            ModelVariant::builtin()[0].generation,
            "the fallback is DF-1.3B-540P's generation section"
        );
        assert!(
            choice
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("no released SkyReels-V2 model has this architecture"),
            "{choice:?}"
        );
        let at_720 = choose_variant(
            &tiny,
            Some(Resolution::P720),
            None,
            Pipeline::DiffusionForcing,
        )
        .expect("tiny 720p");
        assert_eq!((at_720.defaults.width, at_720.defaults.height), (1280, 720));
    }
}
