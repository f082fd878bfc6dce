//! `skyreels-serve` through its binary with a real HTTP client, on the built-in tiny engine: the
//! whole job life cycle, bad input, a full queue, cancellation, shutdown on SIGTERM, jobs kept
//! across a restart on the same videos directory, and first frames uploaded as `input_reference`
//! (to the tiny engine and to its image-to-video sibling).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skyreels_contract::manifest::FORMAT_VERSION;
use skyreels_contract::{Attention, DitConfig, Manifest, ModelType, Precision, Target};
use skyreels_exporter::dit::{self, DitExportOptions};
use skyreels_exporter::image::{self as clip, ImageExportOptions};
use skyreels_exporter::text::{self, TextExportOptions};
use skyreels_exporter::tiny::{self, StorageDtype};
use skyreels_exporter::vae::{self, VaeExportOptions};
use skyreels_graph::DType;

/// The environment variable that may hold the server's API key.
const KEY_VARIABLE: &str = "SKYREELS_API_KEY";

/// The tiny engine of `skyreels-export tiny`, exported once for all tests of this binary.
fn tiny_engine() -> &'static Path {
    static ENGINE: OnceLock<tempfile::TempDir> = OnceLock::new();
    ENGINE.get_or_init(|| export_engine(false)).path()
}

/// The tiny engine's image-to-video sibling (36 input channels, image embedding, the CLIP fixture
/// of `tests/fixtures/clip/hf` as its image encoder), exported once.
fn image_to_video_engine() -> &'static Path {
    static ENGINE: OnceLock<tempfile::TempDir> = OnceLock::new();
    ENGINE.get_or_init(|| export_engine(true)).path()
}

fn export_engine(image_to_video: bool) -> tempfile::TempDir {
    let mut config = tiny::tiny_dit_config();
    if image_to_video {
        config = DitConfig {
            model_type: ModelType::I2v,
            in_dim: 36,
            image_dim: Some(32),
            image_len: Some(257),
            inject_sample_info: false,
            ..config
        };
    }
    let out = tempfile::tempdir().expect("tempdir");
    let source = tempfile::tempdir().expect("tempdir");
    tiny::write_random_dit(source.path(), &config, StorageDtype::F32, 0).expect("dit");
    vae::random::write_random_vae(
        &source.path().join("vae"),
        &vae::random::tiny_vae_config(),
        0,
    )
    .expect("vae");
    text::tiny::write_tiny(source.path(), 0).expect("text");
    let dit = dit::export(
        source.path(),
        out.path(),
        &DitExportOptions {
            compute: DType::F32,
            attention: Attention::MatMul,
            link_weights: false,
        },
    )
    .expect("export dit");
    let vae_source = vae::locate(source.path()).expect("vae source");
    let vae = vae::export(
        &vae_source,
        out.path(),
        &VaeExportOptions {
            compute: DType::F32,
            link_weights: false,
        },
    )
    .expect("export vae");
    let found = text::locate(source.path()).expect("text source");
    let text = text::export(
        &found.checkpoint,
        &found.tokenizer,
        out.path(),
        &TextExportOptions {
            compute: DType::F32,
            attention: Attention::MatMul,
            link_weights: false,
        },
    )
    .expect("export text");
    let image_encoder = image_to_video.then(|| {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip/hf");
        clip::export(
            &fixture,
            out.path(),
            &ImageExportOptions {
                compute: DType::F32,
                attention: Attention::MatMul,
                link_weights: false,
                preprocess: clip::preprocess_from(None).expect("preprocess"),
            },
        )
        .expect("export clip")
        .component
    });
    Manifest {
        format_version: FORMAT_VERSION,
        producer: "serve test".into(),
        target: Target::Cpu,
        precision: Precision::Fp32,
        attention: Attention::MatMul,
        dit: Some(dit.component),
        vae: Some(vae.component),
        text_encoder: Some(text.component),
        image_encoder,
        build: None,
        source: None,
    }
    .save(out.path())
    .expect("manifest");
    out
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: mpsc::Receiver<String>,
    /// What the server printed up to its address.
    startup_log: Vec<String>,
    videos: PathBuf,
    /// The `Authorization` header every request of the helpers sends, if any.
    authorization: Option<String>,
    _scratch: Option<tempfile::TempDir>,
}

/// Tests start servers one at a time: the machine running them is small.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Server {
    fn start(extra: &[&str]) -> Server {
        let scratch = tempfile::tempdir().expect("tempdir");
        let videos = scratch.path().join("videos");
        let mut server = Server::start_in(&videos, extra);
        server._scratch = Some(scratch);
        server
    }

    /// A server on `videos` (kept by the caller, e.g. for a restart on the same directory).
    fn start_in(videos: &Path, extra: &[&str]) -> Server {
        Server::start_on(tiny_engine(), videos, extra)
    }

    /// A server of `engine` on `videos`.
    fn start_on(engine: &Path, videos: &Path, extra: &[&str]) -> Server {
        Server::start_with(engine, videos, "127.0.0.1:0", extra, &[])
    }

    /// A server of `engine` on `videos`, listening on `listen`, with `environment` variables set.
    fn start_with(
        engine: &Path,
        videos: &Path,
        listen: &str,
        extra: &[&str],
        environment: &[(&str, &str)],
    ) -> Server {
        let videos = videos.to_path_buf();
        let mut child = Command::new(env!("CARGO_BIN_EXE_skyreels-serve"))
            .arg("--engines")
            .arg(engine)
            .args(["--listen", listen, "--threads", "1", "--videos"])
            .arg(&videos)
            .args(extra)
            .env_remove(KEY_VARIABLE)
            .envs(environment.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start skyreels-serve");
        let (sender, log) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut startup_log = Vec::new();
        let base = loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the server printed its address");
            if let Some(address) = line.strip_prefix("listening on ") {
                break address.to_string();
            }
            startup_log.push(line);
        };
        Server {
            child,
            base,
            log,
            startup_log,
            videos,
            authorization: None,
            _scratch: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `request` with the server's `Authorization` header, if it has one.
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// (status, JSON body) of a request.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent = Server::agent();
        let url = self.url(path);
        let response = match (method, body) {
            ("GET", _) => self.authorized(agent.get(&url)).call(),
            ("DELETE", _) => self.authorized(agent.delete(&url)).call(),
            ("POST", Some(body)) => self.authorized(agent.post(&url)).send_json(&body),
            ("POST", None) => self.authorized(agent.post(&url)).send("{not json"),
            _ => unreachable!("{method}"),
        }
        .expect("HTTP request");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .read_json::<Value>()
            .unwrap_or(Value::Null);
        (status, body)
    }

    /// (status, JSON body) of a `multipart/form-data` POST of `fields` as text parts and `file`
    /// (part name, file name, bytes) as a file part, the body built by hand.
    fn post_form(
        &self,
        fields: &[(&str, String)],
        file: Option<(&str, &str, &[u8])>,
    ) -> (u16, Value) {
        self.post_form_files(fields, file.as_slice())
    }

    /// [`Server::post_form`] with several file parts.
    fn post_form_files(
        &self,
        fields: &[(&str, String)],
        files: &[(&str, &str, &[u8])],
    ) -> (u16, Value) {
        let boundary = "skyreels-test-boundary-7d1c";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        for (name, file_name, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let response = self
            .authorized(Server::agent().post(&self.url("/v1/videos")))
            .header(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send(&body[..])
            .expect("HTTP request");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .read_json::<Value>()
            .unwrap_or(Value::Null);
        (status, body)
    }

    /// The body of a completed job's video.
    fn content(&self, id: &str) -> Vec<u8> {
        let response = self
            .authorized(Server::agent().get(&self.url(&format!("/v1/videos/{id}/content"))))
            .call()
            .expect("content");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers().get("content-type").unwrap(), "video/mp4");
        response
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .expect("bytes")
    }

    /// Submits `request` and returns the new job's id.
    fn submit(&self, request: Value) -> String {
        let (code, created) = self.call("POST", "/v1/videos", Some(request));
        assert_eq!(code, 201, "{created}");
        created["id"].as_str().expect("id").to_string()
    }

    /// Log lines printed so far (those after the address once only).
    fn log_lines(&self) -> Vec<String> {
        self.startup_log
            .iter()
            .cloned()
            .chain(self.log.try_iter())
            .collect()
    }

    fn text(&self, path: &str) -> String {
        self.authorized(Server::agent().get(&self.url(path)))
            .call()
            .expect("GET")
            .into_body()
            .read_to_string()
            .expect("text body")
    }

    fn wait_for(&self, id: &str, statuses: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, job) = self.call("GET", &format!("/v1/videos/{id}"), None);
            assert_eq!(code, 200, "{job}");
            if statuses.contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} is still {}",
                job["status"]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code and the rest of its log.
    fn wait_exit(mut self, within: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100));
                let log = self.log.try_iter().collect();
                return (status.code(), log);
            }
            assert!(Instant::now() < deadline, "the server did not exit in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Server {
    /// Ends the server with SIGKILL (no shutdown of its own) and reaps it.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plan's largest step count: a job that is still running when the test cancels it.
const LONG_JOB_STEPS: usize = 1000;

/// Steps of a job killed while it runs, then run again after a restart: long enough to be seen
/// running, short enough to run twice in a test.
const KILLED_JOB_STEPS: usize = 150;

/// Asserts that `bytes` are the MP4 of [`small_request`] (17 frames of 96×64).
/// The names in `directory`, sorted.
fn file_names(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn assert_playable(bytes: &[u8]) {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("fetched.mp4");
    fs_err::write(&file, bytes).unwrap();
    let video = skyreels_runtime::output::read_mp4(&file).expect("a readable MP4");
    assert_eq!(
        (video.num_frames(), video.width(), video.height()),
        (17, 96, 64)
    );
}

fn small_request(steps: usize) -> Value {
    json!({
        "prompt": "a red fox running through fresh snow",
        "size": "96x64",
        "num_frames": 17,
        "steps": steps,
        "seed": 7
    })
}

#[test]
fn a_job_goes_from_queued_to_a_playable_mp4() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    let (code, health) = server.call("GET", "/health", None);
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));

    let (code, created) = server.call("POST", "/v1/videos", Some(small_request(3)));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["object"], "video");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["size"], "96x64");
    assert_eq!(created["num_frames"], 17);
    let id = created["id"].as_str().expect("id").to_string();

    let done = server.wait_for(&id, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["error"].is_null());
    let stages = done["timings"]["stages"].as_object().expect("stages");
    assert!(stages.contains_key("sampling"), "{done}");
    assert!(stages.contains_key("decoding"), "{done}");

    assert_playable(&server.content(&id));

    let (code, list) = server.call("GET", "/v1/videos", None);
    assert_eq!(code, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id.as_str());

    let metrics = server.text("/metrics");
    assert!(
        metrics.contains("skyreels_jobs_finished_total{status=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skyreels_stage_seconds_count{stage=\"sampling\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skyreels_model_load_seconds "),
        "{metrics}"
    );

    assert!(server.videos.join(format!("{id}.json")).is_file());
    let (code, deleted) = server.call("DELETE", &format!("/v1/videos/{id}"), None);
    assert_eq!((code, &deleted["deleted"]), (200, &json!(true)));
    assert!(!server.videos.join(format!("{id}.mp4")).exists());
    assert!(!server.videos.join(format!("{id}.json")).exists());
    let (code, _) = server.call("GET", &format!("/v1/videos/{id}"), None);
    assert_eq!(code, 404);
}

#[test]
fn a_server_started_with_offload_streams_the_dit_weights_of_its_jobs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--offload"]);
    let (code, created) = server.call("POST", "/v1/videos", Some(small_request(2)));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["dit_weights"], "streamed", "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let done = server.wait_for(&id, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done}");
    let mut resident = small_request(2);
    resident["offload"] = json!(false);
    let (code, created) = server.call("POST", "/v1/videos", Some(resident));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["dit_weights"], "resident", "{created}");
}

#[test]
fn bad_requests_get_400_naming_the_field() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    let cases = [
        (json!({"prompt": "fox", "size": "95x64"}), "size"),
        (json!({"prompt": "fox", "size": "big"}), "size"),
        (json!({"prompt": "fox", "num_frames": 16}), "num_frames"),
        (json!({"prompt": "fox", "steps": 0}), "steps"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "fox", "colour": "red"}), "colour"),
        (json!({"prompt": "fox", "seed": "seven"}), "seed"),
        (
            json!({"prompt": "fox", "max_gpu_memory": "lots"}),
            "max_gpu_memory",
        ),
        (
            json!({"prompt": "fox", "max_gpu_memory": "1K"}),
            "max_gpu_memory",
        ),
    ];
    for (body, field) in cases {
        let (code, error) = server.call("POST", "/v1/videos", Some(body.clone()));
        assert_eq!(code, 400, "{body} -> {error}");
        assert_eq!(error["error"]["param"], field, "{body} -> {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("fix:"), "{body} -> {message}");
    }
    let (code, error) = server.call("POST", "/v1/videos", None);
    assert_eq!(code, 400);
    assert_eq!(error["error"]["code"], "invalid_json");
    let (code, error) = server.call("GET", "/v1/videos/video_nope", None);
    assert_eq!((code, error["error"]["param"].as_str()), (404, Some("id")));
    let (_, list) = server.call("GET", "/v1/videos", None);
    assert_eq!(list["data"], json!([]));
    let metrics = server.text("/metrics");
    assert!(
        metrics.contains("skyreels_requests_rejected_total{reason=\"invalid\"} 9"),
        "{metrics}"
    );
}

#[test]
fn a_full_queue_answers_429_and_delete_cancels_waiting_and_running_jobs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--max-queue", "1"]);
    let (_, running) = server.call("POST", "/v1/videos", Some(small_request(LONG_JOB_STEPS)));
    let running = running["id"].as_str().expect("id").to_string();
    server.wait_for(&running, &["in_progress"]);
    let (code, waiting) = server.call("POST", "/v1/videos", Some(small_request(2)));
    assert_eq!(code, 201);
    let waiting = waiting["id"].as_str().expect("id").to_string();
    let (code, full) = server.call("POST", "/v1/videos", Some(small_request(2)));
    assert_eq!(code, 429, "{full}");
    assert_eq!(full["error"]["code"], "queue_full");

    let (code, cancelled) = server.call("DELETE", &format!("/v1/videos/{waiting}"), None);
    assert_eq!(
        (code, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (code, content) = server.call("GET", &format!("/v1/videos/{waiting}/content"), None);
    assert_eq!(
        (code, content["error"]["code"].as_str()),
        (409, Some("not_ready"))
    );

    let in_progress = server.wait_for(&running, &["in_progress"]);
    assert!(in_progress["stage"].is_string(), "{in_progress}");
    let (code, asked) = server.call("DELETE", &format!("/v1/videos/{running}"), None);
    assert_eq!(code, 202, "{asked}");
    assert_eq!(asked["cancel_requested"], true);
    let stopped = server.wait_for(&running, &["cancelled", "completed", "failed"]);
    assert_eq!(stopped["status"], "cancelled", "{stopped}");
    assert!(stopped["progress"].as_u64().unwrap() < 100);
    let leftovers = file_names(&server.videos);
    let mut records = vec![
        ".skyreels-owner".to_string(),
        format!("{running}.json"),
        format!("{waiting}.json"),
    ];
    records.sort();
    assert_eq!(leftovers, records, "only the two jobs' records are left");
}

#[test]
fn after_sigterm_a_restarted_server_serves_finished_videos_and_runs_the_queued_jobs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let videos = scratch.path().join("videos");
    let server = Server::start_in(&videos, &["--shutdown-grace", "3", "--cancel-wait", "60"]);
    let finished = server.submit(small_request(2));
    let finished_job = server.wait_for(&finished, &["completed", "failed"]);
    assert_eq!(finished_job["status"], "completed", "{finished_job}");
    let finished_bytes = server.content(&finished);
    let running = server.submit(small_request(LONG_JOB_STEPS));
    server.wait_for(&running, &["in_progress"]);
    let waiting = server.submit(small_request(3));
    server.terminate();
    let started = Instant::now();
    loop {
        let (code, health) = server.call("GET", "/health", None);
        if code == 503 {
            assert_eq!(health["status"], "shutting_down");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{health}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, refused) = server.call("POST", "/v1/videos", Some(small_request(2)));
    assert_eq!(
        (code, refused["error"]["code"].as_str()),
        (503, Some("shutting_down"))
    );
    let (_, waited) = server.call("GET", &format!("/v1/videos/{waiting}"), None);
    assert_eq!(waited["status"], "queued", "{waited}");
    let (code, log) = server.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log:#?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        log.iter().any(|line| line
            == &format!(
                "warning: job {running}: stopped by the shutdown; queued again from the start for the next start (restart 1 of at most 3)"
            )),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("running job was interrupted")),
        "{log:#?}"
    );
    assert!(
        !log.iter()
            .any(|line| line.starts_with(&format!("job {waiting}")))
    );

    let restarted = Server::start_in(&videos, &[]);
    let (code, list) = restarted.call("GET", "/v1/videos?order=asc", None);
    assert_eq!(code, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [finished.as_str(), running.as_str(), waiting.as_str()]);
    let (_, restored) = restarted.call("GET", &format!("/v1/videos/{finished}"), None);
    assert_eq!(restored, finished_job);
    assert_eq!(restarted.content(&finished), finished_bytes);
    let (_, interrupted) = restarted.call("GET", &format!("/v1/videos/{running}"), None);
    assert!(
        ["queued", "in_progress"].contains(&interrupted["status"].as_str().unwrap()),
        "{interrupted}"
    );
    assert_eq!(interrupted["restarts"], 1, "{interrupted}");
    assert!(interrupted["error"].is_null(), "{interrupted}");
    let (code, _) = restarted.call("DELETE", &format!("/v1/videos/{running}"), None);
    assert!(code == 200 || code == 202, "{code}");
    let cancelled = restarted.wait_for(&running, &["cancelled", "completed", "failed"]);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let run_after_restart = restarted.wait_for(&waiting, &["completed", "failed"]);
    assert_eq!(
        run_after_restart["status"], "completed",
        "{run_after_restart}"
    );
    assert_eq!(run_after_restart["steps"], 3);
    assert_playable(&restarted.content(&waiting));
    assert!(
        restarted
            .log_lines()
            .iter()
            .any(|line| line.contains("restored 3 jobs") && line.contains("(2 queued)")),
    );
}

#[test]
fn a_killed_server_runs_its_running_job_again_from_the_start_and_skips_a_corrupt_record() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let videos = scratch.path().join("videos");
    let server = Server::start_in(&videos, &[]);
    let running = server.submit(small_request(KILLED_JOB_STEPS));
    let in_progress = server.wait_for(&running, &["in_progress"]);
    assert!(
        in_progress["progress"].as_u64().unwrap() < 50,
        "{in_progress}"
    );
    let waiting = server.submit(small_request(KILLED_JOB_STEPS));
    server.kill();
    let record: Value =
        serde_json::from_slice(&fs_err::read(videos.join(format!("{running}.json"))).unwrap())
            .unwrap();
    assert_eq!(
        record["status"], "in_progress",
        "the job was killed while it ran: {record}"
    );
    let corrupt = videos.join("video_0123456789abcdef01234567.json");
    fs_err::write(
        &corrupt,
        "{\"object\": \"skyreels.video_job\", \"format\": 1, \"id\"",
    )
    .unwrap();
    let foreign = videos.join("notes.json");
    fs_err::write(&foreign, "[1, 2, 3]").unwrap();

    let restarted = Server::start_in(&videos, &[]);
    assert!(
        restarted.startup_log.contains(&format!(
            "warning: job {running}: was running when the server stopped; queued again from the start (restart 1 of at most 3)"
        )),
        "{:#?}",
        restarted.startup_log
    );
    let (_, requeued) = restarted.call("GET", &format!("/v1/videos/{running}"), None);
    assert!(
        ["queued", "in_progress"].contains(&requeued["status"].as_str().unwrap()),
        "{requeued}"
    );
    assert_eq!(requeued["restarts"], 1, "{requeued}");
    let rerun = restarted.wait_for(&running, &["completed", "failed"]);
    assert_eq!(rerun["status"], "completed", "{rerun}");
    assert_eq!(
        (&rerun["progress"], &rerun["restarts"]),
        (&json!(100), &json!(1))
    );
    let run_after_restart = restarted.wait_for(&waiting, &["completed", "failed"]);
    assert_eq!(
        run_after_restart["status"], "completed",
        "{run_after_restart}"
    );
    let rerun_video = read_video(&restarted.content(&running));
    assert_eq!(rerun_video.num_frames(), 17);
    assert_same_frames(&rerun_video, &read_video(&restarted.content(&waiting)));
    let (_, list) = restarted.call("GET", "/v1/videos", None);
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let log = restarted.log_lines();
    assert!(
        log.iter().any(|line| line.starts_with("warning: skipping ")
            && line.contains(&corrupt.display().to_string())
            && line.contains("is not a job record")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("fix: move the file out of")),
        "{log:#?}"
    );
    assert!(corrupt.is_file() && foreign.is_file());
    let files = file_names(&videos);
    let mut expected = vec![
        ".skyreels-owner".to_string(),
        format!("{running}.json"),
        format!("{running}.mp4"),
        format!("{waiting}.json"),
        format!("{waiting}.mp4"),
        "notes.json".to_string(),
        "video_0123456789abcdef01234567.json".to_string(),
    ];
    expected.sort();
    assert_eq!(
        files, expected,
        "no partial video of the killed job is left"
    );
}

#[test]
fn retention_applies_to_the_jobs_a_restarted_server_restores() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let videos = scratch.path().join("videos");
    let server = Server::start_in(&videos, &[]);
    let older = server.submit(small_request(1));
    let newer = server.submit(small_request(1));
    server.wait_for(&newer, &["completed"]);
    server.terminate();
    let (code, log) = server.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log:#?}");
    let kept = |id: &str| {
        [
            videos.join(format!("{id}.mp4")).exists(),
            videos.join(format!("{id}.json")).exists(),
        ]
    };
    assert_eq!((kept(&older), kept(&newer)), ([true, true], [true, true]));

    let restarted = Server::start_in(&videos, &["--keep-jobs", "1"]);
    let (code, _) = restarted.call("GET", &format!("/v1/videos/{older}"), None);
    assert_eq!(code, 404);
    assert_eq!(kept(&older), [false, false]);
    let (_, list) = restarted.call("GET", "/v1/videos", None);
    assert_eq!(list["data"][0]["id"], newer.as_str());
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    restarted.terminate();
    restarted.wait_exit(Duration::from_secs(60));

    let restarted = Server::start_in(&videos, &["--keep-seconds", "0"]);
    let (_, list) = restarted.call("GET", "/v1/videos", None);
    assert_eq!(list["data"], json!([]));
    assert_eq!(kept(&newer), [false, false]);
}

#[test]
fn a_taken_port_is_refused_before_loading_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_skyreels-serve"))
        .args(["--engines", "/nonexistent", "--listen", &address])
        .output()
        .expect("run skyreels-serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}"))
            && stderr.contains("fix: choose another --listen"),
        "{stderr}"
    );
}

#[test]
fn a_videos_directory_in_use_by_another_server_is_refused_before_loading() {
    let server = Server::start(&[]);
    let output = Command::new(env!("CARGO_BIN_EXE_skyreels-serve"))
        .args([
            "--engines",
            "/nonexistent",
            "--listen",
            "127.0.0.1:0",
            "--videos",
        ])
        .arg(&server.videos)
        .output()
        .expect("run skyreels-serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "videos directory {} is in use by pid {}",
            server.videos.display(),
            server.child.id()
        )) && stderr.contains("fix: wait for that process to finish"),
        "{stderr}"
    );
    // A folder of someone else's files is not taken either.
    let scratch = tempfile::tempdir().expect("tempdir");
    fs_err::write(scratch.path().join("holiday.mp4"), b"mine").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_skyreels-serve"))
        .args([
            "--engines",
            "/nonexistent",
            "--listen",
            "127.0.0.1:0",
            "--videos",
        ])
        .arg(scratch.path())
        .output()
        .expect("run skyreels-serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("already holds files that this tool did not create"),
        "{stderr}"
    );
    assert_eq!(
        fs_err::read(scratch.path().join("holiday.mp4")).unwrap(),
        b"mine"
    );
}

/// A seeded RGB picture of `width`×`height` saved to `path` (PNG or JPEG by its extension).
fn write_picture(path: &Path, width: u32, height: u32, seed: u32) {
    let picture = image::RgbImage::from_fn(width, height, |x, y| {
        let v = |k: u32| ((x * (3 + k + seed) + y * (5 + 2 * k) + 17 * seed * (k + 1)) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    });
    picture.save(path).expect("picture");
}

/// [`small_request`] as the text parts of a form.
fn small_form(steps: usize) -> Vec<(&'static str, String)> {
    vec![
        ("prompt", "a red fox running through fresh snow".into()),
        ("size", "96x64".into()),
        ("num_frames", "17".into()),
        ("steps", steps.to_string()),
        ("seed", "7".into()),
    ]
}

fn read_video(bytes: &[u8]) -> skyreels_runtime::output::Video {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("fetched.mp4");
    fs_err::write(&file, bytes).unwrap();
    skyreels_runtime::output::read_mp4(&file).expect("a readable MP4")
}

/// What `skyreels generate --image IMAGE` makes of `request` on `engine`: the same job API the
/// CLI is a front end over (request → plan → run_job), on one CPU thread as the servers here.
fn generate_with_image(
    engine: &Path,
    request: &Value,
    image: &Path,
) -> skyreels_runtime::output::Video {
    generate_with_files(engine, request, [Some(image), None, None])
}

/// What `skyreels generate --image I --last-image L --video V` makes of `request` on `engine`
/// (`files` = [I, L, V], each optional), as [`generate_with_image`].
fn generate_with_files(
    engine: &Path,
    request: &Value,
    files: [Option<&Path>; 3],
) -> skyreels_runtime::output::Video {
    use skyreels_runtime::job::{JobPlan, Models, OutputRequest, Residency, run_job};
    let scratch = tempfile::tempdir().unwrap();
    let mut parsed = skyreels_runtime::job::json::parse_request(request).expect("request");
    let [image, last_image, video] = files.map(|file| file.map(Path::to_path_buf));
    (parsed.image, parsed.last_image, parsed.video) = (image, last_image, video);
    let out = scratch.path().join("generated.mp4");
    let backend = skyreels_runtime::session::Backend::Cpu { threads: 1 };
    let planning = skyreels_runtime::engine::Engine::open(engine).expect("engine");
    let plan = JobPlan::new(
        &planning,
        &backend,
        &parsed,
        &OutputRequest {
            out: out.clone(),
            ..OutputRequest::default()
        },
    )
    .expect("plan");
    let mut models = Models::open(engine, backend, Residency::OneJob).expect("models");
    run_job(
        &plan,
        &mut models,
        &mut skyreels_runtime::pipeline::progress::Unobserved,
    )
    .expect("generate");
    skyreels_runtime::output::read_mp4(&out).expect("mp4")
}

fn assert_same_frames(
    served: &skyreels_runtime::output::Video,
    generated: &skyreels_runtime::output::Video,
) {
    assert_eq!(served.num_frames(), generated.num_frames());
    assert_eq!(
        served.frame(0),
        generated.frame(0),
        "the first frame differs from skyreels generate --image's"
    );
    for index in 1..served.num_frames() {
        assert_eq!(
            served.frame(index),
            generated.frame(index),
            "frame {index} differs"
        );
    }
}

#[test]
fn an_uploaded_input_reference_runs_an_image_to_video_job_as_generate_image_does() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let first = scratch.path().join("first.png");
    write_picture(&first, 96, 64, 1);
    let png = fs_err::read(&first).unwrap();
    let server = Server::start_on(image_to_video_engine(), &scratch.path().join("videos"), &[]);

    let (code, error) = server.call("POST", "/v1/videos", Some(small_request(2)));
    assert_eq!(code, 400, "{error}");
    assert_eq!(error["error"]["param"], "input_reference", "{error}");
    let mut named = small_request(2);
    named["image"] = json!(first);
    let (code, error) = server.call("POST", "/v1/videos", Some(named));
    assert_eq!(code, 400, "{error}");
    assert_eq!(error["error"]["param"], "image", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("reads no files named by clients") && message.contains("input_reference"),
        "{message}"
    );

    let (code, error) = server.post_form_files(
        &small_form(2),
        &[
            ("input_reference", "first.png", &png),
            ("last_frame_reference", "last.png", &png),
        ],
    );
    assert_eq!(code, 400, "{error}");
    assert_eq!(error["error"]["param"], "last_frame_reference", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "last_frame_reference and video_reference need a diffusion-forcing (DF) engine"
        ),
        "{message}"
    );

    let (code, created) =
        server.post_form(&small_form(2), Some(("input_reference", "first.png", &png)));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["pipeline"], "synchronous", "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let input = format!("{id}.input.png");
    assert_eq!(created["input_reference"], input.as_str());
    assert_eq!(fs_err::read(server.videos.join(&input)).unwrap(), png);
    let record: Value =
        serde_json::from_slice(&fs_err::read(server.videos.join(format!("{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(record["input_reference"], input.as_str());

    let done = server.wait_for(&id, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done}");
    let bytes = server.content(&id);
    assert_playable(&bytes);
    let generated = generate_with_image(image_to_video_engine(), &small_request(2), &first);
    assert_same_frames(&read_video(&bytes), &generated);

    let (code, deleted) = server.call("DELETE", &format!("/v1/videos/{id}"), None);
    assert_eq!((code, &deleted["deleted"]), (200, &json!(true)));
    assert_eq!(
        file_names(&server.videos),
        [".skyreels-owner"],
        "the upload is deleted with its job"
    );
}

#[test]
fn a_diffusion_forcing_job_takes_the_uploaded_input_reference_as_its_first_frame() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let first = scratch.path().join("first.jpg");
    write_picture(&first, 96, 64, 2);
    let jpeg = fs_err::read(&first).unwrap();
    let server = Server::start(&["--keep-jobs", "1"]);

    let (code, created) = server.post_form(
        &small_form(2),
        Some(("input_reference", "first.jpg", &jpeg)),
    );
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        created["input_reference"],
        format!("{id}.input.jpg").as_str()
    );
    let done = server.wait_for(&id, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done}");
    let served = read_video(&server.content(&id));
    assert_same_frames(
        &served,
        &generate_with_image(tiny_engine(), &small_request(2), &first),
    );

    let plain = server.submit(small_request(2));
    server.wait_for(&plain, &["completed"]);
    assert_eq!(
        file_names(&server.videos),
        [
            ".skyreels-owner".to_string(),
            format!("{plain}.json"),
            format!("{plain}.mp4"),
        ],
        "--keep-jobs 1 deleted the first job with its upload"
    );
    let unconditioned = read_video(&server.content(&plain));
    assert_ne!(
        served.frame(0),
        unconditioned.frame(0),
        "the upload changed the first frame"
    );
}

#[test]
fn bad_uploads_are_refused_with_400_naming_input_reference() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let picture = scratch.path().join("first.png");
    write_picture(&picture, 96, 64, 3);
    let png = fs_err::read(&picture).unwrap();
    let mut oversized = png.clone();
    oversized.resize(20 * 1024 * 1024 + 1, 0);
    let server = Server::start(&[]);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "notes.txt",
            b"a red fox running through fresh snow".to_vec(),
            "`input_reference` is not a PNG or JPEG file (it starts with 61 20 72 65 64 20 66 6f)",
        ),
        (
            "first.png",
            png[..png.len() / 2].to_vec(),
            "`input_reference` does not decode: ",
        ),
        (
            "big.png",
            oversized,
            "`input_reference` is larger than the limit of 20971520 bytes (20 MiB)",
        ),
        ("empty.png", Vec::new(), "`input_reference` is empty"),
    ];
    for (file_name, bytes, expected) in cases {
        let (code, error) =
            server.post_form(&small_form(2), Some(("input_reference", file_name, &bytes)));
        assert_eq!(code, 400, "{file_name}: {error}");
        assert_eq!(error["error"]["param"], "input_reference", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(expected) && message.contains("\n  fix: "),
            "{file_name}: {message}"
        );
    }
    let (code, error) = server.post_form(&small_form(2), Some(("image", "first.png", &png)));
    assert_eq!(
        (code, error["error"]["param"].as_str()),
        (400, Some("image"))
    );
    let mut twice = small_form(2);
    twice.push(("seed", "8".into()));
    let (code, error) = server.post_form(&twice, None);
    assert_eq!(
        (code, error["error"]["param"].as_str()),
        (400, Some("seed"))
    );
    let mut bad_value = small_form(2);
    bad_value[3].1 = "0".into();
    let (code, error) = server.post_form(&bad_value, Some(("input_reference", "first.png", &png)));
    assert_eq!(
        (code, error["error"]["param"].as_str()),
        (400, Some("steps"))
    );
    assert_eq!(
        file_names(&server.videos),
        [".skyreels-owner"],
        "no refused upload is left"
    );
    let (_, list) = server.call("GET", "/v1/videos", None);
    assert_eq!(list["data"], json!([]));
    let metrics = server.text("/metrics");
    assert!(
        metrics.contains("skyreels_requests_rejected_total{reason=\"invalid\"} 7"),
        "{metrics}"
    );
}

#[test]
fn a_queued_job_keeps_its_uploads_across_a_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let first = scratch.path().join("first.png");
    write_picture(&first, 96, 64, 4);
    let png = fs_err::read(&first).unwrap();
    let last = scratch.path().join("last.png");
    write_picture(&last, 96, 64, 8);
    let last_png = fs_err::read(&last).unwrap();
    let videos = scratch.path().join("videos");
    let server = Server::start_in(&videos, &[]);
    let running = server.submit(small_request(LONG_JOB_STEPS));
    server.wait_for(&running, &["in_progress"]);
    let (code, created) = server.post_form_files(
        &small_form(2),
        &[
            ("input_reference", "first.png", &png),
            ("last_frame_reference", "last.png", &last_png),
        ],
    );
    assert_eq!(code, 201, "{created}");
    let waiting = created["id"].as_str().expect("id").to_string();
    server.kill();

    let restarted = Server::start_in(&videos, &[]);
    let (code, _) = restarted.call("DELETE", &format!("/v1/videos/{running}"), None);
    assert!(code == 200 || code == 202, "{code}");
    let done = restarted.wait_for(&waiting, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["input_reference"],
        format!("{waiting}.input.png").as_str()
    );
    assert_eq!(
        done["last_frame_reference"],
        format!("{waiting}.last_frame.png").as_str()
    );
    assert_same_frames(
        &read_video(&restarted.content(&waiting)),
        &generate_with_files(
            tiny_engine(),
            &small_request(2),
            [Some(&first), Some(&last), None],
        ),
    );
    let (code, _) = restarted.call("DELETE", &format!("/v1/videos/{waiting}"), None);
    assert_eq!(code, 200);
    assert!(!videos.join(format!("{waiting}.input.png")).exists());
    assert!(!videos.join(format!("{waiting}.last_frame.png")).exists());
}

/// A key of 32 hex digits, as `openssl rand -hex 16` makes.
const KEY: &str = "5f0c9d2e7a41b8c36e1f04a9d27b5c80";

/// `KEY` in a file of mode `mode` in `directory`.
fn key_file(directory: &Path, contents: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = directory.join("api-key");
    fs_err::write(&path, contents).unwrap();
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// (status, `WWW-Authenticate`, JSON body) of a GET of `path` with `authorization`, if any.
fn get_with(
    server: &Server,
    path: &str,
    authorization: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = Server::agent().get(&server.url(path));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.call().expect("HTTP request");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_string());
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .read_json::<Value>()
        .unwrap_or(Value::Null);
    (status, challenge, body)
}

/// Asserts a `401` of `code` with the challenge `challenge`, shaped like the server's other errors.
fn assert_refused(answer: (u16, Option<String>, Value), code: &str, challenge: &str) {
    let (status, header, body) = answer;
    assert_eq!(status, 401, "{body}");
    assert_eq!(header.as_deref(), Some(challenge), "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\n  fix: "), "{message}");
    assert!(!message.contains(KEY), "the key is never shown: {message}");
}

#[test]
fn with_an_api_key_file_every_v1_route_and_metrics_need_the_bearer_key_but_health_does_not() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let key = key_file(scratch.path(), &format!("{KEY}\n"), 0o600);
    let mut server = Server::start_with(
        tiny_engine(),
        &scratch.path().join("videos"),
        "0.0.0.0:0",
        &["--api-key-file", key.to_str().unwrap()],
        &[],
    );
    assert!(
        !server
            .startup_log
            .iter()
            .any(|line| line.contains("without an API key")),
        "{:#?}",
        server.startup_log
    );
    let (code, health) = server.call("GET", "/health", None);
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));
    for path in [
        "/v1/videos",
        "/v1/videos/video_0123456789abcdef01234567",
        "/metrics",
    ] {
        assert_refused(get_with(&server, path, None), "missing_api_key", "Bearer");
        assert_refused(
            get_with(&server, path, Some(&format!("Bearer {KEY}x"))),
            "invalid_api_key",
            "Bearer error=\"invalid_token\"",
        );
        assert_refused(
            get_with(&server, path, Some(&format!("Basic {KEY}"))),
            "invalid_api_key",
            "Bearer error=\"invalid_request\"",
        );
    }
    let (code, _, _) = get_with(&server, "/nowhere", None);
    assert_eq!(code, 404, "an unknown route stays a 404");
    let (code, refused) = server.post_form(
        &small_form(2),
        Some(("input_reference", "first.png", &[0x89, b'P', b'N', b'G'])),
    );
    assert_eq!(
        (code, refused["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let (code, refused) = server.call("DELETE", "/v1/videos/video_0123456789abcdef01234567", None);
    assert_eq!(code, 401, "{refused}");
    assert_eq!(
        file_names(&server.videos),
        [".skyreels-owner"],
        "nothing of a refused request is kept"
    );

    server.authorization = Some(format!("bearer {KEY}"));
    let id = server.submit(small_request(2));
    let done = server.wait_for(&id, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done}");
    assert_playable(&server.content(&id));
    let metrics = server.text("/metrics");
    assert!(
        metrics.contains("skyreels_jobs_finished_total{status=\"completed\"} 1"),
        "{metrics}"
    );
    let (code, deleted) = server.call("DELETE", &format!("/v1/videos/{id}"), None);
    assert_eq!((code, &deleted["deleted"]), (200, &json!(true)));
}

#[test]
fn the_api_key_may_come_from_skyreels_api_key_and_a_public_server_without_one_warns() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with(
        tiny_engine(),
        &scratch.path().join("keyed"),
        "127.0.0.1:0",
        &[],
        &[(KEY_VARIABLE, KEY)],
    );
    assert_refused(
        get_with(&server, "/v1/videos", None),
        "missing_api_key",
        "Bearer",
    );
    server.authorization = Some(format!("Bearer {KEY}"));
    let (code, list) = server.call("GET", "/v1/videos", None);
    assert_eq!((code, &list["data"]), (200, &json!([])));
    drop(server);

    let open = Server::start_with(
        tiny_engine(),
        &scratch.path().join("open"),
        "0.0.0.0:0",
        &[],
        &[],
    );
    let warning = "warning: listening on 0.0.0.0:0 without an API key: anyone who can reach it can submit, read and delete jobs".to_string();
    assert!(
        open.startup_log.contains(&warning)
            && open
                .startup_log
                .iter()
                .any(|line| line.contains("fix: start with --api-key-file PATH (mode 600)")),
        "{:#?}",
        open.startup_log
    );
    let (code, _, list) = get_with(&open, "/v1/videos", None);
    assert_eq!((code, &list["data"]), (200, &json!([])), "no key, no check");
    drop(open);

    let local = Server::start(&[]);
    assert!(
        !local
            .startup_log
            .iter()
            .any(|line| line.contains("without an API key")),
        "a loopback server does not warn: {:#?}",
        local.startup_log
    );
}

#[test]
fn an_exposed_empty_short_or_missing_key_file_is_refused_before_loading_anything() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let directory = scratch.path();
    let start = |key: &Path, environment: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_skyreels-serve"));
        command
            .args([
                "--engines",
                "/nonexistent",
                "--listen",
                "127.0.0.1:0",
                "--videos",
            ])
            .arg(directory.join("videos"))
            .arg("--api-key-file")
            .arg(key)
            .env_remove(KEY_VARIABLE);
        if let Some(value) = environment {
            command.env(KEY_VARIABLE, value);
        }
        let output = command.output().expect("run skyreels-serve");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            !stderr.contains("/nonexistent"),
            "nothing was loaded: {stderr}"
        );
        stderr
    };
    let exposed = key_file(directory, KEY, 0o644);
    let stderr = start(&exposed, None);
    assert!(
        stderr.contains(&format!(
            "--api-key-file {0} can be read or written by others than its owner (mode 0644)\n  fix: chmod 600 {0}",
            exposed.display()
        )),
        "{stderr}"
    );
    let empty = key_file(directory, "\n", 0o600);
    let stderr = start(&empty, None);
    assert!(
        stderr.contains(&format!(
            "--api-key-file {0} is empty\n  fix: openssl rand -hex 32 > {0} && chmod 600 {0}",
            empty.display()
        )),
        "{stderr}"
    );
    let short = key_file(directory, "letmein\n", 0o600);
    let stderr = start(&short, None);
    assert!(
        stderr.contains("holds a key of 7 characters, shorter than the 16 accepted")
            && !stderr.contains("letmein"),
        "{stderr}"
    );
    let stderr = start(&directory.join("no-such-key"), None);
    assert!(
        stderr.contains(&format!(
            "cannot read --api-key-file {}",
            directory.join("no-such-key").display()
        )) && stderr.contains("fix: pass a file this user can read"),
        "{stderr}"
    );
    let good = key_file(directory, KEY, 0o600);
    let stderr = start(&good, Some(KEY));
    assert!(
        stderr.contains("both --api-key-file and SKYREELS_API_KEY give an API key")
            && stderr.contains("fix: give the key one way"),
        "{stderr}"
    );
    assert!(
        !directory.join("videos").exists(),
        "the videos directory is not created either"
    );
}

/// [`small_request`] extending a 17-frame video: 25 frames, the last 9 of the video as history.
fn extension_request(steps: usize) -> Value {
    let mut request = small_request(steps);
    request["num_frames"] = json!(25);
    request["overlap_history"] = json!(9);
    request
}

/// `request` as the text parts of a form.
fn form_of(request: &Value) -> Vec<(&'static str, String)> {
    let fields = [
        "prompt",
        "size",
        "num_frames",
        "steps",
        "seed",
        "overlap_history",
    ];
    fields
        .into_iter()
        .filter_map(|field| {
            request.get(field).map(|value| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (field, text)
            })
        })
        .collect()
}

#[test]
fn a_last_frame_and_a_video_to_extend_are_uploaded_and_run_as_generate_does() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let first = scratch.path().join("first.png");
    write_picture(&first, 96, 64, 5);
    let last = scratch.path().join("last.jpg");
    write_picture(&last, 128, 80, 6);
    let (png, jpeg) = (fs_err::read(&first).unwrap(), fs_err::read(&last).unwrap());
    let server = Server::start(&[]);

    let (code, created) = server.post_form_files(
        &small_form(2),
        &[
            ("input_reference", "first.png", &png),
            ("last_frame_reference", "last.jpg", &jpeg),
        ],
    );
    assert_eq!(code, 201, "{created}");
    let bounded = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        created["last_frame_reference"],
        format!("{bounded}.last_frame.jpg").as_str()
    );
    assert_eq!(
        fs_err::read(server.videos.join(format!("{bounded}.last_frame.jpg"))).unwrap(),
        jpeg
    );
    let done = server.wait_for(&bounded, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done}");
    let clip = server.content(&bounded);
    let served = read_video(&clip);
    assert_same_frames(
        &served,
        &generate_with_files(
            tiny_engine(),
            &small_request(2),
            [Some(&first), Some(&last), None],
        ),
    );

    let request = extension_request(2);
    let (code, created) = server.post_form_files(
        &form_of(&request),
        &[("video_reference", "clip.mp4", &clip)],
    );
    assert_eq!(code, 201, "{created}");
    let extended = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        created["video_reference"],
        format!("{extended}.video.mp4").as_str()
    );
    let done = server.wait_for(&extended, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done}");
    let saved_clip = scratch.path().join("clip.mp4");
    fs_err::write(&saved_clip, &clip).unwrap();
    let served = read_video(&server.content(&extended));
    let generated = generate_with_files(tiny_engine(), &request, [None, None, Some(&saved_clip)]);
    assert!(served.num_frames() > 17, "{}", served.num_frames());
    assert_same_frames(&served, &generated);

    for id in [&bounded, &extended] {
        let (code, _) = server.call("DELETE", &format!("/v1/videos/{id}"), None);
        assert_eq!(code, 200);
    }
    assert_eq!(
        file_names(&server.videos),
        [".skyreels-owner"],
        "the uploads are deleted with their jobs"
    );
}

/// A form that must be refused: its text parts, its file parts (name, file name, bytes), the part
/// the refusal names and how its message starts.
type RefusedForm<'a> = (
    Vec<(&'static str, String)>,
    Vec<(&'static str, &'static str, &'a [u8])>,
    &'static str,
    &'static str,
);

#[test]
fn bad_last_frames_and_videos_are_refused_with_400_naming_their_part() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let picture = scratch.path().join("frame.png");
    write_picture(&picture, 96, 64, 7);
    let png = fs_err::read(&picture).unwrap();
    let server = Server::start(&[]);
    let clip_id = server.submit(small_request(1));
    server.wait_for(&clip_id, &["completed"]);
    let clip = server.content(&clip_id);
    let extension = form_of(&extension_request(2));
    let videos = server.videos.display().to_string();

    let mut cases: Vec<RefusedForm> = vec![
        (
            extension.clone(),
            vec![("video_reference", "frame.png", &png)],
            "video_reference",
            "`video_reference` is not an H.264 MP4 file (it starts with 89 50 4e 47 0d 0a 1a 0a)",
        ),
        (
            extension.clone(),
            vec![("video_reference", "empty.mp4", &[])],
            "video_reference",
            "`video_reference` is empty",
        ),
        (
            extension.clone(),
            vec![("video_reference", "cut.mp4", &clip[..clip.len() / 3])],
            "video_reference",
            "cannot read `video_reference` as an H.264 MP4: ",
        ),
        (
            small_form(2),
            vec![("video_reference", "clip.mp4", &clip)],
            "video_reference",
            "video_reference continues from the input's last overlap_history frames",
        ),
        (
            extension.clone(),
            vec![
                ("input_reference", "frame.png", &png),
                ("video_reference", "clip.mp4", &clip),
            ],
            "video_reference",
            "video_reference and input_reference both set the start of the video",
        ),
        (
            extension.clone(),
            vec![
                ("last_frame_reference", "frame.png", &png),
                ("video_reference", "clip.mp4", &clip),
            ],
            "last_frame_reference",
            "last_frame_reference cannot be combined with video_reference",
        ),
        (
            small_form(2),
            vec![("last_frame_reference", "cut.png", &png[..png.len() / 2])],
            "last_frame_reference",
            "`last_frame_reference` does not decode: ",
        ),
        (
            small_form(2),
            vec![
                ("last_frame_reference", "frame.png", &png),
                ("last_frame_reference", "frame.png", &png),
            ],
            "last_frame_reference",
            "`last_frame_reference` is given twice",
        ),
    ];
    let mut long_prompt = small_form(2);
    long_prompt[0].1 = "a red fox ".repeat(104_858);
    cases.push((
        long_prompt,
        Vec::new(),
        "prompt",
        "the text parts are larger than the limit of 1048576 bytes (1 MiB) together",
    ));
    let refusals = cases.len() + 2;
    for (fields, files, part, expected) in cases {
        let (code, error) = server.post_form_files(&fields, &files);
        assert_eq!(code, 400, "{part}: {error}");
        assert_eq!(error["error"]["param"], part, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(expected) && message.contains("\n  fix: "),
            "{part}: {message}"
        );
        assert!(
            !message.contains(&videos),
            "the server's paths are not shown: {message}"
        );
    }
    for (field, part) in [
        ("last_image", "last_frame_reference"),
        ("video", "video_reference"),
    ] {
        let mut named = small_request(2);
        named[field] = json!("/etc/hostname");
        let (code, error) = server.call("POST", "/v1/videos", Some(named));
        assert_eq!((code, error["error"]["param"].as_str()), (400, Some(field)));
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("as the file part `{part}`")),
            "{message}"
        );
    }
    assert_eq!(
        file_names(&server.videos),
        [
            ".skyreels-owner".to_string(),
            format!("{clip_id}.json"),
            format!("{clip_id}.mp4"),
        ],
        "no refused upload is left"
    );
    let metrics = server.text("/metrics");
    assert!(
        metrics.contains(&format!(
            "skyreels_requests_rejected_total{{reason=\"invalid\"}} {refusals}"
        )),
        "{metrics}"
    );
}

#[test]
fn a_long_video_killed_with_the_server_resumes_from_its_finished_windows() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().expect("tempdir");
    let videos = scratch.path().join("videos");
    // Three windows of 13 frames (overlap 5): the job keeps each finished window in
    // `<id>.mp4.work/` beside its video.
    let long = json!({
        "prompt": "a red fox running through fresh snow",
        "size": "96x64",
        "num_frames": 29,
        "base_num_frames": 13,
        "overlap_history": 5,
        "steps": 60,
        "seed": 7
    });
    let server = Server::start_in(&videos, &[]);
    let id = server.submit(long.clone());
    let first_window = videos
        .join(format!("{id}.mp4.work"))
        .join("window-0000.safetensors");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first_window.is_file() {
        assert!(Instant::now() < deadline, "window 1 was never kept");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, running) = server.call("GET", &format!("/v1/videos/{id}"), None);
    assert_eq!(running["status"], "in_progress", "{running}");
    server.kill();
    let kept = fs_err::read(&first_window).unwrap();

    let restarted = Server::start_in(&videos, &[]);
    // The first progress seen after the restart is already past window 1's share: the window
    // is replayed from its file, not sampled again.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let (_, job) = restarted.call("GET", &format!("/v1/videos/{id}"), None);
        if let Some(progress) = job["progress"].as_u64() {
            seen.push(progress);
        }
        if ["completed", "failed"].contains(&job["status"].as_str().unwrap_or("")) {
            break job;
        }
        assert!(Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(finished["status"], "completed", "{finished}");
    assert!(
        seen.iter().all(|&progress| progress == 0 || progress >= 33),
        "window 1 was sampled again after the restart: progress {seen:?}"
    );
    // The same video as an uninterrupted run of the same request.
    let clean = restarted.submit(long);
    let clean_job = restarted.wait_for(&clean, &["completed", "failed"]);
    assert_eq!(clean_job["status"], "completed", "{clean_job}");
    assert_same_frames(
        &read_video(&restarted.content(&id)),
        &read_video(&restarted.content(&clean)),
    );
    assert!(!kept.is_empty());
    assert!(
        !videos.join(format!("{id}.mp4.work")).exists(),
        "the finished job's work directory is removed"
    );
}
