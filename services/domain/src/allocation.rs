//! Published availability per channel (CONTRACT.md section 4, "Published availability").

use compact_str::CompactString;
use omnifold_proto::borrowed::ChannelAvailabilityRef;
use omnifold_proto::{AllocationMode, AllocationRule, ChannelAvailability};
use rust_decimal::Decimal;
use smallvec::SmallVec;

use crate::contract::{Channel, Rules, ScarcityMode};
use crate::demand::Span;
use crate::stock::{Atps, Stock};

/// The number one channel may sell now, and how it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability<'r> {
    pub channel: &'r str,
    pub available: i64,
    pub mode: AllocationMode,
    pub rule: AllocationRule,
}

/// A channel's availability as the fold publishes it (a `ChannelAvailability` record). Its
/// strings are held inline up to 24 bytes (most SKUs, channel ids and event ids), and the
/// record is encoded from them as they are ([`PublishedAvailability::encode_to_vec`]): more than
/// one is published per event, and three `String`s each were a fifth of the fold's allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedAvailability {
    pub sku: CompactString,
    pub channel: CompactString,
    pub available: i64,
    /// An [`AllocationMode`], as the record holds it.
    pub mode: i32,
    /// An [`AllocationRule`], as the record holds it.
    pub rule: i32,
    pub reason_event_id: CompactString,
    pub decided_at_ms: i64,
}

impl PublishedAvailability {
    pub fn fields(&self) -> ChannelAvailabilityRef<'_> {
        ChannelAvailabilityRef {
            sku: &self.sku,
            channel: &self.channel,
            available: self.available,
            mode: self.mode,
            rule: self.rule,
            reason_event_id: &self.reason_event_id,
            decided_at_ms: self.decided_at_ms,
        }
    }

    /// The record's protobuf encoding.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        self.fields().encode_to_vec()
    }

    pub fn to_message(&self) -> ChannelAvailability {
        self.fields().to_message()
    }
}

/// One figure per channel (or per shared-pool seller), held inline for a catalogue's handful
/// of channels: computed at every event that moves stock.
pub type PerChannel<T> = SmallVec<[T; 8]>;

/// Every channel's availability for the SKU, in (priority, id) order.
pub fn allocate<'r>(
    rules: &'r Rules,
    stock: &mut Stock,
    atps: &Atps,
    now: i64,
) -> PerChannel<Availability<'r>> {
    let allocation = &rules.contract.allocation;
    let shared_sellable = (atps.shared() - allocation.safety_stock).max(0);
    let sellers: PerChannel<&Channel> = rules.shared_sellers().collect();
    let (mode, rule, shares) = if shared_sellable >= allocation.scarcity_threshold {
        (AllocationMode::Normal, AllocationRule::MaxShare, normal_shares(&sellers, shared_sellable))
    } else {
        match allocation.scarcity_mode {
            ScarcityMode::Priority => (
                AllocationMode::Scarcity,
                AllocationRule::Priority,
                priority_shares(&sellers, shared_sellable),
            ),
            ScarcityMode::Proportional => {
                let weights: PerChannel<i64> =
                    sellers.iter().map(|c| stock.demand.units(&c.id, now, Span::Month)).collect();
                let shares = proportional_shares(&sellers, &weights, shared_sellable);
                (AllocationMode::Scarcity, AllocationRule::Proportional, shares)
            }
        }
    };
    // the sellers are the shared-pool channels in this same order, so their shares come in turn
    let mut shares = shares.into_iter();
    rules
        .indexed_channels_in_order()
        .map(|(index, channel)| {
            let dedicated = atps.dedicated(index).max(0);
            let share = match channel.sells_from_shared_pool {
                true => shares.next().expect("a share per seller"),
                false => 0,
            };
            Availability { channel: &channel.id, available: dedicated + share, mode, rule }
        })
        .collect()
}

/// floor(max_share x shared_sellable), on the decimal's integer mantissa where that fits (it
/// does for any share written with a few decimals), which is exact and spares a decimal
/// multiplication per seller and event.
fn cap(channel: &Channel, shared_sellable: i64) -> i64 {
    let share = channel.max_share;
    let scaled = share.mantissa().checked_mul(i128::from(shared_sellable));
    let capped = match (scaled, 10i128.checked_pow(share.scale())) {
        (Some(scaled), Some(unit)) => scaled.div_euclid(unit),
        _ => i128::try_from((share * Decimal::from(shared_sellable)).floor()).expect("a floor is whole"),
    };
    i64::try_from(capped).expect("a share of an i64 fits an i64")
}

fn normal_shares(sellers: &[&Channel], shared_sellable: i64) -> PerChannel<i64> {
    sellers.iter().map(|c| cap(c, shared_sellable)).collect()
}

/// In (priority, id) order each seller takes min(remaining, its cap).
fn priority_shares(sellers: &[&Channel], shared_sellable: i64) -> PerChannel<i64> {
    let mut remaining = shared_sellable;
    sellers
        .iter()
        .map(|c| {
            let take = remaining.min(cap(c, shared_sellable));
            remaining -= take;
            take
        })
        .collect()
}

/// Quotas by largest remainder on the trailing placements (equal weights when all are zero),
/// ties to (priority, id) order, then each capped; what a cap removes is not handed on.
fn proportional_shares(sellers: &[&Channel], weights: &[i64], shared_sellable: i64) -> PerChannel<i64> {
    if sellers.is_empty() {
        return PerChannel::new();
    }
    let weights: PerChannel<i128> = if weights.iter().all(|&w| w == 0) {
        smallvec::smallvec![1; sellers.len()]
    } else {
        weights.iter().map(|&w| i128::from(w)).collect()
    };
    let total: i128 = weights.iter().sum();
    let units = i128::from(shared_sellable);
    // Exact: quota = units x w / total; the remainders share the denominator `total`.
    let mut quotas: PerChannel<i128> = weights.iter().map(|w| units * w / total).collect();
    let remainders: PerChannel<i128> = weights.iter().map(|w| units * w % total).collect();
    let leftover = units - quotas.iter().sum::<i128>();
    let mut by_remainder: PerChannel<usize> = (0..sellers.len()).collect();
    // A stable sort keeps (priority, id) order among equal remainders.
    by_remainder.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]));
    for &i in by_remainder.iter().take(usize::try_from(leftover).expect("leftover is below the seller count"))
    {
        quotas[i] += 1;
    }
    sellers
        .iter()
        .zip(quotas)
        .map(|(c, quota)| {
            let quota = i64::try_from(quota).expect("a quota is at most shared_sellable");
            quota.min(cap(c, shared_sellable))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn channel(id: &str, priority: u32, max_share: Decimal) -> Channel {
        Channel {
            id: id.into(),
            name: id.into(),
            owner: format!("owner of {id}"),
            on_call: format!("oncall-{id}"),
            currency: "USD".into(),
            priority,
            max_share,
            fee_rate: dec!(0.1),
            margin_floor: dec!(0.1),
            map_applies: false,
            weekly_operating_cost: crate::contract::MoneyConfig { amount: dec!(0), currency: "USD".into() },
            sells_from_shared_pool: true,
            spike_min_units: None,
            ship_from: Vec::new(),
        }
    }

    #[test]
    fn largest_remainder_with_ties_to_priority() {
        let (a, b, c) = (channel("a", 1, dec!(1)), channel("b", 2, dec!(1)), channel("c", 3, dec!(1)));
        // 10 units over equal weights: 3.33 each, one leftover unit to the first in priority.
        assert_eq!(proportional_shares(&[&a, &b, &c], &[0, 0, 0], 10).as_slice(), [4, 3, 3]);
        // weights 1:1:2 over 10: 2.5, 2.5, 5 -> the tie on .5 goes to a.
        assert_eq!(proportional_shares(&[&a, &b, &c], &[1, 1, 2], 10).as_slice(), [3, 2, 5]);
    }

    #[test]
    fn caps_are_not_redistributed() {
        let (a, b) = (channel("a", 1, dec!(0.5)), channel("b", 2, dec!(1)));
        // weights 9:1 over 10: quotas 9 and 1; a is capped at 5 and the 4 are not handed on.
        assert_eq!(proportional_shares(&[&a, &b], &[9, 1], 10).as_slice(), [5, 1]);
    }

    #[test]
    fn a_cap_is_the_floor_of_the_exact_product() {
        for (share, units, capped) in [
            (dec!(0.4), 10, 4),
            (dec!(0.45), 11, 4),
            (dec!(1), 7, 7),
            (dec!(0.333), 1000, 333),
            (dec!(0), 9, 0),
        ] {
            assert_eq!(cap(&channel("a", 1, share), units), capped, "{share} x {units}");
        }
        // beyond what the mantissa path holds, the decimal product decides
        let huge = Decimal::from_i128_with_scale(79_228_162_514_264_337_593_543_950_335, 28);
        assert_eq!(cap(&channel("a", 1, huge), 1_000_000_000_000), 7_922_816_251_426);
    }

    #[test]
    fn priority_serves_in_order() {
        let (a, b, c) = (channel("a", 1, dec!(0.6)), channel("b", 2, dec!(0.6)), channel("c", 3, dec!(1)));
        assert_eq!(priority_shares(&[&a, &b, &c], 10).as_slice(), [6, 4, 0]);
    }
}
