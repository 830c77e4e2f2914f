//! Deterministic event workloads for omnifold: the bundled sample (`deploy/local/sample-events.ndjson`)
//! and the benchmark mixes.
//!
//! A workload is a small simulation of a brand selling on the contract's channels: orders arrive
//! with daily and weekly seasonality over Zipf-like SKU popularity, are shipped, cancelled or
//! returned, stock is counted, received, transferred and damaged, prices, promotions and
//! competitor prices move. The simulation keeps its own books of on-hand, reservations, lines and
//! prices, so every event it writes is valid against the contract when the events are applied in
//! order: ships only of open quantity, returns only of shipped units, cancels of open lines,
//! known channels and locations, prices in the channel's currency.
//!
//! Determinism: the same [`Rules`] and [`WorkloadOptions`] always give byte-identical events. The
//! only randomness is one `ChaCha8Rng` seeded from [`WorkloadOptions::seed`]; there is no clock,
//! no hash-map iteration, and floats are only added, multiplied and divided (no libm), so the
//! output is the same on every platform.

mod calendar;
mod money;
mod sim;

use std::collections::BTreeMap;
use std::io::{self, Write};

use omnifold_domain::Rules;
use omnifold_proto::Event;

pub use calendar::{DAY_MS, HOUR_MS, MINUTE_MS};

/// Monday 2026-11-09T00:00:00Z, the start of the bundled sample.
pub const SAMPLE_START_MS: i64 = 1_794_182_400_000;

/// Everything that shapes a workload. Build one from a preset ([`WorkloadOptions::sample`],
/// [`WorkloadOptions::bench`]) and adjust its public fields.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadOptions {
    /// Seeds the one random generator (`ChaCha8Rng::seed_from_u64`).
    pub seed: u64,
    /// Number of SKUs, named `SKU-0001`, `SKU-0002`, ... in decreasing popularity.
    pub skus: usize,
    /// Length of the simulated period. With [`WorkloadOptions::max_events`] the simulation goes
    /// on past it until that many events are written.
    pub days: u32,
    /// Start of the period, Unix ms UTC. Setup events (costs, prices, opening counts) are at it.
    pub start_ms: i64,
    /// Orders per day over every channel, before seasonality.
    pub orders_per_day: f64,
    /// Stop after exactly this many events (a prefix of the simulation is still valid).
    pub max_events: Option<usize>,
    /// Event ids are `{event_id_prefix}-{n:08}`, n from 1 in output order.
    pub event_id_prefix: String,
    /// Popularity of the SKU of rank r is proportional to 1 / (r + popularity_offset): Zipf with
    /// a softened head (Zipf-Mandelbrot with exponent 1).
    pub popularity_offset: f64,
    /// Per-channel behaviour, matched to the contract's channels by id. Contract channels without
    /// a profile get [`ChannelProfile::consumer`]; profiles of unknown channels are ignored.
    pub channels: Vec<ChannelProfile>,
    /// Per-location fulfilment costs, lead times and stock levels, matched by id. Contract
    /// locations without a profile get [`LocationProfile::new`].
    pub locations: Vec<LocationProfile>,
    /// Rates of every kind of event.
    pub mix: Mix,
    /// Designed incidents (the sample's squeeze, spike, damage and pricing conflicts).
    pub scenarios: Scenarios,
}

/// How one channel sells.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelProfile {
    pub id: String,
    /// Share of all orders.
    pub order_share: f64,
    /// Units per line. With `pack` = 1 they follow 1/k^2 over min..=max (mostly 1); with a larger
    /// pack they are uniform over the multiples of `pack` in min..=max.
    pub min_units: i64,
    pub max_units: i64,
    pub pack: i64,
    /// Fraction of orders with more than one line, and the most lines an order has.
    pub multi_line_rate: f64,
    pub max_lines: usize,
    /// Lines pick their SKU among the `sku_pool` most popular SKUs only (`None`: all).
    pub sku_pool: Option<usize>,
    /// Lines pick uniformly within the pool instead of by popularity (a wholesale assortment).
    pub uniform_pool: bool,
    /// Orders only on weekdays, 08:00-18:00 local time.
    pub business_hours: bool,
    /// Hours east of UTC of the channel's customers, for the daily curve.
    pub utc_offset_hours: i64,
    /// Fraction of lines placed at (and shipped from) the channel's dedicated location, when it
    /// has one (Amazon FBA).
    pub dedicated_share: f64,
    /// `location_id` of lines reserved in the shared pool (`None`: absent).
    pub place_at: Option<String>,
    /// Shared locations to ship from, most preferred first; then any other shared location.
    pub ship_from: Vec<String>,
    /// Never sells more than its availability (wholesale honours its max_share exactly).
    pub strict_availability: bool,
    pub order_prefix: String,
    /// Fraction of lines with a coupon discount.
    pub coupon_rate: f64,
    /// Listed price as basis points of the SKU's base price, drawn in lo..=hi.
    pub price_bps: (i64, i64),
    /// Prices end in .99.
    pub charm_prices: bool,
    /// Competitors whose prices are observed on the channel.
    pub competitors: Vec<String>,
    /// Advertising spend per week in the channel's currency, in cents, recorded as one
    /// ChannelCostRecorded per 14 days covering those 14 days.
    pub ads_cents_per_week: i64,
    /// Runs promotions.
    pub promotions: bool,
}

impl ChannelProfile {
    /// A consumer channel selling 1-3 units a line, shipped from any shared location.
    pub fn consumer(id: &str) -> Self {
        ChannelProfile {
            id: id.to_string(),
            order_share: 0.25,
            min_units: 1,
            max_units: 3,
            pack: 1,
            multi_line_rate: 0.12,
            max_lines: 3,
            sku_pool: None,
            uniform_pool: false,
            business_hours: false,
            utc_offset_hours: -5,
            dedicated_share: 0.0,
            place_at: None,
            ship_from: Vec::new(),
            strict_availability: false,
            order_prefix: id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(3)
                .collect::<String>()
                .to_uppercase(),
            coupon_rate: 0.10,
            price_bps: (10_000, 10_000),
            charm_prices: true,
            competitors: Vec::new(),
            ads_cents_per_week: 0,
            promotions: true,
        }
    }

    /// A wholesale channel: few orders of several lines of 20-100 units in packs of 4, on weekdays.
    pub fn wholesale(id: &str) -> Self {
        ChannelProfile {
            min_units: 20,
            max_units: 100,
            pack: 4,
            multi_line_rate: 0.85,
            max_lines: 6,
            sku_pool: Some(60),
            uniform_pool: true,
            business_hours: true,
            strict_availability: true,
            coupon_rate: 0.0,
            price_bps: (9_000, 9_400),
            charm_prices: false,
            promotions: false,
            ..ChannelProfile::consumer(id)
        }
    }
}

/// A location's costs and stock policy.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationProfile {
    pub id: String,
    /// Currency of its fulfilment costs (`None`: the reporting currency).
    pub currency: Option<String>,
    /// Fulfilment cost of one shipment: pick fee plus a fee per unit, in cents.
    pub pick_cents: i64,
    pub unit_cents: i64,
    /// Stock it keeps of every SKU it holds, whatever the demand.
    pub min_stock: i64,
    /// Days from a replenishment order to its receipt.
    pub lead_days: (i64, i64),
    /// Local hour (UTC) its receipts and counts happen around.
    pub work_hour_utc: i64,
}

impl LocationProfile {
    pub fn new(id: &str) -> Self {
        LocationProfile {
            id: id.to_string(),
            currency: None,
            pick_cents: 400,
            unit_cents: 60,
            min_stock: 40,
            lead_days: (2, 4),
            work_hour_utc: 14,
        }
    }
}

/// The rates of the workload's events. "Per line" rates are drawn after every placed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Orders cancelled before they ship.
    pub cancel_rate: f64,
    /// Orders not cancelled that ship; the others stay open.
    pub ship_rate: f64,
    /// Hours from placement to shipment: from the channel's dedicated location, and otherwise.
    pub dedicated_ship_hours: (i64, i64),
    pub ship_hours: (i64, i64),
    /// Fully shipped lines that come back, and the fraction of those restocked.
    pub return_rate: f64,
    pub restock_rate: f64,
    /// Days from shipment to return.
    pub return_days: (i64, i64),
    /// Lines of pack channels shipped in two parts.
    pub split_rate: f64,
    /// Channels sell only what they see available (stale listings aside).
    pub respect_availability: bool,
    /// Shipments take only stock on hand; the rest waits a day, twice, then is cancelled.
    /// Without it a line ships whole from the location with most stock.
    pub backorders: bool,
    /// Every SKU's stock is reviewed every this many days and reordered up to `cover_days` of
    /// demand when below `reorder_days` (`None`: no replenishment policy).
    pub replenish_every_days: Option<u32>,
    pub cover_days: f64,
    pub reorder_days: f64,
    /// Fraction of replenishments of a dedicated location made by transfer from the first shared
    /// location (transfer_out, then transfer_in on arrival).
    pub transfer_rate: f64,
    /// Every SKU is counted at each location holding it once a week (rolling cycle count).
    pub weekly_cycle_count: bool,
    /// Small damage write-offs and corrections per day.
    pub damage_per_day: f64,
    /// Extra stock events per placed line (counts, receipts, damage, corrections); the bench's.
    pub stock_ops_per_line: f64,
    pub price_changes_per_line: f64,
    /// Promotions scheduled per placed line, and the fraction later cancelled before they start.
    pub promotions_per_line: f64,
    pub promotion_cancel_rate: f64,
    pub competitor_observations_per_line: f64,
}

/// The designed incidents of a workload. Each names SKUs by popularity rank (1 = `SKU-0001`) and
/// times as milliseconds after `start_ms`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scenarios {
    pub supply_squeeze: Option<SupplySqueeze>,
    pub stock_drop: Option<StockDrop>,
    pub order_spike: Option<OrderSpike>,
    pub map_breach: Option<MapBreach>,
    pub promotion_collision: Option<PromotionCollision>,
    pub competitor_undercut: Option<CompetitorUndercut>,
}

/// The most popular SKUs stop receiving stock while their demand rises; channels keep selling
/// from stale listings down to `stale_listing_units` below zero.
#[derive(Debug, Clone, PartialEq)]
pub struct SupplySqueeze {
    pub top_skus: usize,
    /// Reorder up to this many days of cover (instead of `Mix::cover_days`) before the squeeze.
    pub cover_days: f64,
    /// Receipts due from then on never arrive.
    pub receipts_stop_after_ms: i64,
    pub demand_from_ms: i64,
    /// Demand multiplier from `demand_from_ms`.
    pub demand_factor: f64,
    pub stale_listing_units: i64,
}

/// A damage write-off of more than half a location's on-hand.
#[derive(Debug, Clone, PartialEq)]
pub struct StockDrop {
    pub sku: usize,
    pub location: String,
    pub at_ms: i64,
    /// Part of on-hand written off, in percent.
    pub percent: i64,
}

/// A burst of orders of one SKU on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSpike {
    pub sku: usize,
    pub channel: String,
    pub at_ms: i64,
    pub minutes: i64,
    pub units: i64,
}

/// A channel lists a SKU below its contract MAP, then corrects it.
#[derive(Debug, Clone, PartialEq)]
pub struct MapBreach {
    pub sku: usize,
    pub channel: String,
    pub at_ms: i64,
    pub fixed_at_ms: Option<i64>,
}

/// Two promotions of one SKU on two channels scheduled so that they overlap.
#[derive(Debug, Clone, PartialEq)]
pub struct PromotionCollision {
    pub sku: usize,
    pub first: PlannedPromotion,
    pub second: PlannedPromotion,
    /// The second promotion is cancelled then.
    pub second_cancelled_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPromotion {
    pub channel: String,
    pub promotion_id: String,
    pub percent_off_bps: i64,
    pub scheduled_at_ms: i64,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
}

/// A competitor prices `skus` SKUs (drawn among ranks `ranks`) well below a channel's price.
#[derive(Debug, Clone, PartialEq)]
pub struct CompetitorUndercut {
    pub skus: usize,
    pub ranks: (usize, usize),
    pub channel: String,
    pub competitor: String,
    /// Observations fall in [from, to).
    pub from_ms: i64,
    pub to_ms: i64,
    /// The competitor's price as basis points of the channel's effective price, drawn in lo..=hi.
    pub price_bps: (i64, i64),
}

impl WorkloadOptions {
    /// The README's bundled sample (`deploy/local/sample-events.ndjson`): seed 7, 200 SKUs, 14 days
    /// from Monday 2026-11-09, the example contract's four channels, and the designed incidents:
    /// a supply squeeze on the top 10 SKUs in week 2 (SCARCITY, LOW_COVER, OVERSELL), a damage
    /// write-off (STOCK_DROP), an order spike (ORDER_SPIKE), a MAP breach on SKU-0001, a promotion
    /// collision on SKU-0002 and competitor undercuts on three SKUs.
    pub fn sample() -> Self {
        let day = DAY_MS;
        WorkloadOptions {
            seed: 7,
            skus: 200,
            days: 14,
            start_ms: SAMPLE_START_MS,
            orders_per_day: 520.0,
            max_events: None,
            event_id_prefix: "ev".to_string(),
            popularity_offset: 2.0,
            channels: example_channels(),
            locations: example_locations(),
            mix: Mix {
                cancel_rate: 0.045,
                ship_rate: 1.0,
                dedicated_ship_hours: (2, 24),
                ship_hours: (4, 48),
                return_rate: 0.06,
                restock_rate: 0.7,
                return_days: (2, 8),
                split_rate: 0.3,
                respect_availability: true,
                backorders: true,
                replenish_every_days: Some(2),
                cover_days: 21.0,
                reorder_days: 14.0,
                transfer_rate: 0.5,
                weekly_cycle_count: true,
                damage_per_day: 2.0,
                stock_ops_per_line: 0.0,
                price_changes_per_line: 0.004,
                promotions_per_line: 0.003,
                promotion_cancel_rate: 0.15,
                competitor_observations_per_line: 0.012,
            },
            scenarios: Scenarios {
                supply_squeeze: Some(SupplySqueeze {
                    top_skus: 10,
                    cover_days: 12.0,
                    receipts_stop_after_ms: 6 * day,
                    demand_from_ms: 7 * day,
                    demand_factor: 2.2,
                    stale_listing_units: 12,
                }),
                stock_drop: Some(StockDrop {
                    sku: 23,
                    location: "wh-nj".to_string(),
                    at_ms: 4 * day + 15 * HOUR_MS + 20 * MINUTE_MS,
                    percent: 60,
                }),
                order_spike: Some(OrderSpike {
                    sku: 14,
                    channel: "shopify".to_string(),
                    at_ms: 9 * day + HOUR_MS + 10 * MINUTE_MS,
                    minutes: 40,
                    units: 56,
                }),
                map_breach: Some(MapBreach {
                    sku: 1,
                    channel: "amazon".to_string(),
                    at_ms: 3 * day + 16 * HOUR_MS + 5 * MINUTE_MS,
                    fixed_at_ms: Some(5 * day + 14 * HOUR_MS + 30 * MINUTE_MS),
                }),
                promotion_collision: Some(PromotionCollision {
                    sku: 2,
                    first: PlannedPromotion {
                        channel: "shopify".to_string(),
                        promotion_id: "SHO-WINTER20".to_string(),
                        percent_off_bps: 2_000,
                        scheduled_at_ms: 2 * day + 15 * HOUR_MS,
                        starts_at_ms: 10 * day + 5 * HOUR_MS,
                        ends_at_ms: 13 * day + 5 * HOUR_MS,
                    },
                    second: PlannedPromotion {
                        channel: "eu-market".to_string(),
                        promotion_id: "EU-WEEKDEAL15".to_string(),
                        percent_off_bps: 1_500,
                        scheduled_at_ms: 4 * day + 9 * HOUR_MS + 40 * MINUTE_MS,
                        starts_at_ms: 11 * day - HOUR_MS,
                        ends_at_ms: 14 * day - HOUR_MS,
                    },
                    second_cancelled_at_ms: Some(11 * day + 8 * HOUR_MS + 15 * MINUTE_MS),
                }),
                competitor_undercut: Some(CompetitorUndercut {
                    skus: 3,
                    ranks: (4, 60),
                    channel: "amazon".to_string(),
                    competitor: "BargainHub".to_string(),
                    from_ms: 6 * day,
                    to_ms: 9 * day,
                    price_bps: (8_500, 9_000),
                }),
            },
        }
    }

    /// A benchmark workload of exactly `events` events over `skus` SKUs on the example contract's
    /// channels (seed 1, set [`WorkloadOptions::seed`] for another). Its mix aims at about 55%
    /// OrderLinePlaced, 20% OrderLineShipped, 5% OrderLineCancelled, 3% OrderLineReturned, 10%
    /// stock counts and adjustments, 5% PriceSet and 2% promotions; the remaining ~0-1% are the
    /// setup CostSets and channel costs. Lines neither shipped nor cancelled stay open.
    pub fn bench(skus: usize, events: usize) -> Self {
        Self::bench_over(skus, events, 28)
    }

    /// The benchmark mix spread over `days` instead of four weeks: a long history at a
    /// realistic pace (10,000 events per SKU over a year), so that trailing windows and kept
    /// placements cover weeks of it rather than all of it.
    pub fn bench_over(skus: usize, events: usize, days: u32) -> Self {
        let skus = skus.max(1);
        let n = events as f64;
        let lines = 0.55 * n;
        let channels = 4.0;
        // Setup: one PriceSet per SKU and channel, one opening count per SKU and location.
        let setup_prices = channels * skus as f64;
        let setup_counts = 3.0 * skus as f64;
        WorkloadOptions {
            seed: 1,
            skus,
            days,
            start_ms: SAMPLE_START_MS,
            // Lines per order average about 1.17; aim a little past the end so that the cut
            // falls before the last day.
            orders_per_day: lines / 1.17 / f64::from(days) * 1.05,
            max_events: Some(events),
            event_id_prefix: "bench".to_string(),
            popularity_offset: 2.0,
            channels: example_channels(),
            locations: example_locations(),
            mix: Mix {
                cancel_rate: 5.0 / 55.0,
                ship_rate: 0.41,
                dedicated_ship_hours: (2, 24),
                ship_hours: (4, 48),
                return_rate: 0.155,
                restock_rate: 0.7,
                return_days: (1, 5),
                split_rate: 0.0,
                respect_availability: false,
                backorders: false,
                replenish_every_days: None,
                cover_days: 21.0,
                reorder_days: 14.0,
                transfer_rate: 0.0,
                weekly_cycle_count: false,
                damage_per_day: 0.0,
                stock_ops_per_line: ((0.10 * n - setup_counts) / lines).max(0.0),
                price_changes_per_line: ((0.05 * n - setup_prices) / lines).max(0.0),
                promotions_per_line: 0.02 * n / lines / 1.2,
                promotion_cancel_rate: 0.2,
                competitor_observations_per_line: 0.0,
            },
            scenarios: Scenarios::default(),
        }
    }
}

/// The example contract's channels (deploy/local/contract.toml).
fn example_channels() -> Vec<ChannelProfile> {
    vec![
        ChannelProfile {
            order_share: 0.40,
            ship_from: vec!["wh-nj".into(), "3pl-rotterdam".into()],
            order_prefix: "SHO".into(),
            competitors: vec!["ShopRival".into(), "MegaMart".into()],
            ads_cents_per_week: 320_000,
            ..ChannelProfile::consumer("shopify")
        },
        ChannelProfile {
            order_share: 0.425,
            multi_line_rate: 0.08,
            dedicated_share: 0.6,
            ship_from: vec!["wh-nj".into(), "3pl-rotterdam".into()],
            order_prefix: "AMZ".into(),
            coupon_rate: 0.05,
            price_bps: (10_000, 10_500),
            competitors: vec!["BargainHub".into(), "MegaMart".into()],
            ads_cents_per_week: 420_000,
            ..ChannelProfile::consumer("amazon")
        },
        ChannelProfile {
            order_share: 0.172,
            multi_line_rate: 0.10,
            utc_offset_hours: 1,
            ship_from: vec!["3pl-rotterdam".into(), "wh-nj".into()],
            order_prefix: "EU".into(),
            coupon_rate: 0.08,
            price_bps: (9_800, 10_400),
            competitors: vec!["EuroDeals".into()],
            ads_cents_per_week: 90_000,
            ..ChannelProfile::consumer("eu-market")
        },
        ChannelProfile {
            order_share: 0.003,
            place_at: Some("wh-nj".into()),
            ship_from: vec!["wh-nj".into()],
            order_prefix: "PO".into(),
            ads_cents_per_week: 25_000,
            ..ChannelProfile::wholesale("wholesale")
        },
    ]
}

/// The example contract's locations.
fn example_locations() -> Vec<LocationProfile> {
    vec![
        LocationProfile { min_stock: 60, lead_days: (1, 3), ..LocationProfile::new("wh-nj") },
        LocationProfile {
            pick_cents: 322,
            unit_cents: 98,
            min_stock: 12,
            lead_days: (2, 4),
            work_hour_utc: 15,
            ..LocationProfile::new("fba-us")
        },
        LocationProfile {
            currency: Some("EUR".into()),
            pick_cents: 320,
            unit_cents: 55,
            min_stock: 30,
            lead_days: (2, 4),
            work_hour_utc: 8,
            ..LocationProfile::new("3pl-rotterdam")
        },
    ]
}

/// The name of the SKU of popularity rank `rank` (from 1) among `skus`: `SKU-0001`, with more
/// digits when there are more than 9,999 SKUs.
pub fn sku_name(rank: usize, skus: usize) -> String {
    let width = skus.max(1).to_string().len().max(4);
    format!("SKU-{rank:0width$}")
}

/// Generates the workload's events in non-decreasing `occurred_at_ms` order.
pub fn generate(rules: &Rules, options: &WorkloadOptions) -> Vec<Event> {
    let mut events = Vec::with_capacity(options.max_events.unwrap_or(0));
    generate_into(rules, options, |event| events.push(event));
    events
}

/// Generates the workload, handing each event to `sink` in order; returns how many there were.
/// Nothing is kept, so this streams workloads of any size.
pub fn generate_into(rules: &Rules, options: &WorkloadOptions, sink: impl FnMut(Event)) -> usize {
    sim::run(rules, options, sink)
}

/// Writes the workload as NDJSON, one `event_to_json` line per event, each ending in a newline.
/// The simulation runs on a second thread and hands over batches, so that generating and
/// serializing overlap; the bytes are the same as serializing [`generate`]'s events in order.
pub fn write_ndjson(rules: &Rules, options: &WorkloadOptions, out: &mut impl Write) -> io::Result<usize> {
    const BATCH: usize = 4_096;
    std::thread::scope(|scope| {
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Event>>(16);
        let producer = scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let count = generate_into(rules, options, |event| {
                batch.push(event);
                if batch.len() == BATCH {
                    // A closed channel means the writer failed; the rest is dropped.
                    let _ = batches.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                }
            });
            if !batch.is_empty() {
                let _ = batches.send(batch);
            }
            count
        });
        let mut line = String::new();
        let mut result = Ok(());
        for batch in received {
            for event in &batch {
                line.clear();
                line.push_str(&omnifold_proto::json::event_to_json(event));
                line.push('\n');
                result = out.write_all(line.as_bytes());
                if result.is_err() {
                    break;
                }
            }
            if result.is_err() {
                break;
            }
        }
        let count = producer.join().expect("the workload simulation does not panic");
        result.map(|()| count)
    })
}

/// The events of each body type, by the contract's type name.
pub fn type_counts<'a>(events: impl IntoIterator<Item = &'a Event>) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        if let Some(body) = &event.body {
            *counts.entry(body.type_name()).or_default() += 1;
        }
    }
    counts
}
