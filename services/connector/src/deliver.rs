//! Hands a mapped payload to the one publish path, and counts what did not make it.

use omnifold_domain::fact::Rejection;
use omnifold_proto::Event;

use crate::mapping::{Mapped, Refusal};
use crate::publish::{Ack, PublishError, PublishOutcome, Sink};

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
    let Mapped { events, mut refused, ignored, .. } = mapped;
    let mut published = 0;
    for event in &events {
        match sink.publish(event).await {
            Ok(()) => published += 1,
            Err(PublishOutcome::Refused(rejection)) => refused.push(contract_refusal(event, &rejection)),
            Err(PublishOutcome::Failed(error)) => return Err(error),
        }
    }
    sink.flush().await?;
    let delivered = Delivered { published, refused, ignored };
    report(adapter, &delivered);
    Ok(delivered)
}

/// A mapped payload whose events are queued: their acknowledgements, and what it comes to
/// once they are all in.
#[derive(Debug)]
pub struct Queued {
    pub acks: Vec<Ack>,
    pub delivered: Delivered,
}

/// Checks and queues every event of `mapped` without waiting for the broker, so that the
/// caller can bound the wait and need not hold the sink meanwhile. Nothing is counted yet:
/// [`settle`] counts once the events are acknowledged, so that a retried payload is not
/// counted twice.
pub fn queue<S: Sink>(sink: &mut S, mapped: Mapped) -> Result<Queued, PublishError> {
    let Mapped { events, mut refused, ignored, .. } = mapped;
    let mut acks = Vec::with_capacity(events.len());
    for event in &events {
        match sink.send(event) {
            Ok(ack) => acks.push(ack),
            Err(PublishOutcome::Refused(rejection)) => refused.push(contract_refusal(event, &rejection)),
            Err(PublishOutcome::Failed(error)) => return Err(error),
        }
    }
    let published = acks.len();
    Ok(Queued { acks, delivered: Delivered { published, refused, ignored } })
}

/// Waits for every acknowledgement of `queued`, then counts and logs it like [`deliver`].
pub async fn settle(adapter: &'static str, queued: Queued) -> Result<Delivered, PublishError> {
    let Queued { acks, delivered } = queued;
    // the client delivers them concurrently: waiting in turn takes as long as the slowest
    for ack in acks {
        ack.wait().await?;
    }
    report(adapter, &delivered);
    Ok(delivered)
}

fn contract_refusal(event: &Event, rejection: &Rejection) -> Refusal {
    Refusal { item: format!("event {}", event.event_id), reason: "contract", message: rejection.to_string() }
}

/// Counts and logs what a delivered payload refused and ignored.
fn report(adapter: &'static str, delivered: &Delivered) {
    for refusal in &delivered.refused {
        count_rejection(adapter, refusal.reason);
        tracing::warn!(adapter, item = %refusal.item, reason = refusal.reason, "refused: {}", refusal.message);
    }
    for note in &delivered.ignored {
        count_ignored(adapter, note.reason);
        tracing::info!(adapter, item = %note.item, reason = note.reason, "ignored: {}", note.message);
    }
}
