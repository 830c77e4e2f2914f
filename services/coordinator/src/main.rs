//! `omnifold-coordinator`: see `omnifold_coordinator::cli`.

fn main() -> anyhow::Result<()> {
    omnifold_coordinator::cli::main()
}
