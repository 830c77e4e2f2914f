//! The end-to-end benchmark: one real broker, one run, every figure next to its baseline.
//!
//! 1. Generate the workload and load it into the events topic (6 partitions) with the
//!    connector's idempotent producer.
//! 2. Read the same topic with (a) a bare consumer and (b) a consumer that decodes, then
//!    (c) run the coordinator from an empty store until caught up, then (a) and (b) again, so
//!    the baselines bracket (c) on a noisy machine.
//! 3. Restart the caught-up coordinator (after a clean stop, then after a SIGKILL) and time it
//!    until caught up again; time the state load alone.
//! 4. At fixed offered rates, produce into a fresh set of topics while a coordinator runs, and
//!    measure produce-to-alert latency.
//!
//! The coordinator runs in a child process ([`crate::child`]). Every wait is bounded; all
//! traffic goes to the broker on 127.0.0.1.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use omnifold_proto::{AlertState, Body, Event};
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics};
use omnifold_testkit::{Broker, NISSHI_VERSION};
use omnifold_workload::WorkloadOptions;
use prost::Message as _;

use crate::child::{ChildArgs, ChildCoordinator, Done, load_state};
use crate::kafka::{
    Encoded, Reader, drain, produce, producer, record_count, sample_committed, tenths, tenths_peak_rss_mb,
    wait_committed,
};
use crate::procfs::{self, Machine};
use crate::report::{
    Latency, Memory, Pure, Rate, Rebuild, Report, Restart, Settings, Target, Workload, read_criterion,
    thousands,
};
use crate::stats::Summary;

const PARTITIONS: i32 = 6;
const GROUP: &str = "omnifold-coordinator";

/// The options of the end-to-end benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Events loaded into the events topic.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// SKUs of the workload.
    #[arg(long, default_value_t = 10_000)]
    pub skus: usize,
    /// The report is written to REPORT.md and REPORT.json.
    #[arg(long, default_value = "target/bench-report")]
    pub report: PathBuf,
    /// Where the stores and logs go (a temporary directory, removed afterwards, when absent).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// The coordination contract (default: deploy/local/contract.toml).
    #[arg(long)]
    pub contract: Option<PathBuf>,
    /// Offered rates of the latency runs, events/s.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    pub rates: Vec<u64>,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// SKUs of the latency runs' workload.
    #[arg(long, default_value_t = 1_000)]
    pub latency_skus: usize,
    /// Skip the latency runs (e.g. for a profiling run).
    #[arg(long)]
    pub no_latency: bool,
    /// Run the coordinator without its changelog, to see what writing it costs
    #[arg(long)]
    pub no_changelog: bool,
    /// How often the coordinator sends its changelog, milliseconds (its
    /// `--changelog-interval-ms`)
    #[arg(long, default_value_t = omnifold_coordinator::service::DEFAULT_CHANGELOG_INTERVAL_MS)]
    pub changelog_interval_ms: u64,
    /// The coordinators count the heap they hold and log it every two seconds (`heap held`
    /// in their logs; see `--work-dir`): what of the resident memory is live allocations
    #[arg(long)]
    pub count_heap: bool,
    /// Runs of each baseline reader, before and after the coordinator.
    #[arg(long, default_value_t = 2)]
    pub baseline_runs: usize,
    /// The coordinator's batch size (`omnifold-coordinator run --batch-max-events`).
    #[arg(long, default_value_t = omnifold_coordinator::service::DEFAULT_BATCH_MAX_EVENTS)]
    pub batch_max_events: usize,
    /// Record the rebuild's coordinator with `perf record -g` into this file.
    #[arg(long)]
    pub perf_record: Option<PathBuf>,
    /// Where criterion keeps its results, to include the micro benchmarks in the report.
    #[arg(long, default_value = "target/criterion")]
    pub criterion_dir: PathBuf,
    /// Upper bound of every phase, seconds.
    #[arg(long, default_value_t = 900)]
    pub phase_timeout_secs: u64,
}

/// The micro benchmarks the report includes, by criterion id.
const MICRO: [&str; 5] = [
    "decode/event_mix",
    "fold/apply",
    "fold_commit/batch/100",
    "fold_commit/batch/1000",
    "fold_commit/batch/10000",
];

struct Bench {
    args: RunArgs,
    exe: PathBuf,
    contract: PathBuf,
    work: PathBuf,
    kafka: KafkaOptions,
    broker_pid: Option<u32>,
    timeout: Duration,
}

impl Bench {
    fn child_args(&self, prefix: &str, store: &Path, exit_when_caught_up: bool) -> ChildArgs {
        ChildArgs {
            bootstrap: self.kafka.bootstrap_servers.clone(),
            topic_prefix: prefix.to_string(),
            events_partitions: PARTITIONS,
            store: store.to_path_buf(),
            contract: self.contract.clone(),
            exit_when_caught_up,
            batch_max_events: self.args.batch_max_events,
            batch_max_ms: 20,
            no_changelog: self.args.no_changelog,
            changelog_interval_ms: self.args.changelog_interval_ms,
            count_heap: self.args.count_heap,
        }
    }

    fn broker_cpu(&self) -> Option<f64> {
        self.broker_pid.and_then(|pid| procfs::cpu_seconds(Some(pid))).map(|(u, s)| u + s)
    }

    fn spawn(&self, name: &str, args: &ChildArgs, perf: Option<&Path>) -> Result<ChildCoordinator> {
        ChildCoordinator::spawn(&self.exe, args, &self.work.join(format!("{name}.log")), perf)
    }
}

fn self_cpu() -> f64 {
    procfs::cpu_seconds(None).map_or(0.0, |(u, s)| u + s)
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn topic_options(prefix: &str) -> TopicOptions {
    TopicOptions { prefix: prefix.to_string(), events_partitions: PARTITIONS, ..TopicOptions::default() }
}

/// Runs the whole benchmark and writes the report.
pub async fn run(args: RunArgs) -> Result<Report> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let machine = Machine::describe();
    let contract = args.contract.clone().unwrap_or_else(crate::contract_path);
    let rules = omnifold_runtime::load_contract(&contract)?;
    let temp = match &args.work_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("omnifold-bench-").tempdir()?),
    };
    let work = match (&args.work_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_path_buf(),
        (None, None) => unreachable!(),
    };
    std::fs::create_dir_all(&work)?;
    let timeout = Duration::from_secs(args.phase_timeout_secs);
    let mut notes = Vec::new();

    eprintln!("generating {} events over {} SKUs", args.events, args.skus);
    let started = Instant::now();
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    let mut records = Vec::with_capacity(args.events);
    let mut events = Vec::with_capacity(args.events);
    omnifold_workload::generate_into(&rules, &WorkloadOptions::bench(args.skus, args.events), |event| {
        if let Some(body) = &event.body {
            *types.entry(body.type_name().to_string()).or_default() += 1;
        }
        records.push(Encoded::of(&event));
        events.push(event);
    });
    let workload = Workload {
        events: records.len(),
        skus: args.skus,
        generate_s: started.elapsed().as_secs_f64(),
        encoded_bytes: records.iter().map(|r| r.value.len()).sum(),
        types,
    };

    // The pure parts at this scale, on one core, before anything else runs: the fold's cost per
    // event grows with the SKU's history, so the micro benchmarks' smaller workload flatters it.
    eprintln!("decoding and folding the workload in this process");
    let started = Instant::now();
    for record in &records {
        std::hint::black_box(Event::decode(record.value.as_slice())?);
    }
    let decode_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (state, fold_outputs) = crate::fold_all(&omnifold_domain::Fold::new(rules.clone()), &events);
    let fold_s = started.elapsed().as_secs_f64();
    // What the coordinator writes per dirty SKU: the whole state, postcard-encoded.
    let mut state_bytes: Vec<usize> =
        state.skus.values().map(|sku| postcard::to_allocvec(sku).map_or(0, |bytes| bytes.len())).collect();
    state_bytes.sort_unstable();
    drop((state, events));
    let pure = Pure {
        decode: Rate::new(records.len(), decode_s, decode_s, None),
        fold: Rate::new(records.len(), fold_s, fold_s, None),
        fold_outputs,
        state_bytes_total: state_bytes.iter().sum(),
        state_bytes_p50: state_bytes.get(state_bytes.len() / 2).copied().unwrap_or(0),
        state_bytes_max: state_bytes.last().copied().unwrap_or(0),
    };

    eprintln!("starting the broker");
    let broker = Broker::start().await?;
    let kafka = KafkaOptions { bootstrap_servers: broker.bootstrap(), ..KafkaOptions::default() };
    let broker_pid = procfs::find_process(&["nisshi", &format!("127.0.0.1:{}", broker.port())]);
    if broker_pid.is_none() {
        notes.push("The broker's process was not found in /proc: no broker CPU figures.".into());
    }
    let ctx = Bench {
        exe: std::env::current_exe()?,
        contract: contract.clone(),
        work: work.clone(),
        kafka: kafka.clone(),
        broker_pid,
        timeout,
        args: args.clone(),
    };

    // 1. load
    let prefix = "bench.";
    let topics = Topics::new(prefix);
    kafka.ensure_topics(&topics.specs(&topic_options(prefix))).await?;
    eprintln!("loading {} events into {}", records.len(), topics.events);
    let producer = producer(&kafka)?;
    let (cpu0, broker0) = (self_cpu(), ctx.broker_cpu());
    let loaded = produce(&producer, &topics.events, &records, None, timeout).await?;
    let load = Rate::new(records.len(), loaded.seconds, self_cpu() - cpu0, delta(broker0, ctx.broker_cpu()));
    drop(producer);
    let total = records.len();
    let loaded_total: i64 = loaded.ends.values().sum();
    if loaded_total != total as i64 {
        bail!("the events topic holds {loaded_total} records, not {total}");
    }
    drop(records);

    // 2. baselines around the rebuild
    let mut bare = Vec::new();
    let mut decode = Vec::new();
    let runs_before = args.baseline_runs.div_ceil(2).max(1);
    for _ in 0..runs_before {
        bare.push(baseline(&ctx, &topics.events, total, false)?);
        decode.push(baseline(&ctx, &topics.events, total, true)?);
    }

    eprintln!("(c) rebuild: the coordinator from an empty store until caught up");
    let store = work.join("rebuild-store");
    let broker0 = ctx.broker_cpu();
    let child = ctx.spawn("rebuild", &ctx.child_args(prefix, &store, true), args.perf_record.as_deref())?;
    let (spawned, watched) = (child.spawned, child.coordinator_pid);
    let sampling = std::sync::atomic::AtomicBool::new(false);
    let (done, samples) = std::thread::scope(|scope| {
        let (kafka, sampling, log) = (&kafka, &sampling, (GROUP, &topics.events[..], PARTITIONS));
        let sampler = scope.spawn(move || sample_committed(kafka, log, watched, sampling));
        let done = child.finish(timeout);
        sampling.store(true, std::sync::atomic::Ordering::Relaxed);
        (done, sampler.join().expect("the sampler does not panic"))
    });
    let done = done?;
    let samples = samples?;
    let tenths_events_per_s = tenths(&samples, total);
    let tenths_peak_rss_mb = tenths_peak_rss_mb(&samples, total);
    let wall_s = spawned.elapsed().as_secs_f64();
    let broker_cpu = delta(broker0, ctx.broker_cpu());
    let outputs_written = record_count(
        &kafka,
        &[&topics.availability, &topics.alerts, &topics.escalations, &topics.deadletter],
    )?;
    let rebuild = Rebuild {
        rate: Rate::new(total, done.run_ms / 1000.0, done.user_s + done.sys_s, broker_cpu),
        wall_s,
        coordinator_user_s: done.user_s,
        coordinator_sys_s: done.sys_s,
        outputs_written,
        consumed_all: done.offsets_total == total as i64,
        tenths_events_per_s,
        tenths_peak_rss_mb,
    };
    if !rebuild.consumed_all {
        notes.push(format!(
            "The rebuild stopped at {} of {total} events: the coordinator returned before it had consumed every loaded event.",
            done.offsets_total
        ));
    }
    let rebuild_done = done;

    for _ in runs_before..args.baseline_runs.max(runs_before + 1) {
        bare.push(baseline(&ctx, &topics.events, total, false)?);
        decode.push(baseline(&ctx, &topics.events, total, true)?);
    }
    let best_bare = bare.iter().map(|r| r.events_per_s).fold(0.0, f64::max);
    let ratio_c_a = rebuild.rate.events_per_s / best_bare;

    // 3. restarts
    eprintln!("restart after a clean stop");
    let restart_after_stop = restart(&ctx, "restart-stop", prefix, &store)?;
    eprintln!("restart after SIGKILL");
    {
        let mut child = ctx.spawn("restart-kill-victim", &ctx.child_args(prefix, &store, false), None)?;
        child.next("caught_up", timeout)?;
        std::thread::sleep(Duration::from_millis(500));
        child.kill();
    }
    let restart_after_kill = restart(&ctx, "restart-kill", prefix, &store)?;
    let load_state = load_state(&ctx.exe, &store, PARTITIONS)?;

    // 4. latency
    let mut latency = Vec::new();
    for rate in args.rates.iter().filter(|_| !args.no_latency) {
        eprintln!("latency at {rate} events/s");
        latency.push(latency_run(&ctx, &rules, *rate).await?);
    }

    let micro = read_criterion(&args.criterion_dir, &MICRO);
    let skus = args.skus as f64;
    let memory = Memory {
        skus: args.skus,
        rebuild_vm_hwm_mb: rebuild_done.vm_hwm_kb as f64 / 1024.0,
        restart_vm_hwm_mb: restart_after_stop.vm_hwm_kb as f64 / 1024.0,
        rebuild_vm_hwm_mb_per_100k_skus: rebuild_done.vm_hwm_kb as f64 / 1024.0 * 100_000.0 / skus,
        store_dir_mb: rebuild_done.store_dir_bytes as f64 / 1e6,
        store_mb_per_100k_skus: rebuild_done.store_dir_bytes as f64 / 1e6 * 100_000.0 / skus,
    };
    let targets = targets(
        &micro,
        &pure,
        &rebuild,
        ratio_c_a,
        (&restart_after_stop, &restart_after_kill),
        &latency,
        total,
    );
    notes.extend(method_notes(&args));
    drop(broker);

    let report = Report {
        generated_at_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine,
        command,
        settings: Settings {
            events: args.events,
            skus: args.skus,
            events_partitions: PARTITIONS,
            batch_max_events: args.batch_max_events,
            batch_max_ms: 20,
            rates: args.rates.clone(),
            latency_secs: args.latency_secs,
            latency_skus: args.latency_skus,
            broker: format!("nisshi {NISSHI_VERSION}, memory storage, 127.0.0.1"),
        },
        workload,
        pure,
        micro,
        load,
        bare,
        decode,
        rebuild,
        ratio_c_a,
        restart_after_stop,
        restart_after_kill,
        load_state,
        latency,
        memory,
        targets,
        notes,
    };
    write_report(&args.report, &report)?;
    Ok(report)
}

fn write_report(base: &Path, report: &Report) -> Result<()> {
    if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let md = base.with_extension("md");
    let json = base.with_extension("json");
    std::fs::write(&md, report.markdown()).with_context(|| format!("write {}", md.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("write {}", json.display()))?;
    eprintln!("wrote {} and {}", md.display(), json.display());
    Ok(())
}

fn baseline(ctx: &Bench, topic: &str, total: usize, decode: bool) -> Result<Rate> {
    eprintln!("({}) {} consumer", if decode { "b" } else { "a" }, if decode { "decoding" } else { "bare" });
    let (cpu0, broker0) = (self_cpu(), ctx.broker_cpu());
    let drained = drain(&ctx.kafka, topic, PARTITIONS, total, decode, ctx.timeout)?;
    if drained.decode_errors > 0 {
        bail!("{} records did not decode", drained.decode_errors);
    }
    Ok(Rate::new(drained.records, drained.seconds, self_cpu() - cpu0, delta(broker0, ctx.broker_cpu())))
}

fn restart(ctx: &Bench, name: &str, prefix: &str, store: &Path) -> Result<Restart> {
    let child = ctx.spawn(name, &ctx.child_args(prefix, store, true), None)?;
    let spawned = child.spawned;
    let done: Done = child.finish(ctx.timeout)?;
    Ok(Restart {
        seconds: done.run_ms / 1000.0,
        first_caught_up_s: done.first_caught_up_ms.map(|ms| ms / 1000.0),
        wall_s: spawned.elapsed().as_secs_f64(),
        vm_hwm_kb: done.vm_hwm_kb,
    })
}

/// Produces at `rate` events/s for `latency_secs` into fresh topics while a coordinator runs.
async fn latency_run(ctx: &Bench, rules: &omnifold_domain::Rules, rate: u64) -> Result<Latency> {
    let args = &ctx.args;
    let prefix = format!("lat{rate}.");
    let topics = Topics::new(&prefix);
    ctx.kafka.ensure_topics(&topics.specs(&topic_options(&prefix))).await?;
    let timed = (rate * args.latency_secs) as usize;
    // The workload opens with setup events (prices, costs, opening counts of every SKU): they
    // are loaded first, unpaced; the timed events are those from the first order on.
    let setup_guess = 10 * args.latency_skus;
    let events =
        omnifold_workload::generate(rules, &WorkloadOptions::bench(args.latency_skus, setup_guess + timed));
    let setup_end =
        events.iter().position(|e: &Event| matches!(e.body, Some(Body::OrderLinePlaced(_)))).unwrap_or(0);
    let setup: Vec<Encoded> = events[..setup_end].iter().map(Encoded::of).collect();
    let paced: Vec<Encoded> = events[setup_end..].iter().take(timed).map(Encoded::of).collect();
    drop(events);

    let store = ctx.work.join(format!("latency-{rate}-store"));
    let child = ctx.spawn(&format!("latency-{rate}"), &ctx.child_args(&prefix, &store, false), None)?;
    let reader = Reader::start(&ctx.kafka, &topics.alerts, &topics.availability, ctx.timeout)?;
    let producer = producer(&ctx.kafka)?;
    let preloaded = produce(&producer, &topics.events, &setup, None, ctx.timeout).await?;
    if !wait_committed(&ctx.kafka, GROUP, &topics.events, &preloaded.ends, Duration::from_secs(120))? {
        bail!("the coordinator did not fold the {} setup events within 120 s", setup.len());
    }
    // give the coordinator's outbox time to send the setup's outputs
    reader.wait_quiet(Duration::from_secs(1), Duration::from_secs(30));
    let broker0 = ctx.broker_cpu();
    let sent = produce(&producer, &topics.events, &paced, Some(rate as f64), ctx.timeout).await?;
    let mut ends = preloaded.ends.clone();
    for (partition, end) in &sent.ends {
        ends.insert(*partition, (*end).max(ends.get(partition).copied().unwrap_or(0)));
    }
    let last_sent = Instant::now();
    let caught_up = wait_committed(&ctx.kafka, GROUP, &topics.events, &ends, Duration::from_secs(300))?;
    let behind_s = last_sent.elapsed().as_secs_f64();
    reader.wait_quiet(Duration::from_secs(1), Duration::from_secs(60));
    let broker_cpu = delta(broker0, ctx.broker_cpu());
    let observed = reader.finish()?;
    let done = child.stop(Duration::from_secs(60))?;
    if !caught_up {
        eprintln!("warning: the coordinator's group offsets did not reach the end at {rate}/s");
    }

    let send_us: HashMap<&str, i64> =
        paced.iter().zip(&sent.send_us).map(|(record, at)| (record.event_id.as_str(), *at)).collect();
    let (mut detected, mut alert_record, mut alert_received) = (Vec::new(), Vec::new(), Vec::new());
    for seen in &observed.alerts {
        let alert = &seen.record;
        let cause = if alert.state == AlertState::Resolved as i32 {
            &alert.resolved_by_event_id
        } else {
            &alert.raised_by_event_id
        };
        let Some(&sent_us) = send_us.get(cause.as_str()) else { continue };
        let sent_ms = sent_us as f64 / 1000.0;
        detected.push(alert.detected_at_ms as f64 - sent_ms);
        if let Some(ts) = seen.timestamp_ms {
            alert_record.push(ts as f64 - sent_ms);
        }
        alert_received.push((seen.received_us - sent_us) as f64 / 1000.0);
    }
    let mut availability = Vec::new();
    for seen in &observed.availability {
        if let Some(&sent_us) = send_us.get(seen.record.reason_event_id.as_str()) {
            availability.push((seen.received_us - sent_us) as f64 / 1000.0);
        }
    }
    Ok(Latency {
        rate,
        events: paced.len(),
        send_s: sent.seconds,
        behind_s,
        achieved_rate: paced.len() as f64 / sent.seconds.max(1e-9),
        alerts: detected.len(),
        detected: Summary::of(&detected),
        alert_record: Summary::of(&alert_record),
        alert_received: Summary::of(&alert_received),
        availability_records: availability.len(),
        availability_received: Summary::of(&availability),
        coordinator_cpu_s: done.user_s + done.sys_s,
        broker_cpu_s: broker_cpu,
    })
}

fn targets(
    micro: &[crate::report::Micro],
    pure: &Pure,
    rebuild: &Rebuild,
    ratio_c_a: f64,
    (restart_stop, restart_kill): (&Restart, &Restart),
    latency: &[Latency],
    total: usize,
) -> Vec<Target> {
    let micro_rate = |id: &str| micro.iter().find(|m| m.id == id).map(|m| m.events_per_s);
    let rate_target = |what: &str, target: f64, measured: Option<f64>| Target {
        what: what.to_string(),
        target: format!(">= {} events/s", thousands(target)),
        measured: measured.map_or("run `cargo bench -p omnifold-bench` first".into(), |r| {
            format!("{} events/s", thousands(r))
        }),
        met: measured.map(|r| r >= target),
    };
    let mut targets = vec![
        rate_target(
            "pure fold, one core (criterion `fold/apply`: 1,000 SKUs, 100,000 events)",
            1_000_000.0,
            micro_rate("fold/apply"),
        ),
        rate_target(
            &format!("pure fold, one core, this run's workload ({} events)", thousands(total as f64)),
            1_000_000.0,
            Some(pure.fold.events_per_s),
        ),
        rate_target("fold + store commit, batches of 1,000", 300_000.0, micro_rate("fold_commit/batch/1000")),
        Target {
            what: "coordinator / bare consumer (c/a)".into(),
            target: ">= 0.80".into(),
            measured: format!(
                "{ratio_c_a:.2} ({} vs {} events/s)",
                thousands(rebuild.rate.events_per_s),
                thousands(rebuild.rate.events_per_s / ratio_c_a)
            ),
            met: Some(ratio_c_a >= 0.8),
        },
    ];
    let p99_at = latency.iter().find(|l| l.rate == 5_000);
    targets.push(Target {
        what: "produce -> alert p99 at 5,000 events/s (detected_at)".into(),
        target: "<= 50 ms".into(),
        measured: match p99_at {
            Some(l) => format!(
                "{} ({} alerts; record timestamp {}, received {})",
                l.detected.map_or("no alerts".into(), |s| format!("{:.1} ms", s.p99)),
                l.alerts,
                l.alert_record.map_or("n/a".into(), |s| format!("{:.1} ms", s.p99)),
                l.alert_received.map_or("n/a".into(), |s| format!("{:.1} ms", s.p99)),
            ),
            None => "not run".into(),
        },
        met: p99_at.and_then(|l| l.detected).map(|s| s.p99 <= 50.0),
    });
    // Caught up is the first "caught up" log line (state loaded, partitions assigned, first
    // empty poll); `run` returns later, once every partition reported its end, and after the
    // clients' shutdown.
    let caught_up = |r: &Restart| r.first_caught_up_s.unwrap_or(r.seconds);
    targets.push(Target {
        what: format!("restart with {} events in the store, to caught up", thousands(total as f64)),
        // the state engine's target (the benchmark issue asked for 2 s)
        target: "<= 1 s".into(),
        measured: format!(
            "{:.2} s after a stop, {:.2} s after SIGKILL (`run` returned after {:.2} s and {:.2} s)",
            caught_up(restart_stop),
            caught_up(restart_kill),
            restart_stop.seconds,
            restart_kill.seconds
        ),
        met: Some(caught_up(restart_stop).max(caught_up(restart_kill)) <= 1.0),
    });
    targets.push(Target {
        what: format!("rebuild of {} events from an empty store (= c)", thousands(total as f64)),
        target: "<= 15 s for 1,000,000".into(),
        measured: format!("{:.2} s", rebuild.rate.seconds),
        met: Some(rebuild.rate.seconds * 1_000_000.0 / total as f64 <= 15.0),
    });
    targets
}

fn method_notes(args: &RunArgs) -> Vec<String> {
    vec![
        "The broker is nisshi with memory storage on 127.0.0.1, started by omnifold-testkit; the events topic has 6 partitions. Broker, benchmark and coordinator share the machine's cores.".into(),
        "The coordinator is the real `Coordinator::run` (omnifold-coordinator's options: batches of up to --batch-max-events events or 20 ms, up to 200 ms while it is behind the log), in a child process of this binary so that its peak RSS (VmHWM) and CPU time are its own. Its time is measured inside the process, from the call of `run` to its return with `exit_when_caught_up` (topic check, store open, outbox recovery, state load, seek, fold, commits, outbox sends, until every partition reported its end, and the clients' shutdown).".into(),
        "(a) and (b) use the coordinator's consumer settings (`KafkaOptions::assigning_consumer`, one `poll` per record) and read all 6 partitions from the beginning; they run before and after (c).".into(),
        format!(
            "Latency: for each offered rate, fresh topics and an empty store; the workload ({} SKUs) first loads its setup events (prices, costs, opening counts) unpaced and waits until the coordinator has committed them; then {} s of events from the first order on are sent open-loop at the offered rate (event i at i/rate s) with the connector's producer settings (idempotent, acks=all, linger.ms=5). The send time of each event is the wall clock just before it is handed to the producer. For each alert record whose raising (RAISED) or resolving (RESOLVED) event was sent in the timed phase: detected_at = `Alert.detected_at_ms` (stamped by the coordinator when the fold emits it, before the store commit) minus the send time; record ts = the alert record's CreateTime (stamped when the outbox hands it to its producer, after the commit's fsync); received = when this benchmark's consumer got it. Availability records are matched by `reason_event_id` the same way.",
            args.latency_skus, args.latency_secs
        ),
        "Restart after a clean stop: the rebuild's coordinator returned caught up; a new process opens the same store. Restart after SIGKILL: a coordinator is started on the store, killed with SIGKILL once it logs caught up, and a new one is timed. Every coordinator of the benchmark is a static member of its group (`--instance-id`, as deploy/ runs it), so a restarted one is given its partitions back without waiting out the killed one's session. The coordinator reads only the stored offsets at start (states load on demand); `omnifold-bench load-state` shows what loading every SKU core and every remembered id would cost instead.".into(),
        "Peak RSS per 100k SKUs is the rebuild's VmHWM scaled by 100,000 / SKUs; it includes fixed costs (librdkafka buffers, the store's 32 MiB block cache and its two keyspaces' memtables, the state cache budget); ids are not held beyond the recent-id set.".into(),
    ]
}
