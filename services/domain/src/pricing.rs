//! A SKU's price book: listed prices per channel, unit cost, promotions and competitor
//! observations, each with the event that set it (CONTRACT.md sections 2 and 5).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::fact::{Promotion, Rejection};
use crate::money::Amount;

/// A value and the event that set it, for decision provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set<T> {
    pub value: T,
    pub event_id: String,
    pub at_ms: i64,
}

/// A scheduled promotion of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledPromotion {
    pub channel: String,
    pub promotion_id: String,
    pub percent_off: Decimal,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub cancelled: bool,
    pub event_id: String,
}

impl ScheduledPromotion {
    /// Whether the promotion runs at `now`: [starts, ends) and not cancelled.
    pub fn active_at(&self, now: i64) -> bool {
        !self.cancelled && self.starts_at_ms <= now && now < self.ends_at_ms
    }
}

/// The price side of one SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBook {
    /// Listed price per channel, as sent.
    pub listed: BTreeMap<String, Set<Amount>>,
    /// The landed unit cost, as sent.
    pub unit_cost: Option<Set<Amount>>,
    /// Keyed by (channel, promotion_id).
    pub promotions: BTreeMap<(String, String), ScheduledPromotion>,
    /// Latest observation per (channel, competitor).
    pub competitors: BTreeMap<(String, String), Set<Amount>>,
}

impl PriceBook {
    /// Sets the channel's listed price; returns the previous one.
    pub fn set_price(&mut self, channel: &str, price: Set<Amount>) -> Option<Set<Amount>> {
        self.listed.insert(channel.to_string(), price)
    }

    pub fn set_cost(&mut self, cost: Set<Amount>) {
        self.unit_cost = Some(cost);
    }

    pub fn schedule(&mut self, channel: &str, promotion: &Promotion, event_id: &str) -> Result<(), Rejection> {
        let key = (channel.to_string(), promotion.promotion_id.clone());
        if self.promotions.contains_key(&key) {
            return Err(Rejection::DuplicatePromotion(format!("{channel}:{}", promotion.promotion_id)));
        }
        let scheduled = ScheduledPromotion {
            channel: channel.to_string(),
            promotion_id: promotion.promotion_id.clone(),
            percent_off: promotion.percent_off,
            starts_at_ms: promotion.starts_at_ms,
            ends_at_ms: promotion.ends_at_ms,
            cancelled: false,
            event_id: event_id.to_string(),
        };
        self.promotions.insert(key, scheduled);
        Ok(())
    }

    /// Cancels a promotion; cancelling one already cancelled is a no-op.
    pub fn cancel(&mut self, channel: &str, promotion_id: &str) -> Result<(), Rejection> {
        let key = (channel.to_string(), promotion_id.to_string());
        match self.promotions.get_mut(&key) {
            Some(promotion) => {
                promotion.cancelled = true;
                Ok(())
            }
            None => Err(Rejection::UnknownPromotion(format!("{channel}:{promotion_id}"))),
        }
    }

    pub fn observe(&mut self, channel: &str, competitor: &str, price: Set<Amount>) {
        self.competitors.insert((channel.to_string(), competitor.to_string()), price);
    }
}
