//! Watched directories: the B2B drop directory and Amazon's notification directory. Each file
//! is processed once, remembered by name and SHA-256 in a small append-only state file; a
//! file with bad rows publishes its good rows and gets `<file>.rejects.csv` beside it,
//! naming each bad row and why.
//!
//! Listing, reading, hashing, mapping, writing rejects and the state file's fsync all run on
//! tokio's blocking pool: only publishing is awaited on the runtime, so a large file or a
//! slow disk never stalls the receivers sharing it.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::amazon::{AmazonMapping, is_notification, notification_id};
use crate::b2b::{B2bMapping, is_x12};
use crate::deliver::{Delivered, deliver};
use crate::mapping::{Malformed, Mapped, Refusal};
use crate::publish::{PublishError, Sink};

/// An append-only set of keys in a text file, one per line.
#[derive(Debug)]
pub struct ProcessedLog {
    path: PathBuf,
    keys: HashSet<String>,
}

impl ProcessedLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let keys = match std::fs::read_to_string(path) {
            Ok(text) => text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        Ok(ProcessedLog { path: path.to_path_buf(), keys })
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Remembers `key`, durably, before returning.
    pub fn record(&mut self, key: &str) -> std::io::Result<()> {
        if self.keys.contains(key) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        writeln!(file, "{key}")?;
        file.sync_all()?;
        self.keys.insert(key.to_string());
        Ok(())
    }
}

/// What one file gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    pub name: String,
    pub published: usize,
    pub rejected: usize,
    /// Where the rejects were written, if any.
    pub rejects: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot read {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("file work was cancelled: the runtime is shutting down")]
    Cancelled,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |error| FilesError::Io { path: path.to_path_buf(), error }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs blocking file work on tokio's blocking pool; a panic there stays a panic.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, FilesError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(FilesError::Cancelled),
    }
}

/// The files of `dir` to look at, by name: no hidden files, no reject files, not `skip`.
fn candidates(dir: &Path, skip: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p != skip)
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && !name.ends_with(".rejects.csv")
                && !name.ends_with(".tmp")
                && !name.ends_with(".part")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Writes `<file>.rejects.csv`: `line,reason,message` per refused row.
pub fn write_rejects(file: &Path, refused: &[Refusal]) -> std::io::Result<PathBuf> {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".rejects.csv");
    let path = file.with_file_name(name);
    let mut writer = csv::Writer::from_path(&path)?;
    writer.write_record(["row", "reason", "message"])?;
    for refusal in refused {
        writer.write_record([refusal.item.as_str(), refusal.reason, refusal.message.as_str()])?;
    }
    writer.flush()?;
    Ok(path)
}

/// One file not processed before, as read.
#[derive(Debug)]
pub struct NewFile {
    pub path: PathBuf,
    pub name: String,
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes, in hex.
    pub hash: String,
}

/// What a new file comes to.
#[derive(Debug)]
pub enum FileMapping {
    /// A payload already delivered from another file: the file is remembered, nothing sent.
    Known,
    /// Events to deliver, and a key to remember once they are (an Amazon NotificationId).
    New { mapped: Mapped, remember: Option<String> },
}

/// What a watched directory holds: how its files are remembered and become events.
pub trait FileKind: Send + Sync + 'static {
    /// The adapter its deliveries and rejections are counted under.
    const ADAPTER: &'static str;

    /// The state file's key for a file of this name and content.
    fn file_key(name: &str, hash: &str) -> String;

    /// Maps one new file. Runs on the blocking pool, so it may read the file's metadata.
    fn map_file(&self, file: &NewFile, log: &ProcessedLog) -> FileMapping;
}

/// The B2B drop directory: X12 850 and CSV files.
impl FileKind for B2bMapping {
    const ADAPTER: &'static str = "drop_dir";

    fn file_key(name: &str, hash: &str) -> String {
        format!("{name}\t{hash}")
    }

    fn map_file(&self, file: &NewFile, _log: &ProcessedLog) -> FileMapping {
        let mapped = match std::str::from_utf8(&file.bytes) {
            Ok(text) if is_x12(text) => self.map_x12(text),
            Ok(text) => self.map_csv(text),
            Err(_) => malformed(Malformed::new("the file is not UTF-8 text")),
        };
        let mut mapped = mapped;
        self.levels.apply(&mut mapped);
        FileMapping::New { mapped, remember: None }
    }
}

/// Amazon's notification directory: `*.json` notifications (deduplicated on NotificationId)
/// or Orders API responses (v0 getOrderItems, v2026-01-01 getOrder), and `*.tsv`/`*.txt` MYI
/// inventory reports.
impl FileKind for AmazonMapping {
    const ADAPTER: &'static str = "amazon";

    fn file_key(name: &str, hash: &str) -> String {
        format!("file\t{name}\t{hash}")
    }

    fn map_file(&self, file: &NewFile, log: &ProcessedLog) -> FileMapping {
        let NewFile { path, name, bytes, hash } = file;
        let mapped = if name.ends_with(".tsv") || name.ends_with(".txt") {
            self.map_myi_report(&String::from_utf8_lossy(bytes), &hash[..16], modified_ms(path), None)
        } else if is_notification(bytes) {
            return self.notification_file(bytes, log);
        } else {
            self.map_order_items(bytes, modified_ms(path)).unwrap_or_else(malformed)
        };
        FileMapping::New { mapped: self.marked(mapped), remember: None }
    }
}

impl AmazonMapping {
    fn notification_file(&self, bytes: &[u8], log: &ProcessedLog) -> FileMapping {
        let id = match notification_id(bytes) {
            Ok(id) => id,
            Err(error) => return FileMapping::New { mapped: malformed(error), remember: None },
        };
        let key = format!("notification\t{id}");
        if log.contains(&key) {
            metrics::counter!("omnifold_connector_duplicates_total", "adapter" => "amazon").increment(1);
            return FileMapping::Known;
        }
        let mapped = self.map_notification(bytes).map(|mapped| self.marked(mapped)).unwrap_or_else(malformed);
        FileMapping::New { mapped, remember: Some(key) }
    }
}

fn malformed(error: Malformed) -> Mapped {
    let mut mapped = Mapped::default();
    mapped.refuse("file", "malformed", error.0);
    mapped
}

/// The file's modification time in Unix ms: the only date an MYI report or a bare
/// getOrderItems response has.
fn modified_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(omnifold_runtime::wall_clock_ms, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new file mapped, waiting for its events to be delivered.
struct Pending {
    path: PathBuf,
    name: String,
    key: String,
    mapped: Mapped,
    remember: Option<String>,
}

/// A watched directory of one kind of files, and the state file remembering what was done.
pub struct WatchedDir<K> {
    dir: PathBuf,
    state: PathBuf,
    kind: Arc<K>,
    // locked on the blocking pool only, never across an await
    log: Arc<Mutex<ProcessedLog>>,
}

/// The B2B drop directory.
pub type DropDir = WatchedDir<B2bMapping>;
/// Amazon's notification directory.
pub type AmazonDir = WatchedDir<AmazonMapping>;

impl WatchedDir<B2bMapping> {
    /// The drop directory, remembering files in `state` (default `<dir>/.omnifold-processed`).
    pub fn open(dir: &Path, state: Option<&Path>, mapping: B2bMapping) -> Result<Self, FilesError> {
        Self::with_state(dir, state, mapping)
    }
}

impl WatchedDir<AmazonMapping> {
    /// Amazon's directory, remembering files in `<dir>/.omnifold-processed`.
    pub fn open(dir: &Path, mapping: AmazonMapping) -> Result<Self, FilesError> {
        Self::with_state(dir, None, mapping)
    }
}

impl<K: FileKind> WatchedDir<K> {
    /// Creates `dir` if needed and reads the state file. Blocking.
    pub fn with_state(dir: &Path, state: Option<&Path>, kind: K) -> Result<Self, FilesError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let state = state.map_or_else(|| dir.join(".omnifold-processed"), Path::to_path_buf);
        let log = ProcessedLog::open(&state).map_err(io(&state))?;
        let log = Arc::new(Mutex::new(log));
        Ok(WatchedDir { dir: dir.to_path_buf(), state, kind: Arc::new(kind), log })
    }

    /// Processes every new file once; returns what each gave.
    pub async fn scan<S: Sink>(&mut self, sink: &mut S) -> Result<Vec<FileReport>, FilesError> {
        let (dir, state) = (self.dir.clone(), self.state.clone());
        let mut reports = Vec::new();
        for path in off_runtime(move || candidates(&dir, &state)).await? {
            if let Some(file) = self.read_new(path).await? {
                reports.push(self.publish(file, sink).await?);
            }
        }
        Ok(reports)
    }

    /// Reads, hashes and maps the file unless it was processed before.
    async fn read_new(&self, path: PathBuf) -> Result<Option<Pending>, FilesError> {
        let (kind, log, state) = (self.kind.clone(), self.log.clone(), self.state.clone());
        off_runtime(move || {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let hash = sha256_hex(&bytes);
            let key = K::file_key(&name, &hash);
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            if log.contains(&key) {
                return Ok(None);
            }
            let file = NewFile { path, name, bytes, hash };
            match kind.map_file(&file, &log) {
                FileMapping::Known => log.record(&key).map(|()| None).map_err(io(&state)),
                FileMapping::New { mapped, remember } => {
                    let NewFile { path, name, .. } = file;
                    Ok(Some(Pending { path, name, key, mapped, remember }))
                }
            }
        })
        .await
    }

    /// Publishes the file's events, then writes its rejects and remembers it.
    async fn publish<S: Sink>(&self, file: Pending, sink: &mut S) -> Result<FileReport, FilesError> {
        let Pending { path, name, key, mapped, remember } = file;
        let delivered = deliver(sink, K::ADAPTER, mapped).await?;
        let (log, state) = (self.log.clone(), self.state.clone());
        let report = off_runtime(move || {
            let report = finish(&path, name, &delivered)?;
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            for key in remember.iter().chain([&key]) {
                log.record(key).map_err(io(&state))?;
            }
            Ok(report)
        })
        .await?;
        let FileReport { name, published, rejected, .. } = &report;
        tracing::info!(adapter = K::ADAPTER, file = %name, published, rejected, "file processed");
        Ok(report)
    }
}

fn finish(path: &Path, name: String, delivered: &Delivered) -> Result<FileReport, FilesError> {
    let rejects = if delivered.refused.is_empty() {
        None
    } else {
        Some(write_rejects(path, &delivered.refused).map_err(io(path))?)
    };
    Ok(FileReport { name, published: delivered.published, rejected: delivered.refused.len(), rejects })
}

/// A watched directory ready to run: its files, the sink their events go to, and how often
/// it is looked at.
pub struct DirSource<K, S> {
    dir: WatchedDir<K>,
    sink: S,
    poll: Duration,
}

impl<K: FileKind, S: Sink> DirSource<K, S> {
    /// Opens the directory and its state file off the runtime.
    pub async fn open(
        dir: PathBuf,
        state: Option<PathBuf>,
        kind: K,
        sink: S,
        poll: Duration,
    ) -> Result<Self, FilesError> {
        let dir = off_runtime(move || WatchedDir::with_state(&dir, state.as_deref(), kind)).await?;
        Ok(DirSource { dir, sink, poll })
    }

    /// Processes the files present once.
    pub async fn run_once(&mut self) -> Result<Vec<FileReport>, FilesError> {
        self.dir.scan(&mut self.sink).await
    }

    /// Processes new files every poll until `shutdown` resolves; a scan in progress is
    /// finished first, so that no delivered file is left unremembered.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), FilesError> {
        tracing::info!(adapter = K::ADAPTER, dir = %self.dir.dir.display(), "watching the directory");
        tokio::pin!(shutdown);
        loop {
            self.run_once().await?;
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}
