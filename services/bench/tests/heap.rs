//! The counting allocator counts what is held across threads: a block allocated on one
//! thread and freed on another leaves the sum where it was, and each block handed out is
//! counted once. One test: the count is the
//! process's, so tests running side by side would see each other's blocks.

use omnifold_bench::heap::{Counting, allocations, held_bytes, start_counting};

#[global_allocator]
static ALLOCATOR: Counting<std::alloc::System> = Counting(std::alloc::System);

#[test]
fn counts_blocks_held_whatever_thread_frees_them() {
    start_counting();
    let before = held_bytes();
    let allocated_before = allocations();
    let blocks: Vec<Vec<u8>> = std::thread::spawn(|| (0..8).map(|_| vec![1u8; 1 << 20]).collect())
        .join()
        .expect("the allocating thread");
    let held = held_bytes() - before;
    assert!(held >= 8 << 20, "8 MiB held, counted {held}");
    let allocated = allocations() - allocated_before;
    assert!(
        (9..20).contains(&allocated),
        "8 blocks and their vector (and the thread's own), counted {allocated}"
    );
    drop(blocks);
    let after = held_bytes() - before;
    assert!(after < 1 << 20, "the blocks freed on another thread are uncounted, {after} left");

    // more threads than have a counter of their own: the rest share one
    let before = held_bytes();
    let allocated_before = allocations();
    let threads: Vec<_> = (0..100).map(|_| std::thread::spawn(|| vec![1u8; 1 << 16])).collect();
    let blocks: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().expect("an allocating thread")).collect();
    let held = held_bytes() - before;
    assert!(held >= 100 << 16, "100 blocks of 64 KiB held, counted {held}");
    assert!(allocations() - allocated_before >= 101, "each thread's block and the vector of them");
    drop(blocks);
    let after = held_bytes() - before;
    assert!(after < 1 << 16, "the blocks freed here are uncounted, {after} left");
}
