//! The weekly channel contribution of CONTRACT.md section 7, as pure functions and state
//! machines: no Kafka, store, async or clock, like the rest of this crate.
//!
//! The report is computed in two stages so that it scales out over input partitions:
//!
//! 1. [`ledger`]: each input partition (of the contribution ledger, which mirrors the events
//!    topic partition for partition, or of the alerts topic) is folded on its own into
//!    [`Partial`] figures per [`Cell`] (a week of a channel). The coordinator is the only
//!    acceptor: the ledger already holds what each accepted event is worth, so no rule is
//!    applied twice.
//! 2. [`merge`]: the partials of every partition are merged per cell; closed weeks are
//!    turned into figures ([`figures`]) and emitted as numbered revisions.
//!
//! Between the two, a [`PartialRecord`] carries a partition's absolute cell values as of an
//! input offset, which makes merging idempotent and order-free (see `merge.rs`).

pub mod figures;
pub mod ledger;
pub mod merge;
pub mod partial;
pub mod week;

pub use figures::{ChannelWeek, Decision, compute_week};
pub use ledger::{
    AlertLedger, Applied, END_UNKNOWN, EntryError, Lag, PartialRecord, PartitionLedger, Source, SourceKind,
    Span,
};
pub use merge::{Merger, OrderIndex, Snapshot};
pub use partial::{Cell, Partial};
pub use week::{Calendar, Week};

use rust_decimal::Decimal;

/// An exact decimal as the snapshots write it: no trailing zeros, never `-0`.
pub fn decimal_text(value: Decimal) -> String {
    if value.is_zero() { "0".to_string() } else { value.normalize().to_string() }
}

impl Snapshot {
    /// The protobuf form published on `omnifold.snapshots.v1`.
    pub fn to_proto(&self) -> omnifold_proto::ContributionSnapshot {
        let f = &self.figures;
        let text = |value: Decimal| decimal_text(value);
        omnifold_proto::ContributionSnapshot {
            week: f.week.label(),
            channel: f.channel.clone(),
            revision: self.revision,
            week_start_ms: f.week_start_ms,
            week_end_ms: f.week_end_ms,
            currency: f.currency.clone(),
            channel_name: f.channel_name.clone(),
            gross_revenue: text(f.gross_revenue),
            discounts: text(f.discounts),
            net_revenue: text(f.net_revenue),
            cogs: text(f.cogs),
            restocked_cogs: text(f.restocked_cogs),
            channel_fees: text(f.channel_fees),
            fulfillment_costs: text(f.fulfillment_costs),
            refunds: text(f.refunds),
            contribution_before_operating: text(f.contribution_before_operating),
            operating_cost: text(f.operating_cost),
            contribution: text(f.contribution),
            contribution_margin: f.contribution_margin.map(text),
            revenue_share: f.revenue_share.map(text),
            operating_cost_share: f.operating_cost_share.map(text),
            orders_shipped: f.orders_shipped,
            units_shipped: f.units_shipped,
            alerts_raised: f
                .alerts_raised
                .iter()
                .map(|(kind, count)| omnifold_proto::AlertCount { kind: kind.clone(), count: *count })
                .collect(),
            owner: f.owner.clone(),
            critical_alerts: f.critical_alerts,
            negative_weeks: f.negative_weeks,
            decision: decision_proto(f.decision) as i32,
            next_action: f.next_action.clone(),
            changed_fields: self.changed_fields.clone(),
        }
    }
}

fn decision_proto(decision: Decision) -> omnifold_proto::Decision {
    match decision {
        Decision::Keep => omnifold_proto::Decision::Keep,
        Decision::Fix => omnifold_proto::Decision::Fix,
        Decision::RetireReview => omnifold_proto::Decision::RetireReview,
    }
}
