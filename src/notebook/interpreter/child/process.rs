//! Starting, signalling and reaping interpreter child processes. Each child
//! leads a process group of its own, so a cancel or a kill reaches whatever
//! it started, and Ctrl+C in the server's terminal reaches only the server
//! (which then ends its children itself). A small reaper process, told the
//! group of every child, kills the groups left when the server dies without
//! a chance to (`kill -9`): it sees its input pipe close.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

/// The signals a cancel or a stop sends, reset to their default action in
/// every child.
const CANCEL_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// A child and the server's ends of its pipes (all non-blocking).
#[derive(Debug)]
pub struct Spawned {
    /// The process; its id is also its process group's.
    pub child: Child,
    /// Its standard input.
    pub input: ChildStdin,
    /// Its standard output and error, merged.
    pub output: File,
    /// Its control pipe (written on its fd 3), when asked for.
    pub control: Option<File>,
}

/// A non-blocking pipe: (read end, write end), close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; no memory involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Starts `command` in a new process group with stdout and stderr on one
/// pipe (or stderr to `stderr_to`), stdin on another and, with
/// `with_control`, a control pipe on its fd 3. It dies with the thread that
/// started it (`PR_SET_PDEATHSIG`), which is the loop's.
pub fn spawn(
    mut command: Command,
    with_control: bool,
    stderr_to: Option<File>,
) -> io::Result<Spawned> {
    let (output_read, output_write) = pipe()?;
    let control = if with_control { Some(pipe()?) } else { None };
    let control_fd = control.as_ref().map(|(_, write)| write.as_raw_fd());
    let stderr = match stderr_to {
        Some(file) => Stdio::from(file),
        None => Stdio::from(output_write.try_clone()?),
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::from(output_write))
        .stderr(stderr);
    // SAFETY: the closure only calls async-signal-safe functions (setpgid,
    // signal, prctl, dup2, fcntl), as required between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Ignored signals stay ignored across exec: a server started
            // with SIGINT ignored (`nohup`, `cmd &` in a script) would
            // hand that on, and Python then installs no KeyboardInterrupt
            // handler (nor the JVM its interrupt handler), so a cancel
            // could only end in a kill. Children start with the defaults.
            for signal in CANCEL_SIGNALS {
                libc::signal(signal, libc::SIG_DFL);
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(fd) = control_fd {
                // dup2 clears close-on-exec on the copy, so fd 3 survives exec.
                if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let input = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("the child has no stdin"))?;
    let control = control.map(|(read, _write)| File::from(read));
    let output = File::from(output_read);
    set_nonblocking(input.as_raw_fd())?;
    set_nonblocking(output.as_raw_fd())?;
    if let Some(control) = &control {
        set_nonblocking(control.as_raw_fd())?;
    }
    Ok(Spawned {
        child,
        input,
        output,
        control,
    })
}

/// Kills `child`'s process group and collects the child without making the
/// calling thread (the loop's) wait for it: a child that has not exited by
/// the time of the kill (one stuck in the kernel, say) is waited for on a
/// short-lived thread of its own.
pub fn kill_and_reap(mut child: Child) {
    signal_group(child.id(), libc::SIGKILL);
    if let Ok(None) = child.try_wait() {
        let spawned = std::thread::Builder::new()
            .name("wsloop-reap".to_owned())
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(error) = spawned {
            log::warn!("cannot start a thread to collect a killed interpreter: {error}");
        }
    }
}

/// Sends `signal` to the process group `group` (a child's pid).
pub fn signal_group(group: u32, signal: libc::c_int) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    if group > 1 {
        // SAFETY: kill(2) with a negative pid signals that group only.
        unsafe {
            libc::kill(-group, signal);
        }
    }
}

/// Says how a child ended, e.g. "exit status 1" or "signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(signal) => match signal_name(signal) {
            Some(name) => format!("signal {signal} ({name})"),
            None => format!("signal {signal}"),
        },
        None => "an unknown status".to_owned(),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// Kills the groups of children left behind when the server ends without
/// ending them itself. It is told `+GROUP` when a child starts and
/// `-GROUP` when one was reaped; when its input closes (the server exited,
/// however it exited) it kills the groups still listed.
#[derive(Debug, Default)]
pub struct Reaper {
    input: Option<ChildStdin>,
    process: Option<Child>,
}

/// The reaper's program: a POSIX shell running awk, present on any Unix.
const REAPER_SCRIPT: &str = r#"exec awk '
/^\+[0-9]+$/ { groups[substr($0, 2)] = 1 }
/^-[0-9]+$/ { delete groups[substr($0, 2)] }
END { for (g in groups) system("kill -KILL -" g " 2>/dev/null") }'"#;

impl Reaper {
    /// Records a started child's group, starting the reaper first if
    /// needed. A reaper that cannot start is logged once per attempt; the
    /// children still die with the loop thread (`PR_SET_PDEATHSIG`).
    pub fn started(&mut self, group: u32) {
        self.tell(&format!("+{group}\n"));
    }

    /// Forgets a reaped child's group (its id may be reused).
    pub fn reaped(&mut self, group: u32) {
        self.tell(&format!("-{group}\n"));
    }

    fn tell(&mut self, line: &str) {
        if self.input.is_none() && !self.start() {
            return;
        }
        if let Some(input) = &mut self.input
            && let Err(error) = input.write_all(line.as_bytes())
        {
            log::warn!("interpreter reaper: {error}");
            self.input = None;
        }
    }

    fn start(&mut self) -> bool {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(REAPER_SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        match command.spawn() {
            Ok(mut process) => {
                self.input = process.stdin.take();
                self.process = Some(process);
                true
            }
            Err(error) => {
                log::warn!("cannot start the interpreter reaper (sh): {error}");
                false
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.input = None;
        if let Some(mut process) = self.process.take() {
            let _ = process.wait();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Read;
    use std::time::{Duration, Instant};

    /// Reads a non-blocking pipe until it closes, or until `until` has
    /// appeared when given (10 s at most); what was read.
    pub(in crate::notebook::interpreter::child) fn read_pipe(
        from: &mut File,
        until: Option<&str>,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline
            && until.is_none_or(|wanted| !String::from_utf8_lossy(&text).contains(wanted))
        {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn read_until_eof(mut output: File) -> String {
        read_pipe(&mut output, None)
    }

    #[test]
    fn a_child_gets_merged_output_a_control_pipe_and_its_own_group() {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("echo out; echo err >&2; echo ctl >&3; ps -o pgid= -p $$ | tr -d ' '");
        let mut spawned = spawn(command, true, None).unwrap();
        let pid = spawned.child.id();
        let output = read_until_eof(spawned.output);
        let control = read_until_eof(spawned.control.take().unwrap());
        assert!(
            output.contains("out\n") && output.contains("err\n"),
            "{output}"
        );
        assert!(output.contains(&format!("{pid}\n")), "own group: {output}");
        assert_eq!(control, "ctl\n");
        assert!(spawned.child.wait().unwrap().success());
    }

    #[test]
    fn a_child_starts_with_the_cancel_signals_at_their_defaults() {
        // As when the server was started by `nohup` or `cmd &` in a script.
        // SAFETY: signal(2) on this test process, restored below; the
        // tests send neither signal to it meanwhile.
        let previous = unsafe {
            [
                libc::signal(libc::SIGINT, libc::SIG_IGN),
                libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            ]
        };
        let mut command = Command::new("sh");
        command.arg("-c").arg("grep SigIgn /proc/$$/status");
        let spawned = spawn(command, false, None);
        // SAFETY: as above; puts back what was there.
        unsafe {
            libc::signal(libc::SIGINT, previous[0]);
            libc::signal(libc::SIGQUIT, previous[1]);
        }
        let mut spawned = spawned.unwrap();
        let output = read_until_eof(spawned.output);
        spawned.child.wait().unwrap();
        let ignored = output
            .split_whitespace()
            .nth(1)
            .and_then(|mask| u64::from_str_radix(mask, 16).ok())
            .unwrap_or_else(|| panic!("no SigIgn line: {output:?}"));
        for signal in CANCEL_SIGNALS {
            assert_eq!(
                ignored & (1 << (signal - 1)),
                0,
                "signal {signal} ignored in the child: {output}"
            );
        }
    }

    #[test]
    fn exits_are_described_by_code_or_signal() {
        let mut child = Command::new("sh").arg("-c").arg("exit 3").spawn().unwrap();
        assert_eq!(describe_exit(child.wait().unwrap()), "exit status 3");
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        child.kill().unwrap();
        assert_eq!(describe_exit(child.wait().unwrap()), "signal 9 (SIGKILL)");
    }
}
