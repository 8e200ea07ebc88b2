//! Starting and stopping the real `rescue` binary, the way a user runs it:
//! `rescue serve --listen 127.0.0.1:0 --upstream <mock> --kb <kb.sqlite>`,
//! reading the address it prints ("listening on ADDR").

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long the proxy may take to print its address: the first start after a
/// build compiles the plugin (well under a second), and KB verification hashes
/// every table.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running proxy; dropping it stops it (SIGTERM, then SIGKILL).
pub struct Proxy {
    pub addr: SocketAddr,
    child: Child,
    /// Where its log lines went (stderr), kept for a post-mortem.
    pub log_path: PathBuf,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ProxyCommand {
    pub bin: PathBuf,
    pub kb: PathBuf,
    pub upstream: String,
    /// A TOML configuration for the proxy (`--config`); flags still set the
    /// listen address, upstream and KB.
    pub config: Option<PathBuf>,
    /// `RESCUE_LOG` for the proxy; `None` keeps its default (`info`: one line
    /// per request, as in production).
    pub log_filter: Option<String>,
}

impl Proxy {
    pub fn start(command: &ProxyCommand, log_dir: &Path) -> Result<Proxy> {
        if !command.bin.is_file() {
            return Err(Error::ProxyMissing {
                path: command.bin.clone(),
            });
        }
        let log_path = log_dir.join("rescue-proxy.log");
        let log = std::fs::File::create(&log_path).map_err(Error::io(&log_path))?;
        let mut cmd = Command::new(&command.bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--upstream")
            .arg(&command.upstream)
            .arg("--kb")
            .arg(&command.kb)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // The harness passes every setting on the command line: a
            // RESCUE_CONFIG or RESCUE_PLUGIN in the caller's environment
            // would silently change what is measured.
            .env_remove("RESCUE_CONFIG")
            .env_remove("RESCUE_PLUGIN")
            .env_remove("RESCUE_LISTEN")
            .env_remove("RESCUE_UPSTREAM")
            .env_remove("RESCUE_KB");
        if let Some(config) = &command.config {
            cmd.arg("--config").arg(config);
        }
        match &command.log_filter {
            Some(filter) => {
                cmd.env("RESCUE_LOG", filter);
            }
            None => {
                cmd.env_remove("RESCUE_LOG");
            }
        }
        let mut child = cmd.spawn().map_err(Error::io(&command.bin))?;
        let stdout = child.stdout.take().ok_or_else(|| Error::ProxyStart {
            message: "no stdout pipe".into(),
        })?;
        // A thread reads stdout for the whole life of the proxy, so the pipe
        // never fills, and hands over the address line.
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("bench-proxy-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            })
            .map_err(Error::io("stdout reader thread"))?;
        let started = Instant::now();
        let mut proxy = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log_path,
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    proxy.addr = addr.parse().map_err(|e| Error::ProxyStart {
                        message: format!("unparsable address {addr:?}: {e}"),
                    })?;
                    return Ok(proxy);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(proxy.start_failure("exited before listening"));
                }
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(proxy.start_failure(&format!("exited with {status}")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(proxy.start_failure("no address within 60 s"));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_failure(&self, what: &str) -> Error {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Error::ProxyStart {
            message: format!("{what}; log tail:\n{}", tail.join("\n")),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child process by its pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plugin's run-time totals so far, from the proxy's `/metrics`
/// (`rescue_plugin_duration_seconds` sum and count): what augmentation
/// itself cost the requests of a measurement, told apart from the rest of
/// their added latency.
pub fn plugin_time(addr: std::net::SocketAddr) -> Result<(f64, u64)> {
    use std::io::{Read, Write};
    let http = |e: std::io::Error| crate::error::Error::Http(format!("GET {addr}/metrics: {e}"));
    let mut stream = std::net::TcpStream::connect(addr).map_err(http)?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(http)?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(http)?;
    let mut body = String::new();
    stream.read_to_string(&mut body).map_err(http)?;
    parse_plugin_time(&body).ok_or_else(|| {
        crate::error::Error::Http(format!(
            "{addr}/metrics has no rescue_plugin_duration_seconds sum and count"
        ))
    })
}

/// `(sum in seconds, count)` of the plugin duration histogram in a metrics page.
fn parse_plugin_time(page: &str) -> Option<(f64, u64)> {
    let value = |name: &str| {
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        value("rescue_plugin_duration_seconds_sum ")?,
        value("rescue_plugin_duration_seconds_count ")? as u64,
    ))
}

#[cfg(test)]
mod plugin_time_tests {
    use super::parse_plugin_time;

    #[test]
    fn reads_sum_and_count_of_the_plugin_histogram() {
        let page = "HTTP/1.1 200 OK\r\n\r\n# TYPE rescue_plugin_duration_seconds histogram\n\
            rescue_plugin_duration_seconds_bucket{le=\"0.001\"} 3\n\
            rescue_plugin_duration_seconds_sum 0.0006\n\
            rescue_plugin_duration_seconds_count 3\n";
        assert_eq!(parse_plugin_time(page), Some((0.0006, 3)));
        assert_eq!(parse_plugin_time("nothing"), None);
    }
}
