//! `omnifold-reporter`: see `omnifold_reporter::cli`.

/// The fold allocates many small, short-lived values; mimalloc serves them with less work
/// than the system allocator (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    omnifold_reporter::cli::main()
}
