//! What the control plane and the node share about the processes and directories they own: how
//! they are stopped at exit, and how those of a test process that was killed outright are found.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Sends SIGTERM to `pids` (last started first), waits up to ten seconds for all of them, then
/// kills what is left. Safe to call from an `atexit` hook.
pub(crate) fn stop_processes(pids: &[u32]) {
    for pid in pids.iter().rev() {
        // SAFETY: kill(2) with a pid we spawned.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in pids.iter().rev() {
        // SAFETY: waitpid on our own children; WNOHANG polling with a deadline.
        while Instant::now() < deadline {
            let r =
                unsafe { libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
            if r != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    }
}

/// Directories `<temp>/<prefix><pid>-…` whose test process `pid` no longer runs, with that pid.
pub(crate) fn orphaned_dirs(prefix: &str) -> Vec<(PathBuf, i32)> {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let rest = name.to_str()?.strip_prefix(prefix)?;
            let pid = rest.split('-').next()?.parse::<i32>().ok()?;
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            (!alive).then(|| (entry.path(), pid))
        })
        .collect()
}
