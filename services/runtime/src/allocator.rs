//! The allocator every omnifold binary runs on, and the one setting of it omnifold changes.
//!
//! The fold allocates many small, short-lived values; mimalloc serves them with less work than
//! the system allocator (`services/bench/HISTORY.md`). mimalloc asks the kernel for
//! transparent huge pages (2 MiB) for its arenas, but by default it gives freed memory back
//! ("purges") in 4 KiB pieces: each purge splits a huge page, and the next allocation there
//! faults the memory back in, zeroing it, one piece at a time. The coordinator's batches free
//! and allocate the same room over and over, so it paid for that again and again: over a
//! 73-day history, 105,000 page faults against 14,000 once purges take whole huge pages
//! (`services/bench/HISTORY.md`, stop 38).
//!
//! Architecture invariant: a binary sets this up first thing in `main`, before it starts a
//! thread; nothing else in omnifold touches the allocator's settings.

use std::ffi::{c_int, c_long};

/// The allocator to declare as `#[global_allocator]`.
pub use mimalloc::MiMalloc as Allocator;

/// `mi_option_allow_thp`, by its place in mimalloc 3's `mi_option_t`: the Rust bindings do not
/// name it. A test checks the number against the environment variable mimalloc reads for it.
const OPTION_ALLOW_THP: c_int = 43;
/// Huge pages allowed, and purged only whole (mimalloc's own setting for it).
const HUGE_PAGES_PURGED_WHOLE: c_long = 2;
/// mimalloc's environment variable for the option: a user who sets it decides.
const ALLOW_THP_VARIABLE: &str = "MIMALLOC_ALLOW_THP";

/// Purges whole huge pages only, unless the user set `MIMALLOC_ALLOW_THP` themselves. On a
/// kernel without transparent huge pages mimalloc purges by the page as before.
pub fn purge_whole_huge_pages() {
    if std::env::var_os(ALLOW_THP_VARIABLE).is_some() {
        return;
    }
    // SAFETY: mimalloc's options are plain values, set here before the binary starts a thread;
    // mimalloc reads this one when it purges, and no allocation depends on it
    unsafe { libmimalloc_sys::mi_option_set(OPTION_ALLOW_THP, HUGE_PAGES_PURGED_WHOLE) }
}

/// The option's value now.
#[cfg(test)]
fn allow_thp() -> c_long {
    // SAFETY: reads an option
    unsafe { libmimalloc_sys::mi_option_get(OPTION_ALLOW_THP) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run as a child of the test below, with the variable set.
    #[test]
    #[ignore = "run by the_option_number_is_mimallocs_allow_thp in a child process"]
    fn print_allow_thp() {
        println!("allow_thp={}", allow_thp());
    }

    #[test]
    fn the_option_number_is_mimallocs_allow_thp() {
        // mimalloc reads its options from the environment when it starts, so a child process
        // started with the variable shows which option the number names
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "allocator::tests::print_allow_thp", "--nocapture"])
            .env(ALLOW_THP_VARIABLE, "7")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("allow_thp=7"), "option {OPTION_ALLOW_THP} is not allow_thp: {stdout}");
    }

    #[test]
    fn purges_take_whole_huge_pages_unless_the_user_chose() {
        let before = allow_thp();
        purge_whole_huge_pages();
        let expected = if std::env::var_os(ALLOW_THP_VARIABLE).is_some() { before } else { 2 };
        assert_eq!(allow_thp(), expected);
    }
}
