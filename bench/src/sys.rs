//! What the generator reads about processes: the daemon's CPU time and resident memory from
//! /proc, its own CPU time, and its own file descriptor limit.

use anyhow::{bail, Context, Result};

/// User + system CPU time of process `pid`, in microseconds (from /proc/PID/stat utime+stime).
pub fn proc_cpu_us(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is --pid {pid} the daemon?)"))?;
    // The command name (field 2) may contain spaces: fields after the last ')' start at field 3.
    let rest = &stat[stat.rfind(')').context("malformed /proc stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.len() < 13 {
        bail!("malformed /proc/{pid}/stat");
    }
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok((utime + stime) * 1_000_000 / hz)
}

/// Resident set size of `pid` in KiB (VmRSS from /proc/PID/status).
pub fn proc_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is --pid {pid} the daemon?)"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            return Ok(v.trim().trim_end_matches("kB").trim().parse()?);
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// This process's own user + system CPU time in microseconds.
pub fn self_cpu_us() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        lim.rlim_cur as u64
    }
}

/// The summed resident memory of `pids` (the nodes of a cluster), None without any.
pub fn rss_kib_sum(pids: &[u32]) -> Result<Option<u64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    pids.iter().map(|&p| proc_rss_kib(p)).sum::<Result<u64>>().map(Some)
}

/// CPU samples of the daemons (those given with `--pid`) and of the generator around a phase.
#[derive(Clone)]
pub struct CpuMark {
    /// Per daemon, in `--pid` order (None where /proc could not be read).
    pub server_us: Vec<Option<u64>>,
    pub self_us: u64,
    pub at: std::time::Instant,
}

impl CpuMark {
    pub fn now(pids: &[u32]) -> CpuMark {
        CpuMark {
            server_us: pids.iter().map(|&p| proc_cpu_us(p).ok()).collect(),
            self_us: self_cpu_us(),
            at: std::time::Instant::now(),
        }
    }

    /// Each daemon's CPU µs between two marks (None where a reading is missing).
    pub fn delta_by_pid(&self, later: &CpuMark) -> Vec<Option<u64>> {
        let pairs = self.server_us.iter().zip(&later.server_us);
        pairs.map(|(a, b)| Some(b.as_ref()?.saturating_sub(*a.as_ref()?))).collect()
    }

    /// (server CPU µs: the daemons' sum, generator CPU µs, wall µs) between two marks.
    pub fn delta(&self, later: &CpuMark) -> (Option<u64>, u64, u64) {
        let by_pid = self.delta_by_pid(later);
        let server = if by_pid.is_empty() { None } else { by_pid.into_iter().sum() };
        (server, later.self_us.saturating_sub(self.self_us), later.at.duration_since(self.at).as_micros() as u64)
    }
}
