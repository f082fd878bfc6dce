//! The HTTP routes, shaped like the OpenAI Videos API (`/v1/videos`), over a [`Queue`]. Errors are
//! OpenAI-style JSON: `{"error": {"message", "type", "param", "code"}}`, `param` naming the field.
//! `POST /v1/videos` takes JSON, or `multipart/form-data` with the same fields as text parts and
//! the uploads as file parts (`input_reference`, `last_frame_reference`, `video_reference`;
//! [`crate::upload`]). With an [`ApiKey`], every `/v1/*` route and `/metrics` require
//! `Authorization: Bearer <key>`; `/health` stays open for load balancers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::auth::{ApiKey, bearer_token};
use crate::executor::{Executor, RequestError};
use crate::metrics;
use crate::queue::{CancelOutcome, ContentError, Queue, Status, SubmitError, Upload};
use crate::upload::{self, FORM_LIMIT, JSON_LIMIT, UploadError};

/// The frame rate `seconds` is converted at when a request gives no `fps` (the plan's default).
const DEFAULT_FPS: f64 = 24.0;

/// The service's routes over `queue`; with `key`, all but `/health` require it.
pub fn router<E: Executor>(queue: Arc<Queue<E>>, key: Option<ApiKey>) -> Router {
    let mut guarded = Router::new()
        .route(
            "/v1/videos",
            get(list::<E>)
                .post(create::<E>)
                .layer(DefaultBodyLimit::max(FORM_LIMIT)),
        )
        .route("/v1/videos/{id}", get(retrieve::<E>).delete(cancel::<E>))
        .route("/v1/videos/{id}/content", get(content::<E>))
        .route("/metrics", get(prometheus::<E>));
    if let Some(key) = key {
        // A route layer: it runs before the handler reads the body, so an upload without the key
        // is refused unread, and an unknown route stays a 404.
        guarded = guarded.route_layer(middleware::from_fn_with_state(Arc::new(key), require_key));
    }
    guarded
        .route("/health", get(health::<E>))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                None,
                "no such route; the API is /v1/videos, /v1/videos/{id}, /v1/videos/{id}/content, /health, /metrics",
            )
        })
        .with_state(queue)
}

/// Passes the request on when its `Authorization: Bearer` token is `key`, else answers `401`
/// with `WWW-Authenticate: Bearer` (RFC 6750).
async fn require_key(State(key): State<Arc<ApiKey>>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().ok().and_then(bearer_token));
    let (code, challenge, message) = match token {
        Some(Some(token)) if key.matches(token) => return next.run(request).await,
        None => (
            "missing_api_key",
            "Bearer",
            "this server requires an API key, and the request has no `Authorization` header\n  fix: send `Authorization: Bearer <key>` with the server's key (OpenAI clients: set the api_key, or OPENAI_API_KEY)",
        ),
        Some(None) => (
            "invalid_api_key",
            "Bearer error=\"invalid_request\"",
            "the `Authorization` header is not `Bearer <key>`\n  fix: send `Authorization: Bearer <key>` with the server's key",
        ),
        Some(Some(_)) => (
            "invalid_api_key",
            "Bearer error=\"invalid_token\"",
            "the API key is not this server's\n  fix: send the key of the server's --api-key-file (or SKYREELS_API_KEY)",
        ),
    };
    let mut response = error(StatusCode::UNAUTHORIZED, code, None, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

fn error(status: StatusCode, code: &str, param: Option<&str>, message: &str) -> Response {
    let kind = match status.as_u16() {
        400 | 401 | 404 | 409 | 413 | 415 => "invalid_request_error",
        429 => "rate_limit_error",
        _ => "server_error",
    };
    let body = json!({
        "error": {"message": message, "type": kind, "param": param, "code": code}
    });
    (status, axum::Json(body)).into_response()
}

fn invalid(request_error: &RequestError) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_value",
        request_error.field.as_deref(),
        &request_error.message,
    )
}

fn unknown_job(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        Some("id"),
        &format!(
            "no video job with id `{id}`\n  fix: use an id returned by POST /v1/videos that was not deleted or expired"
        ),
    )
}

/// OpenAI clients send `model` (any value is accepted: the server runs its one engine) and may
/// give the length as `seconds`, turned into `num_frames` = 4k+1 at the request's `fps`.
fn openai_fields(body: &mut serde_json::Map<String, Value>) -> Result<(), RequestError> {
    body.remove("model");
    let Some(seconds) = body.remove("seconds") else {
        return Ok(());
    };
    let field_error = |message: String| RequestError {
        field: Some("seconds".into()),
        message,
    };
    if body.contains_key("num_frames") {
        return Err(field_error(
            "`seconds` and `num_frames` both set the length\n  fix: give only one of them".into(),
        ));
    }
    let value = match &seconds {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 600.0)
    .ok_or_else(|| {
        field_error(format!(
            "`seconds` must be a positive number of seconds up to 600, got {seconds}\n  fix: e.g. \"seconds\": \"4\""
        ))
    })?;
    let fps = body
        .get("fps")
        .and_then(Value::as_f64)
        .unwrap_or(DEFAULT_FPS);
    let blocks = (value * fps / 4.0).round().max(1.0) as u64;
    body.insert("num_frames".into(), json!(4 * blocks + 1));
    Ok(())
}

async fn create<E: Executor>(State(queue): State<Arc<Queue<E>>>, request: Request) -> Response {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if is_form {
        return create_from_form(queue, request).await;
    }
    let body = match axum::body::to_bytes(request.into_body(), JSON_LIMIT).await {
        Ok(body) => body,
        Err(too_large) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_json",
                None,
                &format!(
                    "the JSON body cannot be read within {JSON_LIMIT} bytes: {too_large}\n  fix: send a request object of the documented fields"
                ),
            );
        }
    };
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                None,
                "the body must be a JSON object\n  fix: send e.g. {\"prompt\": \"a red fox running through fresh snow\"}",
            );
        }
        Err(parse) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                None,
                &format!(
                    "the body is not valid JSON: {parse}\n  fix: send a JSON object with Content-Type: application/json"
                ),
            );
        }
    };
    submit(queue, body, Vec::new()).await
}

/// A `multipart/form-data` request: its text parts as the fields, its file parts as the uploads.
async fn create_from_form<E: Executor>(queue: Arc<Queue<E>>, request: Request) -> Response {
    let multipart = match Multipart::from_request(request, &()).await {
        Ok(multipart) => multipart,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_multipart",
                None,
                &format!(
                    "the multipart/form-data body cannot be read: {}\n  fix: send the fields as form parts with a boundary in the Content-Type",
                    rejection.body_text()
                ),
            );
        }
    };
    let uploads_into = Arc::clone(&queue);
    match upload::read_form(multipart, move || uploads_into.upload_path()).await {
        Ok(form) => submit(queue, form.fields, form.uploads).await,
        Err(UploadError {
            status,
            field,
            message,
        }) => {
            if status.is_client_error() {
                queue.count_invalid();
            }
            error(status, "invalid_value", field.as_deref(), &message)
        }
    }
}

/// Converts the OpenAI fields of `body` and queues it with `uploads` (deleted when refused).
async fn submit<E: Executor>(
    queue: Arc<Queue<E>>,
    mut body: serde_json::Map<String, Value>,
    uploads: Vec<Upload>,
) -> Response {
    if let Err(request_error) = openai_fields(&mut body) {
        for upload in uploads {
            let _ = tokio::fs::remove_file(&upload.path).await;
        }
        return invalid(&request_error);
    }
    let submitted =
        tokio::task::spawn_blocking(move || queue.submit(Value::Object(body), uploads)).await;
    match submitted {
        Ok(Ok(view)) => (StatusCode::CREATED, axum::Json(view)).into_response(),
        Ok(Err(SubmitError::Invalid(request_error))) => invalid(&request_error),
        Ok(Err(full @ SubmitError::Full { .. })) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                None,
                &full.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            response
        }
        Ok(Err(shutting_down @ SubmitError::ShuttingDown)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            None,
            &shutting_down.to_string(),
        ),
        Ok(Err(unsaved @ SubmitError::Upload { field, .. })) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            Some(field),
            &unsaved.to_string(),
        ),
        Err(join) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            None,
            &format!("checking the request failed: {join}"),
        ),
    }
}

async fn retrieve<E: Executor>(
    State(queue): State<Arc<Queue<E>>>,
    Path(id): Path<String>,
) -> Response {
    match queue.get(&id) {
        Some(view) => axum::Json(view).into_response(),
        None => unknown_job(&id),
    }
}

async fn content<E: Executor>(
    State(queue): State<Arc<Queue<E>>>,
    Path(id): Path<String>,
) -> Response {
    let path = match queue.video(&id) {
        Ok(path) => path,
        Err(ContentError::Unknown(_)) => return unknown_job(&id),
        Err(not_ready @ ContentError::NotReady { status, .. }) => {
            let fix = match status {
                Status::Queued | Status::InProgress => {
                    "poll GET /v1/videos/{id} until its status is completed"
                }
                _ => "submit the request again",
            };
            return error(
                StatusCode::CONFLICT,
                "not_ready",
                Some("id"),
                &format!("{not_ready}\n  fix: {fix}"),
            );
        }
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "video/mp4")], bytes).into_response(),
        Err(read) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("id"),
            &format!("the video of `{id}` cannot be read: {read}"),
        ),
    }
}

async fn cancel<E: Executor>(
    State(queue): State<Arc<Queue<E>>>,
    Path(id): Path<String>,
) -> Response {
    match queue.cancel(&id) {
        Some(CancelOutcome::Cancelled(view)) => axum::Json(view).into_response(),
        Some(CancelOutcome::Requested(view)) => {
            (StatusCode::ACCEPTED, axum::Json(view)).into_response()
        }
        Some(CancelOutcome::Deleted) => {
            axum::Json(json!({"id": id, "object": "video.deleted", "deleted": true}))
                .into_response()
        }
        None => unknown_job(&id),
    }
}

async fn list<E: Executor>(
    State(queue): State<Arc<Queue<E>>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_value",
                Some("limit"),
                "`limit` must be a whole number from 1 to 100\n  fix: e.g. ?limit=20",
            );
        }
    };
    let mut jobs = queue.list();
    match query.get("order").map(String::as_str) {
        None | Some("desc") => jobs.reverse(),
        Some("asc") => {}
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_value",
                Some("order"),
                &format!("`order` must be asc or desc, got `{other}`\n  fix: e.g. ?order=asc"),
            );
        }
    }
    if let Some(after) = query.get("after") {
        match jobs.iter().position(|job| &job.id == after) {
            Some(index) => {
                jobs.drain(..=index);
            }
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_value",
                    Some("after"),
                    &format!(
                        "`after` names no kept job (`{after}`)\n  fix: pass the last_id of the previous page"
                    ),
                );
            }
        }
    }
    let has_more = jobs.len() > limit;
    jobs.truncate(limit);
    axum::Json(json!({
        "object": "list",
        "first_id": jobs.first().map(|job| job.id.clone()),
        "last_id": jobs.last().map(|job| job.id.clone()),
        "has_more": has_more,
        "data": jobs,
    }))
    .into_response()
}

async fn health<E: Executor>(State(queue): State<Arc<Queue<E>>>) -> Response {
    let snapshot = queue.metrics();
    let running = snapshot
        .jobs_by_status
        .get(&Status::InProgress)
        .copied()
        .unwrap_or(0);
    let body = json!({
        "status": if queue.is_accepting() { "ok" } else { "shutting_down" },
        "model": queue.model(),
        "queue_depth": snapshot.queue_depth,
        "running": running,
    });
    let status = if queue.is_accepting() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn prometheus<E: Executor>(State(queue): State<Arc<Queue<E>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&queue.metrics()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converted(body: Value) -> Result<Value, RequestError> {
        let Value::Object(mut map) = body else {
            unreachable!()
        };
        openai_fields(&mut map).map(|()| Value::Object(map))
    }

    #[test]
    fn seconds_become_4k_plus_1_frames_and_model_is_dropped() {
        assert_eq!(
            converted(json!({"model": "sora-2", "seconds": "4"})).unwrap(),
            json!({"num_frames": 97})
        );
        assert_eq!(
            converted(json!({"seconds": 2, "fps": 16})).unwrap(),
            json!({"num_frames": 33, "fps": 16})
        );
        let both = converted(json!({"seconds": "4", "num_frames": 97})).unwrap_err();
        assert_eq!(both.field.as_deref(), Some("seconds"));
        let negative = converted(json!({"seconds": "-1"})).unwrap_err();
        assert!(negative.message.contains("positive"), "{negative}");
    }
}
