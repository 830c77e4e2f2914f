//! Protobuf encodings written straight from borrowed fields, for the outputs the coordinator
//! publishes most (a channel's availability, more than one per event; routing advice, one for
//! most placements; replenishment suggestions, one in five events; ledger entries, one for each
//! shipment, return and channel cost, with up to fourteen strings each): building the generated
//! message first copies each of its strings into a `String` of its own only to encode it and
//! drop it, three to eleven allocations per record.
//!
//! Each message lists its fields in tag order as [`Field`]s, and one writer ([`put_fields`],
//! [`fields_len`]) encodes any run of them, so a message's layout is stated once.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::v1::{ChannelAvailability, LedgerEntry, Replenishment, RoutingCandidate, RoutingDecision};

/// The fields of a [`ChannelAvailability`], borrowed; [`ChannelAvailabilityRef::encode_to_vec`]
/// writes the bytes the generated message would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAvailabilityRef<'a> {
    pub sku: &'a str,
    pub channel: &'a str,
    pub available: i64,
    /// An [`crate::AllocationMode`], as the message holds it.
    pub mode: i32,
    /// An [`crate::AllocationRule`], as the message holds it.
    pub rule: i32,
    pub reason_event_id: &'a str,
    pub decided_at_ms: i64,
}

impl ChannelAvailabilityRef<'_> {
    /// The fields from tag 1 on.
    fn fields(&self) -> [Field<'_>; 7] {
        use Field::{Int, Str};
        [
            Str(self.sku),
            Str(self.channel),
            Int(self.available),
            Int(i64::from(self.mode)),
            Int(i64::from(self.rule)),
            Str(self.reason_event_id),
            Int(self.decided_at_ms),
        ]
    }

    /// The message's encoding: its fields in tag order, those at their default left out, as
    /// prost writes a proto3 message.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        encode_flat(self.fields())
    }

    pub fn encoded_len(&self) -> usize {
        fields_len(1, self.fields())
    }

    /// The generated message holding the same fields.
    pub fn to_message(&self) -> ChannelAvailability {
        ChannelAvailability {
            sku: self.sku.to_string(),
            channel: self.channel.to_string(),
            available: self.available,
            mode: self.mode,
            rule: self.rule,
            reason_event_id: self.reason_event_id.to_string(),
            decided_at_ms: self.decided_at_ms,
        }
    }
}

/// The fields of a [`RoutingCandidate`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingCandidateRef<'a> {
    pub location: &'a str,
    pub on_hand: i64,
    pub reserved: i64,
    pub free: i64,
}

impl RoutingCandidateRef<'_> {
    /// The fields from tag 1 on.
    fn fields(&self) -> [Field<'_>; 4] {
        [
            Field::Str(self.location),
            Field::Int(self.on_hand),
            Field::Int(self.reserved),
            Field::Int(self.free),
        ]
    }

    fn to_message(self) -> RoutingCandidate {
        RoutingCandidate {
            location: self.location.to_string(),
            on_hand: self.on_hand,
            reserved: self.reserved,
            free: self.free,
        }
    }
}

/// The tag of [`RoutingDecision::candidates`].
const CANDIDATES: u32 = 8;

/// The fields of a [`RoutingDecision`], borrowed; its candidates as an iterator, walked once to
/// measure and once to write.
#[derive(Debug, Clone)]
pub struct RoutingDecisionRef<'a, C> {
    pub channel: &'a str,
    pub order_id: &'a str,
    pub line_id: &'a str,
    pub sku: &'a str,
    pub quantity: i64,
    pub location: &'a str,
    pub split: bool,
    pub candidates: C,
    /// A [`crate::RoutingState`], as the message holds it.
    pub state: i32,
    pub shipped_from: &'a str,
    pub reason_event_id: &'a str,
    pub decided_at_ms: i64,
}

impl<'a, C: Iterator<Item = RoutingCandidateRef<'a>> + Clone> RoutingDecisionRef<'a, C> {
    /// The fields before the candidates, from tag 1 on.
    fn head(&self) -> [Field<'a>; 7] {
        use Field::{Int, Str};
        [
            Str(self.channel),
            Str(self.order_id),
            Str(self.line_id),
            Str(self.sku),
            Int(self.quantity),
            Str(self.location),
            Int(i64::from(self.split)),
        ]
    }

    /// The fields after the candidates, from tag 9 on.
    fn tail(&self) -> [Field<'a>; 4] {
        use Field::{Int, Str};
        [
            Int(i64::from(self.state)),
            Str(self.shipped_from),
            Str(self.reason_event_id),
            Int(self.decided_at_ms),
        ]
    }

    /// The message's encoding, as prost writes it: a repeated message field writes each
    /// element, defaults and all.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        put_fields(1, self.head(), &mut buf);
        for candidate in self.candidates.clone() {
            encode_key(CANDIDATES, WireType::LengthDelimited, &mut buf);
            encode_varint(fields_len(1, candidate.fields()) as u64, &mut buf);
            put_fields(1, candidate.fields(), &mut buf);
        }
        put_fields(CANDIDATES + 1, self.tail(), &mut buf);
        buf
    }

    pub fn encoded_len(&self) -> usize {
        let candidates: usize = self
            .candidates
            .clone()
            .map(|c| fields_len(1, c.fields()))
            .map(|len| key_len(CANDIDATES) + encoded_len_varint(len as u64) + len)
            .sum();
        fields_len(1, self.head()) + candidates + fields_len(CANDIDATES + 1, self.tail())
    }

    /// The generated message holding the same fields.
    pub fn to_message(&self) -> RoutingDecision {
        RoutingDecision {
            channel: self.channel.to_string(),
            order_id: self.order_id.to_string(),
            line_id: self.line_id.to_string(),
            sku: self.sku.to_string(),
            quantity: self.quantity,
            location: self.location.to_string(),
            split: self.split,
            candidates: self.candidates.clone().map(RoutingCandidateRef::to_message).collect(),
            state: self.state,
            shipped_from: self.shipped_from.to_string(),
            reason_event_id: self.reason_event_id.to_string(),
            decided_at_ms: self.decided_at_ms,
        }
    }
}

/// The fields of a [`Replenishment`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplenishmentRef<'a> {
    pub sku: &'a str,
    pub pool: &'a str,
    /// A [`crate::ReplenishmentAction`], as the message holds it.
    pub action: i32,
    pub units: i64,
    pub location: &'a str,
    pub from_location: &'a str,
    pub atp: i64,
    pub open_inbound: i64,
    pub units_placed_28d: i64,
    pub velocity: &'a str,
    pub cover_days: &'a str,
    pub lead_time_days: &'a str,
    pub review_period_days: &'a str,
    pub target_cover_days: &'a str,
    pub reorder_point: &'a str,
    pub case_pack: i64,
    pub fba_target_cover_days: &'a str,
    pub needed: i64,
    pub shared_atp: i64,
    pub shared_target: i64,
    pub shared_spare: i64,
    pub min_transfer_units: i64,
    pub reason_event_id: &'a str,
    pub decided_at_ms: i64,
}

impl ReplenishmentRef<'_> {
    /// The fields from tag 1 on.
    fn fields(&self) -> [Field<'_>; 24] {
        use Field::{Int, Str};
        [
            Str(self.sku),
            Str(self.pool),
            Int(i64::from(self.action)),
            Int(self.units),
            Str(self.location),
            Str(self.from_location),
            Int(self.atp),
            Int(self.open_inbound),
            Int(self.units_placed_28d),
            Str(self.velocity),
            Str(self.cover_days),
            Str(self.lead_time_days),
            Str(self.review_period_days),
            Str(self.target_cover_days),
            Str(self.reorder_point),
            Int(self.case_pack),
            Str(self.fba_target_cover_days),
            Int(self.needed),
            Int(self.shared_atp),
            Int(self.shared_target),
            Int(self.shared_spare),
            Int(self.min_transfer_units),
            Str(self.reason_event_id),
            Int(self.decided_at_ms),
        ]
    }

    /// The message's encoding, as prost writes it.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        encode_flat(self.fields())
    }

    pub fn encoded_len(&self) -> usize {
        fields_len(1, self.fields())
    }

    /// The generated message holding the same fields.
    pub fn to_message(&self) -> Replenishment {
        Replenishment {
            sku: self.sku.to_string(),
            pool: self.pool.to_string(),
            action: self.action,
            units: self.units,
            location: self.location.to_string(),
            from_location: self.from_location.to_string(),
            atp: self.atp,
            open_inbound: self.open_inbound,
            units_placed_28d: self.units_placed_28d,
            velocity: self.velocity.to_string(),
            cover_days: self.cover_days.to_string(),
            lead_time_days: self.lead_time_days.to_string(),
            review_period_days: self.review_period_days.to_string(),
            target_cover_days: self.target_cover_days.to_string(),
            reorder_point: self.reorder_point.to_string(),
            case_pack: self.case_pack,
            fba_target_cover_days: self.fba_target_cover_days.to_string(),
            needed: self.needed,
            shared_atp: self.shared_atp,
            shared_target: self.shared_target,
            shared_spare: self.shared_spare,
            min_transfer_units: self.min_transfer_units,
            reason_event_id: self.reason_event_id.to_string(),
            decided_at_ms: self.decided_at_ms,
        }
    }
}

/// The fields of a [`LedgerEntry`], borrowed. [`crate::json::ledger_ref_to_json`] writes the
/// same fields as the ledger's JSON mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerEntryRef<'a> {
    pub entry_id: &'a str,
    /// A [`crate::LedgerKind`], as the message holds it.
    pub kind: i32,
    pub channel: &'a str,
    pub sku: &'a str,
    pub order_id: &'a str,
    pub line_id: &'a str,
    pub occurred_at_ms: i64,
    pub reason_event_id: &'a str,
    pub currency: &'a str,
    pub units: i64,
    pub gross_revenue: &'a str,
    pub discount: &'a str,
    pub channel_fee: &'a str,
    pub cogs: &'a str,
    pub fulfillment_cost: &'a str,
    pub refund: &'a str,
    pub restocked_cogs: &'a str,
    pub restocked_units: i64,
    pub unit_cost: &'a str,
    pub operating_cost: &'a str,
    pub cost_category: &'a str,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub event_partition: i32,
    pub event_offset: i64,
    pub earliest_at_ms: i64,
    pub events_behind: i64,
}

impl<'a> LedgerEntryRef<'a> {
    /// The fields of a generated message.
    pub fn of(entry: &'a LedgerEntry) -> Self {
        LedgerEntryRef {
            entry_id: &entry.entry_id,
            kind: entry.kind,
            channel: &entry.channel,
            sku: &entry.sku,
            order_id: &entry.order_id,
            line_id: &entry.line_id,
            occurred_at_ms: entry.occurred_at_ms,
            reason_event_id: &entry.reason_event_id,
            currency: &entry.currency,
            units: entry.units,
            gross_revenue: &entry.gross_revenue,
            discount: &entry.discount,
            channel_fee: &entry.channel_fee,
            cogs: &entry.cogs,
            fulfillment_cost: &entry.fulfillment_cost,
            refund: &entry.refund,
            restocked_cogs: &entry.restocked_cogs,
            restocked_units: entry.restocked_units,
            unit_cost: &entry.unit_cost,
            operating_cost: &entry.operating_cost,
            cost_category: &entry.cost_category,
            period_start_ms: entry.period_start_ms,
            period_end_ms: entry.period_end_ms,
            event_partition: entry.event_partition,
            event_offset: entry.event_offset,
            earliest_at_ms: entry.earliest_at_ms,
            events_behind: entry.events_behind,
        }
    }

    /// The fields from tag 1 on.
    fn fields(&self) -> [Field<'a>; 27] {
        use Field::{Int, Str};
        [
            Str(self.entry_id),
            Int(i64::from(self.kind)),
            Str(self.channel),
            Str(self.sku),
            Str(self.order_id),
            Str(self.line_id),
            Int(self.occurred_at_ms),
            Str(self.reason_event_id),
            Str(self.currency),
            Int(self.units),
            Str(self.gross_revenue),
            Str(self.discount),
            Str(self.channel_fee),
            Str(self.cogs),
            Str(self.fulfillment_cost),
            Str(self.refund),
            Str(self.restocked_cogs),
            Int(self.restocked_units),
            Str(self.unit_cost),
            Str(self.operating_cost),
            Str(self.cost_category),
            Int(self.period_start_ms),
            Int(self.period_end_ms),
            Int(i64::from(self.event_partition)),
            Int(self.event_offset),
            Int(self.earliest_at_ms),
            Int(self.events_behind),
        ]
    }

    /// The message's encoding, as prost writes it.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        encode_flat(self.fields())
    }

    pub fn encoded_len(&self) -> usize {
        fields_len(1, self.fields())
    }

    /// The generated message holding the same fields.
    pub fn to_message(&self) -> LedgerEntry {
        LedgerEntry {
            entry_id: self.entry_id.to_string(),
            kind: self.kind,
            channel: self.channel.to_string(),
            sku: self.sku.to_string(),
            order_id: self.order_id.to_string(),
            line_id: self.line_id.to_string(),
            occurred_at_ms: self.occurred_at_ms,
            reason_event_id: self.reason_event_id.to_string(),
            currency: self.currency.to_string(),
            units: self.units,
            gross_revenue: self.gross_revenue.to_string(),
            discount: self.discount.to_string(),
            channel_fee: self.channel_fee.to_string(),
            cogs: self.cogs.to_string(),
            fulfillment_cost: self.fulfillment_cost.to_string(),
            refund: self.refund.to_string(),
            restocked_cogs: self.restocked_cogs.to_string(),
            restocked_units: self.restocked_units,
            unit_cost: self.unit_cost.to_string(),
            operating_cost: self.operating_cost.to_string(),
            cost_category: self.cost_category.to_string(),
            period_start_ms: self.period_start_ms,
            period_end_ms: self.period_end_ms,
            event_partition: self.event_partition,
            event_offset: self.event_offset,
            earliest_at_ms: self.earliest_at_ms,
            events_behind: self.events_behind,
        }
    }
}

/// A scalar field: a string, or an integer (`int32`, `int64`, `bool` or an enum, each a varint
/// of the value sign-extended to 64 bits).
#[derive(Clone, Copy)]
enum Field<'a> {
    Str(&'a str),
    Int(i64),
}

/// The encoding of a message of scalar fields only, from tag 1 on.
fn encode_flat<const N: usize>(fields: [Field<'_>; N]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(fields_len(1, fields));
    put_fields(1, fields, &mut buf);
    buf
}

/// Writes `fields`, the first under tag `first`, the next under the next tag, leaving out those
/// at their default as proto3 does.
fn put_fields<'a>(first: u32, fields: impl IntoIterator<Item = Field<'a>>, buf: &mut Vec<u8>) {
    for (tag, field) in (first..).zip(fields) {
        match field {
            Field::Str("") | Field::Int(0) => {}
            Field::Str(value) => {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(value.len() as u64, buf);
                buf.extend_from_slice(value.as_bytes());
            }
            Field::Int(value) => {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(value as u64, buf);
            }
        }
    }
}

/// The bytes [`put_fields`] writes.
fn fields_len<'a>(first: u32, fields: impl IntoIterator<Item = Field<'a>>) -> usize {
    (first..)
        .zip(fields)
        .map(|(tag, field)| match field {
            Field::Str("") | Field::Int(0) => 0,
            Field::Str(value) => key_len(tag) + encoded_len_varint(value.len() as u64) + value.len(),
            Field::Int(value) => key_len(tag) + encoded_len_varint(value as u64),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    fn encodes_as_the_message(fields: ChannelAvailabilityRef<'_>) {
        let message = fields.to_message();
        assert_eq!(fields.encode_to_vec(), message.encode_to_vec(), "{fields:?}");
        assert_eq!(fields.encoded_len(), message.encoded_len(), "{fields:?}");
        assert_eq!(ChannelAvailability::decode(&fields.encode_to_vec()[..]).unwrap(), message);
    }

    #[test]
    fn defaults_negatives_and_long_strings_encode_as_the_generated_message_does() {
        let long = "x".repeat(300);
        let base = ChannelAvailabilityRef {
            sku: "SKU-1",
            channel: "shopify",
            available: 12,
            mode: 2,
            rule: 3,
            reason_event_id: "ev-1",
            decided_at_ms: 1_794_182_460_000,
        };
        encodes_as_the_message(base);
        encodes_as_the_message(ChannelAvailabilityRef {
            sku: "",
            channel: "",
            available: 0,
            mode: 0,
            rule: 0,
            reason_event_id: "",
            decided_at_ms: 0,
        });
        encodes_as_the_message(ChannelAvailabilityRef { available: -5, mode: -1, decided_at_ms: -1, ..base });
        encodes_as_the_message(ChannelAvailabilityRef { sku: &long, reason_event_id: "ü-ß", ..base });
    }

    fn routes_as_the_message<'a>(
        fields: RoutingDecisionRef<'a, impl Iterator<Item = RoutingCandidateRef<'a>> + Clone>,
    ) {
        let message = fields.to_message();
        assert_eq!(fields.encode_to_vec(), message.encode_to_vec(), "{message:?}");
        assert_eq!(fields.encoded_len(), message.encoded_len(), "{message:?}");
    }

    #[test]
    fn routing_with_and_without_candidates_encodes_as_the_generated_message_does() {
        let candidates = [
            RoutingCandidateRef { location: "wh-east", on_hand: 10, reserved: 12, free: -2 },
            RoutingCandidateRef { location: "", on_hand: 0, reserved: 0, free: 0 },
            RoutingCandidateRef { location: "wh-west", on_hand: 300, reserved: 0, free: 300 },
        ];
        let base = RoutingDecisionRef {
            channel: "shopify",
            order_id: "o-1",
            line_id: "1",
            sku: "SKU-1",
            quantity: 3,
            location: "wh-west",
            split: false,
            candidates: candidates.iter().copied(),
            state: 1,
            shipped_from: "",
            reason_event_id: "ev-1",
            decided_at_ms: 1_794_182_460_000,
        };
        routes_as_the_message(base.clone());
        routes_as_the_message(RoutingDecisionRef {
            split: true,
            state: 2,
            shipped_from: "wh-east",
            ..base.clone()
        });
        routes_as_the_message(RoutingDecisionRef { candidates: [].iter().copied(), quantity: -1, ..base });
    }

    proptest! {
        #[test]
        fn any_fields_encode_as_the_generated_message_does(
            sku in ".{0,40}",
            channel in "[a-z-]{0,30}",
            available: i64,
            mode: i32,
            rule: i32,
            reason_event_id in ".{0,200}",
            decided_at_ms: i64,
        ) {
            encodes_as_the_message(ChannelAvailabilityRef {
                sku: &sku,
                channel: &channel,
                available,
                mode,
                rule,
                reason_event_id: &reason_event_id,
                decided_at_ms,
            });
        }
        #[test]
        fn any_routing_encodes_as_the_generated_message_does(
            texts in proptest::collection::vec(".{0,30}", 8),
            numbers in proptest::collection::vec(any::<i64>(), 4),
            split: bool,
            state: i32,
            frees in proptest::collection::vec(any::<i64>(), 0..5),
        ) {
            let locations: Vec<String> = frees.iter().map(|f| format!("loc-{f}")).collect();
            let candidates: Vec<RoutingCandidateRef<'_>> = locations
                .iter()
                .zip(&frees)
                .map(|(location, free)| RoutingCandidateRef { location, on_hand: *free / 2, reserved: numbers[3], free: *free })
                .collect();
            let fields = RoutingDecisionRef {
                channel: &texts[0],
                order_id: &texts[1],
                line_id: &texts[2],
                sku: &texts[3],
                quantity: numbers[0],
                location: &texts[4],
                split,
                candidates: candidates.iter().copied(),
                state,
                shipped_from: &texts[5],
                reason_event_id: &texts[6],
                decided_at_ms: numbers[1],
            };
            let message = fields.to_message();
            prop_assert_eq!(fields.encode_to_vec(), message.encode_to_vec());
            prop_assert_eq!(fields.encoded_len(), message.encoded_len());
        }
        #[test]
        fn any_ledger_entry_encodes_as_the_generated_message_does(
            texts in proptest::collection::vec(prop_oneof![Just(String::new()), ".{0,30}"], 14),
            numbers in proptest::collection::vec(prop_oneof![Just(0i64), any::<i64>()], 13),
        ) {
            let fields = LedgerEntryRef {
                entry_id: &texts[0],
                kind: numbers[0] as i32,
                channel: &texts[1],
                sku: &texts[2],
                order_id: &texts[3],
                line_id: &texts[4],
                occurred_at_ms: numbers[1],
                reason_event_id: &texts[5],
                currency: &texts[6],
                units: numbers[2],
                gross_revenue: &texts[7],
                discount: &texts[8],
                channel_fee: &texts[9],
                cogs: &texts[10],
                fulfillment_cost: &texts[11],
                refund: &texts[12],
                restocked_cogs: &texts[13],
                restocked_units: numbers[3],
                unit_cost: &texts[7],
                operating_cost: &texts[8],
                cost_category: &texts[9],
                period_start_ms: numbers[4],
                period_end_ms: numbers[5],
                event_partition: numbers[6] as i32,
                event_offset: numbers[7],
                earliest_at_ms: numbers[8],
                events_behind: numbers[9],
            };
            let message = fields.to_message();
            prop_assert_eq!(fields.encode_to_vec(), message.encode_to_vec());
            prop_assert_eq!(fields.encoded_len(), message.encoded_len());
            prop_assert_eq!(LedgerEntryRef::of(&message), fields);
        }
        #[test]
        fn any_replenishment_encodes_as_the_generated_message_does(
            texts in proptest::collection::vec(".{0,12}", 11),
            numbers in proptest::collection::vec(prop_oneof![Just(0i64), any::<i64>()], 13),
        ) {
            let fields = ReplenishmentRef {
                sku: &texts[0],
                pool: &texts[1],
                action: numbers[0] as i32,
                units: numbers[1],
                location: &texts[2],
                from_location: &texts[3],
                atp: numbers[2],
                open_inbound: numbers[3],
                units_placed_28d: numbers[4],
                velocity: &texts[4],
                cover_days: &texts[5],
                lead_time_days: &texts[6],
                review_period_days: &texts[7],
                target_cover_days: &texts[8],
                reorder_point: &texts[9],
                case_pack: numbers[5],
                fba_target_cover_days: &texts[10],
                needed: numbers[6],
                shared_atp: numbers[7],
                shared_target: numbers[8],
                shared_spare: numbers[9],
                min_transfer_units: numbers[10],
                reason_event_id: &texts[0],
                decided_at_ms: numbers[12],
            };
            let message = fields.to_message();
            prop_assert_eq!(fields.encode_to_vec(), message.encode_to_vec());
            prop_assert_eq!(fields.encoded_len(), message.encoded_len());
        }
    }
}
