//! Routing advice for a line placed without a location (CONTRACT.md section 10): which of the
//! channel's `ship_from` locations should ship it. Advisory: the line reserves in its pool as
//! in section 4 whatever is advised; the advice only counts its units at the location, so the
//! next line sees them taken.

use omnifold_proto::{RoutingCandidate, RoutingDecision, RoutingState};

use crate::alerts::Cause;
use crate::contract::Rules;
use crate::fact::{LineKey, Placed};
use crate::stock::{Line, Stock};

/// The advice for one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub location: String,
    pub split: bool,
    pub candidates: Vec<RoutingCandidate>,
}

/// The first `ship_from` location whose free units (on-hand - open reservations counted at
/// it) cover the quantity; else the one with the most free units (ties to the earlier),
/// marked split. `None` when the channel has no `ship_from`.
pub fn advise(rules: &Rules, stock: &Stock, channel: &str, quantity: i64) -> Option<Advice> {
    let ship_from = &rules.channel(channel)?.ship_from;
    let candidates: Vec<RoutingCandidate> = ship_from
        .iter()
        .map(|location| {
            let (on_hand, reserved) = (stock.on_hand_at(location), stock.reserved_at(location));
            RoutingCandidate { location: location.clone(), on_hand, reserved, free: on_hand - reserved }
        })
        .collect();
    let covering = candidates.iter().position(|c| c.free >= quantity);
    let (chosen, split) = match covering {
        Some(index) => (index, false),
        // max_by_key keeps the last of equal maxima: reversed, it keeps the earliest
        None => (candidates.iter().enumerate().rev().max_by_key(|(_, c)| c.free)?.0, true),
    };
    Some(Advice { location: candidates[chosen].location.clone(), split, candidates })
}

/// The record of an advice, at placement.
pub fn advised(placed: &Placed, advice: Advice, cause: Cause) -> RoutingDecision {
    RoutingDecision {
        channel: placed.line.channel.to_string(),
        order_id: placed.line.order_id.to_string(),
        line_id: placed.line.line_id.to_string(),
        sku: placed.sku.to_string(),
        quantity: placed.quantity,
        location: advice.location,
        split: advice.split,
        candidates: advice.candidates,
        state: RoutingState::Advised as i32,
        shipped_from: String::new(),
        reason_event_id: cause.event_id.to_string(),
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
) -> Option<RoutingDecision> {
    let advised = line.location.as_deref().filter(|_| line.advised)?;
    if advised == shipped_from {
        return None;
    }
    Some(RoutingDecision {
        channel: key.channel.to_string(),
        order_id: key.order_id.to_string(),
        line_id: key.line_id.to_string(),
        sku: sku.to_string(),
        quantity: line.placed,
        location: advised.to_string(),
        split: line.split,
        candidates: Vec::new(),
        state: RoutingState::ShippedElsewhere as i32,
        shipped_from: shipped_from.to_string(),
        reason_event_id: cause.event_id.to_string(),
        decided_at_ms: cause.at_ms,
    })
}
