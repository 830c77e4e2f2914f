//! The bytes the process's allocations hold right now: the global allocator wrapped with a
//! counter, so the benchmark can tell the state engine's real heap from its estimate and from
//! what the allocator keeps resident after a free.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// An allocator that counts the bytes held through it once [`start_counting`] was called;
/// before, it costs one relaxed load per call, so the other benchmarks are not slowed.
pub struct Counting<A>(pub A);

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Signed: a block allocated before counting started may be freed after.
static HELD: AtomicIsize = AtomicIsize::new(0);

/// Counts from now on; [`held_bytes`] is relative to this instant.
pub fn start_counting() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Bytes allocated and not yet freed since [`start_counting`], through a [`Counting`] global
/// allocator.
pub fn held_bytes() -> isize {
    HELD.load(Ordering::Relaxed)
}

fn count(bytes: usize, sign: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        HELD.fetch_add(sign * bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the wrapped allocator unchanged; only a counter is added.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.0.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        count(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size, 1);
            count(layout.size(), -1);
        }
        new
    }
}
