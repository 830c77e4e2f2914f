//! The price conditions of CONTRACT.md section 5: PRICE_BELOW_FLOOR, MAP_VIOLATION,
//! CHANNEL_PRICE_SPREAD, PROMOTION_COLLISION and COMPETITOR_UNDERCUT. All are held
//! conditions re-evaluated at the SKU's clock, so a promotion that starts or ends between
//! events shows at the SKU's next event. Summaries and details quote the reporting currency.

use omnifold_proto::{AlertKind, Severity};
use rust_decimal::Decimal;

use crate::alerts::{self, Condition, Holding, Open, Reading};
use crate::contract::Rules;
use crate::money::Amount;
use crate::pricing::{self, Listing, PriceBook, Set};

/// The span of the SKU's clock in which the price conditions that hold are known to be the
/// open price alerts: set by a full evaluation ([`holding_unless_steady`]), cleared by any
/// change of the price book. Most events of a SKU move stock, not prices, so this spares them
/// the price rules. A memo: never stored and not part of the state's identity; a state
/// without it (loaded, or cleared) only evaluates again and finds the same.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steady(Option<(i64, i64)>);

impl Steady {
    fn covers(self, now: i64) -> bool {
        self.0.is_some_and(|(from, until)| from <= now && now < until)
    }

    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl PartialEq for Steady {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Steady {}

/// [`holding`], unless nothing a price rule reads can have changed since the last full
/// evaluation: then, since that evaluation raised every condition that held and resolved
/// every other, the open price alerts are exactly what holds.
pub fn holding_unless_steady(
    rules: &Rules,
    sku: &str,
    book: &PriceBook,
    now: i64,
    open: &Open,
    steady: &mut Steady,
) -> Vec<Holding> {
    if steady.covers(now) {
        let open_prices = open.iter().filter(|(_, alert)| is_price_kind(alert.kind));
        return open_prices.map(|(key, _)| Holding { key: key.clone(), condition: None }).collect();
    }
    *steady = Steady(Some(book.steady_span(now)));
    holding(rules, sku, book, now, open)
}

fn is_price_kind(kind: i32) -> bool {
    use AlertKind::*;
    let price_kinds =
        [PriceBelowFloor, MapViolation, ChannelPriceSpread, PromotionCollision, CompetitorUndercut];
    price_kinds.iter().any(|&price| price as i32 == kind)
}

/// Every price condition that holds for the SKU now, grouped by kind; those with an alert in
/// `open` by key only.
pub fn holding(rules: &Rules, sku: &str, book: &PriceBook, now: i64, open: &Open) -> Vec<Holding> {
    let scope = Scope { rules, sku, currency: &rules.contract.reporting_currency, open };
    let listings = pricing::listings(rules, book, now);
    let cost = book.unit_cost.as_ref().and_then(|c| pricing::reporting(rules, &c.value));
    let map = pricing::map_of(rules, sku).and_then(|m| pricing::reporting(rules, &m));
    let mut conditions = Vec::new();
    if let Some(cost) = cost {
        conditions.extend(listings.iter().filter_map(|l| scope.below_floor(l, cost)));
    }
    if let Some(map) = map {
        conditions.extend(listings.iter().filter_map(|l| scope.map_violation(l, map)));
    }
    conditions.extend(scope.spread(&listings));
    conditions.extend(scope.collision(book, now));
    for listing in &listings {
        conditions.extend(scope.undercuts(book, listing, cost));
    }
    conditions
}

/// The numbers of every price subject that can resolve, whether or not its condition holds.
pub fn readings(rules: &Rules, sku: &str, book: &PriceBook, now: i64) -> Vec<Reading> {
    let none = Open::new();
    let scope = Scope { rules, sku, currency: &rules.contract.reporting_currency, open: &none };
    let listings = pricing::listings(rules, book, now);
    let cost = book.unit_cost.as_ref().and_then(|c| pricing::reporting(rules, &c.value));
    let map = pricing::map_of(rules, sku).and_then(|m| pricing::reporting(rules, &m));
    let mut readings = Vec::new();
    for listing in &listings {
        let subject = channel_subject(&listing.channel.id);
        if let Some(cost) = cost {
            let details = scope.floor_details(listing, cost);
            readings.push(reading(AlertKind::PriceBelowFloor, &subject, details));
        }
        if let Some(map) = map.filter(|_| listing.channel.map_applies) {
            readings.push(reading(AlertKind::MapViolation, &subject, scope.map_details(listing, map)));
        }
        readings.extend(scope.undercut_readings(book, listing));
    }
    if let Some([low, high]) = pricing::extremes(&listings) {
        readings.push(reading(AlertKind::ChannelPriceSpread, "", scope.spread_details(low, high)));
    }
    readings.push(reading(AlertKind::PromotionCollision, "", scope.overlap_details(book, now)));
    readings
}

fn reading(kind: AlertKind, subject: &str, details: Vec<(String, String)>) -> Reading {
    Reading { key: alerts::key(kind, subject), details }
}

fn channel_subject(channel: &str) -> String {
    format!("channel={channel}")
}

fn competitor_subject(channel: &str, competitor: &str) -> String {
    format!("channel={channel}/competitor={competitor}")
}

/// What every price condition of one SKU refers to.
struct Scope<'a> {
    rules: &'a Rules,
    sku: &'a str,
    currency: &'a str,
    open: &'a Open,
}

impl Scope<'_> {
    /// PRICE_BELOW_FLOOR, per (channel, sku).
    fn below_floor(&self, listing: &Listing<'_>, cost: Decimal) -> Option<Holding> {
        let channel = listing.channel;
        if !pricing::below_floor(channel, listing.effective, cost) {
            return None;
        }
        let (id, sku, currency) = (&channel.id, self.sku, self.currency);
        Some(alerts::hold(self.open, AlertKind::PriceBelowFloor, channel_subject(id), |subject| {
            let floor = text(pricing::floor_price(channel, cost));
            Condition {
                summary: format!(
                    "{id} sells {sku} at {} {currency}, below its floor of {floor} {currency}",
                    text(listing.effective)
                ),
                details: self.floor_details(listing, cost),
                recommended_action: raise_to(sku, id, &floor, currency, listing.discount),
                ..condition(AlertKind::PriceBelowFloor, Severity::Critical, subject, vec![id.clone()])
            }
        }))
    }

    fn floor_details(&self, listing: &Listing<'_>, cost: Decimal) -> Vec<(String, String)> {
        let channel = listing.channel;
        let mut details = price_details(listing);
        details.extend(pairs([
            ("unit_cost", text(cost)),
            ("fee_rate", text(channel.fee_rate)),
            ("margin_floor", text(channel.margin_floor)),
            ("floor", text(pricing::floor_price(channel, cost))),
            ("currency", self.currency.to_string()),
        ]));
        details
    }

    /// MAP_VIOLATION, per (channel, sku), only on channels where MAP applies.
    fn map_violation(&self, listing: &Listing<'_>, map: Decimal) -> Option<Holding> {
        let channel = listing.channel;
        if !channel.map_applies || listing.effective >= map {
            return None;
        }
        Some(alerts::hold(self.open, AlertKind::MapViolation, channel_subject(&channel.id), |subject| {
            let details = self.map_details(listing, map);
            let (id, sku, currency, map) = (&channel.id, self.sku, self.currency, text(map));
            Condition {
                summary: format!(
                    "{id} sells {sku} at {} {currency}, below its minimum advertised price of {map} {currency}",
                    text(listing.effective)
                ),
                details,
                recommended_action: format!(
                    "raise the effective price of {sku} on {id} to at least {map} {currency}"
                ),
                ..condition(AlertKind::MapViolation, Severity::Critical, subject, vec![id.clone()])
            }
        }))
    }

    fn map_details(&self, listing: &Listing<'_>, map: Decimal) -> Vec<(String, String)> {
        let mut details = price_details(listing);
        details.extend(pairs([("map", text(map)), ("currency", self.currency.to_string())]));
        details
    }

    /// CHANNEL_PRICE_SPREAD, per sku, on listed prices; it names every listing channel.
    fn spread(&self, listings: &[Listing<'_>]) -> Option<Holding> {
        let [low, high] = pricing::extremes(listings)?;
        if !pricing::spread_exceeded(self.rules, low.listed, high.listed) {
            return None;
        }
        Some(alerts::hold(self.open, AlertKind::ChannelPriceSpread, String::new(), |subject| {
            let (sku, currency) = (self.sku, self.currency);
            let allowed = self.rules.contract.pricing.max_channel_spread;
            let (low_id, high_id) = (&low.channel.id, &high.channel.id);
            Condition {
                summary: format!(
                    "{sku} is listed from {} {currency} on {low_id} to {} {currency} on {high_id}, a spread of {} of the lowest price where {} is allowed",
                    text(low.listed),
                    text(high.listed),
                    text(spread(low, high)),
                    text(allowed)
                ),
                details: self.spread_details(low, high),
                recommended_action: format!("align the listed prices of {sku} on {low_id} and {high_id}"),
                ..condition(
                    AlertKind::ChannelPriceSpread,
                    Severity::Warning,
                    subject,
                    listings.iter().map(|l| l.channel.id.clone()).collect(),
                )
            }
        }))
    }

    fn spread_details(&self, low: &Listing<'_>, high: &Listing<'_>) -> Vec<(String, String)> {
        pairs([
            ("min_price", text(low.listed)),
            ("min_channel", low.channel.id.clone()),
            ("max_price", text(high.listed)),
            ("max_channel", high.channel.id.clone()),
            ("spread", text(spread(low, high))),
            ("max_channel_spread", text(self.rules.contract.pricing.max_channel_spread)),
            ("currency", self.currency.to_string()),
        ])
    }

    /// PROMOTION_COLLISION, per sku; it names the channels of the promotions at the first
    /// colliding instant.
    fn collision(&self, book: &PriceBook, now: i64) -> Option<Holding> {
        let collision = pricing::first_collision(self.rules, book, now)?;
        Some(alerts::hold(self.open, AlertKind::PromotionCollision, String::new(), |subject| {
            let limits = &self.rules.contract.pricing;
            let count = collision.promotions.len();
            let ids: Vec<String> =
                collision.promotions.iter().map(|p| format!("{}:{}", p.channel, p.promotion_id)).collect();
            let ids = ids.join(",");
            let combined = text(collision.combined_discount);
            let sku = self.sku;
            let summary = if count > limits.max_concurrent_promotions as usize {
                format!(
                    "{count} promotions of {sku} overlap, more than the {} allowed",
                    limits.max_concurrent_promotions
                )
            } else {
                let allowed = text(limits.max_combined_discount);
                format!(
                    "overlapping promotions of {sku} take {combined} off combined, more than the {allowed} allowed"
                )
            };
            let mut channels: Vec<String> = collision.promotions.iter().map(|p| p.channel.clone()).collect();
            self.rules.sort_channels(&mut channels);
            channels.dedup();
            Condition {
                summary,
                details: pairs([
                    ("at_ms", collision.at_ms.to_string()),
                    ("promotions", ids.clone()),
                    ("concurrent", count.to_string()),
                    ("combined_discount", combined),
                    ("max_concurrent_promotions", limits.max_concurrent_promotions.to_string()),
                    ("max_combined_discount", text(limits.max_combined_discount)),
                ]),
                recommended_action: format!("cancel or reschedule one of the promotions {ids}"),
                ..condition(AlertKind::PromotionCollision, Severity::Warning, subject, channels)
            }
        }))
    }

    /// What overlaps at worst from now on, within the limits once a collision has resolved.
    fn overlap_details(&self, book: &PriceBook, now: i64) -> Vec<(String, String)> {
        let limits = &self.rules.contract.pricing;
        let peak = pricing::peak_overlap(book, now);
        pairs([
            ("peak_concurrent", peak.concurrent.to_string()),
            ("peak_combined_discount", text(peak.combined_discount)),
            ("max_concurrent_promotions", limits.max_concurrent_promotions.to_string()),
            ("max_combined_discount", text(limits.max_combined_discount)),
        ])
    }

    /// COMPETITOR_UNDERCUT for every competitor seen on the listing's channel.
    fn undercuts(&self, book: &PriceBook, listing: &Listing<'_>, cost: Option<Decimal>) -> Vec<Holding> {
        book.competitors
            .iter()
            .filter(|((channel, _), _)| *channel == listing.channel.id)
            .filter_map(|((_, competitor), observed)| self.undercut(listing, competitor, observed, cost))
            .collect()
    }

    /// What each competitor seen on the listing's channel is observed at, undercutting or not.
    fn undercut_readings(&self, book: &PriceBook, listing: &Listing<'_>) -> Vec<Reading> {
        let id = &listing.channel.id;
        book.competitors
            .iter()
            .filter(|((channel, _), _)| channel == id)
            .filter_map(|((_, competitor), observed)| {
                let price = pricing::reporting(self.rules, &observed.value)?;
                let subject = competitor_subject(id, competitor);
                let mut details = self.undercut_numbers(listing, price);
                details.push(("currency".into(), self.currency.to_string()));
                Some(reading(AlertKind::CompetitorUndercut, &subject, details))
            })
            .collect()
    }

    /// The comparison an undercut is judged on, in the reporting currency.
    fn undercut_numbers(&self, listing: &Listing<'_>, price: Decimal) -> Vec<(String, String)> {
        let threshold = self.rules.contract.pricing.competitor_undercut_threshold;
        pairs([
            ("competitor_price", text(price)),
            ("effective_price", text(listing.effective)),
            ("competitor_undercut_threshold", text(threshold)),
        ])
    }

    /// The recommendation never goes below the floor; with no cost known the floor is 0.
    fn undercut(
        &self,
        listing: &Listing<'_>,
        competitor: &str,
        observed: &Set<Amount>,
        cost: Option<Decimal>,
    ) -> Option<Holding> {
        let price = pricing::reporting(self.rules, &observed.value)?;
        if !pricing::undercuts(self.rules, price, listing.effective) {
            return None;
        }
        let channel = listing.channel;
        let subject = competitor_subject(&channel.id, competitor);
        Some(alerts::hold(self.open, AlertKind::CompetitorUndercut, subject, |subject| {
            let floor = cost.map_or(Decimal::ZERO, |c| pricing::floor_price(channel, c));
            let step = pricing::competitor_step(self.rules);
            let recommended = text(pricing::recommended_price(floor, price, step));
            let step = text(step);
            let (id, sku, currency, floor) = (&channel.id, self.sku, self.currency, text(floor));
            let mut details = self.undercut_numbers(listing, price);
            details.extend(pairs([
                ("floor", floor.clone()),
                ("recommended_price", recommended.clone()),
                ("currency", currency.to_string()),
            ]));
            Condition {
                summary: format!(
                    "{competitor} undercuts {id} on {sku} at {} {currency} against an effective price of {} {currency}",
                    text(price),
                    text(listing.effective)
                ),
                subject_details: pairs([("competitor", competitor.to_string())]),
                details,
                recommended_action: match cost {
                    Some(_) => format!(
                        "reprice {sku} on {id} to {recommended} {currency}, {competitor}'s price less {step} but not below the floor of {floor} {currency}"
                    ),
                    None => format!(
                        "reprice {sku} on {id} to {recommended} {currency}, {competitor}'s price less {step}; with no cost known there is no floor"
                    ),
                },
                ..condition(AlertKind::CompetitorUndercut, Severity::Info, subject, vec![id.clone()])
            }
        }))
    }
}

/// A price condition with its identity filled in and its text left empty.
fn condition(kind: AlertKind, severity: Severity, subject: String, channels: Vec<String>) -> Condition {
    Condition {
        kind,
        subject,
        severity,
        channels,
        location: String::new(),
        pool: String::new(),
        summary: String::new(),
        subject_details: Vec::new(),
        details: Vec::new(),
        recommended_action: String::new(),
    }
}

/// (max - min) / min of the listed prices, to four places.
fn spread(low: &Listing<'_>, high: &Listing<'_>) -> Decimal {
    ((high.listed - low.listed) / low.listed).round_dp(4)
}

/// A running promotion may be what took the price below the floor.
fn raise_to(sku: &str, channel: &str, floor: &str, currency: &str, discount: Decimal) -> String {
    let action = format!("raise the effective price of {sku} on {channel} to at least {floor} {currency}");
    if discount.is_zero() { action } else { format!("{action} or end its promotions") }
}

/// The numbers behind one channel's effective price.
fn price_details(listing: &Listing<'_>) -> Vec<(String, String)> {
    pairs([
        ("listed_price", text(listing.listed)),
        ("discount", text(listing.discount)),
        ("effective_price", text(listing.effective)),
    ])
}

fn pairs<const N: usize>(pairs: [(&str, String); N]) -> Vec<(String, String)> {
    pairs.into_iter().map(|(key, value)| (key.to_string(), value)).collect()
}

/// A decimal as alert text, exact: 62.5 as "62.50", 50.5890 as "50.589".
fn text(value: Decimal) -> String {
    pricing::tidy(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn money_text_keeps_cents_and_exact_digits() {
        assert_eq!(text(dec!(62.5)), "62.50");
        assert_eq!(text(dec!(57.2000)), "57.20");
        assert_eq!(text(dec!(50.5890)), "50.589");
        assert_eq!(text(dec!(0)), "0.00");
        assert_eq!(text(dec!(0.05)), "0.05");
    }
}
