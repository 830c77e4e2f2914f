//! The coordinator under test runs in a child process (`omnifold-bench coordinator ...`, this
//! same binary), so that its peak memory and CPU time are its own, and so that it can be
//! stopped, SIGKILLed and restarted like a deployed one. Inside the child it is the real
//! `Coordinator::run`, in-process, with the options of `omnifold-coordinator run`.
//!
//! The child reports on stdout, one JSON object a line:
//! - `{"event":"caught_up","ms":..,"events":..}` each time the coordinator logs "caught up" (its
//!   first empty poll after folding; `ms` since `Coordinator::run` was called);
//! - `{"event":"done",...}` ([`Done`]) when `run` returned.
//!
//! It stops when `run` returns (with `--exit-when-caught-up`) or when its stdin reaches end of
//! file, so it never outlives the benchmark.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use omnifold_coordinator::{Coordinator, CoordinatorOptions};
use omnifold_domain::SkuState;
use omnifold_runtime::{KafkaOptions, Store, TopicOptions};
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::procfs;

/// The arguments of the `coordinator` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    #[arg(long)]
    pub bootstrap: String,
    #[arg(long)]
    pub topic_prefix: String,
    #[arg(long, default_value_t = 6)]
    pub events_partitions: i32,
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub contract: PathBuf,
    #[arg(long)]
    pub exit_when_caught_up: bool,
    #[arg(long, default_value_t = 5_000)]
    pub batch_max_events: usize,
    #[arg(long, default_value_t = 20)]
    pub batch_max_ms: u64,
    /// Run without the changelog (for its cost)
    #[arg(long)]
    pub no_changelog: bool,
    /// How often the changelog is sent, milliseconds (`--changelog-interval-ms`)
    #[arg(long, default_value_t = omnifold_coordinator::service::DEFAULT_CHANGELOG_INTERVAL_MS)]
    pub changelog_interval_ms: u64,
    /// Count the heap the process holds and log it every two seconds (`heap held`), to tell
    /// live allocations from what the allocator keeps resident
    #[arg(long)]
    pub count_heap: bool,
}

impl ChildArgs {
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "coordinator".to_string(),
            "--bootstrap".into(),
            self.bootstrap.clone(),
            "--topic-prefix".into(),
            self.topic_prefix.clone(),
            "--events-partitions".into(),
            self.events_partitions.to_string(),
            "--store".into(),
            self.store.display().to_string(),
            "--contract".into(),
            self.contract.display().to_string(),
            "--batch-max-events".into(),
            self.batch_max_events.to_string(),
            "--batch-max-ms".into(),
            self.batch_max_ms.to_string(),
        ];
        if self.exit_when_caught_up {
            args.push("--exit-when-caught-up".into());
        }
        if self.no_changelog {
            args.push("--no-changelog".into());
        }
        args.extend(["--changelog-interval-ms".into(), self.changelog_interval_ms.to_string()]);
        if self.count_heap {
            args.push("--count-heap".into());
        }
        args
    }
}

/// What the child reports when `Coordinator::run` returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Done {
    /// Milliseconds inside `Coordinator::run`: topic check, store open, outbox recovery, state
    /// load, seek, folding, commits and sends, until caught up (or stopped).
    pub run_ms: f64,
    /// Milliseconds of the first "caught up" log line (the first empty poll), if any.
    pub first_caught_up_ms: Option<f64>,
    /// Peak resident set of the child process (`VmHWM`), kB.
    pub vm_hwm_kb: u64,
    pub user_s: f64,
    pub sys_s: f64,
    /// Sum over input partitions of the next offset stored in the store.
    pub offsets_total: i64,
    /// `Store::size_on_disk` and the bytes of every file of the store directory.
    pub store_size_on_disk: u64,
    pub store_dir_bytes: u64,
    /// Outbox records left unsent.
    pub outbox_pending: usize,
}

static STARTED: OnceLock<Instant> = OnceLock::new();
static FIRST_CAUGHT_UP: OnceLock<f64> = OnceLock::new();

/// The child's `main`: runs one coordinator and reports.
pub fn child_main(args: ChildArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The same global filter as `omnifold-coordinator run` (info): nothing below it is built.
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(CaughtUpLayer)
        .try_init()
        .map_err(|e| anyhow!("cannot set up logs: {e}"))?;
    let options = CoordinatorOptions {
        kafka: KafkaOptions { bootstrap_servers: args.bootstrap.clone(), ..KafkaOptions::default() },
        topics: TopicOptions {
            prefix: args.topic_prefix.clone(),
            events_partitions: args.events_partitions,
            ..TopicOptions::default()
        },
        group_id: "omnifold-coordinator".to_string(),
        contract: args.contract.clone(),
        store: args.store.clone(),
        batch_max_events: args.batch_max_events,
        batch_max_ms: args.batch_max_ms,
        exit_when_caught_up: args.exit_when_caught_up,
        http: None,
        engine: omnifold_coordinator::engine::EngineOptions::default(),
        broker_outage_max: None,
        // static membership, as deploy/ runs it: a restarted process takes its partitions
        // back at once instead of waiting out the killed one's session. One id per topic
        // prefix: a static member that rejoins is handed its last assignment, so a
        // coordinator of the latency runs under the rebuild's id was given the rebuild's
        // partitions and never read its own topic
        group_instance_id: Some(format!("bench-coordinator-{}", args.topic_prefix)),
        session_timeout_ms: 10_000,
        changelog: !args.no_changelog,
        changelog_interval_ms: args.changelog_interval_ms,
        changelog_dump_records: 100_000,
    };
    if args.count_heap {
        log_heap_held();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let run_ms = runtime.block_on(async {
        let coordinator = Coordinator::new(options)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = stop.send(());
        });
        let started = Instant::now();
        let _ = STARTED.set(started);
        coordinator
            .run(async {
                let _ = stopped.await;
            })
            .await
            .context("coordinator failed")?;
        anyhow::Ok(started.elapsed().as_secs_f64() * 1000.0)
    })?;
    drop(runtime);
    let (user_s, sys_s) = procfs::cpu_seconds(None).unwrap_or_default();
    let mut done = Done {
        run_ms,
        first_caught_up_ms: FIRST_CAUGHT_UP.get().copied(),
        vm_hwm_kb: procfs::status_kb(None, "VmHWM").unwrap_or(0),
        user_s,
        sys_s,
        ..Done::default()
    };
    let store = Store::open(&args.store)?;
    done.offsets_total = store.offsets()?.values().sum();
    done.store_size_on_disk = store.size_on_disk()?;
    done.outbox_pending = store.pending_count();
    drop(store);
    done.store_dir_bytes = procfs::dir_size(&args.store);
    let mut line = serde_json::to_value(&done)?;
    line["event"] = "done".into();
    report_line(&line);
    Ok(())
}

/// Counts the heap from now on and logs what it holds every two seconds, for the life of the
/// process.
fn log_heap_held() {
    crate::heap::start_counting();
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let held_mb = crate::heap::held_bytes() as f64 / (1 << 20) as f64;
            let rss_mb = procfs::status_kb(None, "VmRSS").unwrap_or(0) / 1024;
            tracing::info!(held_mb = held_mb as u64, rss_mb, "heap held");
        }
    });
}

fn report_line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Reports each "caught up" log line of the coordinator on stdout.
struct CaughtUpLayer;

impl<S: tracing::Subscriber> Layer<S> for CaughtUpLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if !event.metadata().target().starts_with("omnifold_coordinator") {
            return;
        }
        let mut fields = CaughtUpFields::default();
        event.record(&mut fields);
        if !fields.caught_up {
            return;
        }
        let Some(started) = STARTED.get() else { return };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let _ = FIRST_CAUGHT_UP.set(ms);
        report_line(&serde_json::json!({ "event": "caught_up", "ms": ms, "events": fields.events }));
    }
}

#[derive(Default)]
struct CaughtUpFields {
    caught_up: bool,
    events: u64,
}

impl Visit for CaughtUpFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "events" {
            self.events = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == "caught up" {
            self.caught_up = true;
        }
    }
}

/// The arguments of the `load-state` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadStateArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long, default_value_t = 6)]
    pub events_partitions: i32,
}

/// What loading a store's state costs, as the coordinator loads it at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadState {
    /// `Store::open`.
    pub open_ms: f64,
    /// `Store::partition_state::<SkuState>` of every partition (store scan + postcard decode).
    pub states_ms: f64,
    /// `Store::seen_ids` of every partition.
    pub seen_ms: f64,
    /// `Store::offsets`.
    pub offsets_ms: f64,
    pub skus: usize,
    pub seen_ids: usize,
}

/// Loads a whole store (every SKU core, every remembered id) and reports the time of each
/// part: what a start cost before the state engine, which reads only the offsets at start.
pub fn load_state_main(args: LoadStateArgs) -> Result<()> {
    let started = Instant::now();
    let store = Store::open(&args.store)?;
    let mut report = LoadState { open_ms: ms(started), ..LoadState::default() };
    let started = Instant::now();
    for partition in 0..args.events_partitions {
        let states: Vec<(String, SkuState)> = store.partition_state(partition)?;
        report.skus += states.len();
    }
    report.states_ms = ms(started);
    let started = Instant::now();
    for partition in 0..args.events_partitions {
        report.seen_ids += store.seen_ids(partition)?.len();
    }
    report.seen_ms = ms(started);
    let started = Instant::now();
    let _ = store.offsets()?;
    report.offsets_ms = ms(started);
    report_line(&serde_json::to_value(&report)?);
    Ok(())
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// A coordinator child seen from the benchmark.
pub struct ChildCoordinator {
    process: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<serde_json::Value>,
    pub spawned: Instant,
    /// The coordinator's own process, unless it runs under `perf record` (whose process is
    /// the child then).
    pub coordinator_pid: Option<u32>,
}

impl ChildCoordinator {
    /// Spawns `exe coordinator ...` (under `perf record` when `perf` is given), its stderr to
    /// `log`.
    pub fn spawn(exe: &Path, args: &ChildArgs, log: &Path, perf: Option<&Path>) -> Result<ChildCoordinator> {
        let stderr = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut command = match perf {
            Some(output) => {
                let mut command = Command::new("perf");
                // DWARF call graphs (release builds keep no frame pointers) at a low rate: the
                // file stays within a few hundred MB over a two-minute rebuild.
                command
                    .args(["record", "-F", "49", "--call-graph", "dwarf,16384", "-o"])
                    .arg(output)
                    .arg("--")
                    .arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut process = command
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawn {}", exe.display()))?;
        let spawned = Instant::now();
        let stdout = process.stdout.take().expect("piped stdout");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && send.send(value).is_err()
                {
                    break;
                }
            }
        });
        let stdin = process.stdin.take();
        let coordinator_pid = perf.is_none().then(|| process.id());
        Ok(ChildCoordinator { process, stdin, lines, spawned, coordinator_pid })
    }

    /// The next report line of kind `event` (others are skipped), within `timeout`.
    pub fn next(&mut self, event: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) if value["event"] == event => return Ok(value),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no {event:?} from the coordinator within {timeout:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.process.wait()?;
                    bail!("the coordinator exited ({status}) before reporting {event:?}")
                }
            }
        }
    }

    /// Waits for the child's final report and its exit.
    pub fn finish(mut self, timeout: Duration) -> Result<Done> {
        let done = self.next("done", timeout);
        let done = match done {
            Ok(done) => done,
            Err(error) => {
                self.kill();
                return Err(error);
            }
        };
        self.wait_exit(Duration::from_secs(30))?;
        Ok(serde_json::from_value(done)?)
    }

    /// Stops the coordinator (end of its stdin), then as [`ChildCoordinator::finish`].
    pub fn stop(mut self, timeout: Duration) -> Result<Done> {
        drop(self.stdin.take());
        self.finish(timeout)
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait()? {
                if !status.success() {
                    bail!("the coordinator exited with {status}");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        bail!("the coordinator did not exit within {timeout:?}")
    }
}

impl Drop for ChildCoordinator {
    fn drop(&mut self) {
        if matches!(self.process.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Runs `exe load-state` on a store and returns its report.
pub fn load_state(exe: &Path, store: &Path, partitions: i32) -> Result<LoadState> {
    let output = Command::new(exe)
        .args(["load-state", "--store"])
        .arg(store)
        .args(["--events-partitions", &partitions.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("run load-state")?;
    if !output.status.success() {
        bail!("load-state failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
