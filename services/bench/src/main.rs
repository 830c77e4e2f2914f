//! `omnifold-bench`: the end-to-end benchmark of omnifold against a real broker, with its
//! baselines measured in the same run, and the longer runs (`history`, `catch-up`,
//! `scale-out`). See `omnifold_bench::e2e`, the README's "Performance" section for the figures
//! now, and `services/bench/HISTORY.md` for every round's.
//!
//!     cargo run --release -p omnifold-bench -- [--events 1000000] [--skus 10000] [--report target/bench-report]

use clap::{Parser, Subcommand};
use omnifold_bench::catchup::{self, CatchUpArgs};
use omnifold_bench::child::{ChildArgs, LoadStateArgs, child_main, load_state_main};
use omnifold_bench::e2e::{self, RunArgs};
use omnifold_bench::history::{self, HistoryArgs};
use omnifold_bench::scaleout::{self, ScaleOutArgs};

/// mimalloc, set up as `omnifold_runtime::allocator` says (the services' allocator, so that
/// the benchmark measures theirs). Counted, so that `history` can tell the heap the state
/// engine really holds.
#[global_allocator]
static ALLOCATOR: omnifold_bench::heap::Counting<omnifold_runtime::allocator::Allocator> =
    omnifold_bench::heap::Counting(omnifold_runtime::allocator::Allocator);

#[derive(Parser)]
#[command(
    name = "omnifold-bench",
    about = "End-to-end benchmark of omnifold: a real broker, baselines and the coordinator in one run",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one coordinator in this process and reports on stdout (used by the benchmark).
    #[command(hide = true)]
    Coordinator(ChildArgs),
    /// Loads a coordinator store's state as the coordinator does and reports the time taken.
    #[command(hide = true)]
    LoadState(LoadStateArgs),
    /// Folds a long generated history through the state engine and the store, without a broker,
    /// and reports the rate per tenth of the log, the store size and a restart.
    History(HistoryArgs),
    /// Runs the coordinator, then the reporter, over the same event log from empty stores and
    /// reports the reporter's catch-up rate against the coordinator's.
    CatchUp(CatchUpArgs),
    /// Runs 1, 2, 3 ... coordinators in one group over the same log next to a bare consumer,
    /// and times a new member restoring partitions it never owned.
    ScaleOut(ScaleOutArgs),
}

fn main() -> anyhow::Result<()> {
    omnifold_runtime::allocator::purge_whole_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Coordinator(args)) => child_main(args),
        Some(Command::LoadState(args)) => load_state_main(args),
        Some(Command::History(args)) => {
            if let Some(report) = history::run(args)? {
                println!("{}", history::markdown(&report));
            }
            Ok(())
        }
        Some(Command::CatchUp(args)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(catchup::run(args))?;
            println!("{}", report.markdown());
            Ok(())
        }
        Some(Command::ScaleOut(args)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(scaleout::run(args))?;
            println!("{}", report.markdown());
            Ok(())
        }
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(e2e::run(cli.run))?;
            println!("{}", report.markdown());
            Ok(())
        }
    }
}
