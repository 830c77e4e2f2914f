//! The simulation behind every workload.
//!
//! Time advances hour by hour. Each hour's order arrivals and random processes are put on one
//! agenda (a heap ordered by time, then by insertion), and everything due before the hour ends is
//! carried out in that order. An action looks at the simulated books as they stand at its time
//! (on-hand, reservations, lines, prices), writes its events at its own time and may put later
//! actions on the agenda. So the events come out in time order, and the books are exactly what
//! the coordinator's fold will have when it applies them.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use omnifold_domain::Rules;
use omnifold_domain::allocation::allocate;
use omnifold_domain::stock::{Pool, Stock};
use omnifold_proto::{Body, Event, StockAdjustmentReason, v1};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use crate::calendar::{Curve, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::money::{bps, cents, charm_below, fraction_text, money, price, round_cent};
use crate::{ChannelProfile, LocationProfile, PlannedPromotion, WorkloadOptions, sku_name};

/// Units per receipt are rounded up to whole cases.
const CASE: i64 = 12;

pub fn run(rules: &Rules, options: &WorkloadOptions, sink: impl FnMut(Event)) -> usize {
    let mut sim = Sim::new(rules, options, sink);
    sim.setup();
    sim.run();
    sim.emitted
}

struct Chan {
    id: String,
    currency: String,
    /// Units of reporting currency per unit of the channel's currency.
    rate: Decimal,
    fee_rate: Decimal,
    /// 1 - fee_rate - margin_floor.
    cost_share: Decimal,
    sells_shared: bool,
    map_applies: bool,
    /// Locations dedicated to the channel.
    dedicated: Vec<usize>,
    /// Shared locations to ship from, in preference order.
    ship_from: Vec<usize>,
    place_at: Option<String>,
    profile: ChannelProfile,
    curve: Curve,
    /// Cumulative weights of the units of a line.
    units: Vec<(i64, f64)>,
    mean_units: f64,
    mean_lines: f64,
    /// Number of SKUs its lines pick from.
    pool: usize,
    orders: u64,
    promotions: u64,
}

struct Loc {
    id: String,
    dedicated_to: Option<usize>,
    currency: String,
    profile: LocationProfile,
}

struct Promo {
    chan: usize,
    pct: Decimal,
    starts: i64,
    ends: i64,
    cancelled: bool,
    id: String,
}

struct Sku {
    name: String,
    on_hand: Vec<i64>,
    in_transit: Vec<i64>,
    reserved_shared: i64,
    /// Per channel.
    reserved_dedicated: Vec<i64>,
    /// Expected units a day leaving each location.
    daily: Vec<f64>,
    /// Reporting currency.
    cost: Decimal,
    /// Per channel, in the channel's currency.
    listed: Vec<Decimal>,
    promos: Vec<Promo>,
    /// Latest price per (channel, competitor), in the channel's currency.
    competitors: Vec<(usize, String, Decimal)>,
    squeezed: bool,
    /// Kept out of random price changes, promotions and observations (designed scenarios, MAP).
    locked: bool,
    /// The contract MAP in reporting currency.
    map: Option<Decimal>,
    /// The fold's view of the SKU's stock, kept only while channels respect availability, so
    /// that they see exactly the availability the coordinator publishes.
    mirror: Stock,
}

struct Line {
    sku: usize,
    chan: usize,
    order: u64,
    line_no: u16,
    qty: i64,
    shipped: i64,
    cancelled: i64,
    returned: i64,
    dedicated: bool,
    unit_price: Decimal,
    discount: Decimal,
    first_loc: Option<usize>,
    retries: u8,
}

impl Line {
    fn open(&self) -> i64 {
        self.qty - self.shipped - self.cancelled
    }
}

enum Action {
    Order { chan: usize, forced: Option<(usize, i64)> },
    Ship { first: usize, count: usize },
    ShipLine { line: usize },
    Cancel { first: usize, count: usize },
    Return { line: usize },
    Replenish { sku: usize },
    Receipt { sku: usize, loc: usize, qty: i64, transfer: bool },
    CycleCount { sku: usize },
    Damage,
    StockOp,
    PriceChange,
    Promotion,
    PromotionCancel { sku: usize, promo: usize },
    Competitor,
    ChannelCost { chan: usize, amount: Decimal, start: i64, end: i64 },
    BigDamage { sku: usize, loc: usize, percent: i64 },
    SetPrice { sku: usize, chan: usize, below_map: bool },
    PlannedPromotion { sku: usize, chan: usize, plan: Box<PlannedPromotion> },
    PlannedCancel { sku: usize, chan: usize, promotion_id: String },
    Undercut { sku: usize, chan: usize, competitor: String, price_bps: (i64, i64) },
}

struct Scheduled {
    at: i64,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Sim<'a, F> {
    rules: &'a Rules,
    opt: &'a WorkloadOptions,
    rng: ChaCha8Rng,
    sink: F,
    emitted: usize,
    done: bool,
    start: i64,
    end: i64,
    chans: Vec<Chan>,
    locs: Vec<Loc>,
    shared: Vec<usize>,
    skus: Vec<Sku>,
    /// Cumulative popularity by rank.
    cdf: Vec<f64>,
    lines: Vec<Line>,
    agenda: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    max_spread: Decimal,
    /// Shared ATP below which the coordinator turns to scarcity mode.
    scarcity_line: i64,
}

impl<'a, F: FnMut(Event)> Sim<'a, F> {
    fn new(rules: &'a Rules, opt: &'a WorkloadOptions, sink: F) -> Self {
        let contract = &rules.contract;
        let locs: Vec<Loc> = contract
            .locations
            .iter()
            .map(|l| {
                let profile = opt
                    .locations
                    .iter()
                    .find(|p| p.id == l.id)
                    .cloned()
                    .unwrap_or_else(|| LocationProfile::new(&l.id));
                let currency = profile
                    .currency
                    .clone()
                    .filter(|c| contract.has_rate(c))
                    .unwrap_or_else(|| contract.reporting_currency.clone());
                let dedicated_to =
                    l.dedicated_to.as_ref().and_then(|c| contract.channels.iter().position(|ch| &ch.id == c));
                Loc { id: l.id.clone(), dedicated_to, currency, profile }
            })
            .collect();
        let shared: Vec<usize> = (0..locs.len()).filter(|&i| locs[i].dedicated_to.is_none()).collect();
        let skus = opt.skus.max(1);
        let chans: Vec<Chan> = contract
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let profile = opt
                    .channels
                    .iter()
                    .find(|p| p.id == c.id)
                    .cloned()
                    .unwrap_or_else(|| ChannelProfile::consumer(&c.id));
                let dedicated = (0..locs.len()).filter(|&l| locs[l].dedicated_to == Some(i)).collect();
                let mut ship_from: Vec<usize> = profile
                    .ship_from
                    .iter()
                    .filter_map(|id| shared.iter().copied().find(|&l| &locs[l].id == id))
                    .collect();
                for &l in &shared {
                    if !ship_from.contains(&l) {
                        ship_from.push(l);
                    }
                }
                let place_at = profile.place_at.clone().filter(|id| contract.location(id).is_some());
                let units = unit_weights(&profile);
                let total = units.last().map_or(1.0, |u| u.1);
                let mut mean_units = 0.0;
                let mut previous = 0.0;
                for &(q, cumulative) in &units {
                    mean_units += q as f64 * (cumulative - previous) / total;
                    previous = cumulative;
                }
                let max_lines = profile.max_lines.max(1);
                let mean_lines =
                    1.0 + profile.multi_line_rate * (max_lines as f64 / 2.0) * f64::from(max_lines > 1);
                let rate = if c.currency == contract.reporting_currency {
                    Decimal::ONE
                } else {
                    contract.fx.get(&c.currency).copied().unwrap_or(Decimal::ONE)
                };
                Chan {
                    id: c.id.clone(),
                    currency: c.currency.clone(),
                    rate,
                    fee_rate: c.fee_rate,
                    cost_share: Decimal::ONE - c.fee_rate - c.margin_floor,
                    sells_shared: c.sells_from_shared_pool,
                    map_applies: c.map_applies,
                    dedicated,
                    ship_from,
                    place_at,
                    curve: Curve::new(profile.business_hours, profile.utc_offset_hours),
                    units,
                    mean_units,
                    mean_lines,
                    pool: profile.sku_pool.unwrap_or(skus).clamp(1, skus),
                    profile,
                    orders: 0,
                    promotions: 0,
                }
            })
            .collect();
        let mut cdf = Vec::with_capacity(skus);
        let mut total = 0.0;
        for rank in 1..=skus {
            total += 1.0 / (rank as f64 + opt.popularity_offset.max(0.0));
            cdf.push(total);
        }
        Sim {
            rules,
            opt,
            rng: ChaCha8Rng::seed_from_u64(opt.seed),
            sink,
            emitted: 0,
            done: opt.max_events == Some(0),
            start: opt.start_ms,
            end: opt.start_ms + i64::from(opt.days) * DAY_MS,
            chans,
            locs,
            shared,
            skus: Vec::with_capacity(skus),
            cdf,
            lines: Vec::new(),
            agenda: BinaryHeap::new(),
            seq: 0,
            max_spread: contract.pricing.max_channel_spread - Decimal::new(3, 2),
            scarcity_line: contract.allocation.scarcity_threshold + contract.allocation.safety_stock,
        }
    }

    // ---- plumbing ---------------------------------------------------------------------------

    fn schedule(&mut self, at: i64, action: Action) {
        self.seq += 1;
        self.agenda.push(Reverse(Scheduled { at, seq: self.seq, action }));
    }

    fn emit(&mut self, at: i64, chan: Option<usize>, body: Body) {
        if self.done {
            return;
        }
        self.emitted += 1;
        let event = Event {
            event_id: format!("{}-{:08}", self.opt.event_id_prefix, self.emitted),
            channel: chan.map(|c| self.chans[c].id.clone()).unwrap_or_default(),
            occurred_at_ms: at,
            body: Some(body),
        };
        (self.sink)(event);
        if self.opt.max_events == Some(self.emitted) {
            self.done = true;
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo { lo } else { self.rng.random_range(lo..=hi) }
    }

    /// A count with mean about `mean`: the mean jittered by +-25%, then rounded at random.
    fn count(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        let x = mean * (0.75 + 0.5 * self.rng.random::<f64>());
        let whole = x.floor();
        whole as u64 + u64::from(self.rng.random::<f64>() < x - whole)
    }

    /// Rounds a rate at random to a whole number of occurrences.
    fn occurrences(&mut self, rate: f64) -> u64 {
        if rate <= 0.0 {
            return 0;
        }
        let whole = rate.floor();
        whole as u64 + u64::from(self.rng.random::<f64>() < rate - whole)
    }

    /// A SKU by popularity among the `pool` most popular.
    fn pick_sku(&mut self, pool: usize) -> usize {
        let pool = pool.clamp(1, self.cdf.len());
        let u = self.rng.random::<f64>() * self.cdf[pool - 1];
        self.cdf[..pool].partition_point(|&c| c <= u).min(pool - 1)
    }

    fn pick_line_sku(&mut self, pool: usize, uniform: bool) -> usize {
        if uniform {
            self.between(0, pool.clamp(1, self.cdf.len()) as i64 - 1) as usize
        } else {
            self.pick_sku(pool)
        }
    }

    /// A SKU open to random pricing events, if one turns up in a few draws.
    fn pick_unlocked_sku(&mut self) -> Option<usize> {
        for _ in 0..6 {
            let sku = self.pick_sku(self.skus.len());
            if !self.skus[sku].locked {
                return Some(sku);
            }
        }
        None
    }

    fn pick_units(&mut self, chan: usize) -> i64 {
        let units = &self.chans[chan].units;
        let total = units.last().map_or(0.0, |u| u.1);
        let u = self.rng.random::<f64>() * total;
        let i = units.partition_point(|&(_, c)| c <= u).min(units.len() - 1);
        units[i].0
    }

    fn sku_rank(&self, rank: usize) -> Option<usize> {
        (rank >= 1 && rank <= self.skus.len()).then(|| rank - 1)
    }

    fn chan_index(&self, id: &str) -> Option<usize> {
        self.chans.iter().position(|c| c.id == id)
    }

    fn loc_index(&self, id: &str) -> Option<usize> {
        self.locs.iter().position(|l| l.id == id)
    }

    // ---- books ------------------------------------------------------------------------------

    fn shared_atp(&self, sku: usize) -> i64 {
        let s = &self.skus[sku];
        self.shared.iter().map(|&l| s.on_hand[l]).sum::<i64>() - s.reserved_shared
    }

    fn dedicated_atp(&self, sku: usize, chan: usize) -> i64 {
        let s = &self.skus[sku];
        self.chans[chan].dedicated.iter().map(|&l| s.on_hand[l]).sum::<i64>() - s.reserved_dedicated[chan]
    }

    /// The channel's slice of the shared pool as the coordinator publishes it now (its published
    /// availability less its dedicated ATP), computed by the domain's own allocation.
    fn shared_share(&mut self, sku: usize, chan: usize, at: i64) -> i64 {
        if !self.chans[chan].sells_shared {
            return 0;
        }
        let dedicated =
            if self.chans[chan].dedicated.is_empty() { 0 } else { self.dedicated_atp(sku, chan).max(0) };
        let s = &mut self.skus[sku];
        let mirror = &mut s.mirror;
        mirror.on_hand.clear();
        for (loc, units) in self.locs.iter().zip(&s.on_hand) {
            mirror.on_hand.insert(loc.id.clone(), *units);
        }
        mirror.reserved.clear();
        mirror.reserved.insert(Pool::Shared, s.reserved_shared);
        for (c, units) in self.chans.iter().zip(&s.reserved_dedicated) {
            mirror.reserved.insert(Pool::Dedicated(c.id.clone()), *units);
        }
        mirror.demand.prune(at);
        let atps = mirror.atps(self.rules);
        let available = allocate(self.rules, mirror, &atps, at)
            .into_iter()
            .find(|a| a.channel == self.chans[chan].id)
            .map_or(0, |a| a.available);
        (available - dedicated).max(0)
    }

    fn reserve(&mut self, line: usize, units: i64) {
        let Line { sku, chan, dedicated, .. } = self.lines[line];
        let s = &mut self.skus[sku];
        if dedicated {
            s.reserved_dedicated[chan] += units;
        } else {
            s.reserved_shared += units;
        }
    }

    /// The channel's summed promotion percent at `at`.
    fn promo_pct(&self, sku: usize, chan: usize, at: i64) -> Decimal {
        self.skus[sku]
            .promos
            .iter()
            .filter(|p| p.chan == chan && !p.cancelled && p.starts <= at && at < p.ends)
            .map(|p| p.pct)
            .sum()
    }

    /// The deepest promotion of the channel not yet over at `at`.
    fn deepest_promo(&self, sku: usize, chan: usize, at: i64) -> Decimal {
        self.skus[sku]
            .promos
            .iter()
            .filter(|p| p.chan == chan && !p.cancelled && p.ends > at)
            .map(|p| p.pct)
            .max()
            .unwrap_or(Decimal::ZERO)
    }

    /// Whether `listed` on `chan` keeps every price rule: above the floor (with the channel's
    /// promotions), at or above MAP, within the channel spread, and not so high that a recent
    /// competitor observation would undercut it.
    fn price_ok(&self, sku: usize, chan: usize, listed: Decimal, at: i64) -> bool {
        let c = &self.chans[chan];
        let s = &self.skus[sku];
        let promo = self.deepest_promo(sku, chan, at);
        let lowest = listed * c.rate * (Decimal::ONE - promo);
        if lowest * c.cost_share < s.cost * Decimal::new(102, 2) {
            return false;
        }
        if let Some(map) = s.map
            && c.map_applies
            && lowest < map
        {
            return false;
        }
        let reporting = (0..self.chans.len())
            .map(|i| if i == chan { listed * c.rate } else { s.listed[i] * self.chans[i].rate });
        let (min, max) = reporting.fold((Decimal::MAX, Decimal::MIN), |(lo, hi), p| (lo.min(p), hi.max(p)));
        if max - min > self.max_spread * min {
            return false;
        }
        let ceiling = listed * Decimal::new(96, 2);
        s.competitors.iter().all(|(ch, _, p)| *ch != chan || *p >= ceiling)
    }

    // ---- setup ------------------------------------------------------------------------------

    fn setup(&mut self) {
        let n = self.cdf.len();
        let offset = self.opt.popularity_offset.max(0.0);
        let squeeze = self.opt.scenarios.supply_squeeze.clone();
        for rank in 1..=n {
            let weight = 1.0 / (rank as f64 + offset);
            let mut daily = vec![0.0; self.locs.len()];
            for c in &self.chans {
                if rank > c.pool {
                    continue;
                }
                let p =
                    if c.profile.uniform_pool { 1.0 / c.pool as f64 } else { weight / self.cdf[c.pool - 1] };
                let units = self.opt.orders_per_day * c.profile.order_share * c.mean_lines * c.mean_units * p;
                let dedicated = if c.dedicated.is_empty() { 0.0 } else { c.profile.dedicated_share };
                if let Some(&l) = c.dedicated.first() {
                    daily[l] += units * dedicated;
                }
                if let Some(&l) = c.ship_from.first() {
                    daily[l] += units * (1.0 - dedicated);
                }
            }
            let squeezed = squeeze.as_ref().is_some_and(|s| rank <= s.top_skus);
            let name = sku_name(rank, n);
            let map = self.rules.contract.pricing.map.get(&name).and_then(|m| {
                let amount =
                    omnifold_domain::money::Amount { value: m.amount, currency: m.currency.as_str().into() };
                self.rules.contract.to_reporting(&amount).ok()
            });
            self.skus.push(Sku {
                name,
                on_hand: vec![0; self.locs.len()],
                in_transit: vec![0; self.locs.len()],
                reserved_shared: 0,
                reserved_dedicated: vec![0; self.chans.len()],
                daily,
                cost: Decimal::ZERO,
                listed: vec![Decimal::ZERO; self.chans.len()],
                promos: Vec::new(),
                competitors: Vec::new(),
                squeezed,
                locked: map.is_some(),
                map,
                mirror: Stock::default(),
            });
        }
        for sku in 0..n {
            self.set_up_prices(sku);
            for loc in 0..self.locs.len() {
                let target = self.target(sku, loc);
                let min = self.locs[loc].profile.min_stock;
                let stock = if target == 0 {
                    0
                } else {
                    ((target as f64 * (0.6 + 0.4 * self.rng.random::<f64>())) as i64).max(min)
                };
                self.skus[sku].on_hand[loc] = stock;
            }
        }
        self.lock_scenario_skus();
        // The opening books: costs, listed prices, counts.
        let start = self.start;
        let reporting = self.rules.contract.reporting_currency.clone();
        for sku in 0..n {
            let s = &self.skus[sku];
            let body = Body::CostSet(v1::CostSet {
                sku: s.name.clone(),
                unit_cost: Some(money(s.cost, &reporting)),
            });
            self.emit(start, None, body);
        }
        for sku in 0..n {
            for chan in 0..self.chans.len() {
                let s = &self.skus[sku];
                let body = Body::PriceSet(v1::PriceSet {
                    sku: s.name.clone(),
                    price: Some(money(s.listed[chan], &self.chans[chan].currency)),
                });
                self.emit(start + 1_000, Some(chan), body);
            }
        }
        for sku in 0..n {
            for loc in 0..self.locs.len() {
                let s = &self.skus[sku];
                let body = Body::StockCounted(v1::StockCounted {
                    sku: s.name.clone(),
                    location_id: self.locs[loc].id.clone(),
                    on_hand: s.on_hand[loc],
                });
                self.emit(start + 2_000, None, body);
            }
        }
        self.schedule_recurring();
        self.schedule_scenarios();
    }

    /// Cost, base price and every channel's listed price of a SKU.
    fn set_up_prices(&mut self, sku: usize) {
        let u: f64 = self.rng.random();
        let mut cost = cents(600 + (u * u * 5_400.0) as i64);
        let markup = bps(self.rng.random_range(18_000..=26_000));
        let mut base = cost * markup;
        if let Some(map) = self.skus[sku].map {
            // MAP SKUs list a little above MAP, far enough that their own planned promotions on
            // MAP channels stay at or above it.
            let mut least = Decimal::new(106, 2);
            if let Some(collision) = &self.opt.scenarios.promotion_collision
                && collision.sku == sku + 1
            {
                for plan in [&collision.first, &collision.second] {
                    let on_map_channel =
                        self.chan_index(&plan.channel).is_some_and(|c| self.chans[c].map_applies);
                    if on_map_channel {
                        least = least.max(Decimal::new(103, 2) / (Decimal::ONE - bps(plan.percent_off_bps)));
                    }
                }
            }
            base = map * (least + bps(self.rng.random_range(0..=400)));
            cost = round_cent(base / markup);
        }
        self.skus[sku].cost = cost;
        let mut listed = Vec::with_capacity(self.chans.len());
        for c in &self.chans {
            let (lo, hi) = c.profile.price_bps;
            let factor = bps(if hi > lo { self.rng.random_range(lo..=hi) } else { lo });
            listed.push(price(base * factor / c.rate, c.profile.charm_prices));
        }
        self.skus[sku].listed = listed;
        let all_ok =
            (0..self.chans.len()).all(|c| self.price_ok(sku, c, self.skus[sku].listed[c], self.start));
        if !all_ok {
            // Fall back to one price everywhere, in each channel's currency.
            for c in 0..self.chans.len() {
                let chan = &self.chans[c];
                self.skus[sku].listed[c] = price(base / chan.rate, chan.profile.charm_prices);
            }
        }
    }

    /// Units a location aims to hold of a SKU after a receipt.
    fn target(&self, sku: usize, loc: usize) -> i64 {
        let s = &self.skus[sku];
        let l = &self.locs[loc];
        let daily = s.daily[loc];
        let cover = match &self.opt.scenarios.supply_squeeze {
            Some(squeeze) if s.squeezed => squeeze.cover_days,
            _ => self.opt.mix.cover_days,
        };
        // A dedicated location only stocks SKUs its channel sells there at some pace.
        if l.dedicated_to.is_some() && daily < 0.15 {
            return 0;
        }
        l.profile.min_stock.max((daily * cover).ceil() as i64)
    }

    fn lock_scenario_skus(&mut self) {
        let scenarios = &self.opt.scenarios;
        let mut locked: Vec<usize> = Vec::new();
        if let Some(b) = &scenarios.map_breach {
            locked.push(b.sku);
        }
        if let Some(c) = &scenarios.promotion_collision {
            locked.push(c.sku);
        }
        for rank in locked {
            if let Some(sku) = self.sku_rank(rank) {
                self.skus[sku].locked = true;
            }
        }
    }

    fn schedule_recurring(&mut self) {
        let (start, end) = (self.start, self.end);
        for chan in 0..self.chans.len() {
            let weekly = self.chans[chan].profile.ads_cents_per_week;
            if weekly <= 0 {
                continue;
            }
            let mut block = start;
            while block < end {
                let amount = cents(weekly * 2) * bps(self.rng.random_range(9_000..=11_000));
                let at = block + 6 * HOUR_MS + self.between(0, 59) * MINUTE_MS;
                self.schedule(
                    at,
                    Action::ChannelCost { chan, amount, start: block, end: block + 14 * DAY_MS },
                );
                block += 14 * DAY_MS;
            }
        }
        let n = self.skus.len();
        if let Some(every) = self.opt.mix.replenish_every_days {
            let every = i64::from(every.max(1));
            for sku in 0..n {
                let day = (sku as i64) % every;
                let at =
                    start + day * DAY_MS + 13 * HOUR_MS + self.between(0, 6 * 60) * MINUTE_MS + DAY_MS / 2;
                self.schedule(at, Action::Replenish { sku });
            }
        }
        if self.opt.mix.weekly_cycle_count {
            for sku in 0..n {
                let day = match (sku as i64) % 7 {
                    0 => 7,
                    d => d,
                };
                let at = start + day * DAY_MS + 9 * HOUR_MS + self.between(0, 8 * 60) * MINUTE_MS;
                self.schedule(at, Action::CycleCount { sku });
            }
        }
    }

    fn schedule_scenarios(&mut self) {
        let scenarios = self.opt.scenarios.clone();
        let start = self.start;
        if let Some(drop) = &scenarios.stock_drop
            && let (Some(sku), Some(loc)) = (self.sku_rank(drop.sku), self.loc_index(&drop.location))
        {
            self.schedule(start + drop.at_ms, Action::BigDamage { sku, loc, percent: drop.percent });
        }
        if let Some(spike) = &scenarios.order_spike
            && let (Some(sku), Some(chan)) = (self.sku_rank(spike.sku), self.chan_index(&spike.channel))
        {
            let mut units = 0;
            let mut times = Vec::new();
            while units < spike.units {
                let qty = if self.chance(0.55) {
                    2
                } else if self.chance(0.5) {
                    1
                } else {
                    3
                };
                let qty = qty.min(spike.units - units).max(1);
                let at = start + spike.at_ms + self.between(0, spike.minutes * MINUTE_MS);
                times.push((at, qty));
                units += qty;
            }
            times.sort();
            for (at, qty) in times {
                self.schedule(at, Action::Order { chan, forced: Some((sku, qty)) });
            }
        }
        if let Some(breach) = &scenarios.map_breach
            && let (Some(sku), Some(chan)) = (self.sku_rank(breach.sku), self.chan_index(&breach.channel))
        {
            self.schedule(start + breach.at_ms, Action::SetPrice { sku, chan, below_map: true });
            if let Some(fixed) = breach.fixed_at_ms {
                self.schedule(start + fixed, Action::SetPrice { sku, chan, below_map: false });
            }
        }
        if let Some(collision) = &scenarios.promotion_collision
            && let Some(sku) = self.sku_rank(collision.sku)
        {
            for plan in [&collision.first, &collision.second] {
                if let Some(chan) = self.chan_index(&plan.channel) {
                    let action = Action::PlannedPromotion { sku, chan, plan: Box::new(plan.clone()) };
                    self.schedule(start + plan.scheduled_at_ms, action);
                }
            }
            if let (Some(at), Some(chan)) =
                (collision.second_cancelled_at_ms, self.chan_index(&collision.second.channel))
            {
                let promotion_id = collision.second.promotion_id.clone();
                self.schedule(start + at, Action::PlannedCancel { sku, chan, promotion_id });
            }
        }
        if let Some(undercut) = &scenarios.competitor_undercut
            && let Some(chan) = self.chan_index(&undercut.channel)
        {
            let (lo, hi) = (undercut.ranks.0.max(1), undercut.ranks.1.min(self.skus.len()));
            let mut picked = Vec::new();
            let mut tries = 0;
            while picked.len() < undercut.skus && lo <= hi && tries < 100 {
                tries += 1;
                let sku = self.between(lo as i64, hi as i64) as usize - 1;
                let s = &self.skus[sku];
                if s.locked || s.squeezed || picked.contains(&sku) || self.is_scenario_sku(sku) {
                    continue;
                }
                picked.push(sku);
            }
            for sku in picked {
                self.skus[sku].locked = true;
                let at = start + self.between(undercut.from_ms, undercut.to_ms - 1);
                let action = Action::Undercut {
                    sku,
                    chan,
                    competitor: undercut.competitor.clone(),
                    price_bps: undercut.price_bps,
                };
                self.schedule(at, action);
            }
        }
    }

    fn is_scenario_sku(&self, sku: usize) -> bool {
        let s = &self.opt.scenarios;
        let rank = sku + 1;
        s.stock_drop.as_ref().is_some_and(|d| d.sku == rank)
            || s.order_spike.as_ref().is_some_and(|o| o.sku == rank)
    }

    // ---- the clock --------------------------------------------------------------------------

    fn run(&mut self) {
        let hours = i64::from(self.opt.days) * 24;
        let mut hour = 0;
        while !self.done {
            if hour >= hours && (self.opt.max_events.is_none() || hour >= hours * 10 + 24) {
                break;
            }
            let t0 = self.start + hour * HOUR_MS;
            self.arrivals(t0);
            let t1 = t0 + HOUR_MS;
            while let Some(Reverse(next)) = self.agenda.peek() {
                if next.at >= t1 || self.done {
                    break;
                }
                let Some(Reverse(next)) = self.agenda.pop() else { break };
                self.act(next.at, next.action);
            }
            hour += 1;
        }
    }

    /// The hour's new orders and random stock events.
    fn arrivals(&mut self, t0: i64) {
        let earliest = (self.start + MINUTE_MS).max(t0);
        for chan in 0..self.chans.len() {
            let c = &self.chans[chan];
            let mean = self.opt.orders_per_day * c.profile.order_share / 24.0 * c.curve.at(t0);
            for _ in 0..self.count(mean) {
                let at = self.between(earliest, t0 + HOUR_MS - 1);
                self.schedule(at, Action::Order { chan, forced: None });
            }
        }
        if let Some(squeeze) = self.opt.scenarios.supply_squeeze.clone()
            && t0 >= self.start + squeeze.demand_from_ms
            && squeeze.demand_factor > 1.0
        {
            let top = squeeze.top_skus.min(self.skus.len());
            for chan in 0..self.chans.len() {
                let c = &self.chans[chan];
                if c.profile.strict_availability {
                    continue;
                }
                let hourly = self.opt.orders_per_day * c.profile.order_share / 24.0 * c.curve.at(t0);
                let total = self.cdf[self.cdf.len() - 1];
                for sku in 0..top {
                    let p = (self.cdf[sku] - if sku == 0 { 0.0 } else { self.cdf[sku - 1] }) / total;
                    for _ in 0..self.count(hourly * p * (squeeze.demand_factor - 1.0)) {
                        let at = self.between(earliest, t0 + HOUR_MS - 1);
                        let qty = self.pick_units(chan);
                        self.schedule(at, Action::Order { chan, forced: Some((sku, qty)) });
                    }
                }
            }
        }
        let damage = self.opt.mix.damage_per_day / 24.0;
        for _ in 0..self.occurrences(damage) {
            let at = self.between(earliest, t0 + HOUR_MS - 1);
            self.schedule(at, Action::Damage);
        }
    }

    fn act(&mut self, at: i64, action: Action) {
        match action {
            Action::Order { chan, forced } => self.order(at, chan, forced),
            Action::Ship { first, count } => {
                for line in first..first + count {
                    self.ship(at, line);
                }
            }
            Action::ShipLine { line } => self.ship(at, line),
            Action::Cancel { first, count } => {
                for line in first..first + count {
                    self.cancel(at, line);
                }
            }
            Action::Return { line } => self.take_return(at, line),
            Action::Replenish { sku } => self.replenish(at, sku),
            Action::Receipt { sku, loc, qty, transfer } => self.receive(at, sku, loc, qty, transfer),
            Action::CycleCount { sku } => self.cycle_count(at, sku),
            Action::Damage => self.random_damage(at),
            Action::StockOp => self.stock_op(at),
            Action::PriceChange => self.price_change(at),
            Action::Promotion => self.promotion(at),
            Action::PromotionCancel { sku, promo } => self.cancel_promotion(at, sku, promo),
            Action::Competitor => self.competitor(at),
            Action::ChannelCost { chan, amount, start, end } => {
                let body = Body::ChannelCostRecorded(v1::ChannelCostRecorded {
                    category: "ads".to_string(),
                    amount: Some(money(amount, &self.chans[chan].currency)),
                    period_start_ms: start,
                    period_end_ms: end,
                });
                self.emit(at, Some(chan), body);
            }
            Action::BigDamage { sku, loc, percent } => self.big_damage(at, sku, loc, percent),
            Action::SetPrice { sku, chan, below_map } => self.map_price(at, sku, chan, below_map),
            Action::PlannedPromotion { sku, chan, plan } => self.planned_promotion(at, sku, chan, &plan),
            Action::PlannedCancel { sku, chan, promotion_id } => {
                if let Some(promo) =
                    self.skus[sku].promos.iter().position(|p| p.chan == chan && p.id == promotion_id)
                {
                    self.cancel_promotion(at, sku, promo);
                }
            }
            Action::Undercut { sku, chan, competitor, price_bps } => {
                let effective = self.skus[sku].listed[chan] * (Decimal::ONE - self.promo_pct(sku, chan, at));
                let price = round_cent(effective * bps(self.between(price_bps.0, price_bps.1)));
                self.observe(at, sku, chan, competitor, price);
            }
        }
    }

    // ---- orders -----------------------------------------------------------------------------

    fn order(&mut self, at: i64, chan: usize, forced: Option<(usize, i64)>) {
        let c = &self.chans[chan];
        let (multi, max_lines, pool, uniform) =
            (c.profile.multi_line_rate, c.profile.max_lines.max(1), c.pool, c.profile.uniform_pool);
        let wanted = match forced {
            Some(_) => 1,
            None if max_lines > 1 && self.chance(multi) => self.between(2, max_lines as i64) as usize,
            None => 1,
        };
        let first = self.lines.len();
        let mut picked: Vec<usize> = Vec::with_capacity(wanted);
        for _ in 0..wanted {
            let (sku, qty) = match forced {
                Some(f) => f,
                None => {
                    let mut sku = self.pick_line_sku(pool, uniform);
                    for _ in 0..4 {
                        if !picked.contains(&sku) {
                            break;
                        }
                        sku = self.pick_line_sku(pool, uniform);
                    }
                    if picked.contains(&sku) {
                        continue;
                    }
                    (sku, self.pick_units(chan))
                }
            };
            picked.push(sku);
            if let Some((dedicated, qty)) = self.admit(at, chan, sku, qty) {
                self.place(at, chan, sku, qty, dedicated);
            }
        }
        let count = self.lines.len() - first;
        if count == 0 {
            return;
        }
        self.chans[chan].orders += 1;
        let mix = &self.opt.mix;
        let (cancel_rate, ship_rate) = (mix.cancel_rate, mix.ship_rate);
        let all_dedicated = self.lines[first..].iter().all(|l| l.dedicated);
        let hours = if all_dedicated { mix.dedicated_ship_hours } else { mix.ship_hours };
        if self.chance(cancel_rate) {
            let delay = self.between(5 * MINUTE_MS, 3 * HOUR_MS);
            self.schedule(at + delay, Action::Cancel { first, count });
        } else if self.chance(ship_rate) {
            let delay = self.between(hours.0 * HOUR_MS, hours.1 * HOUR_MS);
            self.schedule(at + delay, Action::Ship { first, count });
        }
        for _ in 0..count {
            self.per_line_processes(at);
        }
    }

    fn per_line_processes(&mut self, at: i64) {
        let mix = &self.opt.mix;
        let rates = [
            (mix.stock_ops_per_line, 0),
            (mix.price_changes_per_line, 1),
            (mix.promotions_per_line, 2),
            (mix.competitor_observations_per_line, 3),
        ];
        for (rate, kind) in rates {
            for _ in 0..self.occurrences(rate) {
                let later = at + self.between(0, HOUR_MS - 1);
                let action = match kind {
                    0 => Action::StockOp,
                    1 => Action::PriceChange,
                    2 => Action::Promotion,
                    _ => Action::Competitor,
                };
                self.schedule(later, action);
            }
        }
    }

    /// Whether the channel takes the line, where it reserves, and how many units (a strict
    /// channel may take fewer).
    fn admit(&mut self, at: i64, chan: usize, sku: usize, qty: i64) -> Option<(bool, i64)> {
        let has_dedicated = !self.chans[chan].dedicated.is_empty();
        let share = self.chans[chan].profile.dedicated_share;
        let want_dedicated = has_dedicated && self.chance(share);
        if !self.opt.mix.respect_availability {
            return Some((want_dedicated, qty));
        }
        let dedicated_atp = if has_dedicated { self.dedicated_atp(sku, chan) } else { 0 };
        if want_dedicated && dedicated_atp >= qty {
            return Some((true, qty));
        }
        let available = self.shared_share(sku, chan, at);
        if available >= qty {
            return Some((false, qty));
        }
        let profile = &self.chans[chan].profile;
        if profile.strict_availability {
            let pack = profile.pack.max(1);
            let fits = available / pack * pack;
            return (fits >= profile.min_units && fits > 0).then_some((false, fits));
        }
        if has_dedicated && dedicated_atp >= qty {
            return Some((true, qty));
        }
        // Stale listings: during the squeeze the channels keep selling what they last showed.
        if let Some(squeeze) = &self.opt.scenarios.supply_squeeze
            && self.skus[sku].squeezed
            && at >= self.start + squeeze.demand_from_ms
            && self.shared_atp(sku) - qty >= -squeeze.stale_listing_units
        {
            return Some((false, qty));
        }
        None
    }

    fn place(&mut self, at: i64, chan: usize, sku: usize, qty: i64, dedicated: bool) {
        let c = &self.chans[chan];
        let order = c.orders + 1;
        let line_no =
            self.lines.iter().rev().take_while(|l| l.chan == chan && l.order == order).count() as u16 + 1;
        let unit_price = self.skus[sku].listed[chan];
        let gross = unit_price * Decimal::from(qty);
        let coupon_rate = c.profile.coupon_rate;
        let fee_rate = c.fee_rate;
        let promo = self.promo_pct(sku, chan, at);
        let mut discount = gross * promo;
        if self.chance(coupon_rate) {
            let pct = if self.chance(0.6) { 1_000 } else { 1_500 };
            discount += (gross - discount) * bps(pct);
        }
        let discount = round_cent(discount.min(gross));
        let fee = round_cent((gross - discount) * fee_rate);
        let location = if dedicated {
            self.chans[chan].dedicated.first().map(|&l| self.locs[l].id.clone())
        } else {
            self.chans[chan].place_at.clone()
        };
        let c = &self.chans[chan];
        let body = Body::OrderLinePlaced(v1::OrderLinePlaced {
            order_id: order_id(c, order),
            line_id: line_no.to_string(),
            sku: self.skus[sku].name.clone(),
            quantity: qty,
            unit_price: Some(money(unit_price, &c.currency)),
            discount: (!discount.is_zero()).then(|| money(discount, &c.currency)),
            channel_fee: (!fee.is_zero()).then(|| money(fee, &c.currency)),
            location_id: location,
        });
        self.lines.push(Line {
            sku,
            chan,
            order,
            line_no,
            qty,
            shipped: 0,
            cancelled: 0,
            returned: 0,
            dedicated,
            unit_price,
            discount,
            first_loc: None,
            retries: 0,
        });
        self.reserve(self.lines.len() - 1, qty);
        if self.opt.mix.respect_availability {
            let channel = self.chans[chan].id.clone();
            self.skus[sku].mirror.demand.place(&channel, at, qty);
        }
        self.emit(at, Some(chan), body);
    }

    fn ship(&mut self, at: i64, line: usize) {
        let open = self.lines[line].open();
        if open <= 0 {
            return;
        }
        let Line { sku, chan, dedicated, .. } = self.lines[line];
        let candidates: Vec<usize> =
            if dedicated { self.chans[chan].dedicated.clone() } else { self.chans[chan].ship_from.clone() };
        if candidates.is_empty() {
            return;
        }
        if !self.opt.mix.backorders {
            let on_hand = &self.skus[sku].on_hand;
            let best = candidates
                .iter()
                .copied()
                .fold(candidates[0], |b, l| if on_hand[l] > on_hand[b] { l } else { b });
            self.emit_ship(at, line, best, open);
            self.maybe_return(at, line);
            return;
        }
        let pack = self.chans[chan].profile.pack;
        let mut portion = open;
        let split = pack > 1
            && self.lines[line].shipped == 0
            && self.lines[line].retries == 0
            && open >= 2 * pack
            && self.chance(self.opt.mix.split_rate);
        if split {
            portion = open / 2 / pack * pack;
        }
        let mut shipped = 0;
        if let Some(loc) = candidates.iter().copied().find(|&l| self.skus[sku].on_hand[l] >= portion) {
            self.emit_ship(at, line, loc, portion);
            shipped = portion;
        } else {
            for loc in candidates {
                let take = self.skus[sku].on_hand[loc].min(portion - shipped);
                if take > 0 {
                    self.emit_ship(at, line, loc, take);
                    shipped += take;
                }
            }
        }
        let rest = open - shipped;
        if rest > 0 {
            if split && shipped == portion {
                let later = at + self.between(24 * HOUR_MS, 48 * HOUR_MS);
                self.schedule(later, Action::ShipLine { line });
            } else if self.lines[line].retries < 2 {
                self.lines[line].retries += 1;
                let later = at + DAY_MS + self.between(0, 2 * HOUR_MS);
                self.schedule(later, Action::ShipLine { line });
            } else {
                self.cancel(at, line);
            }
        }
        self.maybe_return(at, line);
    }

    fn emit_ship(&mut self, at: i64, line: usize, loc: usize, qty: i64) {
        self.reserve(line, -qty);
        let l = &mut self.lines[line];
        l.shipped += qty;
        l.first_loc.get_or_insert(loc);
        let (sku, chan) = (l.sku, l.chan);
        self.skus[sku].on_hand[loc] -= qty;
        let location = &self.locs[loc];
        let cost = cents(location.profile.pick_cents + location.profile.unit_cents * qty);
        let l = &self.lines[line];
        let body = Body::OrderLineShipped(v1::OrderLineShipped {
            order_id: order_id(&self.chans[chan], l.order),
            line_id: l.line_no.to_string(),
            sku: self.skus[sku].name.clone(),
            quantity: qty,
            location_id: location.id.clone(),
            fulfillment_cost: Some(money(cost, &location.currency)),
        });
        self.emit(at, Some(chan), body);
    }

    fn maybe_return(&mut self, at: i64, line: usize) {
        let l = &self.lines[line];
        if l.open() != 0 || l.cancelled != 0 || l.shipped != l.qty {
            return;
        }
        if self.chance(self.opt.mix.return_rate) {
            let (lo, hi) = self.opt.mix.return_days;
            let later = at + self.between(lo * DAY_MS, hi * DAY_MS);
            self.schedule(later, Action::Return { line });
        }
    }

    fn cancel(&mut self, at: i64, line: usize) {
        let open = self.lines[line].open();
        if open <= 0 {
            return;
        }
        self.reserve(line, -open);
        let l = &mut self.lines[line];
        l.cancelled += open;
        let body = Body::OrderLineCancelled(v1::OrderLineCancelled {
            order_id: order_id(&self.chans[l.chan], l.order),
            line_id: l.line_no.to_string(),
            sku: self.skus[l.sku].name.clone(),
        });
        let chan = l.chan;
        self.emit(at, Some(chan), body);
    }

    fn take_return(&mut self, at: i64, line: usize) {
        let returnable = self.lines[line].shipped - self.lines[line].returned;
        if returnable <= 0 {
            return;
        }
        let qty =
            if returnable == 1 || self.chance(0.8) { returnable } else { self.between(1, returnable - 1) };
        let restock = self.chance(self.opt.mix.restock_rate) && self.lines[line].first_loc.is_some();
        let l = &mut self.lines[line];
        l.returned += qty;
        let refund = round_cent(
            l.unit_price * Decimal::from(qty) - l.discount * Decimal::from(qty) / Decimal::from(l.qty),
        );
        let location = if restock { l.first_loc } else { None };
        let (sku, chan) = (l.sku, l.chan);
        if let Some(loc) = location {
            self.skus[sku].on_hand[loc] += qty;
        }
        let l = &self.lines[line];
        let c = &self.chans[chan];
        let body = Body::OrderLineReturned(v1::OrderLineReturned {
            order_id: order_id(c, l.order),
            line_id: l.line_no.to_string(),
            sku: self.skus[sku].name.clone(),
            quantity: qty,
            refund: Some(money(refund.max(Decimal::ZERO), &c.currency)),
            restock,
            location_id: location.map(|loc| self.locs[loc].id.clone()),
        });
        self.emit(at, Some(chan), body);
    }

    // ---- stock ------------------------------------------------------------------------------

    fn squeezed_receipts_stopped(&self, sku: usize, at: i64) -> bool {
        self.opt.scenarios.supply_squeeze.as_ref().is_some_and(|squeeze| {
            self.skus[sku].squeezed && at >= self.start + squeeze.receipts_stop_after_ms
        })
    }

    /// Units of a location not yet spoken for: on hand plus on the way, minus its part of the
    /// open reservations.
    fn position(&self, sku: usize, loc: usize) -> f64 {
        let s = &self.skus[sku];
        let reserved = match self.locs[loc].dedicated_to {
            Some(chan) => s.reserved_dedicated[chan] as f64,
            None => {
                let shared_daily: f64 = self.shared.iter().map(|&l| s.daily[l]).sum();
                let part = if shared_daily > 0.0 { s.daily[loc] / shared_daily } else { 0.0 };
                s.reserved_shared as f64 * part
            }
        };
        (s.on_hand[loc] + s.in_transit[loc]) as f64 - reserved
    }

    fn replenish(&mut self, at: i64, sku: usize) {
        if let Some(every) = self.opt.mix.replenish_every_days {
            self.schedule(at + i64::from(every.max(1)) * DAY_MS, Action::Replenish { sku });
        }
        if self.squeezed_receipts_stopped(sku, at) {
            return;
        }
        let reorder_part = self.opt.mix.reorder_days / self.opt.mix.cover_days.max(1.0);
        for loc in 0..self.locs.len() {
            let target = self.target(sku, loc);
            if target == 0 {
                continue;
            }
            let position = self.position(sku, loc);
            if position >= target as f64 * reorder_part {
                continue;
            }
            let missing = (target as f64 - position).ceil() as i64;
            let qty = (missing + CASE - 1) / CASE * CASE;
            if qty <= 0 {
                continue;
            }
            let (lo, hi) = self.locs[loc].profile.lead_days;
            let lead = self.between(lo * DAY_MS, hi * DAY_MS);
            self.skus[sku].in_transit[loc] += qty;
            let transfer_from = self.shared.first().copied();
            if self.locs[loc].dedicated_to.is_some()
                && let Some(source) = transfer_from
                && self.chance(self.opt.mix.transfer_rate)
                && qty * 10 <= self.skus[sku].on_hand[source] * 4
                && (self.skus[sku].on_hand[source] - qty) as f64
                    >= self.target(sku, source) as f64 * reorder_part
                && self.shared_atp(sku) - qty >= 2 * self.scarcity_line
            {
                self.skus[sku].on_hand[source] -= qty;
                let body = Body::StockAdjusted(v1::StockAdjusted {
                    sku: self.skus[sku].name.clone(),
                    location_id: self.locs[source].id.clone(),
                    delta: -qty,
                    reason: StockAdjustmentReason::TransferOut as i32,
                });
                self.emit(at, None, body);
                self.schedule(at + lead, Action::Receipt { sku, loc, qty, transfer: true });
            } else {
                self.schedule(at + lead, Action::Receipt { sku, loc, qty, transfer: false });
            }
        }
    }

    fn receive(&mut self, at: i64, sku: usize, loc: usize, qty: i64, transfer: bool) {
        // Supplier receipts of squeezed SKUs never arrive; stock in transit between own sites does.
        if !transfer && self.squeezed_receipts_stopped(sku, at) {
            return;
        }
        let s = &mut self.skus[sku];
        s.in_transit[loc] = (s.in_transit[loc] - qty).max(0);
        s.on_hand[loc] += qty;
        let reason =
            if transfer { StockAdjustmentReason::TransferIn } else { StockAdjustmentReason::Receipt };
        self.adjust_event(at, sku, loc, qty, reason);
    }

    fn adjust_event(&mut self, at: i64, sku: usize, loc: usize, delta: i64, reason: StockAdjustmentReason) {
        let body = Body::StockAdjusted(v1::StockAdjusted {
            sku: self.skus[sku].name.clone(),
            location_id: self.locs[loc].id.clone(),
            delta,
            reason: reason as i32,
        });
        self.emit(at, None, body);
    }

    fn count_event(&mut self, at: i64, sku: usize, loc: usize) {
        let on_hand = self.skus[sku].on_hand[loc].max(0);
        let counted = if on_hand >= 20 && self.chance(0.08) {
            on_hand - self.between(1, 2)
        } else if on_hand >= 20 && self.chance(0.03) {
            on_hand + 1
        } else {
            on_hand
        };
        self.skus[sku].on_hand[loc] = counted;
        let body = Body::StockCounted(v1::StockCounted {
            sku: self.skus[sku].name.clone(),
            location_id: self.locs[loc].id.clone(),
            on_hand: counted,
        });
        self.emit(at, None, body);
    }

    fn cycle_count(&mut self, at: i64, sku: usize) {
        self.schedule(at + 7 * DAY_MS, Action::CycleCount { sku });
        for loc in 0..self.locs.len() {
            if self.skus[sku].on_hand[loc] != 0 {
                self.count_event(at, sku, loc);
            }
        }
    }

    /// A location holding at least `min` units of the SKU, at random.
    fn stocked_location(&mut self, sku: usize, min: i64) -> Option<usize> {
        let stocked: Vec<usize> =
            (0..self.locs.len()).filter(|&l| self.skus[sku].on_hand[l] >= min).collect();
        if stocked.is_empty() {
            return None;
        }
        Some(stocked[self.between(0, stocked.len() as i64 - 1) as usize])
    }

    fn small_write_off(&mut self, at: i64, sku: usize, loc: usize) {
        let on_hand = self.skus[sku].on_hand[loc];
        if self.chance(0.8) {
            let units = self.between(1, (on_hand / 10).clamp(1, 3));
            self.skus[sku].on_hand[loc] -= units;
            self.adjust_event(at, sku, loc, -units, StockAdjustmentReason::Damage);
        } else {
            let delta = if self.chance(0.5) { 1 } else { -1 };
            self.skus[sku].on_hand[loc] += delta;
            self.adjust_event(at, sku, loc, delta, StockAdjustmentReason::Correction);
        }
    }

    fn random_damage(&mut self, at: i64) {
        let sku = self.pick_sku(self.skus.len());
        if let Some(loc) = self.stocked_location(sku, 10) {
            self.small_write_off(at, sku, loc);
        }
    }

    /// The bench's stock events: half counts, a third receipts, the rest damage and corrections.
    fn stock_op(&mut self, at: i64) {
        let sku = self.pick_sku(self.skus.len());
        let roll: f64 = self.rng.random();
        if roll < 0.50 {
            let loc = self.between(0, self.locs.len() as i64 - 1) as usize;
            self.count_event(at, sku, loc);
        } else if roll < 0.85 || self.stocked_location(sku, 10).is_none() {
            // Top the location furthest below its target back up.
            let mut best = (0usize, f64::MIN);
            for loc in 0..self.locs.len() {
                let gap = self.target(sku, loc) as f64 - self.position(sku, loc);
                if gap > best.1 {
                    best = (loc, gap);
                }
            }
            let qty = ((best.1.ceil() as i64).max(CASE) + CASE - 1) / CASE * CASE;
            self.skus[sku].on_hand[best.0] += qty;
            self.adjust_event(at, sku, best.0, qty, StockAdjustmentReason::Receipt);
        } else if let Some(loc) = self.stocked_location(sku, 10) {
            self.small_write_off(at, sku, loc);
        }
    }

    fn big_damage(&mut self, at: i64, sku: usize, loc: usize, percent: i64) {
        let on_hand = self.skus[sku].on_hand[loc];
        if on_hand <= 0 {
            return;
        }
        let units = ((on_hand * percent + 99) / 100).max(on_hand / 2 + 1).min(on_hand);
        self.skus[sku].on_hand[loc] -= units;
        self.adjust_event(at, sku, loc, -units, StockAdjustmentReason::Damage);
    }

    // ---- prices -----------------------------------------------------------------------------

    fn set_price(&mut self, at: i64, sku: usize, chan: usize, listed: Decimal) {
        self.skus[sku].listed[chan] = listed;
        let body = Body::PriceSet(v1::PriceSet {
            sku: self.skus[sku].name.clone(),
            price: Some(money(listed, &self.chans[chan].currency)),
        });
        self.emit(at, Some(chan), body);
    }

    fn price_change(&mut self, at: i64) {
        let Some(sku) = self.pick_unlocked_sku() else { return };
        let chan = self.between(0, self.chans.len() as i64 - 1) as usize;
        let old = self.skus[sku].listed[chan];
        let mut step = self.between(-600, 400);
        if step.abs() < 100 {
            step = if step < 0 { -100 } else { 100 };
        }
        // A move that breaks a price rule is tried the other way, half as far.
        let charm_prices = self.chans[chan].profile.charm_prices;
        for step in [step, -step / 2] {
            let mut new = price(old * (Decimal::ONE + bps(step)), charm_prices);
            if new == old {
                // Too small a move for the price's rounding: the smallest step there is.
                let tick = if charm_prices { Decimal::ONE } else { cents(1) };
                new = if step < 0 { old - tick } else { old + tick };
            }
            if new > Decimal::ZERO && self.price_ok(sku, chan, new, at) {
                self.set_price(at, sku, chan, new);
                return;
            }
        }
    }

    /// The MAP scenario: list below MAP, or put the price from before back.
    fn map_price(&mut self, at: i64, sku: usize, chan: usize, below_map: bool) {
        let Some(map) = self.skus[sku].map else { return };
        let rate = self.chans[chan].rate;
        if below_map {
            let listed = charm_below(map * Decimal::new(96, 2) / rate);
            self.set_price(at, sku, chan, listed);
        } else {
            let c = &self.chans[chan];
            let listed = price(map * Decimal::new(107, 2) / rate, c.profile.charm_prices);
            self.set_price(at, sku, chan, listed);
        }
    }

    fn promotion(&mut self, at: i64) {
        let channels: Vec<usize> =
            (0..self.chans.len()).filter(|&c| self.chans[c].profile.promotions).collect();
        if channels.is_empty() {
            return;
        }
        let chan = channels[self.between(0, channels.len() as i64 - 1) as usize];
        let pct = bps([1_000, 1_500, 2_000][self.between(0, 2) as usize]);
        let offset = self.chans[chan].profile.utc_offset_hours * HOUR_MS;
        let midnight = (at + offset).div_euclid(DAY_MS) * DAY_MS - offset;
        let mut starts = midnight + self.between(1, 3) * DAY_MS;
        // One promotion of a SKU at a time, on any channel: look for a SKU free then, popular
        // ones first; failing that, the last one tried runs its promotion after its last one.
        let last_end =
            |sim: &Self, sku: usize| sim.skus[sku].promos.iter().map(|p| p.ends).max().unwrap_or(i64::MIN);
        let mut chosen = None;
        for attempt in 0..6 {
            let sku = if attempt < 3 {
                self.pick_unlocked_sku()
            } else {
                let sku = self.between(0, self.skus.len() as i64 - 1) as usize;
                (!self.skus[sku].locked).then_some(sku)
            };
            let Some(sku) = sku else { continue };
            chosen = Some(sku);
            if last_end(self, sku) <= starts {
                break;
            }
        }
        let Some(sku) = chosen else { return };
        let last = last_end(self, sku);
        if last > starts {
            starts = midnight + (last - midnight + DAY_MS - 1).div_euclid(DAY_MS) * DAY_MS;
        }
        let ends = starts + self.between(1, 4) * DAY_MS;
        let (s, c) = (&self.skus[sku], &self.chans[chan]);
        let lowest = s.listed[chan] * c.rate * (Decimal::ONE - pct);
        if lowest * c.cost_share < s.cost * Decimal::new(102, 2) {
            return;
        }
        let c = &mut self.chans[chan];
        c.promotions += 1;
        let id = format!("{}-PROMO-{:04}", c.profile.order_prefix, c.promotions);
        self.add_promotion(at, sku, chan, id, pct, starts, ends);
        if self.chance(self.opt.mix.promotion_cancel_rate) {
            let promo = self.skus[sku].promos.len() - 1;
            let when = self.between(at + HOUR_MS, starts - HOUR_MS);
            self.schedule(when, Action::PromotionCancel { sku, promo });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_promotion(
        &mut self,
        at: i64,
        sku: usize,
        chan: usize,
        id: String,
        pct: Decimal,
        starts: i64,
        ends: i64,
    ) {
        let body = Body::PromotionScheduled(v1::PromotionScheduled {
            promotion_id: id.clone(),
            sku: self.skus[sku].name.clone(),
            percent_off: fraction_text(pct),
            starts_at_ms: starts,
            ends_at_ms: ends,
        });
        self.skus[sku].promos.push(Promo { chan, pct, starts, ends, cancelled: false, id });
        self.emit(at, Some(chan), body);
    }

    fn planned_promotion(&mut self, at: i64, sku: usize, chan: usize, plan: &PlannedPromotion) {
        let (starts, ends) = (self.start + plan.starts_at_ms, self.start + plan.ends_at_ms);
        if ends <= starts || self.skus[sku].promos.iter().any(|p| p.chan == chan && p.id == plan.promotion_id)
        {
            return;
        }
        self.add_promotion(at, sku, chan, plan.promotion_id.clone(), bps(plan.percent_off_bps), starts, ends);
    }

    fn cancel_promotion(&mut self, at: i64, sku: usize, promo: usize) {
        let p = &mut self.skus[sku].promos[promo];
        if p.cancelled {
            return;
        }
        p.cancelled = true;
        let (chan, id) = (p.chan, p.id.clone());
        let body = Body::PromotionCancelled(v1::PromotionCancelled {
            promotion_id: id,
            sku: self.skus[sku].name.clone(),
        });
        self.emit(at, Some(chan), body);
    }

    fn competitor(&mut self, at: i64) {
        let Some(sku) = self.pick_unlocked_sku() else { return };
        let channels: Vec<usize> =
            (0..self.chans.len()).filter(|&c| !self.chans[c].profile.competitors.is_empty()).collect();
        if channels.is_empty() {
            return;
        }
        let chan = channels[self.between(0, channels.len() as i64 - 1) as usize];
        let last = self.chans[chan].profile.competitors.len() as i64 - 1;
        let pick = self.between(0, last) as usize;
        let competitor = self.chans[chan].profile.competitors[pick].clone();
        let price = round_cent(self.skus[sku].listed[chan] * bps(self.between(9_900, 11_200)));
        self.observe(at, sku, chan, competitor, price);
    }

    fn observe(&mut self, at: i64, sku: usize, chan: usize, competitor: String, price: Decimal) {
        let body = Body::CompetitorPriceObserved(v1::CompetitorPriceObserved {
            sku: self.skus[sku].name.clone(),
            competitor: competitor.clone(),
            price: Some(money(price, &self.chans[chan].currency)),
        });
        let seen = &mut self.skus[sku].competitors;
        match seen.iter_mut().find(|(c, name, _)| *c == chan && *name == competitor) {
            Some(entry) => entry.2 = price,
            None => seen.push((chan, competitor, price)),
        }
        self.emit(at, Some(chan), body);
    }
}

/// Cumulative weights of a line's units: 1/k^2 over min..=max for unit sales, uniform over the
/// multiples of the pack for pack sales.
fn unit_weights(profile: &ChannelProfile) -> Vec<(i64, f64)> {
    let (min, max) = (profile.min_units.max(1), profile.max_units.max(profile.min_units.max(1)));
    let pack = profile.pack.max(1);
    let mut weights = Vec::new();
    let mut total = 0.0;
    if pack == 1 {
        for q in min..=max {
            let k = (q - min + 1) as f64;
            total += 1.0 / (k * k);
            weights.push((q, total));
        }
    } else {
        let first = (min + pack - 1) / pack * pack;
        let mut q = first;
        while q <= max {
            total += 1.0;
            weights.push((q, total));
            q += pack;
        }
        if weights.is_empty() {
            weights.push((first, 1.0));
        }
    }
    weights
}

fn order_id(chan: &Chan, order: u64) -> String {
    format!("{}-{}", chan.profile.order_prefix, 1_000_000 + order)
}
