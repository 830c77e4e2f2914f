//! Watched directories: the B2B drop directory and Amazon's notification directory. Each file
//! is processed once, remembered by name and SHA-256 in a small append-only state file; a
//! file with bad rows publishes its good rows and gets `<file>.rejects.csv` beside it,
//! naming each bad row and why.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::amazon::{AmazonMapping, is_notification, notification_id};
use crate::b2b::{B2bMapping, is_x12};
use crate::deliver::{Delivered, deliver};
use crate::mapping::{Mapped, Refusal};
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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |error| FilesError::Io { path: path.to_path_buf(), error }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
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

/// The B2B drop directory.
pub struct DropDir {
    pub dir: PathBuf,
    pub mapping: B2bMapping,
    pub log: ProcessedLog,
    state: PathBuf,
}

impl DropDir {
    pub fn open(dir: &Path, state: Option<&Path>, mapping: B2bMapping) -> Result<Self, FilesError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let state = state.map_or_else(|| dir.join(".omnifold-processed"), Path::to_path_buf);
        let log = ProcessedLog::open(&state).map_err(io(&state))?;
        Ok(DropDir { dir: dir.to_path_buf(), mapping, log, state })
    }

    /// Maps one file's text by its kind (X12 or CSV).
    pub fn map_text(&self, text: &str) -> Mapped {
        if is_x12(text) { self.mapping.map_x12(text) } else { self.mapping.map_csv(text) }
    }

    /// Processes every new file once; returns what each gave.
    pub async fn scan<S: Sink>(&mut self, sink: &mut S) -> Result<Vec<FileReport>, FilesError> {
        let mut reports = Vec::new();
        for path in candidates(&self.dir, &self.state)? {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let key = format!("{name}\t{}", sha256_hex(&bytes));
            if self.log.contains(&key) {
                continue;
            }
            let mapped = match std::str::from_utf8(&bytes) {
                Ok(text) => self.map_text(text),
                Err(_) => {
                    let mut mapped = Mapped::default();
                    mapped.refuse("file", "malformed", "the file is not UTF-8 text");
                    mapped
                }
            };
            let delivered = deliver(sink, "drop_dir", mapped).await?;
            let report = finish(&path, name, &delivered)?;
            self.log.record(&key).map_err(io(&self.state))?;
            tracing::info!(file = %report.name, published = report.published, rejected = report.rejected, "drop file processed");
            reports.push(report);
        }
        Ok(reports)
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

/// Amazon's notification directory: `*.json` notifications (deduplicated on NotificationId)
/// or getOrderItems responses, and `*.tsv`/`*.txt` MYI inventory reports.
pub struct AmazonDir {
    pub dir: PathBuf,
    pub mapping: AmazonMapping,
    pub log: ProcessedLog,
    state: PathBuf,
}

impl AmazonDir {
    pub fn open(dir: &Path, mapping: AmazonMapping) -> Result<Self, FilesError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let state = dir.join(".omnifold-processed");
        let log = ProcessedLog::open(&state).map_err(io(&state))?;
        Ok(AmazonDir { dir: dir.to_path_buf(), mapping, log, state })
    }

    pub async fn scan<S: Sink>(&mut self, sink: &mut S) -> Result<Vec<FileReport>, FilesError> {
        let mut reports = Vec::new();
        for path in candidates(&self.dir, &self.state)? {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let hash = sha256_hex(&bytes);
            let key = format!("file\t{name}\t{hash}");
            if self.log.contains(&key) {
                continue;
            }
            let mut notification = None;
            let mapped = if name.ends_with(".tsv") || name.ends_with(".txt") {
                let at = modified_ms(&path);
                self.mapping.map_myi_report(&String::from_utf8_lossy(&bytes), &hash[..16], at, None)
            } else if is_notification(&bytes) {
                match notification_id(&bytes) {
                    Ok(id) if self.log.contains(&format!("notification\t{id}")) => {
                        metrics::counter!("omnifold_connector_duplicates_total", "adapter" => "amazon")
                            .increment(1);
                        self.log.record(&key).map_err(io(&self.state))?;
                        continue;
                    }
                    Ok(id) => {
                        notification = Some(id);
                        self.mapping.map_notification(&bytes).unwrap_or_else(malformed)
                    }
                    Err(e) => malformed(e),
                }
            } else {
                self.mapping.map_order_items(&bytes, modified_ms(&path)).unwrap_or_else(malformed)
            };
            let delivered = deliver(sink, "amazon", mapped).await?;
            let report = finish(&path, name, &delivered)?;
            if let Some(id) = notification {
                self.log.record(&format!("notification\t{id}")).map_err(io(&self.state))?;
            }
            self.log.record(&key).map_err(io(&self.state))?;
            reports.push(report);
        }
        Ok(reports)
    }
}

fn malformed(error: crate::mapping::Malformed) -> Mapped {
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

/// Calls `scan` every `poll` until `shutdown` resolves.
pub async fn watch<F, Fut>(
    poll: Duration,
    shutdown: impl Future<Output = ()>,
    mut scan: F,
) -> Result<(), FilesError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), FilesError>>,
{
    tokio::pin!(shutdown);
    loop {
        scan().await?;
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
