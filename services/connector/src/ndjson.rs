//! The generic connector: one event per line in the contract's JSON form (CONTRACT.md
//! section 2), from a file or stdin. A bad line is reported with its number and skipped.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::publish::{PublishError, PublishOutcome, Publisher};

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: usize,
    pub published: usize,
    /// (line number, reason) of every refused line, numbered from 1.
    pub refused: Vec<(usize, String)>,
}

/// Publishes every good line of `input`; `on_refused` hears about each bad one at once.
pub async fn publish_lines(
    input: impl AsyncBufRead + Unpin,
    publisher: &mut Publisher,
    mut on_refused: impl FnMut(usize, &str),
) -> Result<Report, PublishError> {
    let mut report = Report::default();
    let mut lines = input.lines();
    while let Some(line) = lines.next_line().await.map_err(PublishError::Read)? {
        report.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        let refusal = match omnifold_proto::json::event_from_json(&line) {
            Err(error) => Some(error.to_string()),
            Ok(event) => match publisher.publish(&event).await {
                Ok(()) => None,
                Err(PublishOutcome::Refused(rejection)) => {
                    Some(format!("event {:?}: {rejection}", event.event_id))
                }
                Err(PublishOutcome::Failed(error)) => return Err(error),
            },
        };
        match refusal {
            None => report.published += 1,
            Some(reason) => {
                on_refused(report.lines, &reason);
                metrics::counter!("omnifold_connector_lines_refused_total", "adapter" => "ndjson")
                    .increment(1);
                report.refused.push((report.lines, reason));
            }
        }
    }
    publisher.flush().await?;
    Ok(report)
}
