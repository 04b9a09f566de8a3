//! Small Linux helpers: file-descriptor limit, CPU time of this process and
//! of another one (`/proc/PID/stat`), resident memory (`/proc/PID/status`),
//! and stopping a child process politely.

use std::io;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

/// Raises `RLIMIT_NOFILE` as far as allowed and returns the new soft limit.
///
/// As root the hard limit is raised too, to 2^20 (the kernel's default
/// `fs.nr_open`); otherwise the soft limit goes up to the hard one.
pub fn raise_nofile_limit() -> io::Result<u64> {
    const WANT: libc::rlim_t = 1 << 20;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_max < WANT {
            let raised = libc::rlimit {
                rlim_cur: WANT,
                rlim_max: WANT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Ok(WANT);
            }
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Where the kernel keeps its machine-wide TCP memory thresholds, in pages:
/// below the first it does not restrain sockets, above the second it is
/// under pressure (and stays so until usage falls below the first) and
/// prunes receive queues, above the third it refuses.
const TCP_MEM: &str = "/proc/sys/net/ipv4/tcp_mem";

/// The `net.ipv4.tcp_mem` thresholds in force now, in pages.
pub fn read_tcp_mem() -> io::Result<[u64; 3]> {
    parse_tcp_mem(&std::fs::read_to_string(TCP_MEM)?)
        .ok_or_else(|| io::Error::other(format!("unexpected contents of {TCP_MEM}")))
}

/// `net.ipv4.tcp_mem` raised for the length of a run; [`TcpMemRaise::restore`]
/// (or, failing that, drop) puts the old thresholds back.
///
/// The matrix's largest cell keeps gigabytes in flight on loopback, past the
/// default thresholds of a machine this size; the kernel then drops arriving
/// segments and every server waits on retransmission timers, so the cell
/// measures the kernel. Raising the thresholds (as root) lets it measure the
/// servers. Two runs at once would restore each other's values wrongly.
#[derive(Debug)]
pub struct TcpMemRaise {
    /// The thresholds found at the start, in pages.
    pub before: [u64; 3],
    /// The thresholds in force during the run, in pages.
    pub during: [u64; 3],
    restored: bool,
}

impl TcpMemRaise {
    /// Raises each of the `before` thresholds to a quarter, three eighths
    /// and a half of the machine's memory where it is lower. `Ok(None)`
    /// when none was lower; an error when the file cannot be written (not
    /// root).
    pub fn apply(before: [u64; 3]) -> io::Result<Option<TcpMemRaise>> {
        let during = raised_tcp_mem(before, mem_total_bytes()?, page_size());
        if during == before {
            return Ok(None);
        }
        write_tcp_mem(during)?;
        Ok(Some(TcpMemRaise {
            before,
            during,
            restored: false,
        }))
    }

    /// Puts the thresholds found at the start back.
    pub fn restore(mut self) -> io::Result<()> {
        self.restored = true;
        write_tcp_mem(self.before)
    }
}

impl Drop for TcpMemRaise {
    /// The restore on an early return or a panic.
    fn drop(&mut self) {
        if !self.restored
            && let Err(error) = write_tcp_mem(self.before)
        {
            eprintln!(
                "could not restore {TCP_MEM} to \"{}\": {error}",
                tcp_mem_text(self.before)
            );
        }
    }
}

/// The three page counts of a `tcp_mem` text.
fn parse_tcp_mem(text: &str) -> Option<[u64; 3]> {
    let mut values = text.split_whitespace().map(|value| value.parse().ok());
    let parsed = [values.next()??, values.next()??, values.next()??];
    values.next().is_none().then_some(parsed)
}

/// Thresholds as `tcp_mem` and `sysctl -w` write them.
pub fn tcp_mem_text(pages: [u64; 3]) -> String {
    format!("{} {} {}", pages[0], pages[1], pages[2])
}

fn write_tcp_mem(pages: [u64; 3]) -> io::Result<()> {
    std::fs::write(TCP_MEM, format!("{}\n", tcp_mem_text(pages)))
}

/// `current` with each threshold raised to its share of `mem_total` bytes
/// (1/4, 3/8, 1/2) where it is lower; never lowered.
fn raised_tcp_mem(current: [u64; 3], mem_total: u64, page_size: u64) -> [u64; 3] {
    let pages = mem_total / page_size.max(1);
    let wanted = [pages / 4, pages * 3 / 8, pages / 2];
    [
        current[0].max(wanted[0]),
        current[1].max(wanted[1]),
        current[2].max(wanted[2]),
    ]
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total_bytes() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::other("no MemTotal in /proc/meminfo"))
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// User and system CPU time this process has used so far (`getrusage`),
/// in that order.
pub fn self_cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage fills the zeroed struct; RUSAGE_SELF cannot fail.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (
        Duration::from_micros(micros(usage.ru_utime)),
        Duration::from_micros(micros(usage.ru_stime)),
    )
}

/// `utime + stime` of process `pid`, in clock ticks (`/proc/PID/stat`).
pub fn process_cpu_ticks(pid: u32) -> io::Result<u64> {
    process_cpu_ticks_split(pid).map(|(user, system)| user + system)
}

/// `utime` and `stime` of process `pid` (all its threads), in clock ticks
/// (`/proc/PID/stat`): the time it spent in its own code and in the kernel.
pub fn process_cpu_ticks_split(pid: u32) -> io::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_cpu_ticks(&stat)
}

/// `utime` and `stime` from the text of a `/proc/PID/stat` file.
fn stat_cpu_ticks(stat: &str) -> io::Result<(u64, u64)> {
    // The command name (field 2) may hold spaces and parentheses: the
    // fields we want are counted from the last ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("bad /proc stat"))?;
    // After the name come field 3 (state) onwards; utime and stime are
    // fields 14 and 15, i.e. indexes 11 and 12 here.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |index: usize| -> io::Result<u64> {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| io::Error::other("bad /proc stat field"))
    };
    Ok((field(11)?, field(12)?))
}

/// Machine-wide CPU time from the `cpu` line of `/proc/stat`, in clock
/// ticks: (steal, all states together). Steal is time the hypervisor gave
/// this VM's virtual CPUs to someone else: the share of a window it took is
/// what makes runs minutes apart differ on a shared host.
pub fn machine_cpu_ticks() -> io::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .ok_or_else(|| io::Error::other("no cpu line in /proc/stat"))?;
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already counted in user and nice.
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|value| value.parse().unwrap_or(0))
        .collect();
    let steal = values.get(7).copied().unwrap_or(0);
    Ok((steal, values.iter().sum()))
}

/// Machine-wide TCP counters that show the kernel, not a server, shaping a
/// run: on loopback nothing is lost unless the kernel drops it, and it
/// drops when the sockets' buffers together pass `net.ipv4.tcp_mem`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpTrouble {
    /// Segments sent again (`RetransSegs`, `/proc/net/snmp`).
    pub retransmitted: u64,
    /// Segments dropped on arrival for lack of receive memory
    /// (`TCPRcvQDrop + TCPOFODrop + TCPBacklogDrop`, `/proc/net/netstat`).
    pub dropped: u64,
    /// Milliseconds spent under TCP memory pressure
    /// (`TCPMemoryPressuresChrono`, `/proc/net/netstat`).
    pub pressure_ms: u64,
}

impl TcpTrouble {
    /// What happened between `self` (earlier) and `later`.
    pub fn since(self, later: TcpTrouble) -> TcpTrouble {
        TcpTrouble {
            retransmitted: later.retransmitted.saturating_sub(self.retransmitted),
            dropped: later.dropped.saturating_sub(self.dropped),
            pressure_ms: later.pressure_ms.saturating_sub(self.pressure_ms),
        }
    }
}

/// Reads the current [`TcpTrouble`] counters.
pub fn tcp_trouble() -> io::Result<TcpTrouble> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let netstat = std::fs::read_to_string("/proc/net/netstat")?;
    let ext = |name: &str| proc_net_counter(&netstat, "TcpExt:", name).unwrap_or(0);
    Ok(TcpTrouble {
        retransmitted: proc_net_counter(&snmp, "Tcp:", "RetransSegs")
            .ok_or_else(|| io::Error::other("no RetransSegs in /proc/net/snmp"))?,
        dropped: ext("TCPRcvQDrop") + ext("TCPOFODrop") + ext("TCPBacklogDrop"),
        pressure_ms: ext("TCPMemoryPressuresChrono"),
    })
}

/// The counter `name` from a `/proc/net/snmp`-style text, where a line of
/// names and a line of values share the `prefix`.
fn proc_net_counter(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|line| line.starts_with(prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let position = names.split_whitespace().position(|field| field == name);
        if let Some(position) = position {
            return values.split_whitespace().nth(position)?.parse().ok();
        }
    }
    None
}

/// Clock ticks per second, the unit of [`process_cpu_ticks`].
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Resident set size of process `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub fn vm_rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| io::Error::other("no VmRSS"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| io::Error::other("bad VmRSS"))?;
    Ok(kib * 1024)
}

/// Soft "Max open files" limit of process `pid` (`/proc/PID/limits`).
pub fn open_files_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Waits until process `pid` stops using CPU (no new ticks over 100 ms), at
/// most `limit`, so one server's teardown does not leak into the next run.
pub fn wait_until_quiet(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let Ok(mut last) = process_cpu_ticks(pid) else {
        return;
    };
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        let Ok(now) = process_cpu_ticks(pid) else {
            return;
        };
        if now == last {
            return;
        }
        last = now;
    }
}

/// Stops a child: SIGTERM, up to `grace` to exit, then SIGKILL. Always reaps it.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill() on our own, not yet reaped, child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process that is stopped (see [`terminate`]) when dropped, so an
/// error or panic anywhere in the orchestrator leaves nothing running.
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard { child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_mem_is_raised_to_its_share_of_memory_and_never_lowered() {
        let gib = 1 << 30;
        // 24 GiB of 4 KiB pages: 6, 9 and 12 GiB.
        assert_eq!(
            raised_tcp_mem([287_889, 383_855, 575_778], 24 * gib, 4096),
            [1_572_864, 2_359_296, 3_145_728]
        );
        // Already higher stays as it is.
        let high = [2_000_000, 3_000_000, 4_000_000];
        assert_eq!(raised_tcp_mem(high, 24 * gib, 4096), high);
        assert_eq!(
            parse_tcp_mem("287889\t383855\t575778\n"),
            Some([287_889, 383_855, 575_778])
        );
        assert_eq!(parse_tcp_mem("1 2"), None);
        assert_eq!(parse_tcp_mem("1 2 x"), None);
        assert_eq!(tcp_mem_text([1, 2, 3]), "1 2 3");
    }

    #[test]
    fn proc_net_counters_are_found_by_name_in_their_block() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoMin RetransSegs InErrs\nTcp: 200 17 0\n";
        assert_eq!(proc_net_counter(text, "Tcp:", "RetransSegs"), Some(17));
        assert_eq!(proc_net_counter(text, "Ip:", "DefaultTTL"), Some(64));
        assert_eq!(proc_net_counter(text, "Tcp:", "Missing"), None);
        let now = tcp_trouble().unwrap();
        assert_eq!(now.since(now), TcpTrouble::default());
    }

    #[test]
    fn stat_ticks_are_user_and_system_after_a_name_with_parentheses() {
        let stat = "4242 (wsloop (x) y) R 1 2 3 4 5 6 7 8 9 10 1234 567 0 0 20 0 1";
        assert_eq!(stat_cpu_ticks(stat).unwrap(), (1234, 567));
        assert!(stat_cpu_ticks("4242 (short) R 1 2").is_err());
    }

    #[test]
    fn machine_ticks_count_steal_within_the_total() {
        let (steal, total) = machine_cpu_ticks().unwrap();
        assert!(total > 0);
        assert!(steal <= total);
    }
}
