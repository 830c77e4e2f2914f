//! `omnifold-reporter`: see `omnifold_reporter::cli`.

fn main() -> anyhow::Result<()> {
    omnifold_reporter::cli::main()
}
