//! Resource use of a process (or one of its threads) from Linux's /proc:
//! resident memory from `/proc/<pid>/status`, CPU time from `/proc/<pid>/stat`.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

/// One reading of a process's memory and CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// Resident set size now (VmRSS), in KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far (VmHWM), in KiB.
    pub peak_rss_kib: u64,
    /// User-mode CPU time since the process started, in milliseconds.
    pub user_ms: f64,
    /// Kernel-mode CPU time since the process started, in milliseconds.
    pub system_ms: f64,
    pub threads: u64,
}

impl ProcSample {
    pub fn cpu_ms(&self) -> f64 {
        self.user_ms + self.system_ms
    }
}

/// The calling thread's Linux thread id.
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Clock ticks per second, the unit of the CPU fields in `stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Reads memory and CPU of process `pid`.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let err = |message: String| Error::Proc { pid, message };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| err(format!("status: {e}")))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| err(format!("stat: {e}")))?;
    let (user, system, threads) =
        parse_stat(&stat).ok_or_else(|| err(format!("unparsable stat {stat:?}")))?;
    let tick_ms = 1000.0 / ticks_per_second();
    Ok(ProcSample {
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        peak_rss_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
        user_ms: user as f64 * tick_ms,
        system_ms: system as f64 * tick_ms,
        threads,
    })
}

/// CPU time (user + system) of one thread of process `pid`.
pub fn thread_cpu(pid: u32, tid: i32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).map_err(|e| {
        Error::Proc {
            pid,
            message: format!("task {tid} stat: {e}"),
        }
    })?;
    let (user, system, _) = parse_stat(&stat).ok_or_else(|| Error::Proc {
        pid,
        message: format!("unparsable task stat {stat:?}"),
    })?;
    Ok(Duration::from_secs_f64(
        (user + system) as f64 / ticks_per_second(),
    ))
}

/// `(utime, stime, num_threads)` from a `stat` line. The command name (field
/// 2) may contain spaces and parentheses, so fields are counted from the last
/// `)`: after it come field 3 (state) onwards; utime and stime are fields 14
/// and 15, num_threads is field 20.
pub fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        fields.get(11)?.parse().ok()?,
        fields.get(12)?.parse().ok()?,
        fields.get(17)?.parse().ok()?,
    ))
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let stat = "4242 (we) ird (name) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    153 27 0 0 20 0 7 0 123456 1000000 2500 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((153, 27, 7)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_status_lines() {
        let status = "Name:\trescue\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(40960));
        assert_eq!(status_kib(status, "VmHWM:"), Some(51200));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib);
        assert!(me.threads >= 1);
        thread_cpu(std::process::id(), current_tid()).unwrap();
    }
}
