//! Requests given as JSON (a server's body, a batch file's line, a snapshot case): parsed into a
//! [`GenerateRequest`] with the field at fault named, and plan messages worded with field names.

use serde_json::{Value, json};

use super::request::GenerateRequest;

/// A request that does not parse, with the field at fault when one is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// The request field at fault (`seed`), as in the JSON.
    pub field: Option<String>,
    /// What is wrong and the fix.
    pub message: String,
}

/// The field a body fails to deserialize on: named by serde for unknown or missing fields, else
/// the first whose value alone does not fit.
fn failing_field(body: &serde_json::Map<String, Value>, message: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `"] {
        if let Some((name, _)) = message
            .split_once(marker)
            .and_then(|(_, rest)| rest.split_once('`'))
        {
            return Some(name.to_string());
        }
    }
    body.iter()
        .find(|(key, value)| {
            let mut alone = serde_json::Map::new();
            alone.insert("prompt".into(), json!("p"));
            alone.insert((*key).clone(), (*value).clone());
            serde_json::from_value::<GenerateRequest>(Value::Object(alone)).is_err()
        })
        .map(|(key, _)| key.clone())
}

/// Parses a request object (`"prompt"`, `"size"`, `"num_frames"`, … as `skyreels generate`'s
/// flags with `_` for `-`).
pub fn parse_request(body: &Value) -> Result<GenerateRequest, FieldError> {
    let Value::Object(fields) = body else {
        return Err(FieldError {
            field: None,
            message: "a request must be a JSON object\n  fix: e.g. {\"prompt\": \"a red fox running through fresh snow\"}".into(),
        });
    };
    serde_json::from_value(body.clone()).map_err(|error| {
        let message = error.to_string();
        let field = failing_field(fields, &message);
        let fix = match &field {
            Some(field) if message.contains("unknown field") => {
                format!("drop `{field}`; the fields are skyreels generate's flags with _ for -")
            }
            Some(field) if message.contains("missing field") => {
                format!("give `{field}`, e.g. \"prompt\": \"a red fox running through fresh snow\"")
            }
            Some(field) => format!("give `{field}` a value of its type (README, Request fields)"),
            None => "give the fields of skyreels generate, with _ for -".into(),
        };
        FieldError {
            field,
            message: format!("{message}\n  fix: {fix}"),
        }
    })
}

/// Rewrites the CLI's `--flag-name` in a plan's message as the request field `flag_name`.
pub fn with_field_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("--") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len());
        if name_len == 0 {
            out.push_str("--");
        } else {
            out.push_str(&after[..name_len].replace('-', "_"));
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// A plan's refusal of `request` as a [`FieldError`]: the field its message names (as a flag),
/// `size` for a width or height given as `size`, and the message worded with field names.
pub fn plan_error(request: &GenerateRequest, message: &str) -> FieldError {
    let field = super::summary::field_of(message).map(|field| match field.as_str() {
        "width" | "height" if request.size.is_some() => "size".to_string(),
        _ => field,
    });
    FieldError {
        field,
        message: with_field_names(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_at_fault_is_named() {
        let field = |body: Value| parse_request(&body).unwrap_err().field;
        assert_eq!(
            field(json!({"prompt": "fox", "seed": "seven"})).as_deref(),
            Some("seed")
        );
        assert_eq!(
            field(json!({"prompt": "fox", "colour": 1})).as_deref(),
            Some("colour")
        );
        assert_eq!(field(json!({"steps": 3})).as_deref(), Some("prompt"));
        assert_eq!(field(json!(["fox"])), None);
        let message = parse_request(&json!({"prompt": "fox", "steps": -1}))
            .unwrap_err()
            .message;
        assert!(message.contains("fix: give `steps`"), "{message}");
        let parsed = parse_request(&json!({"prompt": "fox", "size": "96x64"})).unwrap();
        assert_eq!(parsed.size.as_deref(), Some("96x64"));
    }

    #[test]
    fn flags_become_field_names() {
        assert_eq!(
            with_field_names("--num-frames 16 is not 4k+1\n  fix: use 13 or 17 -- or --steps"),
            "num_frames 16 is not 4k+1\n  fix: use 13 or 17 -- or steps"
        );
        let sized = GenerateRequest {
            size: Some("95x64".into()),
            ..GenerateRequest::default()
        };
        let error = plan_error(&sized, "--width 95 is not a multiple of 16");
        assert_eq!(error.field.as_deref(), Some("size"));
        assert_eq!(error.message, "width 95 is not a multiple of 16");
    }
}
