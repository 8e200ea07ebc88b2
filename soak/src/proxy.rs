//! The real `rescue` binary under test, started the way an operator runs it
//! (`rescue serve --listen 127.0.0.1:0 ...`), with its resident memory read
//! from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long the proxy may take to print its address (the first start after
/// a build compiles the plugin; KB verification hashes every table).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What to start.
#[derive(Debug, Clone)]
pub struct ProxyCommand {
    pub bin: PathBuf,
    pub kb: PathBuf,
    /// Base URL of the mock, given as both the OpenAI and the Anthropic upstream.
    pub upstream: String,
    /// Extra TOML configuration.
    pub config: String,
    /// `RESCUE_LOG` for the proxy.
    pub log_filter: String,
    /// Where the precompiled plugin is cached between runs.
    pub cache_dir: PathBuf,
}

/// A running proxy; dropping it kills it.
pub struct Proxy {
    pub addr: SocketAddr,
    child: Child,
    pub log_path: PathBuf,
    _config: tempfile::NamedTempFile,
}

impl Proxy {
    pub fn start(command: &ProxyCommand, log_dir: &Path) -> Result<Proxy> {
        if !command.bin.is_file() {
            return Err(Error::ProxyMissing {
                path: command.bin.clone(),
            });
        }
        let mut config = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .map_err(Error::io("soak config"))?;
        std::io::Write::write_all(config.as_file_mut(), command.config.as_bytes())
            .map_err(Error::io(config.path()))?;
        let log_path = log_dir.join("rescue-proxy.log");
        let log = std::fs::File::create(&log_path).map_err(Error::io(&log_path))?;
        let mut child = Command::new(&command.bin)
            .arg("serve")
            .arg("--config")
            .arg(config.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(["--upstream", &command.upstream])
            .args(["--anthropic-upstream", &command.upstream])
            .arg("--kb")
            .arg(&command.kb)
            // Everything is given here: a caller's RESCUE_* variables would
            // silently change what is tested.
            .env_remove("RESCUE_CONFIG")
            .env_remove("RESCUE_PLUGIN")
            .env_remove("RESCUE_LISTEN")
            .env_remove("RESCUE_UPSTREAM")
            .env_remove("RESCUE_ANTHROPIC_UPSTREAM")
            .env_remove("RESCUE_KB")
            .env("RESCUE_LOG", &command.log_filter)
            .env("XDG_CACHE_HOME", &command.cache_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(Error::io(&command.bin))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::ProxyStart("no stdout pipe".into()))?;
        // Read stdout for the proxy's whole life so the pipe never fills.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut proxy = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log_path,
            _config: config,
        };
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    proxy.addr = addr
                        .parse()
                        .map_err(|e| Error::ProxyStart(format!("address {addr:?}: {e}")))?;
                    return Ok(proxy);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(proxy.start_failure("exited before listening"));
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(proxy.start_failure("no address within 120 s"));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit (the graceful
    /// drain); kills it after that. Returns the exit status if it exited.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        // Our own child, by its pid.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// The last lines of the proxy's log, for a failure report.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn start_failure(&mut self, what: &str) -> Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Error::ProxyStart(format!("{what}; log tail:\n{}", self.log_tail(10)))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmRSS of process `pid`, in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| Error::Proc {
            pid,
            message: e.to_string(),
        })?;
    parse_vm_rss(&status).ok_or_else(|| Error::Proc {
        pid,
        message: "no VmRSS line".into(),
    })
}

/// The `VmRSS:   1234 kB` line of a status file, in KiB.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t   40960 kB\n"), Some(40960));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
