//! A SKU's price book: listed prices per channel, unit cost, promotions and competitor
//! observations, each with the event that set it (CONTRACT.md sections 2 and 5), and the
//! price arithmetic of section 5: effective prices, floors, promotion collisions, and the
//! provenance of a SKU's prices ([`explain`]).
//!
//! Every comparison is made in the reporting currency ([`crate::Contract::to_reporting`]).

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::contract::{Channel, Rules};
use crate::demand::WINDOW_MS;
use crate::fact::{Promotion, Rejection};
use crate::keyed::Records;
use crate::money::Amount;
use crate::small_map::SmallMap;

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
    pub event_id: String,
}

impl ScheduledPromotion {
    /// Whether the promotion runs at `now`: [starts, ends).
    pub fn active_at(&self, now: i64) -> bool {
        self.starts_at_ms <= now && now < self.ends_at_ms
    }
}

/// A promotion's identity: (channel, promotion_id); the SKU is the state's own.
pub type PromotionKey = (String, String);

/// The price side of one SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBook {
    /// Listed price per channel, as sent.
    pub listed: SmallMap<String, Set<Amount>>,
    /// The landed unit cost, as sent.
    pub unit_cost: Option<Set<Amount>>,
    /// The promotions a rule can still read, by (channel, promotion_id): neither cancelled
    /// nor ended one window before the SKU's latest event ([`PriceBook::let_go`]).
    pub promotions: SmallMap<PromotionKey, ScheduledPromotion>,
    /// Latest observation per (channel, competitor); bounded by the competitors there are.
    pub competitors: SmallMap<(String, String), Set<Amount>>,
    /// Every promotion ever scheduled, so that a second scheduling is refused and a late
    /// cancellation accepted forever; stored under their own keys (see [`crate::keyed`]).
    #[serde(skip)]
    pub scheduled: Records<PromotionKey, ()>,
}

impl PriceBook {
    /// Sets the channel's listed price; returns the previous one.
    pub fn set_price(&mut self, channel: &str, price: Set<Amount>) -> Option<Set<Amount>> {
        self.listed.insert(channel.to_string(), price)
    }

    pub fn set_cost(&mut self, cost: Set<Amount>) {
        self.unit_cost = Some(cost);
    }

    pub fn schedule(
        &mut self,
        channel: &str,
        promotion: &Promotion,
        event_id: &str,
    ) -> Result<(), Rejection> {
        let key = (channel.to_string(), promotion.promotion_id.clone());
        if self.scheduled.contains(&key) {
            return Err(Rejection::DuplicatePromotion(format!("{channel}:{}", promotion.promotion_id)));
        }
        let scheduled = ScheduledPromotion {
            channel: channel.to_string(),
            promotion_id: promotion.promotion_id.clone(),
            percent_off: promotion.percent_off,
            starts_at_ms: promotion.starts_at_ms,
            ends_at_ms: promotion.ends_at_ms,
            event_id: event_id.to_string(),
        };
        self.scheduled.insert(key.clone(), ());
        self.promotions.insert(key, scheduled);
        Ok(())
    }

    /// Cancels a promotion: no rule reads it any more. Cancelling one already cancelled, or
    /// one that has ended, is a no-op.
    pub fn cancel(&mut self, channel: &str, promotion_id: &str) -> Result<(), Rejection> {
        let key = (channel.to_string(), promotion_id.to_string());
        if !self.scheduled.contains(&key) {
            return Err(Rejection::UnknownPromotion(format!("{channel}:{promotion_id}")));
        }
        self.promotions.remove(&key);
        Ok(())
    }

    /// Forgets the promotions that ended one window (28 days) before `latest`: no event up
    /// to 28 days late can see them running, and [`first_collision`] only reads promotions
    /// that end after now. Their ids stay in `scheduled`.
    /// Returns whether any was let go.
    pub fn let_go(&mut self, latest: i64) -> bool {
        let horizon = latest.saturating_sub(WINDOW_MS);
        let before = self.promotions.len();
        self.promotions.retain(|_, promotion| promotion.ends_at_ms > horizon);
        self.promotions.len() != before
    }

    /// The span around `now`, [from, until), in which no promotion starts or ends: while the
    /// book is unchanged, every price rule reads the same running promotions, the same live
    /// ones and the same collisions at any instant of it.
    pub fn steady_span(&self, now: i64) -> (i64, i64) {
        let bounds = self.promotions.values().flat_map(|p| [p.starts_at_ms, p.ends_at_ms]);
        bounds.fold((i64::MIN, i64::MAX), |(from, until), bound| {
            if bound <= now { (from.max(bound), until) } else { (from, until.min(bound)) }
        })
    }

    pub fn observe(&mut self, channel: &str, competitor: &str, price: Set<Amount>) {
        self.competitors.insert((channel.to_string(), competitor.to_string()), price);
    }

    /// The channel's promotions running at `now`, in promotion id order.
    pub fn active_promotions<'a>(
        &'a self,
        channel: &'a str,
        now: i64,
    ) -> impl Iterator<Item = &'a ScheduledPromotion> + 'a {
        self.promotions.values().filter(move |p| p.channel == channel && p.active_at(now))
    }

    /// The summed percent_off of the channel's promotions running at `now`.
    pub fn discount(&self, channel: &str, now: i64) -> Decimal {
        self.active_promotions(channel, now).map(|p| p.percent_off).sum()
    }

    /// The channel's effective price at `now` in the listed price's currency; `None` when the
    /// channel lists no price.
    pub fn effective(&self, channel: &str, now: i64) -> Option<Amount> {
        let listed = &self.listed.get(channel)?.value;
        let value = discounted(listed.value, self.discount(channel, now));
        Some(Amount { value, currency: listed.currency.clone() })
    }
}

/// listed x (1 - discount). Promotions summing to 100% or more would make it negative; a
/// price never goes below 0.
pub fn discounted(listed: Decimal, discount: Decimal) -> Decimal {
    (listed * (Decimal::ONE - discount)).max(Decimal::ZERO)
}

/// 1 - fee_rate - margin_floor: what is left of a price to cover the unit cost. The contract
/// refuses channels where it is not above 0, so dividing by it is safe.
pub fn cost_share(channel: &Channel) -> Decimal {
    Decimal::ONE - channel.fee_rate - channel.margin_floor
}

/// PRICE_BELOW_FLOOR's test. It multiplies rather than divides so that it stays exact.
pub fn below_floor(channel: &Channel, price: Decimal, unit_cost: Decimal) -> bool {
    price * cost_share(channel) < unit_cost
}

/// The floor unit_cost / (1 - fee_rate - margin_floor), rounded up to the cent: the lowest
/// whole-cent price that is not below the floor.
pub fn floor_price(channel: &Channel, unit_cost: Decimal) -> Decimal {
    let cents = ceil_cent(unit_cost / cost_share(channel));
    // the division rounds at 28 digits, which can land exactly on a cent just below the floor
    if below_floor(channel, cents, unit_cost) { cents + Decimal::new(1, 2) } else { cents }
}

/// Rounds up to the cent, always with two decimals so that floors read as prices.
pub fn ceil_cent(value: Decimal) -> Decimal {
    let mut cents = value.round_dp_with_strategy(2, RoundingStrategy::ToPositiveInfinity);
    cents.rescale(2);
    cents
}

/// The same value without trailing zeros beyond the cent, so that computed prices read as
/// prices: 80.000 becomes 80.00 and 50.5890 becomes 50.589.
pub fn tidy(value: Decimal) -> Decimal {
    let mut value = value.normalize();
    if value.scale() < 2 {
        value.rescale(2);
    }
    value
}

/// COMPETITOR_UNDERCUT's recommendation: max(floor rounded up to the cent, competitor price -
/// competitor_step); `floor` is the result of [`floor_price`], or 0 when no cost is known.
pub fn recommended_price(floor: Decimal, competitor: Decimal, step: Decimal) -> Decimal {
    floor.max(competitor - step)
}

/// COMPETITOR_UNDERCUT's test: competitor < effective x (1 - competitor_undercut_threshold).
pub fn undercuts(rules: &Rules, competitor: Decimal, effective: Decimal) -> bool {
    competitor < effective * (Decimal::ONE - rules.contract.pricing.competitor_undercut_threshold)
}

/// CHANNEL_PRICE_SPREAD's test: max - min > max_channel_spread x min.
pub fn spread_exceeded(rules: &Rules, min: Decimal, max: Decimal) -> bool {
    max - min > rules.contract.pricing.max_channel_spread * min
}

/// An amount in the reporting currency. `None` only when the contract lost the currency's
/// rate after the amount was accepted; such an amount is left out rather than guessed.
pub fn reporting(rules: &Rules, amount: &Amount) -> Option<Decimal> {
    rules.contract.to_reporting(amount).ok()
}

/// The SKU's minimum advertised price, as configured.
pub fn map_of(rules: &Rules, sku: &str) -> Option<Amount> {
    let map = rules.contract.pricing.map.get(sku)?;
    Some(Amount { value: map.amount, currency: map.currency.as_str().into() })
}

/// The competitor_step in the reporting currency.
pub fn competitor_step(rules: &Rules) -> Decimal {
    let step = &rules.contract.pricing.competitor_step;
    reporting(rules, &Amount { value: step.amount, currency: step.currency.as_str().into() })
        .unwrap_or_default()
}

/// A channel that lists a price, with its prices at `now` in the reporting currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<'a> {
    pub channel: &'a Channel,
    pub listed: Decimal,
    /// The summed percent_off of its running promotions.
    pub discount: Decimal,
    pub effective: Decimal,
}

/// The channels that list a price, in (priority, id) order.
pub fn listings<'a>(rules: &'a Rules, book: &PriceBook, now: i64) -> Vec<Listing<'a>> {
    rules
        .channels_in_order()
        .filter_map(|channel| {
            let listed = reporting(rules, &book.listed.get(&channel.id)?.value)?;
            let discount = book.discount(&channel.id, now);
            Some(Listing { channel, listed, discount, effective: discounted(listed, discount) })
        })
        .collect()
}

/// The lowest and the highest listed price, with at least two channels listing one.
pub fn extremes<'l, 'a>(listings: &'l [Listing<'a>]) -> Option<[&'l Listing<'a>; 2]> {
    let low = listings.iter().min_by_key(|l| l.listed)?;
    let high = listings.iter().max_by_key(|l| l.listed)?;
    (listings.len() >= 2).then_some([low, high])
}

/// Promotions of one SKU that run together at one instant and break the contract's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Collision<'a> {
    pub at_ms: i64,
    /// In (channel, promotion_id) order.
    pub promotions: Vec<&'a ScheduledPromotion>,
    pub combined_discount: Decimal,
}

/// The first instant at or after `now` at which more than max_concurrent_promotions of the
/// SKU's promotions (any channels) overlap, or at which overlapping ones sum to more than
/// max_combined_discount. Promotions are only added to the running set at their starts, so
/// `now` and the later starts are the only instants that can be worst.
pub fn first_collision<'a>(rules: &Rules, book: &'a PriceBook, now: i64) -> Option<Collision<'a>> {
    let live = live_promotions(book, now);
    instants(&live, now).into_iter().find_map(|at_ms| collision_at(rules, &live, at_ms))
}

/// The most promotions of one SKU running together at any instant at or after now, and the
/// deepest summed percent_off; each may come from a different instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Overlap {
    pub concurrent: usize,
    pub combined_discount: Decimal,
}

/// The peak overlap from `now` on, read at the same instants as [`first_collision`].
pub fn peak_overlap(book: &PriceBook, now: i64) -> Overlap {
    let live = live_promotions(book, now);
    let mut peak = Overlap::default();
    for at_ms in instants(&live, now) {
        let running = live.iter().filter(|p| p.active_at(at_ms));
        let (count, combined) = running.fold((0, Decimal::ZERO), |(n, sum), p| (n + 1, sum + p.percent_off));
        peak.concurrent = peak.concurrent.max(count);
        peak.combined_discount = peak.combined_discount.max(combined);
    }
    peak
}

fn live_promotions(book: &PriceBook, now: i64) -> Vec<&ScheduledPromotion> {
    book.promotions.values().filter(|p| p.ends_at_ms > now).collect()
}

/// `now` and the later starts: the only instants at which an overlap can be worst.
fn instants(live: &[&ScheduledPromotion], now: i64) -> Vec<i64> {
    let mut instants: Vec<i64> =
        live.iter().map(|p| p.starts_at_ms).filter(|&starts| starts > now).chain([now]).collect();
    instants.sort_unstable();
    instants.dedup();
    instants
}

/// A single promotion deeper than max_combined_discount collides with nothing: the discount
/// limit is on promotions combined, so it needs at least two.
fn collision_at<'a>(rules: &Rules, live: &[&'a ScheduledPromotion], at_ms: i64) -> Option<Collision<'a>> {
    let promotions: Vec<&ScheduledPromotion> = live.iter().copied().filter(|p| p.active_at(at_ms)).collect();
    let combined_discount: Decimal = promotions.iter().map(|p| p.percent_off).sum();
    let limits = &rules.contract.pricing;
    let too_many = promotions.len() > limits.max_concurrent_promotions as usize;
    let too_deep = promotions.len() >= 2 && combined_discount > limits.max_combined_discount;
    (too_many || too_deep).then_some(Collision { at_ms, promotions, combined_discount })
}

/// An amount as sent (or as configured) and in the reporting currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quote {
    pub amount: Decimal,
    pub currency: String,
    /// `None` only when the contract no longer has the currency's rate.
    pub reporting: Option<Decimal>,
}

/// A quote and the event that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced {
    #[serde(flatten)]
    pub quote: Quote,
    pub event_id: String,
    pub at_ms: i64,
}

/// A promotion running at the explained instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromotionExplanation {
    pub promotion_id: String,
    pub percent_off: Decimal,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub event_id: String,
}

/// A channel's floor: unit_cost / (1 - fee_rate - margin_floor) rounded up to the cent, in
/// the cost's currency and in the reporting currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloorExplanation {
    #[serde(flatten)]
    pub quote: Quote,
    pub fee_rate: Decimal,
    pub margin_floor: Decimal,
    pub cost_event_id: String,
}

/// A competitor's latest price on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompetitorExplanation {
    pub competitor: String,
    #[serde(flatten)]
    pub price: Sourced,
}

/// One channel's price of a SKU and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelExplanation {
    pub channel: String,
    /// `None` when the channel lists no price.
    pub listed: Option<Sourced>,
    pub promotions: Vec<PromotionExplanation>,
    /// The summed percent_off of `promotions`.
    pub discount: Decimal,
    /// listed x (1 - discount), in the listed price's currency.
    pub effective: Option<Quote>,
    /// `None` when no cost is known.
    pub floor: Option<FloorExplanation>,
    pub map: Option<Quote>,
    pub map_applies: bool,
    /// The PRICE_BELOW_FLOOR and MAP_VIOLATION tests, exactly as the alerts make them.
    pub below_floor: bool,
    pub below_map: bool,
    pub competitors: Vec<CompetitorExplanation>,
}

/// What a SKU's price is on every channel at one instant, and why (decision provenance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceExplanation {
    pub sku: String,
    pub at_ms: i64,
    pub reporting_currency: String,
    pub unit_cost: Option<Sourced>,
    /// Every contract channel, in (priority, id) order.
    pub channels: Vec<ChannelExplanation>,
}

/// Explains the SKU's prices at `now`. Pass the SKU's clock (`SkuState::latest_ms`) to see
/// what the fold last saw; a later `now` shows promotions that started since.
pub fn explain(rules: &Rules, sku: &str, book: &PriceBook, now: i64) -> PriceExplanation {
    let map = map_of(rules, sku);
    PriceExplanation {
        sku: sku.to_string(),
        at_ms: now,
        reporting_currency: rules.contract.reporting_currency.clone(),
        unit_cost: book.unit_cost.as_ref().map(|cost| sourced(rules, cost)),
        channels: rules
            .channels_in_order()
            .map(|c| explain_channel(rules, book, c, map.as_ref(), now))
            .collect(),
    }
}

fn explain_channel(
    rules: &Rules,
    book: &PriceBook,
    channel: &Channel,
    map: Option<&Amount>,
    now: i64,
) -> ChannelExplanation {
    let effective =
        book.effective(&channel.id, now).map(|e| quote(rules, &Amount { value: tidy(e.value), ..e }));
    let effective_reporting = effective.as_ref().and_then(|q| q.reporting);
    let cost_reporting = book.unit_cost.as_ref().and_then(|c| reporting(rules, &c.value));
    let map = map.map(|m| quote(rules, m));
    let map_reporting = map.as_ref().and_then(|q| q.reporting).filter(|_| channel.map_applies);
    ChannelExplanation {
        channel: channel.id.clone(),
        listed: book.listed.get(&channel.id).map(|listed| sourced(rules, listed)),
        promotions: book.active_promotions(&channel.id, now).map(explain_promotion).collect(),
        discount: book.discount(&channel.id, now),
        effective,
        floor: book.unit_cost.as_ref().map(|cost| explain_floor(rules, channel, cost)),
        map,
        map_applies: channel.map_applies,
        below_floor: matches!((effective_reporting, cost_reporting), (Some(e), Some(c)) if below_floor(channel, e, c)),
        below_map: matches!((effective_reporting, map_reporting), (Some(e), Some(m)) if e < m),
        competitors: explain_competitors(rules, book, &channel.id),
    }
}

fn explain_promotion(promotion: &ScheduledPromotion) -> PromotionExplanation {
    PromotionExplanation {
        promotion_id: promotion.promotion_id.clone(),
        percent_off: promotion.percent_off,
        starts_at_ms: promotion.starts_at_ms,
        ends_at_ms: promotion.ends_at_ms,
        event_id: promotion.event_id.clone(),
    }
}

fn explain_floor(rules: &Rules, channel: &Channel, cost: &Set<Amount>) -> FloorExplanation {
    let quote = Quote {
        amount: floor_price(channel, cost.value.value),
        currency: cost.value.currency.to_string(),
        reporting: reporting(rules, &cost.value).map(|c| floor_price(channel, c)),
    };
    FloorExplanation {
        quote,
        fee_rate: channel.fee_rate,
        margin_floor: channel.margin_floor,
        cost_event_id: cost.event_id.clone(),
    }
}

fn explain_competitors(rules: &Rules, book: &PriceBook, channel: &str) -> Vec<CompetitorExplanation> {
    book.competitors
        .iter()
        .filter(|((on, _), _)| on == channel)
        .map(|((_, competitor), price)| CompetitorExplanation {
            competitor: competitor.clone(),
            price: sourced(rules, price),
        })
        .collect()
}

/// Amounts as sent keep their digits; computed ones are tidied.
fn quote(rules: &Rules, amount: &Amount) -> Quote {
    Quote {
        amount: amount.value,
        currency: amount.currency.to_string(),
        reporting: reporting(rules, amount).map(tidy),
    }
}

fn sourced(rules: &Rules, set: &Set<Amount>) -> Sourced {
    Sourced { quote: quote(rules, &set.value), event_id: set.event_id.clone(), at_ms: set.at_ms }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    use crate::contract::Contract;

    const DAY: i64 = 86_400_000;

    fn rules() -> Rules {
        let contract: Contract = toml::from_str(include_str!("../tests/scenarios/contract.toml")).unwrap();
        Rules::new(contract)
    }

    fn promotion(
        channel: &str,
        id: &str,
        percent_off: Decimal,
        starts: i64,
        ends: i64,
    ) -> ScheduledPromotion {
        ScheduledPromotion {
            channel: channel.into(),
            promotion_id: id.into(),
            percent_off,
            starts_at_ms: starts,
            ends_at_ms: ends,
            event_id: format!("ev-{id}"),
        }
    }

    fn book(promotions: Vec<ScheduledPromotion>) -> PriceBook {
        let mut book = PriceBook::default();
        for p in promotions {
            book.scheduled.insert((p.channel.clone(), p.promotion_id.clone()), ());
            book.promotions.insert((p.channel.clone(), p.promotion_id.clone()), p);
        }
        book
    }

    #[test]
    fn ceil_cent_rounds_up_and_keeps_two_decimals() {
        assert_eq!(ceil_cent(dec!(62.5)).to_string(), "62.50");
        assert_eq!(ceil_cent(dec!(53.333333)).to_string(), "53.34");
        assert_eq!(ceil_cent(dec!(53.34)).to_string(), "53.34");
        assert_eq!(ceil_cent(dec!(53.3400001)).to_string(), "53.35");
        assert_eq!(ceil_cent(dec!(0)).to_string(), "0.00");
    }

    #[test]
    fn floors_of_the_scenario_channels() {
        let rules = rules();
        let channel = |id| rules.channel(id).unwrap();
        // 50 / 0.80, 40 / 0.75 = 53.33.., 44 / 0.78 = 56.4102..
        assert_eq!(floor_price(channel("shop"), dec!(50)), dec!(62.50));
        assert_eq!(floor_price(channel("amzn"), dec!(40)), dec!(53.34));
        assert_eq!(floor_price(channel("market"), dec!(44.00)), dec!(56.42));
        assert!(below_floor(channel("amzn"), dec!(53.33), dec!(40)));
        assert!(!below_floor(channel("amzn"), dec!(53.34), dec!(40)));
    }

    proptest! {
        #[test]
        fn floor_price_is_the_lowest_cent_not_below_the_floor(cents in 0i64..10_000_000, fee in 0u32..50, margin in 0u32..49) {
            let mut channel = rules().channel("shop").unwrap().clone();
            channel.fee_rate = Decimal::new(i64::from(fee), 2);
            channel.margin_floor = Decimal::new(i64::from(margin), 2);
            let cost = Decimal::new(cents, 2);
            let floor = floor_price(&channel, cost);
            prop_assert!(!below_floor(&channel, floor, cost));
            if floor > Decimal::ZERO {
                prop_assert!(below_floor(&channel, floor - dec!(0.01), cost));
            }
        }
    }

    #[test]
    fn effective_price_never_goes_negative() {
        assert_eq!(discounted(dec!(100), dec!(0.15)), dec!(85));
        assert_eq!(discounted(dec!(100), dec!(1.2)), dec!(0));
    }

    #[test]
    fn recommended_price_never_below_the_floor() {
        assert_eq!(recommended_price(dec!(75.00), dec!(90.00), dec!(0.50)), dec!(89.50));
        assert_eq!(recommended_price(dec!(75.00), dec!(70.00), dec!(0.50)), dec!(75.00));
        assert_eq!(recommended_price(dec!(0), dec!(0.30), dec!(0.50)), dec!(0));
    }

    #[test]
    fn promotions_that_only_touch_do_not_collide() {
        let book = book(vec![
            promotion("shop", "a", dec!(0.1), 2 * DAY, 3 * DAY),
            promotion("amzn", "b", dec!(0.1), 3 * DAY, 4 * DAY),
        ]);
        assert_eq!(first_collision(&rules(), &book, 0), None);
    }

    #[test]
    fn a_collision_is_found_at_the_first_start_that_breaks_a_limit() {
        let book = book(vec![
            promotion("shop", "a", dec!(0.1), 2 * DAY, 4 * DAY),
            promotion("amzn", "b", dec!(0.1), 3 * DAY, 5 * DAY),
        ]);
        let collision = first_collision(&rules(), &book, 0).unwrap();
        assert_eq!(collision.at_ms, 3 * DAY);
        assert_eq!(collision.combined_discount, dec!(0.2));
        let ids: Vec<&str> = collision.promotions.iter().map(|p| p.promotion_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn a_running_overlap_is_found_at_now_and_a_past_one_is_not() {
        let book = book(vec![
            promotion("shop", "a", dec!(0.1), 2 * DAY, 4 * DAY),
            promotion("amzn", "b", dec!(0.1), 3 * DAY, 5 * DAY),
        ]);
        let rules = rules();
        assert_eq!(first_collision(&rules, &book, 3 * DAY + 1).unwrap().at_ms, 3 * DAY + 1);
        assert_eq!(first_collision(&rules, &book, 4 * DAY), None);
    }

    #[test]
    fn the_peak_overlap_is_read_from_now_on() {
        let book = book(vec![
            promotion("shop", "a", dec!(0.1), 0, 2 * DAY),
            promotion("amzn", "b", dec!(0.15), DAY, 3 * DAY),
            promotion("market", "c", dec!(0.05), 3 * DAY, 4 * DAY),
        ]);
        let peak = peak_overlap(&book, 0);
        assert_eq!((peak.concurrent, peak.combined_discount), (2, dec!(0.25)));
        let later = peak_overlap(&book, 2 * DAY);
        assert_eq!((later.concurrent, later.combined_discount), (1, dec!(0.15)), "a has ended");
        assert_eq!(peak_overlap(&book, 4 * DAY), Overlap::default());
    }

    #[test]
    fn cancelled_promotions_do_not_collide() {
        let mut book = book(vec![
            promotion("shop", "a", dec!(0.1), 2 * DAY, 4 * DAY),
            promotion("amzn", "b", dec!(0.1), 3 * DAY, 5 * DAY),
        ]);
        book.cancel("amzn", "b").unwrap();
        assert_eq!(first_collision(&rules(), &book, 0), None);
        assert_eq!(book.cancel("amzn", "b"), Ok(()), "a second cancellation is a no-op");
    }

    #[test]
    fn ended_promotions_are_let_go_one_window_later_but_their_ids_stay() {
        let mut book = book(vec![promotion("shop", "a", dec!(0.1), 0, DAY)]);
        book.let_go(DAY + WINDOW_MS - 1);
        assert_eq!(book.promotions.len(), 1, "an event 28 days late could still see it");
        book.let_go(DAY + WINDOW_MS);
        assert!(book.promotions.is_empty());
        let again = Promotion {
            promotion_id: "a".into(),
            sku: "S".into(),
            percent_off: dec!(0.1),
            starts_at_ms: 0,
            ends_at_ms: DAY,
        };
        assert!(matches!(book.schedule("shop", &again, "ev"), Err(Rejection::DuplicatePromotion(_))));
    }

    fn set(amount: &str, currency: &str, event_id: &str) -> Set<Amount> {
        let value = Amount { value: amount.parse().unwrap(), currency: currency.into() };
        Set { value, event_id: event_id.into(), at_ms: 1 }
    }

    #[test]
    fn explain_shows_each_number_with_its_source() {
        let mut book = book(vec![promotion("shop", "p1", dec!(0.2), 0, DAY)]);
        book.set_price("shop", set("100.00", "USD", "ev-price-shop"));
        book.set_price("market", set("50.00", "EUR", "ev-price-market"));
        book.set_cost(set("40.00", "EUR", "ev-cost"));
        book.observe("shop", "acme", set("70.00", "USD", "ev-acme"));
        let explanation = explain(&rules(), "SKU-MAP", &book, DAY / 2);
        let json = serde_json::to_value(&explanation).unwrap();
        let shop = &json["channels"][0];
        assert_eq!(shop["channel"], "shop");
        assert_eq!(shop["listed"]["event_id"], "ev-price-shop");
        assert_eq!(shop["promotions"][0]["event_id"], "ev-p1");
        assert_eq!(shop["effective"]["amount"], "80.00");
        assert_eq!(shop["effective"]["reporting"], "80.00");
        // EUR 40.00 = USD 44.00; shop keeps 0.80
        assert_eq!(shop["floor"]["amount"], "50.00");
        assert_eq!(shop["floor"]["reporting"], "55.00");
        assert_eq!(shop["floor"]["cost_event_id"], "ev-cost");
        assert_eq!(shop["map"]["reporting"], "80.00");
        assert_eq!((&shop["below_floor"], &shop["below_map"]), (&false.into(), &false.into()));
        assert_eq!(shop["competitors"][0]["event_id"], "ev-acme");
        let market = &json["channels"][2];
        assert_eq!(market["effective"]["reporting"], "55.00");
        assert_eq!(market["floor"]["reporting"], "56.42");
        assert_eq!((&market["below_floor"], &market["map_applies"]), (&true.into(), &false.into()));
        assert_eq!(json["channels"][1]["listed"], serde_json::Value::Null);
        assert_eq!(json["unit_cost"]["reporting"], "44.00");
    }

    #[test]
    fn the_discount_limit_needs_two_promotions() {
        let mut rules = rules();
        rules.contract.pricing.max_concurrent_promotions = 2;
        let deep = book(vec![promotion("shop", "a", dec!(0.5), DAY, 2 * DAY)]);
        assert_eq!(first_collision(&rules, &deep, 0), None);
        let combined = book(vec![
            promotion("shop", "a", dec!(0.2), DAY, 3 * DAY),
            promotion("amzn", "b", dec!(0.15), 2 * DAY, 3 * DAY),
        ]);
        assert_eq!(first_collision(&rules, &combined, 0).unwrap().combined_discount, dec!(0.35));
    }
}
