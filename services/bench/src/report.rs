//! The benchmark report: one JSON document and its markdown rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::child::LoadState;
use crate::procfs::Machine;
use crate::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at_unix_s: u64,
    pub machine: Machine,
    pub command: String,
    pub settings: Settings,
    pub workload: Workload,
    /// Decoding and folding this run's workload in the benchmark process, one pass, one core.
    pub pure: Pure,
    /// The criterion micro benchmarks' latest results, when `cargo bench` left them.
    pub micro: Vec<Micro>,
    /// Loading the events topic with the connector's idempotent producer.
    pub load: Rate,
    /// (a) a bare consumer that discards the records, each run.
    pub bare: Vec<Rate>,
    /// (b) a consumer that decodes each record, each run.
    pub decode: Vec<Rate>,
    /// (c) the coordinator from an empty store until caught up: the rebuild.
    pub rebuild: Rebuild,
    /// c / a, with a the fastest bare run.
    pub ratio_c_a: f64,
    pub restart_after_stop: Restart,
    pub restart_after_kill: Restart,
    pub load_state: LoadState,
    pub latency: Vec<Latency>,
    pub memory: Memory,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub events: usize,
    pub skus: usize,
    pub events_partitions: i32,
    pub batch_max_events: usize,
    pub batch_max_ms: u64,
    pub rates: Vec<u64>,
    pub latency_secs: u64,
    pub latency_skus: usize,
    pub broker: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub events: usize,
    pub skus: usize,
    pub generate_s: f64,
    pub encoded_bytes: usize,
    pub types: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pure {
    pub decode: Rate,
    pub fold: Rate,
    /// Outputs (availability, alerts, escalations) the fold emitted.
    pub fold_outputs: usize,
    /// Postcard sizes of the SKU states at the end (what a commit writes per dirty SKU).
    pub state_bytes_total: usize,
    pub state_bytes_p50: usize,
    pub state_bytes_max: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Micro {
    /// criterion's id, e.g. `fold/apply` or `fold_commit/batch/1000`.
    pub id: String,
    pub elements: u64,
    pub mean_ns: f64,
    pub events_per_s: f64,
    /// When criterion wrote it (Unix s).
    pub measured_at_unix_s: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    pub events: usize,
    pub seconds: f64,
    pub events_per_s: f64,
    /// CPU seconds of the process doing the work (the benchmark itself for the producer and the
    /// consumers) and of the broker during the phase.
    pub client_cpu_s: f64,
    pub broker_cpu_s: Option<f64>,
}

impl Rate {
    pub fn new(events: usize, seconds: f64, client_cpu_s: f64, broker_cpu_s: Option<f64>) -> Rate {
        Rate { events, seconds, events_per_s: events as f64 / seconds.max(1e-9), client_cpu_s, broker_cpu_s }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rebuild {
    pub rate: Rate,
    /// From spawning the child process to its report (adds process start and the report's
    /// store reopening).
    pub wall_s: f64,
    pub coordinator_user_s: f64,
    pub coordinator_sys_s: f64,
    /// Records the coordinator wrote to its output topics (by watermarks: a lower bound).
    pub outputs_written: u64,
    /// Whether the offsets stored in the store cover every loaded event.
    pub consumed_all: bool,
    /// The coordinator's rate over each tenth of the log, from its committed group offsets
    /// sampled every 100 ms (empty if the samples never reached the end).
    pub tenths_events_per_s: Vec<f64>,
    /// The coordinator's largest resident set sampled during each tenth, MB (empty under
    /// `perf record`, or if the samples never reached the end).
    pub tenths_peak_rss_mb: Vec<f64>,
}

impl Rebuild {
    /// The rate over the last tenth of the log against the first.
    pub fn last_over_first(&self) -> Option<f64> {
        Some(self.tenths_events_per_s.last()? / self.tenths_events_per_s.first()?)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// Inside `Coordinator::run` until it returned caught up.
    pub seconds: f64,
    /// The first "caught up" log line (first empty poll), from the call of `run`.
    pub first_caught_up_s: Option<f64>,
    /// From spawning the process to its report.
    pub wall_s: f64,
    pub vm_hwm_kb: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Offered rate, events/s.
    pub rate: u64,
    pub events: usize,
    pub send_s: f64,
    pub achieved_rate: f64,
    /// Seconds from the last send until the coordinator had committed every event: more than
    /// a second means the offered rate was above what it sustains, and the latencies are queueing.
    pub behind_s: f64,
    pub alerts: usize,
    /// `Alert.detected_at_ms` (stamped when the fold emits it) minus the send time of the
    /// raising (or resolving) event.
    pub detected: Option<Summary>,
    /// The alert record's timestamp (when the outbox handed it to its producer, after the
    /// store commit) minus the send time.
    pub alert_record: Option<Summary>,
    /// When our reader received the alert record minus the send time: end to end.
    pub alert_received: Option<Summary>,
    pub availability_records: usize,
    pub availability_received: Option<Summary>,
    pub coordinator_cpu_s: f64,
    pub broker_cpu_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub skus: usize,
    /// Peak RSS of the coordinator process in the rebuild and in the restart.
    pub rebuild_vm_hwm_mb: f64,
    pub restart_vm_hwm_mb: f64,
    pub rebuild_vm_hwm_mb_per_100k_skus: f64,
    pub store_dir_mb: f64,
    pub store_mb_per_100k_skus: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// The criterion results under `dir` (`target/criterion`) for the given ids.
pub fn read_criterion(dir: &Path, ids: &[&str]) -> Vec<Micro> {
    ids.iter()
        .filter_map(|id| {
            let base = dir.join(id).join("new");
            let estimates: serde_json::Value =
                serde_json::from_slice(&std::fs::read(base.join("estimates.json")).ok()?).ok()?;
            let benchmark: serde_json::Value =
                serde_json::from_slice(&std::fs::read(base.join("benchmark.json")).ok()?).ok()?;
            let mean_ns = estimates["mean"]["point_estimate"].as_f64()?;
            let elements = benchmark["throughput"]["Elements"].as_u64()?;
            let measured_at_unix_s = std::fs::metadata(base.join("estimates.json"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            Some(Micro {
                id: id.to_string(),
                elements,
                mean_ns,
                events_per_s: elements as f64 / (mean_ns / 1e9),
                measured_at_unix_s,
            })
        })
        .collect()
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

fn summary(summary: &Option<Summary>) -> String {
    summary.map_or("n/a".to_string(), |s| format!("{:.1} / {:.1} / {:.1}", s.p50, s.p99, s.max))
}

fn met(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# omnifold benchmark report\n");
        let _ = writeln!(
            md,
            "Machine: {} CPUs ({}), {:.1} GiB memory, kernel {}. Broker: {}. Command: `{}`.\n",
            m.cpus, m.cpu_model, m.memory_gib, m.kernel, self.settings.broker, self.command
        );
        let w = &self.workload;
        let types: Vec<String> =
            w.types.iter().map(|(t, n)| format!("{t} {}", thousands(*n as f64))).collect();
        let _ = writeln!(
            md,
            "Workload: `WorkloadOptions::bench({}, {})`, {} events over {} SKUs on {} partitions, {:.1} MB of protobuf, generated in {:.1} s ({}).\n",
            w.skus,
            w.events,
            thousands(w.events as f64),
            thousands(w.skus as f64),
            self.settings.events_partitions,
            w.encoded_bytes as f64 / 1e6,
            w.generate_s,
            types.join(", ")
        );

        let _ = writeln!(md, "## Against the targets\n");
        let _ = writeln!(md, "| measure | target | measured | |");
        let _ = writeln!(md, "|---|---|---|---|");
        for target in &self.targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                target.what,
                target.target,
                target.measured,
                met(target.met)
            );
        }

        if !self.micro.is_empty() {
            let _ = writeln!(md, "\n## Micro benchmarks (criterion, `cargo bench -p omnifold-bench`)\n");
            let _ = writeln!(md, "| benchmark | events/s | mean per iteration |");
            let _ = writeln!(md, "|---|---:|---:|");
            for micro in &self.micro {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {:.1} ms for {} events |",
                    micro.id,
                    thousands(micro.events_per_s),
                    micro.mean_ns / 1e6,
                    thousands(micro.elements as f64)
                );
            }
        }

        let _ = writeln!(
            md,
            "\nThis run's workload in the benchmark process, one pass on one core: prost decode {} events/s, pure fold {} events/s ({:.1} s, {} outputs). SKU states at the end (postcard, what a commit rewrites for each dirty SKU): {:.1} MB in all, median {} bytes, largest {} bytes.",
            thousands(self.pure.decode.events_per_s),
            thousands(self.pure.fold.events_per_s),
            self.pure.fold.seconds,
            thousands(self.pure.fold_outputs as f64),
            self.pure.state_bytes_total as f64 / 1e6,
            thousands(self.pure.state_bytes_p50 as f64),
            thousands(self.pure.state_bytes_max as f64)
        );

        let _ = writeln!(md, "\n## Throughput over the same topic, same broker, same run\n");
        let _ = writeln!(md, "| phase | events/s | seconds | client CPU s | broker CPU s |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        let broker = |rate: &Rate| rate.broker_cpu_s.map_or("n/a".to_string(), |s| format!("{s:.1}"));
        let row = |md: &mut String, name: &str, rate: &Rate| {
            let _ = writeln!(
                md,
                "| {name} | {} | {:.2} | {:.1} | {} |",
                thousands(rate.events_per_s),
                rate.seconds,
                rate.client_cpu_s,
                broker(rate)
            );
        };
        row(&mut md, "load: idempotent producer (connector settings)", &self.load);
        for (i, rate) in self.bare.iter().enumerate() {
            row(&mut md, &format!("(a) bare consumer, run {}", i + 1), rate);
        }
        for (i, rate) in self.decode.iter().enumerate() {
            row(&mut md, &format!("(b) consumer + prost decode, run {}", i + 1), rate);
        }
        row(&mut md, "(c) coordinator, empty store to caught up", &self.rebuild.rate);
        let _ = writeln!(
            md,
            "\nc/a = {:.2} (a = the fastest bare run). The coordinator wrote {} output records (availability, alerts, escalations; a lower bound by watermarks) and used {:.1} s user + {:.1} s system CPU; all events consumed: {}.",
            self.ratio_c_a,
            thousands(self.rebuild.outputs_written as f64),
            self.rebuild.coordinator_user_s,
            self.rebuild.coordinator_sys_s,
            self.rebuild.consumed_all
        );
        if let Some(ratio) = self.rebuild.last_over_first() {
            let tenths: Vec<String> =
                self.rebuild.tenths_events_per_s.iter().map(|r| thousands(*r)).collect();
            let _ = writeln!(
                md,
                "\nThe coordinator's rate over each tenth of the log (events/s, from its committed group offsets sampled every 100 ms): {}. Last tenth / first tenth = {ratio:.2}.",
                tenths.join(", ")
            );
        }
        if !self.rebuild.tenths_peak_rss_mb.is_empty() {
            let peaks: Vec<String> =
                self.rebuild.tenths_peak_rss_mb.iter().map(|mb| format!("{mb:.0}")).collect();
            let _ = writeln!(
                md,
                "\nIts resident memory, the largest sampled (`VmRSS`, with the offsets) in each tenth (MB): {}.",
                peaks.join(", ")
            );
        }

        let _ = writeln!(md, "\n## Produce to alert latency (ms, p50 / p99 / max)\n");
        let _ = writeln!(
            md,
            "| offered | achieved | caught up after last send | events | alerts | detected_at - sent | alert record ts - sent | alert received - sent | availability records | availability received - sent |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---|---|---|---:|---|");
        for l in &self.latency {
            let _ = writeln!(
                md,
                "| {}/s | {}/s | {:.1} s | {} | {} | {} | {} | {} | {} | {} |",
                thousands(l.rate as f64),
                thousands(l.achieved_rate),
                l.behind_s,
                thousands(l.events as f64),
                thousands(l.alerts as f64),
                summary(&l.detected),
                summary(&l.alert_record),
                summary(&l.alert_received),
                thousands(l.availability_records as f64),
                summary(&l.availability_received)
            );
        }

        let _ = writeln!(md, "\n## Restart and rebuild\n");
        let _ = writeln!(md, "| | seconds in `run` | first \"caught up\" | process wall | peak RSS MB |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        for (name, restart) in [
            ("restart after a clean stop", &self.restart_after_stop),
            ("restart after SIGKILL", &self.restart_after_kill),
        ] {
            let _ = writeln!(
                md,
                "| {name} | {:.2} | {} | {:.2} | {:.0} |",
                restart.seconds,
                restart.first_caught_up_s.map_or("n/a".into(), |s| format!("{s:.2}")),
                restart.wall_s,
                restart.vm_hwm_kb as f64 / 1024.0
            );
        }
        let _ = writeln!(
            md,
            "| rebuild (= c) | {:.2} | | {:.2} | {:.0} |",
            self.rebuild.rate.seconds, self.rebuild.wall_s, self.memory.rebuild_vm_hwm_mb
        );
        let s = &self.load_state;
        let _ = writeln!(
            md,
            "\nLoading the state alone (`Store::open` {:.0} ms, {} SKU states {:.0} ms, {} seen ids {:.0} ms, offsets {:.1} ms).",
            s.open_ms,
            thousands(s.skus as f64),
            s.states_ms,
            thousands(s.seen_ids as f64),
            s.seen_ms,
            s.offsets_ms
        );

        let mem = &self.memory;
        let _ = writeln!(md, "\n## Memory and disk\n");
        let _ = writeln!(
            md,
            "Peak RSS of the coordinator process: {:.0} MB in the rebuild ({:.0} MB per 100k SKUs), {:.0} MB in a restart. Store directory: {:.1} MB ({:.1} MB per 100k SKUs).",
            mem.rebuild_vm_hwm_mb,
            mem.rebuild_vm_hwm_mb_per_100k_skus,
            mem.restart_vm_hwm_mb,
            mem.store_dir_mb,
            mem.store_mb_per_100k_skus
        );

        if !self.notes.is_empty() {
            let _ = writeln!(md, "\n## Method and notes\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }
}
