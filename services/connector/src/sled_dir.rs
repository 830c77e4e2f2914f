//! The sled directories the connector keeps its own small state in (level marks, SP-API
//! checkpoints, push-back's last pushed decisions), opened the one way.

use std::path::Path;

/// How long an open waits for the directory's lock: sled lets it go when its background
/// flusher drops the database, shortly after the last handle, so a reopen in the same process
/// (a restarted source, a test) can find it briefly held. Held longer, it is another process's.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens (or creates) a sled directory, waiting up to [`LOCK_WAIT`] for a lock another
/// handle of this process is letting go. Blocking.
pub fn open(path: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::open(path) {
            Err(sled::Error::Io(error)) if is_held_lock(&error) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

/// Whether an open failed on a lock held by another handle. sled 0.34 reports that as an
/// error of kind `Other` that names the lock (the lock's own `WouldBlock` is only in its text).
fn is_held_lock(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock || error.to_string().starts_with("could not acquire lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_waits_for_the_lock_of_a_handle_let_go_shortly_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let first = open(&path).unwrap();
        let held = sled::open(&path).unwrap_err();
        assert!(matches!(&held, sled::Error::Io(error) if is_held_lock(error)), "{held}");
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        assert!(open(&path).is_ok(), "the second open waits for the first handle's lock");
        letting_go.join().unwrap();
    }
}
