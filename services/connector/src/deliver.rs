//! Hands a mapped payload to the one publish path, and counts what did not make it.

use crate::mapping::{Mapped, Refusal};
use crate::publish::{PublishError, PublishOutcome, Sink};

/// What happened to one mapped payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivered {
    pub published: usize,
    pub refused: Vec<Refusal>,
    pub ignored: Vec<Refusal>,
}

/// Counts one rejection: `omnifold_connector_rejections_total{adapter,reason}`.
pub fn count_rejection(adapter: &'static str, reason: &'static str) {
    metrics::counter!("omnifold_connector_rejections_total", "adapter" => adapter, "reason" => reason)
        .increment(1);
}

/// Counts one part of a payload that produces nothing by design.
pub fn count_ignored(adapter: &'static str, reason: &'static str) {
    metrics::counter!("omnifold_connector_ignored_total", "adapter" => adapter, "reason" => reason)
        .increment(1);
}

/// Publishes every event of `mapped`, then waits for the broker's acknowledgements. Mapping
/// refusals and events the publisher refuses (reason `contract`) are counted and returned;
/// only a failure to reach the broker is an error (and then nothing is known to be durable).
pub async fn deliver<S: Sink>(
    sink: &mut S,
    adapter: &'static str,
    mapped: Mapped,
) -> Result<Delivered, PublishError> {
    let Mapped { events, mut refused, ignored } = mapped;
    let mut published = 0;
    for event in &events {
        match sink.publish(event).await {
            Ok(()) => published += 1,
            Err(PublishOutcome::Refused(rejection)) => refused.push(Refusal {
                item: format!("event {}", event.event_id),
                reason: "contract",
                message: rejection.to_string(),
            }),
            Err(PublishOutcome::Failed(error)) => return Err(error),
        }
    }
    sink.flush().await?;
    for refusal in &refused {
        count_rejection(adapter, refusal.reason);
        tracing::warn!(adapter, item = %refusal.item, reason = refusal.reason, "refused: {}", refusal.message);
    }
    for note in &ignored {
        count_ignored(adapter, note.reason);
        tracing::info!(adapter, item = %note.item, reason = note.reason, "ignored: {}", note.message);
    }
    Ok(Delivered { published, refused, ignored })
}
