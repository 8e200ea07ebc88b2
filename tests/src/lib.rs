//! Test harness for end-to-end tests: the real `rescue` binary, started on
//! port 0, in front of a mock upstream on loopback that records every request
//! it receives and answers as the test scripts it.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// The repository root (tests run with the `tests/` crate as working directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `rescue` binary of the same profile as this test executable
/// (target/<profile>/deps/<test> -> target/<profile>/rescue), or $RESCUE_BIN.
pub fn rescue_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RESCUE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join(format!("rescue{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Runs the `rescue` binary with `args` on the shipped KB in `dir`, outside
/// any `RESCUE_CONFIG` of the environment, and fails the test unless it
/// succeeds.
pub fn run_rescue(args: &[&str], dir: &Path) -> std::process::Output {
    let output = Command::new(rescue_bin())
        .args(args)
        .arg("--kb")
        .arg(repo_root().join("kb.sqlite"))
        .current_dir(dir)
        .env_remove("RESCUE_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// One request as the mock upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream received JSON")
    }
}

/// How the mock answers.
#[derive(Clone)]
pub enum Reply {
    /// A complete response.
    Full {
        status: u16,
        content_type: &'static str,
        body: Bytes,
    },
    /// A `text/event-stream` whose chunks the test sends through the channel
    /// returned by [`MockUpstream::streaming`]; the stream ends when the sender drops.
    Stream,
    /// Accept the request and never answer.
    Hang,
}

/// A scripted upstream on 127.0.0.1.
pub struct MockUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    reply: Arc<Mutex<Reply>>,
    stream: Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Starts a mock that answers every request with `reply`.
    pub async fn start(reply: Reply) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(Mutex::new(reply));
        let stream: Arc<Mutex<Option<mpsc::Receiver<Bytes>>>> = Arc::new(Mutex::new(None));
        let (r, p, s) = (received.clone(), reply.clone(), stream.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (r, p, s) = (r.clone(), p.clone(), s.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (r, p, s) = (r.clone(), p.clone(), s.clone());
                        async move { Ok::<_, Infallible>(answer(request, r, p, s).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        MockUpstream {
            addr,
            received,
            reply,
            stream,
            _task: task,
        }
    }

    /// A mock answering JSON `body` with status 200.
    pub async fn json(body: serde_json::Value) -> MockUpstream {
        Self::start(Reply::Full {
            status: 200,
            content_type: "application/json",
            body: Bytes::from(body.to_string()),
        })
        .await
    }

    /// A mock that streams; the returned sender feeds the next streamed response.
    pub async fn streaming() -> (MockUpstream, mpsc::Sender<Bytes>) {
        let mock = Self::start(Reply::Stream).await;
        let (tx, rx) = mpsc::channel(16);
        *mock.stream.lock().unwrap() = Some(rx);
        (mock, tx)
    }

    /// Base URL as a client SDK would be given it.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set_reply(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    /// The only request received; fails if there were none or several.
    pub fn single(&self) -> Recorded {
        let all = self.received();
        assert_eq!(
            all.len(),
            1,
            "expected exactly one upstream request, got {}",
            all.len()
        );
        all.into_iter().next().unwrap()
    }
}

async fn answer(
    request: Request<Incoming>,
    received: Arc<Mutex<Vec<Recorded>>>,
    reply: Arc<Mutex<Reply>>,
    stream: Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>,
) -> Response<TestBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    received.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    });
    let reply = reply.lock().unwrap().clone();
    match reply {
        Reply::Full {
            status,
            content_type,
            body,
        } => Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("x-upstream-marker", "mock")
            .body(Full::new(body).map_err(|never| match never {}).boxed())
            .unwrap(),
        Reply::Stream => {
            let rx = stream
                .lock()
                .unwrap()
                .take()
                .expect("one streamed response per sender");
            let frames = futures_stream(rx);
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(frames).boxed())
                .unwrap()
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// Turns a channel of chunks into a body stream of data frames.
fn futures_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + Sync + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(rx).map(|chunk| Ok(Frame::data(chunk)))
}

/// A child process that is killed and reaped when dropped, whatever path
/// the test takes.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real proxy binary, killed on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    child: KillOnDrop,
    logs: Arc<Mutex<String>>,
    _config: tempfile::NamedTempFile,
    /// The process's TMPDIR, private to it (removed after it is killed).
    temp_dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `rescue serve` on 127.0.0.1:0 with the shipped kb.sqlite, the
    /// given upstream and extra TOML configuration.
    pub fn start(upstream_base_url: &str, extra_toml: &str) -> Proxy {
        Self::try_start(
            upstream_base_url,
            extra_toml,
            &repo_root().join("kb.sqlite"),
        )
        .unwrap_or_else(|logs| panic!("proxy did not start:\n{logs}"))
    }

    /// Starts the proxy with upstreams from the TOML alone (no `--upstream`).
    pub fn start_configured(toml: &str) -> Proxy {
        Self::spawn(None, toml, &repo_root().join("kb.sqlite"))
            .unwrap_or_else(|logs| panic!("proxy did not start:\n{logs}"))
    }

    /// Like [`Proxy::start`], with another knowledge base; `Err` carries the
    /// process output when it exits instead of listening.
    pub fn try_start(
        upstream_base_url: &str,
        extra_toml: &str,
        kb: &Path,
    ) -> Result<Proxy, String> {
        Self::spawn(Some(upstream_base_url), extra_toml, kb)
    }

    /// Starts the binary; `upstream_base_url` (if any) is given as both the
    /// OpenAI and the Anthropic upstream.
    fn spawn(
        upstream_base_url: Option<&str>,
        extra_toml: &str,
        kb: &Path,
    ) -> Result<Proxy, String> {
        let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(config.as_file_mut(), extra_toml.as_bytes()).unwrap();
        let cache = repo_root().join("target").join("test-plugin-cache");
        let temp_dir = tempfile::Builder::new()
            .prefix("rescue-test-tmp-")
            .tempdir()
            .unwrap();
        let mut child = KillOnDrop(
            Command::new(rescue_bin())
                .arg("serve")
                .arg("--config")
                .arg(config.path())
                .args(["--listen", "127.0.0.1:0"])
                .args(
                    upstream_base_url
                        .map(|url| ["--upstream", url, "--anthropic-upstream", url])
                        .into_iter()
                        .flatten(),
                )
                .arg("--kb")
                .arg(kb)
                .env("XDG_CACHE_HOME", cache)
                .env("RESCUE_LOG", "info")
                .env("TMPDIR", temp_dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning rescue"),
        );

        let logs = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.0.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.0.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(logs.lock().unwrap().clone());
            }
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                let addr = addr.parse().unwrap();
                std::thread::spawn(move || for _ in stdout.lines() {});
                return Ok(Proxy {
                    addr,
                    child,
                    logs,
                    _config: config,
                    temp_dir,
                });
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the proxy has logged `needle`: its stderr is
    /// read by another thread, so a line can trail the response it is about.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Resident set size of the proxy process, in KiB (Linux /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// The process's private TMPDIR.
    pub fn temp_dir(&self) -> &Path {
        self.temp_dir.path()
    }

    /// Kills the process (SIGKILL: no clean-up of its own runs) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// The process id, to send signals.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.0.try_wait().unwrap().is_none()
    }
}

/// A response read in full.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Opens an HTTP/1.1 connection to `addr` and sends one request.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

/// Sends one request and reads the whole response.
pub async fn call(addr: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
    let response = send(addr, request).await;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("response body within 30 s")
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A GET of `path` without a body.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

/// A POST with a raw body to `path`.
pub fn post(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "rescue.test")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-SECRET-0123456789")
        .body(Full::new(body.into()))
        .unwrap()
}
