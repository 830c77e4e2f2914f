//! What `/proc` tells about a process and the machine (Linux only; `None` elsewhere).

use std::path::Path;

use serde::Serialize;

/// `/proc/<pid>` or `/proc/self`.
fn proc_dir(pid: Option<u32>) -> String {
    pid.map_or_else(|| "/proc/self".to_string(), |pid| format!("/proc/{pid}"))
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmHWM` (peak resident set) or `VmRSS`.
pub fn status_kb(pid: Option<u32>, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("{}/status", proc_dir(pid))).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// User and system CPU seconds a process has used so far.
pub fn cpu_seconds(pid: Option<u32>) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("{}/stat", proc_dir(pid))).ok()?;
    let (utime, stime) = stat_cpu_ticks(&text)?;
    let hz = clock_ticks();
    Some((utime / hz, stime / hz))
}

/// CPU seconds (user + system) this process's threads have used so far, by thread name
/// (`/proc/self/task/*/comm`, 15 bytes at most), the calling thread's under `caller`. Threads
/// that have ended are not counted.
pub fn threads_cpu_seconds(caller: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    let own = std::fs::read_link("/proc/thread-self").ok()?;
    let hz = clock_ticks();
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue; // ended while read
        };
        let Some((utime, stime)) = stat_cpu_ticks(&stat) else { continue };
        let is_caller = own.file_name() == path.file_name();
        let name = if is_caller { caller.to_string() } else { comm.trim().to_string() };
        *by_name.entry(name).or_insert(0.0) += (utime + stime) / hz;
    }
    Some(by_name)
}

/// utime and stime, in clock ticks, of a `stat` line of `/proc`.
fn stat_cpu_ticks(stat: &str) -> Option<(f64, f64)> {
    // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The pid of a running process whose command line holds every one of `needles`.
pub fn find_process(needles: &[&str]) -> Option<u32> {
    let own = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // The broker's watchdog shell carries the same arguments: skip shells.
        if cmdline.starts_with("/bin/sh") {
            continue;
        }
        if needles.iter().all(|needle| cmdline.contains(needle)) {
            return Some(pid);
        }
    }
    None
}

/// Bytes of every file under `path`.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `nproc`.
    pub cpus: usize,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` of `/proc/meminfo`, in GiB.
    pub memory_gib: f64,
    /// The output of `free -h`, as printed.
    pub free_h: String,
    /// `uname -r`.
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
            .map_or_else(|| "unknown".to_string(), |(_, model)| model.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: mem_kb / 1024.0 / 1024.0,
            free_h: command_output("free", &["-h"]),
            kernel: command_output("uname", &["-r"]),
        }
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        if !Path::new("/proc/self/status").exists() {
            return;
        }
        assert!(status_kb(None, "VmHWM").unwrap() > 0);
        assert!(status_kb(None, "VmRSS").unwrap() > 0);
        assert!(cpu_seconds(None).is_some());
        assert!(Machine::describe().cpus >= 1);
    }

    #[test]
    fn counts_each_thread_s_cpu_under_its_name() {
        if !Path::new("/proc/thread-self").exists() {
            return;
        }
        // a fixed amount of work, not of time: on a busy machine a thread gets less CPU per second
        let burn = || {
            for n in 0..50_000_000u64 {
                std::hint::black_box(n);
            }
        };
        let (burnt, burnt_seen) = std::sync::mpsc::channel::<()>();
        let (exit, exit_seen) = std::sync::mpsc::channel::<()>();
        let busy = std::thread::Builder::new()
            .name("procfs-busy".into())
            .spawn(move || {
                burn();
                burnt.send(()).unwrap();
                exit_seen.recv().ok() // still running when read
            })
            .unwrap();
        burn();
        burnt_seen.recv().unwrap();
        let threads = threads_cpu_seconds("the caller").unwrap();
        exit.send(()).unwrap();
        busy.join().unwrap();
        // tens of milliseconds of CPU each at least, read in clock ticks (10 ms)
        assert!(threads["procfs-busy"] >= 0.02, "{threads:?}");
        assert!(threads["the caller"] >= 0.02, "{threads:?}");
    }

    #[test]
    fn sums_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        assert_eq!(dir_size(dir.path()), 15);
    }
}
