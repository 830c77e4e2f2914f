//! High-water marks of absolute stock levels, so that a level older than one already applied
//! never sets on-hand back.
//!
//! A channel that reports absolute levels (Shopify's inventory_levels/update, Amazon's FBA and
//! MFN quantity notifications, FBA inventory reports) can deliver an old level late: a retry
//! that succeeds after later movements, a replay under a new delivery id, an old report dropped
//! again. Its event id follows the fact (what is counted, where, as of when), so a fact the
//! coordinator already accepted is ignored there; a late fact it never saw is not. The marks
//! catch that one: per counted thing (`Level::key`, in the channel's own ids, e.g. a Shopify
//! inventory item at a Shopify location) they keep the time of the newest level applied, and a
//! level older than that is dropped, listed as ignored (`stale_level`) in the answer. A level
//! as old as the mark passes: the same fact again, which the coordinator deduplicates by id.
//!
//! One entry per counted thing, however many updates: the state is bounded by the number of
//! (item, location) pairs. It lives in memory, written through to a sled directory when the
//! source's section names one (`state`), so that it outlives a restart; without it a restart
//! forgets the marks, and only a late fact delivered first after the restart gets through
//! (replays of published facts are still ignored by the coordinator, by id).
//!
//! A mark is raised when the level is mapped, before its event is acknowledged: a delivery
//! answered 503 and delivered again carries the same time, which passes. Marks are shared by
//! everything that maps one channel's levels (Amazon's receiver and its watched directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::mapping::Mapped;

/// The newest level time applied per counted thing; see the module documentation.
pub struct LevelMarks {
    marks: Mutex<BTreeMap<String, i64>>,
    /// Where the marks are written through, if anywhere.
    store: Option<(PathBuf, sled::Db)>,
}

impl std::fmt::Debug for LevelMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.store.as_ref().map(|(path, _)| path.display().to_string());
        f.debug_struct("LevelMarks").field("marks", &self.len()).field("store", &path).finish()
    }
}

impl Default for LevelMarks {
    fn default() -> Self {
        Self::in_memory()
    }
}

/// Why the marks' directory could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the level state {path}: {error}")]
pub struct LevelStateError {
    pub path: PathBuf,
    pub error: String,
}

impl LevelMarks {
    /// Marks kept in memory only: a restart forgets them.
    pub fn in_memory() -> Self {
        LevelMarks { marks: Mutex::new(BTreeMap::new()), store: None }
    }

    /// Marks read from, and written through to, the sled directory `path` (created if
    /// missing). Blocking: call it while building the source.
    pub fn open(path: &Path) -> Result<Self, LevelStateError> {
        let error = |error: &dyn std::fmt::Display| LevelStateError {
            path: path.to_path_buf(),
            error: error.to_string(),
        };
        let db = crate::sled_dir::open(path).map_err(|e| error(&e))?;
        let mut marks = BTreeMap::new();
        for entry in db.iter() {
            let (key, value) = entry.map_err(|e| error(&e))?;
            let key = String::from_utf8(key.to_vec()).map_err(|e| error(&e))?;
            let at = <[u8; 8]>::try_from(value.as_ref())
                .map(i64::from_be_bytes)
                .map_err(|_| error(&format!("the mark of {key} is not 8 bytes")))?;
            marks.insert(key, at);
        }
        Ok(LevelMarks { marks: Mutex::new(marks), store: Some((path.to_path_buf(), db)) })
    }

    /// Marks from `path` when given, else in memory.
    pub fn open_or_in_memory(path: Option<&Path>) -> Result<Self, LevelStateError> {
        path.map_or_else(|| Ok(Self::in_memory()), Self::open)
    }

    /// The number of counted things marked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest level time applied for `key`.
    pub fn last(&self, key: &str) -> Option<i64> {
        self.lock().get(key).copied()
    }

    /// Drops from `mapped` each level older than the last one applied for its key (listed as
    /// ignored, `stale_level`) and raises the marks of the others, in the payload's order.
    pub fn apply(&self, mapped: &mut Mapped) {
        if mapped.levels.is_empty() {
            return;
        }
        let mut marks = self.lock();
        let mut stale = Vec::new();
        for level in std::mem::take(&mut mapped.levels) {
            match marks.get(&level.key) {
                Some(&last) if level.at_ms < last => {
                    mapped.ignore(
                        format!("level {}", level.key),
                        "stale_level",
                        format!(
                            "counted at {} ms, before {last} ms, the last level applied for {}: \
                             an older count would set on-hand back",
                            level.at_ms, level.key
                        ),
                    );
                    stale.push(level.event_id);
                }
                Some(&last) if level.at_ms == last => mapped.levels.push(level),
                _ => {
                    marks.insert(level.key.clone(), level.at_ms);
                    self.write_through(&level.key, level.at_ms);
                    mapped.levels.push(level);
                }
            }
        }
        if !stale.is_empty() {
            mapped.events.retain(|event| !stale.contains(&event.event_id));
        }
    }

    /// Writes one mark to the store; a failure leaves the mark in memory and is logged (sled
    /// flushes its writes within half a second on its own).
    fn write_through(&self, key: &str, at: i64) {
        if let Some((path, db)) = &self.store
            && let Err(error) = db.insert(key.as_bytes(), &at.to_be_bytes())
        {
            tracing::warn!(path = %path.display(), key, %error, "cannot write a level mark; it is kept in memory");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use omnifold_proto::{Body, StockCounted};

    use super::*;

    fn count(mapped: &mut Mapped, id: &str, key: &str, at: i64, on_hand: i64) {
        let body = Body::StockCounted(StockCounted { sku: "S".into(), location_id: "L".into(), on_hand });
        mapped.push_level(id.into(), key.into(), at, body);
    }

    fn ids(mapped: &Mapped) -> Vec<&str> {
        mapped.events.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[test]
    fn an_older_level_is_ignored_and_a_newer_or_equal_one_passes() {
        let marks = LevelMarks::in_memory();
        let mut first = Mapped::default();
        count(&mut first, "b", "item:1", 200, 3);
        marks.apply(&mut first);
        assert_eq!(ids(&first), ["b"]);

        let mut late = Mapped::default();
        count(&mut late, "a", "item:1", 100, 5);
        count(&mut late, "c", "item:2", 100, 7);
        count(&mut late, "b", "item:1", 200, 3);
        marks.apply(&mut late);
        assert_eq!(ids(&late), ["c", "b"], "the older count of item:1 is dropped, the same one passes");
        assert_eq!(late.ignored.len(), 1);
        assert_eq!(late.ignored[0].reason, "stale_level");
        assert_eq!(late.ignored[0].item, "level item:1");
        assert_eq!((marks.last("item:1"), marks.last("item:2"), marks.len()), (Some(200), Some(100), 2));
    }

    #[test]
    fn marks_written_to_a_directory_outlive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levels");
        {
            let marks = LevelMarks::open(&path).unwrap();
            let mut mapped = Mapped::default();
            count(&mut mapped, "b", "item:1", 200, 3);
            marks.apply(&mut mapped);
        }
        let reopened = LevelMarks::open_or_in_memory(Some(&path)).unwrap();
        assert_eq!(reopened.last("item:1"), Some(200));
        let mut late = Mapped::default();
        count(&mut late, "a", "item:1", 100, 5);
        reopened.apply(&mut late);
        assert!(late.events.is_empty());
    }
}
