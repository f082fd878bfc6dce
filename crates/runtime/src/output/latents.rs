use std::collections::BTreeSet;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::output::{OutputError, write_atomically};
use crate::tensor::Tensor;

/// Saves `tensors` (name, tensor) as float32 little-endian in a safetensors file at `path`; the
/// file appears complete or not at all. Names must be unique.
pub fn save_latents<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Result<(), OutputError> {
    let mismatch = |name: &str, message: String| OutputError::TensorMismatch {
        path: path.to_path_buf(),
        name: name.to_string(),
        message,
    };
    let mut names = BTreeSet::new();
    let mut encoded = Vec::new();
    for (name, tensor) in tensors {
        if !names.insert(name) {
            return Err(mismatch(
                name,
                "given twice\n  fix: give every tensor its own name".to_string(),
            ));
        }
        if tensor.shape.iter().product::<usize>() != tensor.data.len() {
            return Err(mismatch(
                name,
                format!(
                    "{} elements do not fill shape {:?}",
                    tensor.data.len(),
                    tensor.shape
                ),
            ));
        }
        let bytes: Vec<u8> = tensor
            .data
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        encoded.push((name, tensor.shape.clone(), bytes));
    }
    let invalid = |error: safetensors::SafeTensorError| OutputError::Safetensors {
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                *name,
                TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(invalid)?,
            ))
        })
        .collect::<Result<Vec<_>, OutputError>>()?;
    let file = safetensors::serialize(views, None).map_err(invalid)?;
    write_atomically(path, |writer| {
        std::io::Write::write_all(writer, &file).map_err(|source| OutputError::Create {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Reads tensor `name` of the safetensors file at `path` as float32 (F16 and BF16 are upcast
/// exactly), checking its shape against `expected_shape`, where `None` accepts any size of that
/// dimension (the rank must match).
pub fn read_tensor(
    path: &Path,
    name: &str,
    expected_shape: &[Option<usize>],
) -> Result<Tensor, OutputError> {
    let bytes = skyreels_contract::files::read_bounded(
        path,
        "tensor file",
        skyreels_contract::files::physical_memory(),
    )?;
    let file = SafeTensors::deserialize(&bytes).map_err(|error| OutputError::Safetensors {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    let view = file.tensor(name).map_err(|_| {
        let mut available: Vec<String> = file.names().into_iter().map(str::to_string).collect();
        available.sort();
        OutputError::MissingTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            available,
        }
    })?;
    let mismatch = |message: String| OutputError::TensorMismatch {
        path: path.to_path_buf(),
        name: name.to_string(),
        message,
    };
    let shape = view.shape().to_vec();
    if shape.contains(&0) {
        return Err(mismatch(format!(
            "has shape {shape:?}, with an empty dimension\n  fix: save a tensor with at least one element along every dimension"
        )));
    }
    let fits = shape.len() == expected_shape.len()
        && shape
            .iter()
            .zip(expected_shape)
            .all(|(size, expected)| expected.is_none_or(|expected| expected == *size));
    if !fits {
        let expected: Vec<String> = expected_shape
            .iter()
            .map(|size| size.map_or_else(|| "*".to_string(), |size| size.to_string()))
            .collect();
        return Err(mismatch(format!(
            "has shape {shape:?}, expected [{}]\n  fix: save the tensor with that shape (`*` is any size)",
            expected.join(", ")
        )));
    }
    let values = crate::tensor_file::float_values(&view).ok_or_else(|| {
        mismatch(format!(
            "has dtype {}, expected F32 (F16 and BF16 are accepted too)\n  fix: convert it before saving, e.g. `tensor.float()` in PyTorch",
            view.dtype()
        ))
    })?;
    let tensor = Tensor::new(shape, values).map_err(|error| mismatch(error.to_string()))?;
    let non_finite = tensor
        .data
        .iter()
        .filter(|value| !value.is_finite())
        .count();
    if non_finite > 0 {
        return Err(mismatch(format!(
            "holds {non_finite} non-finite values (NaN or ±inf) among its {}\n  fix: use values saved from a successful run (NaN or inf cannot be sampled or decoded)",
            tensor.len()
        )));
    }
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tensors() -> (Tensor, Tensor) {
        let latents = Tensor::new(
            vec![16, 3, 4, 5],
            (0..16 * 3 * 4 * 5)
                .map(|i| (i as f32 * 0.37).sin() * 1e3 + f32::EPSILON * i as f32)
                .collect(),
        )
        .unwrap();
        let scalar_like = Tensor::new(vec![1], vec![-0.0]).unwrap();
        (latents, scalar_like)
    }

    #[test]
    fn latents_round_trip_exactly() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("out").join("latents.safetensors");
        let (latents, scalar_like) = sample_tensors();
        save_latents(&path, [("latents", &latents), ("0", &scalar_like)]).unwrap();
        let read = read_tensor(&path, "latents", &[Some(16), None, Some(4), Some(5)]).unwrap();
        assert_eq!(read.shape, latents.shape);
        let same_bits = read
            .data
            .iter()
            .zip(&latents.data)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits);
        let zero = read_tensor(&path, "0", &[None]).unwrap();
        assert_eq!(zero.data[0].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn half_precision_tensors_are_upcast() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("half.safetensors");
        let values = [1.5f32, -2.25, 65504.0];
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::BF16, vec![3], &bytes).unwrap();
        fs_err::write(&path, safetensors::serialize([("x", view)], None).unwrap()).unwrap();
        let read = read_tensor(&path, "x", &[Some(3)]).unwrap();
        assert_eq!(read.data, [1.5, -2.25, 65536.0]);
    }

    #[test]
    fn reader_errors_name_file_tensor_and_problem() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("noise.safetensors");
        let (latents, _) = sample_tensors();
        save_latents(&path, [("latents", &latents)]).unwrap();

        let missing = read_tensor(&path, "noise", &[None])
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("noise.safetensors") && missing.contains("`noise`"),
            "{missing}"
        );
        assert!(missing.contains("holds: latents"), "{missing}");

        let wrong_shape = read_tensor(&path, "latents", &[Some(16), None, Some(8), Some(5)])
            .unwrap_err()
            .to_string();
        assert!(
            wrong_shape.contains("[16, 3, 4, 5]") && wrong_shape.contains("[16, *, 8, 5]"),
            "{wrong_shape}"
        );
        let wrong_rank = read_tensor(&path, "latents", &[None, None])
            .unwrap_err()
            .to_string();
        assert!(wrong_rank.contains("expected [*, *]"), "{wrong_rank}");

        let integers = directory.path().join("ints.safetensors");
        let view = TensorView::new(Dtype::I32, vec![2], &[0u8; 8]).unwrap();
        fs_err::write(
            &integers,
            safetensors::serialize([("x", view)], None).unwrap(),
        )
        .unwrap();
        let wrong_dtype = read_tensor(&integers, "x", &[Some(2)])
            .unwrap_err()
            .to_string();
        assert!(
            wrong_dtype.contains("dtype I32") && wrong_dtype.contains("fix:"),
            "{wrong_dtype}"
        );

        let garbage = directory.path().join("garbage.safetensors");
        fs_err::write(&garbage, b"not a safetensors file").unwrap();
        let invalid = read_tensor(&garbage, "x", &[]).unwrap_err().to_string();
        assert!(invalid.contains("garbage.safetensors"), "{invalid}");

        let absent = read_tensor(&directory.path().join("absent.safetensors"), "x", &[])
            .unwrap_err()
            .to_string();
        assert!(absent.contains("absent.safetensors"), "{absent}");
    }

    #[test]
    fn saving_latents_to_an_unwritable_path_leaves_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let blocker = directory.path().join("file");
        fs_err::write(&blocker, b"x").unwrap();
        let (latents, _) = sample_tensors();
        let path = blocker.join("latents.safetensors");
        let message = save_latents(&path, [("latents", &latents)])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("latents.safetensors") && message.contains("fix:"),
            "{message}"
        );
        let entries: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["file"]);
    }

    #[test]
    fn duplicate_names_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (latents, _) = sample_tensors();
        let path = directory.path().join("latents.safetensors");
        assert!(save_latents(&path, [("a", &latents), ("a", &latents)]).is_err());
        assert!(!path.exists());
    }
}
