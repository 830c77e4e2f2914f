//! The generic connector: one event per line in the contract's JSON form (CONTRACT.md
//! section 2), from a file or stdin. A line that gives no event (not UTF-8, not an event's
//! JSON, or refused by the publisher's check) is reported with its number and goes to the
//! dead-letter topic with its raw bytes, the reason and its file and line; the lines after it
//! are published as usual.

use std::path::PathBuf;
use std::pin::Pin;

use omnifold_proto::Event;
use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::publish::{DeadLetter, PublishError, PublishOutcome, Publisher};
use crate::sources::SourceError;

/// `omnifold-connector ndjson`: where the lines come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonOptions {
    /// The file to read; stdin when absent or `-`.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// A file's or stdin's lines, ready to publish.
pub struct NdjsonSource {
    input: Box<dyn AsyncBufRead + Unpin + Send>,
    origin: Origin,
    publisher: Publisher,
}

/// Opens the input `options` name; its events and dead letters go to `publisher`.
pub async fn source(options: NdjsonOptions, publisher: Publisher) -> Result<NdjsonSource, SourceError> {
    let Some(path) = options.file.filter(|f| f.as_os_str() != "-") else {
        let input = Box::new(BufReader::new(tokio::io::stdin()));
        return Ok(NdjsonSource { input, origin: Origin::Stdin, publisher });
    };
    let open_error = |error| SourceError::Open { path: path.clone(), error };
    let file = tokio::fs::File::open(&path).await.map_err(open_error)?;
    // absolute, so that a dead letter's source names the file wherever it is read
    let origin = Origin::File(std::path::absolute(&path).map_err(open_error)?);
    Ok(NdjsonSource { input: Box::new(BufReader::new(file)), origin, publisher })
}

impl NdjsonSource {
    /// Publishes the lines until the input ends or `shutdown` resolves; `on_refused` hears
    /// about each bad line at once. See [`publish_lines_from`].
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        on_refused: impl FnMut(usize, &str),
    ) -> Result<Report, PublishError> {
        publish_lines_from(self.input, &self.origin, &mut self.publisher, on_refused, shutdown).await
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: usize,
    pub published: usize,
    /// (line number, reason) of every refused (and dead-lettered) line, numbered from 1.
    pub refused: Vec<(usize, String)>,
}

/// Where the lines come from, as a dead letter's `omnifold-source` header names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file, named by an absolute path so that operations can find it from anywhere.
    File(PathBuf),
    Stdin,
}

impl Origin {
    /// The source of line `number` (from 1): `file:<path>:<number>` or `stdin:<number>`.
    pub fn line(&self, number: usize) -> String {
        match self {
            Origin::File(path) => format!("file:{}:{number}", path.display()),
            Origin::Stdin => format!("stdin:{number}"),
        }
    }
}

/// [`publish_lines_from`] for input without a name, which dead letters call `stdin`.
pub async fn publish_lines(
    input: impl AsyncBufRead + Unpin,
    publisher: &mut Publisher,
    on_refused: impl FnMut(usize, &str),
) -> Result<Report, PublishError> {
    publish_lines_from(input, &Origin::Stdin, publisher, on_refused, std::future::pending()).await
}

/// Publishes every good line of `input` and dead-letters every bad one; `on_refused` hears
/// about each bad one at once. Reading stops at the input's end or at `shutdown` (a line
/// half read then is left). Returns once the broker has acknowledged every event and dead
/// letter; only a failure to read the input or to reach the broker is an error.
pub async fn publish_lines_from(
    mut input: impl AsyncBufRead + Unpin,
    origin: &Origin,
    publisher: &mut Publisher,
    mut on_refused: impl FnMut(usize, &str),
    shutdown: impl Future<Output = ()>,
) -> Result<Report, PublishError> {
    let mut report = Report::default();
    let mut buffer = Vec::new();
    tokio::pin!(shutdown);
    while next_line(&mut input, &mut buffer, shutdown.as_mut()).await? {
        report.lines += 1;
        let line = without_terminator(&buffer);
        if line.trim_ascii().is_empty() {
            continue;
        }
        match publish_line(line, publisher).await? {
            None => report.published += 1,
            Some(refusal) => {
                on_refused(report.lines, &refusal.reason);
                metrics::counter!("omnifold_connector_lines_refused_total", "adapter" => "ndjson")
                    .increment(1);
                dead_letter(publisher, origin.line(report.lines), line, &refusal).await?;
                report.refused.push((report.lines, refusal.reason));
            }
        }
    }
    publisher.flush().await?;
    Ok(report)
}

/// Reads the next line into `buffer` as bytes, so that a line that is not UTF-8 is one bad
/// line rather than the end of the run; false at the end of the input or at shutdown.
async fn next_line(
    input: &mut (impl AsyncBufRead + Unpin),
    buffer: &mut Vec<u8>,
    shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<bool, PublishError> {
    buffer.clear();
    tokio::select! {
        biased;
        _ = shutdown => Ok(false),
        read = input.read_until(b'\n', buffer) => Ok(read? > 0),
    }
}

/// The line without its `\n` or `\r\n`: the terminator is not part of the payload.
fn without_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Why one line gave no event.
struct Refusal {
    /// The event's partition key, when the line got as far as an event with one.
    key: Option<String>,
    reason: String,
}

/// Publishes the line's event; `Some` when the line gives none.
async fn publish_line(line: &[u8], publisher: &mut Publisher) -> Result<Option<Refusal>, PublishError> {
    let event = match decode(line) {
        Ok(event) => event,
        Err(reason) => return Ok(Some(Refusal { key: None, reason })),
    };
    match publisher.publish(&event).await {
        Ok(()) => Ok(None),
        // keyed like the event would have been, as the coordinator's dead letters are
        Err(PublishOutcome::Refused(rejection)) => Ok(Some(Refusal {
            key: Some(event.partition_key().to_string()).filter(|key| !key.is_empty()),
            reason: format!("event {:?}: {rejection}", event.event_id),
        })),
        Err(PublishOutcome::Failed(error)) => Err(error),
    }
}

fn decode(line: &[u8]) -> Result<Event, String> {
    let text = std::str::from_utf8(line).map_err(|error| format!("line is not utf-8: {error}"))?;
    omnifold_proto::json::event_from_json(text).map_err(|error| error.to_string())
}

async fn dead_letter(
    publisher: &mut Publisher,
    source: String,
    line: &[u8],
    refusal: &Refusal,
) -> Result<(), PublishError> {
    let letter =
        DeadLetter { key: refusal.key.as_deref(), value: line, reason: &refusal.reason, source: &source };
    publisher.dead_letter(letter).await?;
    metrics::counter!("omnifold_connector_deadletters_total", "adapter" => "ndjson").increment(1);
    Ok(())
}
