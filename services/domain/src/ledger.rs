//! The contribution ledger (`proto/omnifold/v1/ledger.proto`): what each accepted event that
//! moves money or units is worth, in reporting currency. Entries are fold outputs like alerts:
//! deterministic, built from the SKU's own state (the line's terms kept with the line, the
//! unit cost in force), with no scan of history. The coordinator is the only acceptor; the
//! ledger is its account of every accepted shipment, return and channel cost.

use compact_str::{CompactString, ToCompactString};
use omnifold_proto::borrowed::LedgerEntryRef;
use omnifold_proto::{LedgerEntry, LedgerKind};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::alerts::Cause;
use crate::contract::Rules;
use crate::fact::{Fact, Placed, Rejection, Returned, Shipped};
use crate::money::Amount;
use crate::report::partial::{prorate, round};
use crate::stock::Line;

/// A ledger entry as the fold makes it: the fields of a [`LedgerEntry`] but for a progress
/// marker's, its strings inline up to 24 bytes (ids, the currency, the amounts as text), so
/// that an entry of a shipment is not fourteen allocations. Written through [`Self::fields`],
/// whose encodings are the generated message's bytes; [`Self::to_message`] for a consumer that
/// wants the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishedEntry {
    pub entry_id: CompactString,
    /// A [`LedgerKind`], as the message holds it.
    pub kind: i32,
    pub channel: CompactString,
    pub sku: CompactString,
    pub order_id: CompactString,
    pub line_id: CompactString,
    pub occurred_at_ms: i64,
    pub reason_event_id: CompactString,
    pub currency: CompactString,
    pub units: i64,
    pub gross_revenue: CompactString,
    pub discount: CompactString,
    pub channel_fee: CompactString,
    pub cogs: CompactString,
    pub fulfillment_cost: CompactString,
    pub refund: CompactString,
    pub restocked_cogs: CompactString,
    pub restocked_units: i64,
    pub unit_cost: CompactString,
    pub operating_cost: CompactString,
    pub cost_category: CompactString,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    /// Where the event sits in the event log: set by whoever writes the entry, since the fold
    /// does not know it.
    pub event_partition: i32,
    pub event_offset: i64,
}

impl PublishedEntry {
    /// Its fields, borrowed: what the coordinator encodes and mirrors to JSON.
    pub fn fields(&self) -> LedgerEntryRef<'_> {
        LedgerEntryRef {
            entry_id: &self.entry_id,
            kind: self.kind,
            channel: &self.channel,
            sku: &self.sku,
            order_id: &self.order_id,
            line_id: &self.line_id,
            occurred_at_ms: self.occurred_at_ms,
            reason_event_id: &self.reason_event_id,
            currency: &self.currency,
            units: self.units,
            gross_revenue: &self.gross_revenue,
            discount: &self.discount,
            channel_fee: &self.channel_fee,
            cogs: &self.cogs,
            fulfillment_cost: &self.fulfillment_cost,
            refund: &self.refund,
            restocked_cogs: &self.restocked_cogs,
            restocked_units: self.restocked_units,
            unit_cost: &self.unit_cost,
            operating_cost: &self.operating_cost,
            cost_category: &self.cost_category,
            period_start_ms: self.period_start_ms,
            period_end_ms: self.period_end_ms,
            event_partition: self.event_partition,
            event_offset: self.event_offset,
            earliest_at_ms: 0,
            events_behind: 0,
        }
    }

    /// The generated message holding the same fields.
    pub fn to_message(&self) -> LedgerEntry {
        self.fields().to_message()
    }
}

/// A line's terms in reporting currency, fixed when it is placed: what its shipments are
/// valued at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub unit_price: Decimal,
    /// The whole line's discount.
    pub discount: Decimal,
    /// The whole line's channel fee.
    pub channel_fee: Decimal,
}

/// In reporting currency, at most [`crate::report::partial::SCALE`] places, so that sums stay
/// exact. The reporter's own valuation uses the same two functions.
pub(crate) fn reporting(rules: &Rules, field: &'static str, amount: &Amount) -> Result<Decimal, Rejection> {
    let value = rules.contract.to_reporting(amount).map_err(|source| Rejection::Money { field, source })?;
    Ok(round(value))
}

pub(crate) fn optional(
    rules: &Rules,
    field: &'static str,
    amount: Option<&Amount>,
) -> Result<Decimal, Rejection> {
    amount.map_or(Ok(Decimal::ZERO), |amount| reporting(rules, field, amount))
}

/// The terms of a line about to be placed.
pub fn terms(rules: &Rules, placed: &Placed) -> Result<Terms, Rejection> {
    Ok(Terms {
        unit_price: reporting(rules, "unit_price", &placed.unit_price)?,
        discount: optional(rules, "discount", placed.discount.as_ref())?,
        channel_fee: optional(rules, "channel_fee", placed.channel_fee.as_ref())?,
    })
}

/// The unit cost in force (the SKU's last CostSet), 0 without one.
pub fn unit_cost(rules: &Rules, cost: Option<&Amount>) -> Result<Decimal, Rejection> {
    optional(rules, "unit_cost", cost)
}

/// A decimal as the ledger writes it: exact, without trailing zeros.
fn text(value: Decimal) -> CompactString {
    value.normalize().to_compact_string()
}

fn entry(rules: &Rules, kind: LedgerKind, cause: Cause<'_>) -> PublishedEntry {
    PublishedEntry {
        entry_id: entry_id(kind, cause.event_id),
        kind: kind as i32,
        channel: cause.channel.into(),
        sku: cause.sku.into(),
        occurred_at_ms: cause.at_ms,
        reason_event_id: cause.event_id.into(),
        currency: rules.contract.reporting_currency.as_str().into(),
        ..PublishedEntry::default()
    }
}

/// `<kind>/<event id>`, the kind's name in lower case, inline up to 24 bytes and in one
/// allocation beyond: one entry is made per shipment, and a lower-cased name and a `format!`
/// each allocated for it.
fn entry_id(kind: LedgerKind, event_id: &str) -> CompactString {
    let name = kind.as_str_name().trim_start_matches("LEDGER_KIND_");
    let mut id = CompactString::with_capacity(name.len() + 1 + event_id.len());
    id.extend(name.chars().map(|c| c.to_ascii_lowercase()));
    id.push('/');
    id.push_str(event_id);
    id
}

/// A shipment's fulfillment cost in reporting currency; checked before the shipment changes
/// anything.
pub fn fulfillment(rules: &Rules, shipped: &Shipped) -> Result<Decimal, Rejection> {
    optional(rules, "fulfillment_cost", shipped.fulfillment_cost.as_ref())
}

/// What a shipment is worth.
pub struct Shipment<'a> {
    pub shipped: &'a Shipped,
    /// The line after the shipment.
    pub line: &'a Line,
    pub unit_cost: Decimal,
    pub fulfillment: Decimal,
}

/// A shipment, valued at its line's terms.
pub fn shipment(rules: &Rules, cause: Cause<'_>, shipment: Shipment<'_>) -> PublishedEntry {
    let Shipment { shipped, line, unit_cost, fulfillment } = shipment;
    let (after, units) = (line.shipped, shipped.quantity);
    let before = after - units;
    let terms = &line.terms;
    PublishedEntry {
        order_id: shipped.line.order_id.as_str().into(),
        line_id: shipped.line.line_id.as_str().into(),
        units,
        gross_revenue: text(terms.unit_price * Decimal::from(units)),
        discount: text(prorate(terms.discount, before, after, line.placed)),
        channel_fee: text(prorate(terms.channel_fee, before, after, line.placed)),
        cogs: text(unit_cost * Decimal::from(units)),
        fulfillment_cost: text(fulfillment),
        unit_cost: text(unit_cost),
        ..entry(rules, LedgerKind::Shipment, cause)
    }
}

/// A return: its refund, and the restocked units at the cost in force.
pub fn returned(
    rules: &Rules,
    cause: Cause<'_>,
    returned: &Returned,
    unit_cost: Decimal,
) -> Result<PublishedEntry, Rejection> {
    let refund = reporting(rules, "refund", &returned.refund)?;
    let restocked = if returned.restock_at.is_some() { returned.quantity } else { 0 };
    Ok(PublishedEntry {
        order_id: returned.line.order_id.as_str().into(),
        line_id: returned.line.line_id.as_str().into(),
        units: returned.quantity,
        refund: text(refund),
        restocked_units: restocked,
        restocked_cogs: text(unit_cost * Decimal::from(restocked)),
        unit_cost: text(unit_cost),
        ..entry(rules, LedgerKind::Return, cause)
    })
}

/// A ChannelCostRecorded: its amount and period, which the reporter spreads over weeks.
pub fn channel_cost(
    rules: &Rules,
    cause: Cause<'_>,
    fact: &Fact,
) -> Result<Option<PublishedEntry>, Rejection> {
    let Fact::ChannelCost { category, amount, period_start_ms, period_end_ms } = fact else {
        return Ok(None);
    };
    Ok(Some(PublishedEntry {
        operating_cost: text(reporting(rules, "amount", amount)?),
        cost_category: category.as_str().into(),
        period_start_ms: *period_start_ms,
        period_end_ms: *period_end_ms,
        ..entry(rules, LedgerKind::ChannelCost, cause)
    }))
}

/// A progress marker (`LEDGER_KIND_PROGRESS`): the coordinator has read events partition
/// `partition` through `last_offset` and accepted events spanning `accepted` (earliest,
/// latest) since its last marker; `at_end` when it has read the partition to its end.
pub fn progress(
    currency: &str,
    partition: i32,
    last_offset: i64,
    accepted: Option<(i64, i64)>,
    at_end: bool,
) -> LedgerEntry {
    let (earliest, latest) = accepted.unwrap_or((0, 0));
    LedgerEntry {
        entry_id: format!("progress/{partition}/{last_offset}"),
        kind: LedgerKind::Progress as i32,
        occurred_at_ms: latest,
        earliest_at_ms: earliest,
        currency: currency.to_string(),
        event_partition: partition,
        event_offset: last_offset,
        events_behind: if at_end { 0 } else { -1 },
        ..LedgerEntry::default()
    }
}

/// What the coordinator writes to ledger partition `partition` for the event at `offset`,
/// folded into `state` in memory: the event's ledger entries stamped with its position, then
/// a progress marker (the service writes one marker per batch; one per event is the
/// finest-grained case). For tests and tools that model the ledger without a coordinator.
pub fn written_for(
    fold: &crate::Fold,
    state: &mut crate::PartitionState,
    event: &omnifold_proto::Event,
    (partition, offset): (i32, i64),
) -> (crate::Outcome, Vec<LedgerEntry>) {
    let outcome = fold.apply(state, event);
    let mut entries = Vec::new();
    let mut accepted = None;
    if let crate::Outcome::Applied { outputs, .. } = &outcome {
        accepted = Some((event.occurred_at_ms, event.occurred_at_ms));
        for output in outputs {
            if let crate::Output::Ledger(entry) = output {
                let entry =
                    LedgerEntry { event_partition: partition, event_offset: offset, ..entry.to_message() };
                entries.push(entry);
            }
        }
    }
    let currency = &fold.rules().contract.reporting_currency;
    entries.push(progress(currency, partition, offset, accepted, false));
    (outcome, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_is_the_kind_in_lower_case_and_the_event_id() {
        assert_eq!(entry_id(LedgerKind::Shipment, "ev-1"), "shipment/ev-1");
        assert_eq!(entry_id(LedgerKind::ChannelCost, "ev/2"), "channel_cost/ev/2");
    }
}
