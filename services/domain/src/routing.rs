//! Routing advice for a line placed without a location (CONTRACT.md section 10): which of the
//! channel's `ship_from` locations should ship it. Advisory: the line reserves in its pool as
//! in section 4 whatever is advised; the advice only counts its units at the location, so the
//! next line sees them taken.

use compact_str::CompactString;
use omnifold_proto::borrowed::{RoutingCandidateRef, RoutingDecisionRef};
use omnifold_proto::{RoutingDecision, RoutingState};
use smallvec::SmallVec;

use crate::alerts::Cause;
use crate::contract::Rules;
use crate::fact::{LineKey, Placed};
use crate::stock::{Line, Stock};

/// A `ship_from` location as it stood before the line (a `RoutingCandidate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub location: CompactString,
    pub on_hand: i64,
    pub reserved: i64,
    /// on_hand - reserved.
    pub free: i64,
}

impl Candidate {
    fn fields(&self) -> RoutingCandidateRef<'_> {
        RoutingCandidateRef {
            location: &self.location,
            on_hand: self.on_hand,
            reserved: self.reserved,
            free: self.free,
        }
    }
}

/// A channel's `ship_from` locations, held inline for the few a channel ships from.
pub type Candidates = SmallVec<[Candidate; 4]>;

/// The advice for one line: the chosen candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub chosen: usize,
    pub split: bool,
    pub candidates: Candidates,
}

impl Advice {
    pub fn location(&self) -> &str {
        &self.candidates[self.chosen].location
    }
}

/// A routing record as the fold publishes it (a `RoutingDecision`): its strings inline up to
/// 24 bytes, encoded from them as they are ([`PublishedRouting::encode_to_vec`]), as
/// [`crate::allocation::PublishedAvailability`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedRouting {
    pub channel: CompactString,
    pub order_id: CompactString,
    pub line_id: CompactString,
    pub sku: CompactString,
    pub quantity: i64,
    pub location: CompactString,
    pub split: bool,
    pub candidates: Candidates,
    /// A [`RoutingState`], as the record holds it.
    pub state: i32,
    pub shipped_from: CompactString,
    pub reason_event_id: CompactString,
    pub decided_at_ms: i64,
}

impl PublishedRouting {
    pub fn fields(&self) -> RoutingDecisionRef<'_, impl Iterator<Item = RoutingCandidateRef<'_>> + Clone> {
        RoutingDecisionRef {
            channel: &self.channel,
            order_id: &self.order_id,
            line_id: &self.line_id,
            sku: &self.sku,
            quantity: self.quantity,
            location: &self.location,
            split: self.split,
            candidates: self.candidates.iter().map(Candidate::fields),
            state: self.state,
            shipped_from: &self.shipped_from,
            reason_event_id: &self.reason_event_id,
            decided_at_ms: self.decided_at_ms,
        }
    }

    /// The record's protobuf encoding.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        self.fields().encode_to_vec()
    }

    pub fn to_message(&self) -> RoutingDecision {
        self.fields().to_message()
    }
}

/// The first `ship_from` location whose free units (on-hand - open reservations counted at
/// it) cover the quantity; else the one with the most free units (ties to the earlier),
/// marked split. `None` when the channel has no `ship_from`.
pub fn advise(rules: &Rules, stock: &Stock, channel: &str, quantity: i64) -> Option<Advice> {
    let ship_from = &rules.channel(channel)?.ship_from;
    let candidates: Candidates = ship_from
        .iter()
        .map(|location| {
            let (on_hand, reserved) = (stock.on_hand_at(location), stock.reserved_at(location));
            Candidate { location: location.into(), on_hand, reserved, free: on_hand - reserved }
        })
        .collect();
    let covering = candidates.iter().position(|c| c.free >= quantity);
    let (chosen, split) = match covering {
        Some(index) => (index, false),
        // max_by_key keeps the last of equal maxima: reversed, it keeps the earliest
        None => (candidates.iter().enumerate().rev().max_by_key(|(_, c)| c.free)?.0, true),
    };
    Some(Advice { chosen, split, candidates })
}

/// The record of an advice, at placement.
pub fn advised(placed: &Placed, advice: Advice, cause: Cause) -> PublishedRouting {
    PublishedRouting {
        channel: placed.line.channel.clone(),
        order_id: placed.line.order_id.clone(),
        line_id: placed.line.line_id.clone(),
        sku: placed.sku.clone(),
        quantity: placed.quantity,
        location: advice.location().into(),
        split: advice.split,
        candidates: advice.candidates,
        state: RoutingState::Advised as i32,
        shipped_from: CompactString::default(),
        reason_event_id: cause.event_id.into(),
        decided_at_ms: cause.at_ms,
    }
}

/// The note of a shipment that left from another location than advised, if it did.
pub fn shipped_elsewhere(
    key: &LineKey,
    sku: &str,
    line: &Line,
    shipped_from: &str,
    cause: Cause,
) -> Option<PublishedRouting> {
    let advised = line.location.as_deref().filter(|_| line.advised)?;
    if advised == shipped_from {
        return None;
    }
    Some(PublishedRouting {
        channel: key.channel.clone(),
        order_id: key.order_id.clone(),
        line_id: key.line_id.clone(),
        sku: sku.into(),
        quantity: line.placed,
        location: advised.into(),
        split: line.split,
        candidates: Candidates::new(),
        state: RoutingState::ShippedElsewhere as i32,
        shipped_from: shipped_from.into(),
        reason_event_id: cause.event_id.into(),
        decided_at_ms: cause.at_ms,
    })
}
