//! `multipart/form-data` requests (the OpenAI Videos API's form): the request fields as text parts
//! and the first frame as the file part `input_reference`. The upload is streamed into a temporary
//! file in the videos directory, never more than [`UPLOAD_LIMIT`] bytes of it, then checked to be
//! a PNG or JPEG that decodes before the job is queued.

use std::path::Path;

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::queue::Upload;

/// The form part that carries the first frame.
pub const INPUT_REFERENCE: &str = "input_reference";

const MIB: usize = 1024 * 1024;

/// The largest first frame accepted, in bytes.
pub const UPLOAD_LIMIT: usize = 20 * MIB;

/// The largest `multipart/form-data` body: the upload and a mebibyte of text parts.
pub const FORM_LIMIT: usize = UPLOAD_LIMIT + MIB;

/// The largest JSON body.
pub const JSON_LIMIT: usize = 2 * MIB;

/// Fields whose values are text; the values of the other text parts are read as JSON when they
/// parse as a number, `true`/`false` or an array (`7`, `0.2`, `[1, 2, 3, 4, 5]`).
const TEXT_FIELDS: [&str; 13] = [
    "prompt",
    "negative_prompt",
    "size",
    "model",
    "seconds",
    "resolution",
    "compat",
    "pipeline",
    "max_gpu_memory",
    "image",
    "last_image",
    "video",
    "noise",
];

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
const JPEG_SIGNATURE: [u8; 3] = [0xff, 0xd8, 0xff];

/// A form read: its text parts as a request object, and the checked upload, if any.
#[derive(Debug)]
pub struct Form {
    /// The text parts, as the fields of a JSON request.
    pub fields: serde_json::Map<String, Value>,
    /// The first frame, received and checked.
    pub upload: Option<Upload>,
}

/// A form refused: the HTTP status, the part at fault and the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct UploadError {
    /// `400`, or `413` for a body over [`FORM_LIMIT`].
    pub status: StatusCode,
    /// The form part at fault.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn refused(field: &str, message: String) -> UploadError {
    UploadError {
        status: StatusCode::BAD_REQUEST,
        field: Some(field.to_string()),
        message,
    }
}

fn unreadable(field: Option<&str>, error: &MultipartError) -> UploadError {
    UploadError {
        status: error.status(),
        field: field.map(str::to_string),
        message: format!(
            "the multipart/form-data body cannot be read: {}\n  fix: send a well-formed form of at most {FORM_LIMIT} bytes, the file part `{INPUT_REFERENCE}` at most {UPLOAD_LIMIT} bytes",
            error.body_text()
        ),
    }
}

/// Reads the form, receiving `input_reference` into `upload_path` (a temporary file in the videos
/// directory) and checking that it decodes; on a refusal the rest of the body is read and
/// discarded (so the client gets the answer) and the temporary file is deleted.
pub async fn read_form(mut multipart: Multipart, upload_path: &Path) -> Result<Form, UploadError> {
    let mut read = read_parts(&mut multipart, upload_path).await;
    if read.as_ref().is_ok_and(|form| form.upload.is_some()) {
        let path = upload_path.to_path_buf();
        let checked = tokio::task::spawn_blocking(move || check_image(&path))
            .await
            .unwrap_or_else(|join| {
                Err(refused(
                    INPUT_REFERENCE,
                    format!("checking `{INPUT_REFERENCE}` failed: {join}"),
                ))
            });
        if let Err(error) = checked {
            read = Err(error);
        }
    }
    if read.is_err() {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
        let _ = tokio::fs::remove_file(upload_path).await;
    }
    read
}

async fn read_parts(multipart: &mut Multipart, upload_path: &Path) -> Result<Form, UploadError> {
    let mut form = Form {
        fields: serde_json::Map::new(),
        upload: None,
    };
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|error| unreadable(None, &error))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(UploadError {
                status: StatusCode::BAD_REQUEST,
                field: None,
                message: "a form part has no name\n  fix: give every part a Content-Disposition name (`prompt`, `size`, …, `input_reference`)".into(),
            });
        }
        if name == INPUT_REFERENCE {
            if form.upload.is_some() {
                return Err(refused(
                    INPUT_REFERENCE,
                    format!("`{INPUT_REFERENCE}` is given twice\n  fix: upload one first frame"),
                ));
            }
            form.upload = Some(receive(&mut field, upload_path).await?);
            continue;
        }
        if field.file_name().is_some() {
            return Err(refused(
                &name,
                format!(
                    "`{name}` is sent as a file; the only file part is `{INPUT_REFERENCE}`\n  fix: send `{name}` as a text part, or the first frame as `{INPUT_REFERENCE}`"
                ),
            ));
        }
        let text = field
            .text()
            .await
            .map_err(|error| unreadable(Some(&name), &error))?;
        if form.fields.contains_key(&name) {
            return Err(refused(
                &name,
                format!("`{name}` is given twice\n  fix: send each field once"),
            ));
        }
        let value = form_value(&name, text);
        form.fields.insert(name, value);
    }
    Ok(form)
}

/// Streams the file part into `path`, refusing it once it passes [`UPLOAD_LIMIT`] bytes; returns
/// the upload with the extension its signature gives.
async fn receive(field: &mut Field<'_>, path: &Path) -> Result<Upload, UploadError> {
    let cannot_save = |error: std::io::Error| UploadError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        field: Some(INPUT_REFERENCE.into()),
        message: format!(
            "the upload cannot be saved in the videos directory ({}): {error}\n  fix: free space in --videos, or make it writable",
            path.display()
        ),
    };
    let mut file = tokio::fs::File::create(path).await.map_err(cannot_save)?;
    let mut size = 0usize;
    let mut head = Vec::with_capacity(PNG_SIGNATURE.len());
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|error| unreadable(Some(INPUT_REFERENCE), &error))?
    {
        size += chunk.len();
        if size > UPLOAD_LIMIT {
            return Err(refused(
                INPUT_REFERENCE,
                format!(
                    "`{INPUT_REFERENCE}` is larger than the limit of {UPLOAD_LIMIT} bytes (20 MiB)\n  fix: upload a smaller PNG or JPEG (the frame is resized to the video size anyway)"
                ),
            ));
        }
        let wanted = (PNG_SIGNATURE.len() - head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..wanted]);
        file.write_all(&chunk).await.map_err(cannot_save)?;
    }
    file.flush().await.map_err(cannot_save)?;
    drop(file);
    let extension = if head.starts_with(&PNG_SIGNATURE) {
        "png"
    } else if head.starts_with(&JPEG_SIGNATURE) {
        "jpg"
    } else if size == 0 {
        return Err(refused(
            INPUT_REFERENCE,
            format!(
                "`{INPUT_REFERENCE}` is empty\n  fix: upload the first frame as a PNG or JPEG file"
            ),
        ));
    } else {
        return Err(refused(
            INPUT_REFERENCE,
            format!(
                "`{INPUT_REFERENCE}` is not a PNG or JPEG file (it starts with {})\n  fix: upload the first frame as a PNG or JPEG file",
                head.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    };
    Ok(Upload {
        path: path.to_path_buf(),
        extension,
    })
}

/// Decodes the saved upload with the runtime's image reader, as the job will.
fn check_image(path: &Path) -> Result<(), UploadError> {
    skyreels_runtime::image::RgbImage::open(path)
        .map(|_| ())
        .map_err(|error| {
            let detail = error.to_string();
            let detail = detail
                .lines()
                .next()
                .unwrap_or_default()
                .replace(&path.display().to_string(), INPUT_REFERENCE);
            refused(
                INPUT_REFERENCE,
                format!(
                    "`{INPUT_REFERENCE}` does not decode: {detail}\n  fix: upload a complete PNG or JPEG file (re-save or re-download it if it is cut short)"
                ),
            )
        })
}

/// A text part's value as a JSON request field: text for [`TEXT_FIELDS`], else the JSON it
/// parses as when that is a number, a boolean or an array, else the text.
fn form_value(name: &str, text: String) -> Value {
    if TEXT_FIELDS.contains(&name) {
        return Value::String(text);
    }
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::Array(_))) => value,
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_parts_become_the_json_fields_values() {
        assert_eq!(form_value("prompt", "42".into()), json!("42"));
        assert_eq!(form_value("seconds", "4".into()), json!("4"));
        assert_eq!(form_value("num_frames", "17".into()), json!(17));
        assert_eq!(form_value("teacache", " 0.2 ".into()), json!(0.2));
        assert_eq!(form_value("offload", "true".into()), json!(true));
        assert_eq!(
            form_value("teacache_coefficients", "[1, 2, 3, 4, 5]".into()),
            json!([1, 2, 3, 4, 5])
        );
        assert_eq!(form_value("seed", "seven".into()), json!("seven"));
        assert_eq!(form_value("seed", "{\"a\": 1}".into()), json!("{\"a\": 1}"));
    }
}
