//! `omnifold-bench history`: the state engine's shape over a long history, without a broker.
//!
//! It generates the benchmark workload, then folds it through the coordinator's own state
//! engine and commits each batch to a fresh store ([`crate::Pipeline`]), as the
//! coordinator's fold loop does once events are decoded. The outbox is emptied after each
//! commit, outside the timing, as the coordinator's sender does with the records the fold loop
//! hands it in memory. It reports:
//!
//! - the fold + commit rate for each tenth of the log, as a table and an SVG line chart, and
//!   the ratio of the last tenth to the first (flat cost per event means about 1);
//! - the CPU each tenth cost per 100,000 events, by thread: the fold loop, the persister and
//!   the store's workers (which of them grows with history, if one does);
//! - the store on disk against the live state it holds (sum of its keys and values);
//! - the engine's cache at the end, and the process's resident memory before and after
//!   folding (the generated events themselves are held in memory and counted in both);
//! - a restart: a new engine on the same store, time to open it and fold one more batch;
//! - what the batches handed the store per event, by kind (ids, states, lines, the outbox's
//!   records...), largest first: where the journal's, the memtables' and the compactions'
//!   work comes from.
//!
//!     cargo run --release -p omnifold-bench -- history --events 10000000 --skus 1000 --days 365 --report target/bench-history

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use omnifold_coordinator::engine::{EngineOptions, EngineStats};
use omnifold_runtime::Store;
use serde::Serialize;

use crate::procfs::{dir_size, status_kb};
use crate::{BatchStats, Pipeline, example_rules};

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Events in the log.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: usize,
    /// SKUs they are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub skus: usize,
    /// Events per commit.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Days the history spans (the benchmark mix at a steady pace).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Input partitions the SKUs are spread over.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// The engine's state cache budget in MiB.
    #[arg(long, default_value_t = 256)]
    pub state_cache_mb: usize,
    /// The engine's filter of stored ids and lines in MiB (0: every check reads the store).
    #[arg(long, default_value_t = 16)]
    pub key_filter_mb: usize,
    /// Skip the pure fold's pass over the log (for profiling the engine alone).
    #[arg(long)]
    pub skip_pure: bool,
    /// Only the pure fold's pass (for profiling the fold alone).
    #[arg(long, conflicts_with = "skip_pure")]
    pub pure_only: bool,
    /// Kept keys (ids, lines) per generation of the store (unset: the store's own,
    /// `omnifold_runtime::GENERATION_KEYS`).
    #[arg(long)]
    pub generation_keys: Option<u64>,
    /// Where `history.md`, `history.json` and `history.svg` are written.
    #[arg(long, default_value = "target/bench-history")]
    pub report: PathBuf,
}

/// What the batches handed the store of one kind, per event folded ([`crate::WriteVolume`]).
#[derive(Debug, Clone, Serialize)]
pub struct VolumeRow {
    pub kind: &'static str,
    pub keys_per_event: f64,
    pub bytes_per_event: f64,
}

/// CPU seconds per 100,000 events over one tenth of the log, by thread: the one folding and
/// committing, the persister writing each batch to the store, the store's background workers
/// (flushes and compactions), and any other. A flat cost per event is flat rows.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ThreadsCpu {
    pub fold_loop: f64,
    pub persister: f64,
    pub store_workers: f64,
    pub other: f64,
}

impl ThreadsCpu {
    /// This process's threads' CPU seconds so far, the calling thread's as the fold loop's.
    fn now() -> ThreadsCpu {
        let mut cpu = ThreadsCpu::default();
        for (name, seconds) in crate::procfs::threads_cpu_seconds(FOLD_LOOP).unwrap_or_default() {
            *cpu.of_thread(&name) += seconds;
        }
        cpu
    }

    /// The figure a thread's CPU adds to, by the thread's name (15 bytes at most, as `/proc`
    /// keeps it: the persister's is cut).
    fn of_thread(&mut self, name: &str) -> &mut f64 {
        match name {
            FOLD_LOOP => &mut self.fold_loop,
            name if name.starts_with("omnifold-persis") => &mut self.persister,
            "fjall:worker" => &mut self.store_workers,
            _ => &mut self.other,
        }
    }

    /// What was used since `before`, per 100,000 of `events`.
    fn per_100k_since(&self, before: &ThreadsCpu, events: usize) -> ThreadsCpu {
        let per = |now: f64, then: f64| (now - then) * 100_000.0 / events.max(1) as f64;
        ThreadsCpu {
            fold_loop: per(self.fold_loop, before.fold_loop),
            persister: per(self.persister, before.persister),
            store_workers: per(self.store_workers, before.store_workers),
            other: per(self.other, before.other),
        }
    }
}

/// The engine's reads of the store per 1,000 events over one tenth of the log: what the
/// recent sets and the key filter could not answer from memory. Reads of kept keys probe the
/// store's generations newest first, so their cost grows with the generations; their count
/// grows with the filter's false positives.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StoreReads {
    /// Event ids looked up (a redelivery, or a false positive of the filter).
    pub ids: f64,
    /// Order lines and promotions read for the event naming them.
    pub records: f64,
    /// SKU states loaded (a first event, or one after an eviction).
    pub states: f64,
}

impl StoreReads {
    /// The reads between `before` and `after`, per 1,000 of `events`.
    fn per_1000(before: &EngineStats, after: &EngineStats, events: usize) -> StoreReads {
        let per = |now: u64, then: u64| (now - then) as f64 * 1_000.0 / events.max(1) as f64;
        StoreReads {
            ids: per(after.id_reads, before.id_reads),
            records: per(after.record_reads, before.record_reads),
            states: per(after.loads, before.loads),
        }
    }
}

/// The name the thread running [`run`] is counted under.
const FOLD_LOOP: &str = "fold loop";

/// The fold + commit rate over one tenth of the log.
#[derive(Debug, Clone, Serialize)]
pub struct Decile {
    pub events_folded: usize,
    pub events_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    pub events: usize,
    pub skus: usize,
    pub days: u32,
    pub batch: usize,
    pub state_cache_mb: usize,
    pub generate_s: f64,
    pub fold_commit_s: f64,
    pub events_per_s: f64,
    pub deciles: Vec<Decile>,
    /// Rate of the last tenth over the rate of the first.
    pub last_over_first: f64,
    /// CPU per 100,000 events of each tenth, by thread (empty where `/proc` is not).
    pub threads_cpu: Vec<ThreadsCpu>,
    /// The engine's store reads per 1,000 events of each tenth.
    pub store_reads: Vec<StoreReads>,
    /// The pure fold alone (`Fold::apply` on a state held in memory), per tenth.
    pub pure_deciles: Vec<Decile>,
    /// Heap blocks allocated per event: by the pure fold, and by every thread while folding
    /// and committing (the store's threads included).
    pub pure_allocations_per_event: f64,
    pub allocations_per_event: f64,
    pub outputs: usize,
    pub store_bytes: u64,
    pub live_bytes: u64,
    pub live_entries: u64,
    pub cache_bytes: usize,
    pub cache_skus: usize,
    /// SKU states and keyed records (order lines, promotions) the engine read from the store.
    pub state_loads: u64,
    pub record_reads: u64,
    /// Order lines found among those the engine wrote lately, not read from the store.
    pub recent_line_hits: u64,
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    /// The process's peak resident set until the end of the folding (the generated events
    /// are held from before it starts; without `--skip-pure` the pure fold's pass peaks too).
    pub rss_peak_mb: f64,
    /// What the allocations made since the store opened hold after folding: the engine, the
    /// store's caches and memtables (counted by the bench's allocator).
    pub heap_after_mb: f64,
    /// What dropping the engine freed: its cached states and recent ids, really held, against
    /// `cache_bytes`, the engine's estimate.
    pub engine_heap_mb: f64,
    pub restart_open_ms: f64,
    pub restart_first_batch_ms: f64,
    /// The generations of kept keys the store wrote.
    pub kept_generations: u32,
    /// Where the store's writes went, largest first.
    pub write_volume: Vec<VolumeRow>,
}

/// The report, or none with `--pure-only` (the pure fold's rates are printed as it goes).
pub fn run(args: HistoryArgs) -> Result<Option<HistoryReport>> {
    let rules = example_rules();
    let started = Instant::now();
    let options = omnifold_workload::WorkloadOptions::bench_over(args.skus, args.events, args.days);
    let events = omnifold_workload::generate(&rules, &options);
    let generate_s = started.elapsed().as_secs_f64();
    eprintln!("generated {} events over {} skus in {generate_s:.1} s", events.len(), args.skus);
    crate::heap::start_counting();
    let (pure, pure_allocations) =
        counting_allocations(|| if args.skip_pure { Vec::new() } else { pure_deciles(&rules, &events) });
    let pure_allocations_per_event = pure_allocations as f64 / events.len() as f64;
    if !args.skip_pure {
        eprintln!("pure fold: {pure_allocations_per_event:.1} allocations per event");
    }
    if args.pure_only {
        return Ok(None);
    }
    let held_before = crate::heap::held_bytes();
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    if let Some(keys) = args.generation_keys {
        store.set_keys_per_generation(keys);
    }
    let options = EngineOptions {
        state_cache_bytes: args.state_cache_mb << 20,
        key_filter_bytes: args.key_filter_mb << 20,
        ..EngineOptions::default()
    };
    let mut pipeline = Pipeline::with_engine(rules.clone(), store.clone(), args.partitions, options);
    let rss_before_mb = rss_mb();

    let tenth = events.len().div_ceil(10);
    let mut deciles = Vec::new();
    let mut threads_cpu = Vec::new();
    let mut store_reads = Vec::new();
    let mut total = BatchStats::default();
    let mut fold_commit_s = 0.0;
    let allocations_before = crate::heap::allocations();
    for (n, part) in events.chunks(tenth).enumerate() {
        let mut timed = 0.0;
        let cpu_before = ThreadsCpu::now();
        let reads_before = pipeline.engine_stats();
        for batch in part.chunks(args.batch) {
            let started = Instant::now();
            let stats = pipeline.run_batch(batch)?;
            timed += started.elapsed().as_secs_f64();
            store.confirm_sent(&pipeline.take_committed(), &Default::default())?;
            total.events += stats.events;
            total.outputs += stats.outputs;
        }
        fold_commit_s += timed;
        threads_cpu.push(ThreadsCpu::now().per_100k_since(&cpu_before, part.len()));
        store_reads.push(StoreReads::per_1000(&reads_before, &pipeline.engine_stats(), part.len()));
        let rate = part.len() as f64 / timed;
        eprintln!("tenth {}: {:.0} events/s", n + 1, rate);
        deciles.push(Decile { events_folded: total.events, events_per_s: rate });
    }
    pipeline.finish()?;
    let write_volume = volume_rows(pipeline.write_volume(), total.events);
    let allocations_per_event =
        (crate::heap::allocations() - allocations_before) as f64 / total.events.max(1) as f64;
    let engine = pipeline.engine_stats();
    let (cache_bytes, cache_skus) = (engine.cached_bytes, engine.cached_skus);
    let rss_after_mb = rss_mb();
    let rss_peak_mb = status_kb(None, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    let heap_after_mb = mib(crate::heap::held_bytes() - held_before);
    drop(pipeline);
    let engine_heap_mb = heap_after_mb - mib(crate::heap::held_bytes());
    let (live_entries, live_bytes) = store.live_size()?;
    let kept_generations = store.kept_generation() + 1;
    store.flush()?;
    let store_bytes = dir_size(dir.path());

    // A restart: the offsets continue where the log ended; the first batch is the log's
    // first events again (all duplicates now), which reads ids and states from the store.
    drop(store);
    let started = Instant::now();
    let store = Store::open(dir.path())?;
    let restart_open_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut pipeline = Pipeline::with_engine(rules, store, args.partitions, options);
    let started = Instant::now();
    pipeline.run_batch(&events[..args.batch.min(events.len())])?;
    pipeline.finish()?;
    let restart_first_batch_ms = started.elapsed().as_secs_f64() * 1e3;

    let first = deciles.first().map_or(0.0, |d| d.events_per_s);
    let last = deciles.last().map_or(0.0, |d| d.events_per_s);
    let report = HistoryReport {
        events: total.events,
        skus: args.skus,
        days: args.days,
        batch: args.batch,
        state_cache_mb: args.state_cache_mb,
        generate_s,
        fold_commit_s,
        events_per_s: total.events as f64 / fold_commit_s,
        deciles,
        last_over_first: if first > 0.0 { last / first } else { 0.0 },
        threads_cpu,
        store_reads,
        pure_deciles: pure,
        pure_allocations_per_event,
        allocations_per_event,
        outputs: total.outputs,
        store_bytes,
        live_bytes,
        live_entries,
        cache_bytes,
        cache_skus,
        state_loads: engine.loads,
        record_reads: engine.record_reads,
        recent_line_hits: engine.recent_line_hits,
        rss_before_mb,
        rss_after_mb,
        rss_peak_mb,
        heap_after_mb,
        engine_heap_mb,
        restart_open_ms,
        restart_first_batch_ms,
        kept_generations,
        write_volume,
    };
    std::fs::create_dir_all(&args.report)?;
    std::fs::write(args.report.join("history.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(args.report.join("history.svg"), svg(&report))?;
    std::fs::write(args.report.join("history.md"), markdown(&report))?;
    Ok(Some(report))
}

fn volume_rows(volume: &crate::WriteVolume, events: usize) -> Vec<VolumeRow> {
    let per_event = |n: u64| n as f64 / events.max(1) as f64;
    let rows = volume.largest_first().into_iter();
    rows.map(|(kind, v)| VolumeRow {
        kind,
        keys_per_event: per_event(v.keys),
        bytes_per_event: per_event(v.bytes),
    })
    .collect()
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// What `work` returns, and the heap blocks allocated while it ran.
fn counting_allocations<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = crate::heap::allocations();
    let done = work();
    (done, crate::heap::allocations() - before)
}

/// The pure fold's rate per tenth of the log, one core, state held whole in memory.
fn pure_deciles(rules: &omnifold_domain::Rules, events: &[omnifold_proto::Event]) -> Vec<Decile> {
    let fold = omnifold_domain::Fold::new(rules.clone());
    let mut state = omnifold_domain::PartitionState::default();
    let mut folded = 0;
    let mut deciles = Vec::new();
    for part in events.chunks(events.len().div_ceil(10)) {
        let started = Instant::now();
        for event in part {
            std::hint::black_box(fold.apply(&mut state, event));
        }
        folded += part.len();
        deciles.push(Decile {
            events_folded: folded,
            events_per_s: part.len() as f64 / started.elapsed().as_secs_f64(),
        });
    }
    eprintln!("pure fold per tenth: {:?}", deciles.iter().map(|d| d.events_per_s as u64).collect::<Vec<_>>());
    deciles
}

fn rss_mb() -> f64 {
    status_kb(None, "VmRSS").unwrap_or(0) as f64 / 1024.0
}

pub fn markdown(r: &HistoryReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Fold + store commit over history\n\n{} events over {} SKUs and {} days, batches of {}, state cache {} MiB. \
         Fold + commit {:.0} events/s overall ({:.1} s); generating the events took {:.1} s.\n",
        r.events, r.skus, r.days, r.batch, r.state_cache_mb, r.events_per_s, r.fold_commit_s, r.generate_s
    );
    let _ = writeln!(
        out,
        "| events folded | fold + commit, events/s in this tenth | pure fold alone |\n|---:|---:|---:|"
    );
    for (n, d) in r.deciles.iter().enumerate() {
        let pure = r.pure_deciles.get(n).map_or("-".to_string(), |p| format!("{:.0}", p.events_per_s));
        let _ = writeln!(out, "| {} | {:.0} | {pure} |", d.events_folded, d.events_per_s);
    }
    let _ = writeln!(
        out,
        "\nLast tenth / first tenth: **{:.2}**. Store on disk {:.1} MB for {:.1} MB of live keys and values \
         ({} entries): **{:.2}x**, kept keys in {} generations. Engine cache at the end: {:.1} MB estimated over {} SKUs; {} SKU states and {} order lines or \
         promotions read from the store ({} lines found among those written lately); process RSS \
         {:.0} MB before folding (the generated events) and {:.0} MB after, {:.0} MB at its peak; heap grown by {:.0} MiB, of which \
         dropping the engine freed {:.0} MiB. Heap blocks allocated per event: {:.1} folding and committing (every thread){}. \
         Restart: store open {:.1} ms, first batch {:.1} ms.",
        r.last_over_first,
        r.store_bytes as f64 / 1e6,
        r.live_bytes as f64 / 1e6,
        r.live_entries,
        r.store_bytes as f64 / r.live_bytes.max(1) as f64,
        r.kept_generations,
        r.cache_bytes as f64 / 1e6,
        r.cache_skus,
        r.state_loads,
        r.record_reads,
        r.recent_line_hits,
        r.rss_before_mb,
        r.rss_after_mb,
        r.rss_peak_mb,
        r.heap_after_mb,
        r.engine_heap_mb,
        r.allocations_per_event,
        match r.pure_deciles.is_empty() {
            true => String::new(),
            false => format!(", {:.1} by the pure fold", r.pure_allocations_per_event),
        },
        r.restart_open_ms,
        r.restart_first_batch_ms
    );
    let _ = writeln!(
        out,
        "\nCPU seconds per 100,000 events, by thread (the store's workers flush and compact):\n\n\
         | tenth | fold loop | persister | store workers | other |\n|---:|---:|---:|---:|---:|"
    );
    for (n, cpu) in r.threads_cpu.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            n + 1,
            cpu.fold_loop,
            cpu.persister,
            cpu.store_workers,
            cpu.other
        );
    }
    let _ = writeln!(
        out,
        "\nThe engine's reads of the store per 1,000 events (what its recent sets and key filter could not answer):\n\n\
         | tenth | event ids | lines and promotions | SKU states |\n|---:|---:|---:|---:|"
    );
    for (n, reads) in r.store_reads.iter().enumerate() {
        let _ =
            writeln!(out, "| {} | {:.2} | {:.2} | {:.2} |", n + 1, reads.ids, reads.records, reads.states);
    }
    let _ = writeln!(
        out,
        "\nWhat the batches handed the store, per event (each byte goes through the journal and a memtable; what is kept, \
         through every compaction after):\n\n| kind | keys written per event | bytes per event |\n|---|---:|---:|"
    );
    for row in &r.write_volume {
        let _ = writeln!(out, "| {} | {:.2} | {:.1} |", row.kind, row.keys_per_event, row.bytes_per_event);
    }
    out
}

/// A line chart of the rate against events folded, with its figures in `data-` attributes.
pub fn svg(r: &HistoryReport) -> String {
    let (w, h, pad) = (640.0, 320.0, 48.0);
    let max_rate = r.deciles.iter().map(|d| d.events_per_s).fold(1.0, f64::max) * 1.1;
    let max_events = r.events.max(1) as f64;
    let x = |events: usize| pad + (events as f64 / max_events) * (w - 2.0 * pad);
    let y = |rate: f64| h - pad - (rate / max_rate) * (h - 2.0 * pad);
    let points: Vec<String> =
        r.deciles.iter().map(|d| format!("{:.1},{:.1}", x(d.events_folded), y(d.events_per_s))).collect();
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"20\">fold + commit rate against events folded ({} SKUs)</text>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} events</text>\n\
         <text x=\"4\" y=\"{}\">{:.0}/s</text>\n<text x=\"4\" y=\"{}\">0</text>\n\
         <polyline fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\" points=\"{}\"/>\n",
        r.skus,
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        w - pad,
        h - pad + 20.0,
        r.events,
        pad + 4.0,
        max_rate,
        h - pad,
        points.join(" ")
    );
    for d in &r.deciles {
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#2563eb\" data-events=\"{}\" data-rate=\"{:.0}\"/>",
            x(d.events_folded),
            y(d.events_per_s),
            d.events_folded,
            d.events_per_s
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_history_reports_every_tenth_and_a_chart() {
        let dir = tempfile::tempdir().unwrap();
        let args = HistoryArgs {
            events: 20_000,
            skus: 20,
            batch: 500,
            days: 60,
            partitions: 3,
            state_cache_mb: 1,
            key_filter_mb: 1,
            skip_pure: false,
            pure_only: false,
            generation_keys: Some(5_000),
            report: dir.path().to_path_buf(),
        };
        let report = run(args).unwrap().expect("a report");
        assert_eq!(report.events, 20_000);
        // some 36,000 kept keys (an id per event, most of a line)
        assert!(report.kept_generations >= 6, "{} generations", report.kept_generations);
        assert_eq!(report.deciles.len(), 10);
        assert_eq!(report.deciles.last().unwrap().events_folded, 20_000);
        assert!(report.live_bytes > 0 && report.store_bytes > 0);
        // each SKU is looked for in the store once at least (its first event), and shipments
        // find the lines they name, unloaded after each batch, mostly among those written lately
        assert!(report.state_loads >= 20, "{} loads", report.state_loads);
        assert!(report.recent_line_hits > report.record_reads, "{report:?}");
        let svg = std::fs::read_to_string(dir.path().join("history.svg")).unwrap();
        assert_eq!(svg.matches("<circle").count(), 10);
        let markdown = std::fs::read_to_string(dir.path().join("history.md")).unwrap();
        assert!(markdown.contains("| 20000 |"));
        // an id per event, and the outbox's records are the most bytes (largest first)
        let ids = report.write_volume.iter().find(|row| row.kind == "accepted event ids").expect("ids");
        assert_eq!(ids.keys_per_event, 1.0);
        assert_eq!(report.write_volume[0].kind, crate::OUTBOX_RECORDS, "{:?}", report.write_volume);
        assert!(markdown.contains("| accepted event ids | 1.00 |"), "{markdown}");
        // the fold loop's CPU is counted in every tenth, the persister's from the first batch on
        assert_eq!(report.threads_cpu.len(), 10);
        let (fold_loop, persister): (f64, f64) =
            report.threads_cpu.iter().fold((0.0, 0.0), |(f, p), cpu| (f + cpu.fold_loop, p + cpu.persister));
        assert!(fold_loop > 0.0 && persister > 0.0, "{:?}", report.threads_cpu);
        assert!(markdown.contains("| tenth | fold loop | persister | store workers | other |"));
        // the tenths' reads add up to the engine's; the first tenth loads every SKU
        assert_eq!(report.store_reads.len(), 10);
        let loads: f64 = report.store_reads.iter().map(|reads| reads.states * 2.0).sum();
        assert_eq!(loads.round() as u64, report.state_loads, "{:?}", report.store_reads);
        assert!(
            report.store_reads[0].states >= 10.0,
            "20 skus over 2,000 events: {:?}",
            report.store_reads[0]
        );
        assert!(markdown.contains("| tenth | event ids | lines and promotions | SKU states |"), "{markdown}");
        // counted only under the bench's counting allocator (this test runs on the system's)
        assert!(
            markdown.contains("Heap blocks allocated per event") && markdown.contains("by the pure fold")
        );
    }
}
