//! `multipart/form-data` requests (the OpenAI Videos API's form): the request fields as text parts
//! and the uploads as file parts: the first frame `input_reference`, the last frame
//! `last_frame_reference` and the video to extend `video_reference` ([`Reference`]). Each upload
//! is streamed into a temporary file in the videos directory, never more than its limit, then
//! checked (a picture to be a PNG or JPEG that decodes, a video to be an MP4; the plan then
//! decodes the video) before the job is queued.

use std::path::{Path, PathBuf};

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::queue::Upload;
use crate::reference::Reference;

const MIB: usize = 1024 * 1024;

/// The most bytes of text parts a form may hold (all of them together), kept in memory.
pub const TEXT_LIMIT: usize = MIB;

/// The largest `multipart/form-data` body: every upload at its limit and the text parts.
pub const FORM_LIMIT: usize = 20 * MIB + 20 * MIB + 256 * MIB + TEXT_LIMIT;

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
/// An MP4 (ISO base media file) starts with a box whose type, at offset 4, is `ftyp`.
const MP4_BOX_TYPE: [u8; 4] = *b"ftyp";

/// A form read: its text parts as a request object, and the checked uploads.
#[derive(Debug)]
pub struct Form {
    /// The text parts, as the fields of a JSON request.
    pub fields: serde_json::Map<String, Value>,
    /// The file parts, received and checked, at most one of each kind.
    pub uploads: Vec<Upload>,
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
            "the multipart/form-data body cannot be read: {}\n  fix: send a well-formed form of at most {FORM_LIMIT} bytes, the pictures `input_reference` and `last_frame_reference` at most {} bytes each, the video `video_reference` at most {} bytes",
            error.body_text(),
            Reference::FirstFrame.limit(),
            Reference::Video.limit()
        ),
    }
}

/// Reads the form, receiving each file part into a new temporary file in the videos directory
/// (`new_path` names one) and checking that its pictures decode; on a refusal the rest of the body
/// is read and discarded (so the client gets the answer) and every temporary file is deleted.
pub async fn read_form(
    mut multipart: Multipart,
    new_path: impl Fn() -> PathBuf,
) -> Result<Form, UploadError> {
    let mut received = Vec::new();
    let mut read = read_parts(&mut multipart, &new_path, &mut received).await;
    if let Ok(form) = &read {
        let pictures: Vec<(Reference, PathBuf)> = form
            .uploads
            .iter()
            .filter(|upload| upload.reference != Reference::Video)
            .map(|upload| (upload.reference, upload.path.clone()))
            .collect();
        let checked = tokio::task::spawn_blocking(move || {
            pictures
                .iter()
                .try_for_each(|(reference, path)| check_image(*reference, path))
        })
        .await
        .unwrap_or_else(|join| {
            Err(UploadError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                field: None,
                message: format!("checking the uploads failed: {join}"),
            })
        });
        if let Err(error) = checked {
            read = Err(error);
        }
    }
    if read.is_err() {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
        for path in received {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
    read
}

async fn read_parts(
    multipart: &mut Multipart,
    new_path: &impl Fn() -> PathBuf,
    received: &mut Vec<PathBuf>,
) -> Result<Form, UploadError> {
    let mut form = Form {
        fields: serde_json::Map::new(),
        uploads: Vec::new(),
    };
    let mut text_bytes = 0usize;
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
        if let Some(reference) = Reference::of_field(&name) {
            if form
                .uploads
                .iter()
                .any(|upload| upload.reference == reference)
            {
                return Err(refused(
                    &name,
                    format!(
                        "`{name}` is given twice\n  fix: upload one file as {}",
                        reference.what()
                    ),
                ));
            }
            let path = new_path();
            received.push(path.clone());
            form.uploads
                .push(receive(&mut field, reference, path).await?);
            continue;
        }
        if field.file_name().is_some() {
            return Err(refused(
                &name,
                format!(
                    "`{name}` is sent as a file; the file parts are `input_reference`, `last_frame_reference` and `video_reference`\n  fix: send `{name}` as a text part, or the file as one of those parts"
                ),
            ));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|error| unreadable(Some(&name), &error))?
        {
            text_bytes += chunk.len();
            if text_bytes > TEXT_LIMIT {
                return Err(refused(
                    &name,
                    format!(
                        "the text parts are larger than the limit of {TEXT_LIMIT} bytes (1 MiB) together\n  fix: send the request fields as short text parts, and files only as `input_reference`, `last_frame_reference` or `video_reference`"
                    ),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            refused(
                &name,
                format!("`{name}` is not UTF-8 text\n  fix: send the field's value as UTF-8 text"),
            )
        })?;
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

/// Streams the file part `reference` into `path`, refusing it once it passes its limit; returns
/// the upload with the extension its signature gives.
async fn receive(
    field: &mut Field<'_>,
    reference: Reference,
    path: PathBuf,
) -> Result<Upload, UploadError> {
    let name = reference.field();
    let cannot_save = |error: std::io::Error| UploadError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        field: Some(name.into()),
        message: format!(
            "the upload cannot be saved in the videos directory ({}): {error}\n  fix: free space in --videos, or make it writable",
            path.display()
        ),
    };
    let mut file = tokio::fs::File::create(&path).await.map_err(cannot_save)?;
    let limit = reference.limit();
    let mut size = 0usize;
    let mut head = Vec::with_capacity(PNG_SIGNATURE.len());
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|error| unreadable(Some(name), &error))?
    {
        size += chunk.len();
        if size > limit {
            return Err(refused(
                name,
                format!(
                    "`{name}` is larger than the limit of {limit} bytes ({} MiB)\n  fix: upload a smaller file{}",
                    limit / MIB,
                    match reference {
                        Reference::Video => " (a shorter clip, or one encoded at the video size)",
                        _ => " (the frame is resized to the video size anyway)",
                    }
                ),
            ));
        }
        let wanted = (PNG_SIGNATURE.len() - head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..wanted]);
        file.write_all(&chunk).await.map_err(cannot_save)?;
    }
    file.flush().await.map_err(cannot_save)?;
    drop(file);
    let extension = match reference {
        Reference::Video if head.get(4..8) == Some(&MP4_BOX_TYPE[..]) => "mp4",
        Reference::FirstFrame | Reference::LastFrame if head.starts_with(&PNG_SIGNATURE) => "png",
        Reference::FirstFrame | Reference::LastFrame if head.starts_with(&JPEG_SIGNATURE) => "jpg",
        _ if size == 0 => {
            return Err(refused(
                name,
                format!(
                    "`{name}` is empty\n  fix: upload {} as {}",
                    reference.what(),
                    reference.formats()
                ),
            ));
        }
        _ => {
            return Err(refused(
                name,
                format!(
                    "`{name}` is not {} (it starts with {})\n  fix: upload {} as {}",
                    reference.formats(),
                    head.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    reference.what(),
                    reference.formats()
                ),
            ));
        }
    };
    Ok(Upload {
        reference,
        path,
        extension,
    })
}

/// Decodes a saved picture with the runtime's image reader, as the job will.
fn check_image(reference: Reference, path: &Path) -> Result<(), UploadError> {
    let name = reference.field();
    skyreels_runtime::image::RgbImage::open(path)
        .map(|_| ())
        .map_err(|error| {
            let detail = error.to_string();
            let detail = detail
                .lines()
                .next()
                .unwrap_or_default()
                .replace(&path.display().to_string(), name);
            refused(
                name,
                format!(
                    "`{name}` does not decode: {detail}\n  fix: upload a complete PNG or JPEG file (re-save or re-download it if it is cut short)"
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
