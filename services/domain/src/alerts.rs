//! Alert lifecycle (CONTRACT.md section 5): a condition is raised once while it holds and
//! resolved once when it stops holding. Conditions are re-evaluated after every accepted
//! event of the SKU; this module diffs them against the open alerts. A RESOLVED record
//! repeats its RAISED record's subject (channels, location, pool, the competitor), accountable
//! and owner, and quotes the numbers observed at resolution. Every alert names who is
//! accountable (see [`accountable`]) and that party's owner.

use omnifold_proto::{Alert, AlertKind, AlertState, Detail, Severity};
use serde::{Deserialize, Serialize};

use crate::contract::Rules;
use crate::small_map::SmallMap;

/// A condition that holds now, with what an alert about it should say.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub kind: AlertKind,
    /// What the condition is about besides the SKU, e.g. `pool=shared`; empty for SKU-wide.
    pub subject: String,
    pub severity: Severity,
    /// Channel ids, sorted by [`Rules::sort_channels`].
    pub channels: Vec<String>,
    pub location: String,
    pub pool: String,
    pub summary: String,
    /// Details that name the subject beyond sku, channels, location and pool (a competitor).
    /// Both the RAISED and the RESOLVED record lead with them.
    pub subject_details: Vec<(String, String)>,
    /// The observed numbers.
    pub details: Vec<(String, String)>,
    pub recommended_action: String,
}

impl Condition {
    /// The key under which an open alert for this condition is remembered.
    pub fn key(&self) -> String {
        key(self.kind, &self.subject)
    }
}

/// The key of a condition: kind and subject.
pub fn key(kind: AlertKind, subject: &str) -> String {
    format!("{}/{}", kind.name(), subject)
}

/// The open alerts of a SKU, by condition key.
pub type Open = SmallMap<String, OpenAlert>;

/// A condition that holds now: its key, and the condition itself only when no alert is open
/// for that key, since only a new alert reads its text. A condition that keeps holding for
/// weeks is then rendered once, not at every event of its SKU.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    pub key: String,
    pub condition: Option<Condition>,
}

/// A holding condition of `kind` on `subject`, rendered by `render` only if its alert is not
/// open.
pub fn hold(
    open: &Open,
    kind: AlertKind,
    subject: String,
    render: impl FnOnce(String) -> Condition,
) -> Holding {
    hold_keyed(open, key(kind, &subject), || render(subject))
}

/// A holding condition whose key is known without its subject (made once, say), rendered by
/// `render` only if its alert is not open.
pub fn hold_keyed(open: &Open, key: String, render: impl FnOnce() -> Condition) -> Holding {
    let condition = (!open.contains_key(&key)).then(render);
    Holding { key, condition }
}

/// The numbers observed of one condition's subject, whether or not the condition holds: what
/// a RESOLVED record quotes.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The condition's key ([`Condition::key`]).
    pub key: String,
    pub details: Vec<(String, String)>,
}

/// An alert raised and not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAlert {
    pub alert_id: String,
    pub kind: i32,
    pub severity: i32,
    pub channels: Vec<String>,
    pub location: String,
    pub pool: String,
    pub summary: String,
    pub raised_by_event_id: String,
    pub owner: String,
    /// The raised record's accountable party, which its RESOLVED record repeats.
    #[serde(default)]
    pub accountable: String,
    /// The raised record's [`Condition::subject_details`], which its RESOLVED record repeats;
    /// bounded like the open alerts themselves.
    #[serde(default)]
    pub subject_details: Vec<(String, String)>,
}

/// The event being applied, as alerts and escalations cite it.
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    pub sku: &'a str,
    pub event_id: &'a str,
    pub at_ms: i64,
    /// The event's channel.
    pub channel: &'a str,
    /// What kind of event it is, as far as accountability cares.
    pub trigger: Trigger,
}

/// The raising event's kind, as far as accountability (CONTRACT.md section 5) cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An OrderLinePlaced within the channel's published number.
    Placement,
    /// An OrderLinePlaced that was itself an ALLOCATION_BREACH.
    BreachingPlacement,
    PriceSet,
    PromotionScheduled,
    /// Any other event: stock moved, a cost, a cancellation, a competitor's price...
    Other,
}

/// The accountable party of conditions no channel caused.
pub const OPERATIONS: &str = "operations";

/// Who answers for a condition raised by `cause` (CONTRACT.md section 5): the one channel whose
/// action is the cause, or [`OPERATIONS`].
pub fn accountable(kind: AlertKind, channels: &[String], cause: Cause<'_>) -> String {
    use AlertKind::*;
    let caused_by_event = match kind {
        PriceBelowFloor | MapViolation | CompetitorUndercut | AllocationBreach => {
            return channels.first().map_or_else(|| OPERATIONS.to_string(), Clone::clone);
        }
        Oversell | NegativeStock | LowCover => cause.trigger == Trigger::BreachingPlacement,
        ChannelPriceSpread | PromotionCollision => {
            matches!(cause.trigger, Trigger::PriceSet | Trigger::PromotionScheduled)
        }
        Unspecified => false,
    };
    if caused_by_event { cause.channel.to_string() } else { OPERATIONS.to_string() }
}

/// The deterministic id of an alert: kind, subject and raising event.
pub fn alert_id(kind: AlertKind, sku: &str, subject: &str, event_id: &str) -> String {
    let kind = kind.name().to_ascii_lowercase();
    if subject.is_empty() {
        format!("{kind}/{sku}/{event_id}")
    } else {
        format!("{kind}/{sku}/{subject}/{event_id}")
    }
}

/// Builds the RAISED record of a condition.
pub fn raise(rules: &Rules, condition: &Condition, cause: Cause<'_>) -> Alert {
    let accountable = accountable(condition.kind, &condition.channels, cause);
    Alert {
        alert_id: alert_id(condition.kind, cause.sku, &condition.subject, cause.event_id),
        kind: condition.kind as i32,
        state: AlertState::Raised as i32,
        severity: condition.severity as i32,
        sku: cause.sku.to_string(),
        channels: condition.channels.clone(),
        location: condition.location.clone(),
        pool: condition.pool.clone(),
        summary: condition.summary.clone(),
        details: details(condition.subject_details.iter().chain(&condition.details)),
        raised_by_event_id: cause.event_id.to_string(),
        resolved_by_event_id: String::new(),
        occurred_at_ms: cause.at_ms,
        detected_at_ms: 0,
        owner: rules.people_of(&accountable).0.to_string(),
        recommended_action: condition.recommended_action.clone(),
        accountable,
    }
}

fn details<'a>(pairs: impl IntoIterator<Item = &'a (String, String)>) -> Vec<Detail> {
    pairs.into_iter().map(|(key, value)| Detail { key: key.clone(), value: value.clone() }).collect()
}

/// Diffs the conditions that hold now against the open alerts: raises the new ones and
/// resolves those that stopped holding, quoting what `read` observes of their subjects.
/// Returns the records in a fixed order: resolutions by key, then raises in the order of
/// `holding`.
pub fn reconcile(
    rules: &Rules,
    open: &mut Open,
    holding: &[Holding],
    read: impl FnOnce() -> Vec<Reading>,
    cause: Cause<'_>,
) -> Vec<Alert> {
    let mut records = Vec::new();
    let stopped: Vec<String> =
        open.keys().filter(|key| !holding.iter().any(|h| &h.key == *key)).cloned().collect();
    // reading passes over every subject of the SKU, so only when something resolves
    let readings = if stopped.is_empty() { Vec::new() } else { read() };
    for key in stopped {
        let alert = open.remove(&key).expect("the key was just listed");
        let observed = readings.iter().find(|r| r.key == key).map_or(&[][..], |r| r.details.as_slice());
        records.push(resolve(alert, observed, cause));
    }
    for held in holding {
        let Some(condition) = &held.condition else { continue };
        if open.contains_key(&held.key) {
            continue;
        }
        let alert = raise(rules, condition, cause);
        open.insert(held.key.clone(), remember(condition, &alert));
        records.push(alert);
    }
    records
}

fn remember(condition: &Condition, alert: &Alert) -> OpenAlert {
    OpenAlert {
        alert_id: alert.alert_id.clone(),
        kind: alert.kind,
        severity: alert.severity,
        channels: alert.channels.clone(),
        location: alert.location.clone(),
        pool: alert.pool.clone(),
        summary: alert.summary.clone(),
        raised_by_event_id: alert.raised_by_event_id.clone(),
        owner: alert.owner.clone(),
        accountable: alert.accountable.clone(),
        subject_details: condition.subject_details.clone(),
    }
}

/// The RESOLVED record: the raised record's subject and owner, and the numbers observed now.
/// A subject with nothing left to observe (its listing gone with a currency's rate) keeps
/// only what names it.
fn resolve(alert: OpenAlert, observed: &[(String, String)], cause: Cause<'_>) -> Alert {
    Alert {
        alert_id: alert.alert_id,
        kind: alert.kind,
        state: AlertState::Resolved as i32,
        severity: alert.severity,
        sku: cause.sku.to_string(),
        channels: alert.channels,
        location: alert.location,
        pool: alert.pool,
        summary: format!("resolved: {}", alert.summary),
        details: details(alert.subject_details.iter().chain(observed)),
        raised_by_event_id: alert.raised_by_event_id,
        resolved_by_event_id: cause.event_id.to_string(),
        occurred_at_ms: cause.at_ms,
        detected_at_ms: 0,
        owner: alert.owner,
        recommended_action: "none: the condition no longer holds".to_string(),
        accountable: alert.accountable,
    }
}
