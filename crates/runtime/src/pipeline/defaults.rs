//! Upstream defaults that are data, not architecture: the default negative prompt and TeaCache's
//! published rescaling coefficients (SPEC.md §6), read from the released variants' configs.

use skyreels_contract::{
    DitConfig, ModelVariant, Pipeline, RecognitionError, Resolution, recognise,
};

/// Wan / SkyReels-V2's default negative prompt (`wan/configs/shared_config.py`, used by
/// `generate_video_df.py`).
pub const DEFAULT_NEGATIVE_PROMPT: &str = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走";

/// TeaCache coefficients (highest degree first) of the released variant an engine's DiT is,
/// recognised from its architecture, the chosen resolution class and sampling loop
/// (`configs/models/*.yaml`, compiled in). The DF and T2V models use Wan's T2V fits by size; I2V
/// uses Wan's I2V fits by resolution. An architecture that was never released is an error.
pub fn teacache_coefficients(
    config: &DitConfig,
    resolution: Resolution,
    pipeline: Pipeline,
    use_retention: bool,
) -> Result<[f64; 5], RecognitionError> {
    let variants = ModelVariant::builtin();
    Ok(recognise(&variants, config, resolution, Some(pipeline))?
        .teacache
        .coefficients(use_retention))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyreels_contract::ModelType;

    #[test]
    fn the_default_negative_prompt_is_the_diffusion_forcing_configs() {
        for variant in ModelVariant::builtin()
            .iter()
            .filter(|v| v.pipeline == Pipeline::DiffusionForcing)
        {
            assert_eq!(
                variant.generation.negative_prompt, DEFAULT_NEGATIVE_PROMPT,
                "{}",
                variant.name
            );
        }
    }

    /// The table this module held before the coefficients moved into the configs (SPEC.md §6).
    fn spec_table(
        model_type: ModelType,
        large: bool,
        high_resolution: bool,
        use_retention: bool,
    ) -> [f64; 5] {
        match (model_type, large, high_resolution, use_retention) {
            (ModelType::T2v, false, _, true) => [
                -5.21862437e4,
                9.23041404e3,
                -5.28275948e2,
                1.36987616e1,
                -4.99875664e-2,
            ],
            (ModelType::T2v, true, _, true) => [
                -3.03318725e5,
                4.90537029e4,
                -2.65530556e3,
                5.87365115e1,
                -3.15583525e-1,
            ],
            (ModelType::T2v, false, _, false) => [
                2.39676752e3,
                -1.31110545e3,
                2.01331979e2,
                -8.29855975,
                1.37887774e-1,
            ],
            (ModelType::T2v, true, _, false) => [
                -5784.54975374,
                5449.50911966,
                -1811.16591783,
                256.27178429,
                -13.02252404,
            ],
            (ModelType::I2v, _, false, true) => [
                2.57151496e5,
                -3.54229917e4,
                1.40286849e3,
                -1.35890334e1,
                1.32517977e-1,
            ],
            (ModelType::I2v, _, true, true) => [
                8.10705460e3,
                2.13393892e3,
                -3.72934672e2,
                1.66203073e1,
                -4.17769401e-2,
            ],
            (ModelType::I2v, _, false, false) => [
                -3.02331670e2,
                2.23948934e2,
                -5.25463970e1,
                5.87348440,
                -2.01973289e-1,
            ],
            (ModelType::I2v, _, true, false) => [
                -114.36346466,
                65.26524496,
                -18.82220707,
                4.91518089,
                -0.23412683,
            ],
        }
    }

    #[test]
    fn every_released_variant_gets_the_spec_coefficients() {
        for variant in ModelVariant::builtin() {
            for use_retention in [false, true] {
                let found = teacache_coefficients(
                    &variant.architecture,
                    variant.resolution,
                    variant.pipeline,
                    use_retention,
                )
                .unwrap();
                let large = variant.architecture.dim > 2048;
                let expected = spec_table(
                    variant.architecture.model_type,
                    large,
                    variant.resolution == Resolution::P720,
                    use_retention,
                );
                assert_eq!(
                    found, expected,
                    "{} retention {use_retention}",
                    variant.name
                );
            }
        }
    }

    #[test]
    fn an_unreleased_architecture_has_no_coefficients() {
        let mut config = ModelVariant::builtin()[0].architecture.clone();
        config.dim = 24;
        let error =
            teacache_coefficients(&config, Resolution::P540, Pipeline::DiffusionForcing, true)
                .unwrap_err();
        assert!(
            error.to_string().contains("--teacache-coefficients"),
            "{error}"
        );
    }
}
