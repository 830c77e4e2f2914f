//! `omnifold-coordinator`: see `omnifold_coordinator::cli`.

/// The fold allocates many small, short-lived values; mimalloc serves them with less work
/// than the system allocator (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    omnifold_coordinator::cli::main()
}
