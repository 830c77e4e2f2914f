//! `omnifold-coordinator`: see `omnifold_coordinator::cli`.

/// mimalloc, set up as `omnifold_runtime::allocator` says.
#[global_allocator]
static ALLOCATOR: omnifold_runtime::allocator::Allocator = omnifold_runtime::allocator::Allocator;

fn main() -> anyhow::Result<()> {
    omnifold_runtime::allocator::purge_whole_huge_pages();
    omnifold_coordinator::cli::main()
}
