//! The bytes the process's allocations hold right now: the global allocator wrapped with a
//! counter, so the benchmark can tell the state engine's real heap from its estimate and from
//! what the allocator keeps resident after a free.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

/// An allocator that counts the bytes held through it once [`start_counting`] was called;
/// before, it costs one relaxed load per call, so the other benchmarks are not slowed.
pub struct Counting<A>(pub A);

static COUNTING: AtomicBool = AtomicBool::new(false);

/// One counter per thread, each on its own cache line and written only by its thread, so a
/// count is a plain load and store. With a single counter, the fold's thread and the store's
/// compaction threads bounced its line between the cores at every allocation; with shared
/// counters, the locked add alone was a tenth of the fold + commit profile. Threads beyond
/// [`OWNED`] share one counter with a locked add. Signed: a block may be freed by another
/// thread than the one that allocated it, or allocated before counting started and freed
/// after; only the sum means anything.
const OWNED: usize = 64;

/// Bytes held, and blocks handed out (a reallocation that moves counts as one).
#[repr(align(128))]
struct Counter {
    bytes: AtomicIsize,
    blocks: AtomicUsize,
}

impl Counter {
    const fn new() -> Self {
        Counter { bytes: AtomicIsize::new(0), blocks: AtomicUsize::new(0) }
    }
}

static HELD: [Counter; OWNED] = [const { Counter::new() }; OWNED];
static SHARED: Counter = Counter::new();
static NEXT_OWNER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // const and without drop glue, so reading it never allocates (this runs inside the
    // allocator) and works while a thread is torn down
    static OWNER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Counts from now on; [`held_bytes`] is relative to this instant.
pub fn start_counting() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Bytes allocated and not yet freed since [`start_counting`], through a [`Counting`] global
/// allocator.
pub fn held_bytes() -> isize {
    HELD.iter().chain([&SHARED]).map(|counter| counter.bytes.load(Ordering::Relaxed)).sum()
}

/// Blocks allocated since [`start_counting`], by every thread: with [`held_bytes`], what a
/// benchmark's allocations cost per event (each a call into the allocator, and on the fold's
/// thread most often a cache miss on the block handed out).
pub fn allocations() -> usize {
    HELD.iter().chain([&SHARED]).map(|counter| counter.blocks.load(Ordering::Relaxed)).sum()
}

/// The calling thread's own counter, if it has one.
fn owned_counter() -> Option<&'static Counter> {
    let index = OWNER.with(|owner| {
        if owner.get() == usize::MAX {
            owner.set(NEXT_OWNER.fetch_add(1, Ordering::Relaxed));
        }
        owner.get()
    });
    HELD.get(index)
}

/// Counts `bytes` more held and `blocks` more handed out.
fn count(bytes: isize, blocks: usize) {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    match owned_counter() {
        // only this thread writes it; others only read the sums
        Some(counter) => {
            counter.bytes.store(counter.bytes.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
            counter.blocks.store(counter.blocks.load(Ordering::Relaxed) + blocks, Ordering::Relaxed);
        }
        None => {
            SHARED.bytes.fetch_add(bytes, Ordering::Relaxed);
            SHARED.blocks.fetch_add(blocks, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to the wrapped allocator unchanged; only a counter is added.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.0.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize, 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize, 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        count(-(layout.size() as isize), 0);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize, usize::from(new != ptr));
        }
        new
    }
}
