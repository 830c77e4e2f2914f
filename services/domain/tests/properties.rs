//! Property tests of the fold's invariants (ARCHITECTURE.md, "Invariants"):
//! - replaying the same events gives identical state and outputs;
//! - folding in batches, with the state serialized and restored between batches as the
//!   runtime does at every commit, equals folding one event at a time;
//! - a refused or duplicate event changes nothing;
//! - a SKU's state stored in parts (core, lines, promotion ids, hours of placements) and
//!   evicted and reloaded between any two events gives the same outputs and the same state,
//!   as the coordinator's state engine does with its cache;
//! - sparing a SKU's events the price rules while its prices cannot have changed is exact.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use omnifold_domain::demand::Point;
use omnifold_domain::fact::LineKey;
use omnifold_domain::pricing::PromotionKey;
use omnifold_domain::stock::Pool;
use omnifold_domain::{Contract, Fold, Outcome, Output, PartitionState, RecordKey, Rules, SkuState};
use omnifold_proto::json::event_from_json;
use omnifold_proto::{Event, ReplenishmentAction, RoutingState};
use proptest::prelude::*;

const EPOCH_MS: i64 = 1_794_182_400_000;

/// The scenario contract; with `planning`, also reorder and transfer suggestions and
/// routing (CONTRACT.md section 10), so that their state is replayed, stored and restored too.
fn fold(planning: bool) -> Fold {
    let mut value: toml::Table = toml::from_str(include_str!("scenarios/contract.toml")).expect("contract");
    if planning {
        let extra: toml::Table = toml::from_str(
            r#"
            [replenishment]
            lead_time_days = "5"
            location_lead_time_days = { wh = "9" }
            review_period_days = "3"
            target_cover_days = "10"
            case_pack = { "SKU-1" = 6 }
            [transfers]
            fba_target_cover_days = "7"
            min_transfer_units = 2
            "#,
        )
        .expect("planning sections");
        value.extend(extra);
        let channels = value.get_mut("channels").and_then(|c| c.as_array_mut()).expect("channels");
        for (channel, ship_from) in channels.iter_mut().zip([vec!["tpl", "wh"], vec!["fba", "wh"]]) {
            let ship_from = ship_from.into_iter().map(|l| toml::Value::String(l.into())).collect();
            channel
                .as_table_mut()
                .expect("a channel")
                .insert("ship_from".into(), toml::Value::Array(ship_from));
        }
    }
    let contract: Contract = value.try_into().expect("contract");
    assert_eq!(contract.problems(), vec![], "the property contract is sound");
    Fold::new(Rules::new(contract))
}

/// One generated operation; `pick` values choose among a few SKUs, lines and locations so
/// that events often refer to the same things (and sometimes to unknown ones).
#[derive(Debug, Clone)]
enum Op {
    Count { sku: u8, location: u8, on_hand: i64 },
    Adjust { sku: u8, location: u8, delta: i64 },
    Place { sku: u8, channel: u8, line: u8, quantity: i64, located: bool },
    Ship { sku: u8, channel: u8, line: u8, quantity: i64, location: u8 },
    Cancel { sku: u8, channel: u8, line: u8 },
    Return { sku: u8, channel: u8, line: u8, quantity: i64, restock: bool },
    Price { sku: u8, channel: u8, cents: i64 },
    Promote { sku: u8, channel: u8, promotion: u8, percent: u8, starts_h: i64, hours: i64 },
    Unpromote { sku: u8, channel: u8, promotion: u8 },
    Cost { sku: u8, cents: i64 },
    Competitor { sku: u8, channel: u8, competitor: u8, cents: i64 },
    Garbage,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u8, 0..4u8, 0..60i64).prop_map(|(sku, location, on_hand)| Op::Count { sku, location, on_hand }),
        (0..3u8, 0..4u8, -30..30i64).prop_map(|(sku, location, delta)| Op::Adjust { sku, location, delta }),
        (0..3u8, 0..5u8, 0..6u8, 0..8i64, any::<bool>()).prop_map(
            |(sku, channel, line, quantity, located)| Op::Place { sku, channel, line, quantity, located }
        ),
        (0..3u8, 0..5u8, 0..6u8, 1..5i64, 0..4u8).prop_map(|(sku, channel, line, quantity, location)| {
            Op::Ship { sku, channel, line, quantity, location }
        }),
        (0..3u8, 0..5u8, 0..6u8).prop_map(|(sku, channel, line)| Op::Cancel { sku, channel, line }),
        (0..3u8, 0..5u8, 0..6u8, 1..3i64, any::<bool>()).prop_map(
            |(sku, channel, line, quantity, restock)| Op::Return { sku, channel, line, quantity, restock }
        ),
        (0..3u8, 0..4u8, 100..20_000i64).prop_map(|(sku, channel, cents)| Op::Price { sku, channel, cents }),
        (0..3u8, 0..4u8, 0..3u8, 1..60u8, -5..30i64, -2..40i64).prop_map(
            |(sku, channel, promotion, percent, starts_h, hours)| Op::Promote {
                sku,
                channel,
                promotion,
                percent,
                starts_h,
                hours
            }
        ),
        (0..3u8, 0..4u8, 0..3u8).prop_map(|(sku, channel, promotion)| Op::Unpromote {
            sku,
            channel,
            promotion
        }),
        (0..3u8, 100..15_000i64).prop_map(|(sku, cents)| Op::Cost { sku, cents }),
        (0..3u8, 0..4u8, 0..2u8, 100..20_000i64).prop_map(|(sku, channel, competitor, cents)| {
            Op::Competitor { sku, channel, competitor, cents }
        }),
        Just(Op::Garbage),
    ]
}

const CHANNELS: [&str; 5] = ["shop", "amzn", "market", "whole", "unknown"];
const LOCATIONS: [&str; 4] = ["wh", "tpl", "fba", "nowhere"];

fn json(op: &Op, id: &str, at: i64) -> String {
    let sku = |s: &u8| format!("SKU-{s}");
    let envelope = |channel: &str| {
        let channel = if channel.is_empty() { String::new() } else { format!(r#""channel":"{channel}","#) };
        format!(r#""event_id":"{id}",{channel}"occurred_at_ms":{at}"#)
    };
    match op {
        Op::Count { sku: s, location, on_hand } => format!(
            r#"{{{},"type":"StockCounted","sku":"{}","location_id":"{}","on_hand":{on_hand}}}"#,
            envelope(""),
            sku(s),
            LOCATIONS[*location as usize]
        ),
        Op::Adjust { sku: s, location, delta } => format!(
            r#"{{{},"type":"StockAdjusted","sku":"{}","location_id":"{}","delta":{delta},"reason":"correction"}}"#,
            envelope(""),
            sku(s),
            LOCATIONS[*location as usize]
        ),
        Op::Place { sku: s, channel, line, quantity, located } => {
            let location = if *located { r#","location_id":"fba""# } else { "" };
            format!(
                r#"{{{},"type":"OrderLinePlaced","order_id":"o{line}","line_id":"1","sku":"{}","quantity":{quantity},"unit_price":{{"amount":"10.00","currency":"USD"}}{location}}}"#,
                envelope(CHANNELS[*channel as usize]),
                sku(s)
            )
        }
        Op::Ship { sku: s, channel, line, quantity, location } => format!(
            r#"{{{},"type":"OrderLineShipped","order_id":"o{line}","line_id":"1","sku":"{}","quantity":{quantity},"location_id":"{}"}}"#,
            envelope(CHANNELS[*channel as usize]),
            sku(s),
            LOCATIONS[*location as usize]
        ),
        Op::Cancel { sku: s, channel, line } => format!(
            r#"{{{},"type":"OrderLineCancelled","order_id":"o{line}","line_id":"1","sku":"{}"}}"#,
            envelope(CHANNELS[*channel as usize]),
            sku(s)
        ),
        Op::Return { sku: s, channel, line, quantity, restock } => format!(
            r#"{{{},"type":"OrderLineReturned","order_id":"o{line}","line_id":"1","sku":"{}","quantity":{quantity},"refund":{{"amount":"5","currency":"USD"}},"restock":{restock},"location_id":"wh"}}"#,
            envelope(CHANNELS[*channel as usize]),
            sku(s)
        ),
        Op::Price { sku: s, channel, cents } => format!(
            r#"{{{},"type":"PriceSet","sku":"{}","price":{{"amount":"{}.{:02}","currency":"{}"}}}}"#,
            envelope(CHANNELS[*channel as usize]),
            sku(s),
            cents / 100,
            cents % 100,
            if *channel == 2 { "EUR" } else { "USD" }
        ),
        Op::Promote { sku: s, channel, promotion, percent, starts_h, hours } => {
            let starts = at + starts_h * 3_600_000;
            format!(
                r#"{{{},"type":"PromotionScheduled","promotion_id":"p{promotion}","sku":"{}","percent_off":"0.{percent:02}","starts_at_ms":{starts},"ends_at_ms":{}}}"#,
                envelope(CHANNELS[*channel as usize]),
                sku(s),
                starts + hours * 3_600_000
            )
        }
        Op::Unpromote { sku: s, channel, promotion } => format!(
            r#"{{{},"type":"PromotionCancelled","promotion_id":"p{promotion}","sku":"{}"}}"#,
            envelope(CHANNELS[*channel as usize]),
            sku(s)
        ),
        Op::Cost { sku: s, cents } => format!(
            r#"{{{},"type":"CostSet","sku":"{}","unit_cost":{{"amount":"{}.{:02}","currency":"USD"}}}}"#,
            envelope(""),
            sku(s),
            cents / 100,
            cents % 100
        ),
        Op::Competitor { sku: s, channel, competitor, cents } => format!(
            r#"{{{},"type":"CompetitorPriceObserved","sku":"{}","competitor":"c{competitor}","price":{{"amount":"{}.{:02}","currency":"USD"}}}}"#,
            envelope(CHANNELS[*channel as usize]),
            sku(s),
            cents / 100,
            cents % 100
        ),
        Op::Garbage => {
            format!(r#"{{{},"type":"StockCounted","sku":"","location_id":"wh","on_hand":1}}"#, envelope(""))
        }
    }
}

/// Events with mostly rising times (sometimes late by up to a day, sometimes a month after
/// the one before, past what the state keeps) and some repeated ids.
fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((op(), 0..240i64, 0..10u8), 1..120).prop_map(|ops| {
        let mut at = EPOCH_MS;
        ops.iter()
            .enumerate()
            .map(|(i, (op, step_min, dice))| {
                at += step_min * 60_000;
                if *dice == 9 {
                    at += 30 * 86_400_000;
                }
                let time = if *dice == 0 { at - 86_400_000 } else { at };
                let id = if *dice == 1 && i > 0 { format!("e{}", i - 1) } else { format!("e{i}") };
                event_from_json(&json(op, &id, time)).expect("generated json parses")
            })
            .collect()
    })
}

fn run_straight(fold: &Fold, events: &[Event]) -> (Vec<Outcome>, PartitionState) {
    let mut state = PartitionState::default();
    let outcomes = events.iter().map(|e| fold.apply(&mut state, e)).collect();
    (outcomes, state)
}

/// A SKU's state stored in parts, as the coordinator's state engine writes it.
#[derive(Default)]
struct Stored {
    cores: HashMap<String, Vec<u8>>,
    prices: HashMap<String, Vec<u8>>,
    alerts: HashMap<String, Vec<u8>>,
    lines: BTreeMap<(String, LineKey), Vec<u8>>,
    promotions: BTreeSet<(String, PromotionKey)>,
    segments: BTreeMap<(String, i64), Vec<u8>>,
}

impl Stored {
    fn write(&mut self, sku: &str, state: &mut SkuState) {
        let changes = state.take_changes();
        self.cores.insert(sku.to_string(), postcard::to_allocvec(&*state).expect("core serializes"));
        if changes.prices {
            self.prices.insert(sku.to_string(), postcard::to_allocvec(&state.prices).unwrap());
        }
        if changes.alerts {
            self.alerts.insert(sku.to_string(), postcard::to_allocvec(&state.alerts).unwrap());
        }
        for key in changes.lines {
            let line = postcard::to_allocvec(state.line(&key).expect("a changed line is loaded")).unwrap();
            self.lines.insert((sku.to_string(), key), line);
        }
        for key in changes.promotions {
            self.promotions.insert((sku.to_string(), key));
        }
        for (segment, points) in changes.segments {
            if points.is_empty() {
                self.segments.remove(&(sku.to_string(), segment));
            } else {
                self.segments.insert((sku.to_string(), segment), postcard::to_allocvec(&points).unwrap());
            }
        }
    }

    /// The core and its segments, as the engine loads a SKU.
    fn load(&self, sku: &str) -> Option<SkuState> {
        let mut state: SkuState = postcard::from_bytes(self.cores.get(sku)?).expect("core deserializes");
        if let Some(bytes) = self.prices.get(sku) {
            state.prices = postcard::from_bytes(bytes).expect("prices deserialize");
        }
        if let Some(bytes) = self.alerts.get(sku) {
            state.alerts = postcard::from_bytes(bytes).expect("alerts deserialize");
        }
        for ((_, _), bytes) in self.segments.range((sku.to_string(), i64::MIN)..=(sku.to_string(), i64::MAX))
        {
            state.restore_segment(postcard::from_bytes::<Vec<Point>>(bytes).unwrap());
        }
        Some(state)
    }

    fn provide(&self, sku: &str, key: &RecordKey, state: &mut SkuState) {
        match key {
            RecordKey::Line(line) => {
                if let Some(bytes) = self.lines.get(&(sku.to_string(), line.clone())) {
                    state.provide_line(line.clone(), postcard::from_bytes(bytes).unwrap());
                }
            }
            RecordKey::Promotion(promotion) => {
                if self.promotions.contains(&(sku.to_string(), promotion.clone())) {
                    state.provide_promotion(promotion.clone());
                }
            }
        }
    }

    /// A SKU with every record it ever stored, to compare with a state held whole.
    fn load_whole(&self, sku: &str) -> Option<SkuState> {
        let mut state = self.load(sku)?;
        for (owner, line) in self.lines.keys() {
            if owner == sku {
                self.provide(sku, &RecordKey::Line(line.clone()), &mut state);
            }
        }
        for (owner, promotion) in &self.promotions {
            if owner == sku {
                state.provide_promotion(promotion.clone());
            }
        }
        Some(state)
    }
}

/// What the runtime does at every commit: each SKU's parts written and read back whole.
fn persist_and_restore(state: &PartitionState) -> PartitionState {
    let mut stored = Stored::default();
    let mut state = state.clone();
    for (sku, sku_state) in &mut state.skus {
        // a state held whole has forgotten its changes: store every part
        let mut whole = sku_state.clone();
        mark_all_changed(&mut whole);
        whole.mark_parts_changed();
        stored.write(sku, &mut whole);
    }
    let skus = state.skus.keys().map(|sku| (sku.clone(), stored.load_whole(sku).expect("stored"))).collect();
    PartitionState { skus, seen: state.seen.clone() }
}

/// Re-inserts every record and placement so that all of them count as changed.
fn mark_all_changed(state: &mut SkuState) {
    let lines: Vec<(LineKey, _)> = state.stock.lines.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (key, line) in lines {
        state.stock.lines.insert(key, line);
    }
    let promotions: Vec<PromotionKey> = state.prices.scheduled.iter().map(|(k, _)| k.clone()).collect();
    for key in promotions {
        state.prices.scheduled.insert(key, ());
    }
    state.stock.demand.mark_all_changed();
}

/// The coordinator's state engine in miniature: SKUs loaded on demand from [`Stored`], each
/// event's record provided first, changes written after every event, and SKUs evicted when
/// `evict` says so.
struct Engine<'a> {
    fold: &'a Fold,
    stored: Stored,
    loaded: HashMap<String, SkuState>,
    seen: HashSet<String>,
}

impl Engine<'_> {
    fn apply(&mut self, event: &Event) -> Outcome {
        if self.seen.contains(&event.event_id) {
            return Outcome::Duplicate;
        }
        let fact = match self.fold.check(event) {
            Ok(fact) => fact,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        let Some(sku) = fact.sku().map(str::to_string) else {
            self.seen.insert(event.event_id.clone());
            return Outcome::Applied { sku: None, outputs: Vec::new() };
        };
        let stored = &self.stored;
        let state = self.loaded.entry(sku.clone()).or_insert_with(|| stored.load(&sku).unwrap_or_default());
        if let Some(key) = Fold::record_key(event, &fact)
            && !state.holds(&key)
        {
            stored.provide(&sku, &key, state);
        }
        match self.fold.apply_fact(state, event, &fact) {
            Ok(outputs) => {
                self.seen.insert(event.event_id.clone());
                self.stored.write(&sku, state);
                state.unload_records();
                Outcome::Applied { sku: Some(sku.into()), outputs }
            }
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replay_gives_identical_state_and_outputs(planning in any::<bool>(), events in events()) {
        let fold = fold(planning);
        let (first_outcomes, first_state) = run_straight(&fold, &events);
        let (second_outcomes, second_state) = run_straight(&fold, &events);
        prop_assert_eq!(first_outcomes, second_outcomes);
        prop_assert_eq!(first_state, second_state);
    }

    #[test]
    fn every_pools_atp_read_at_once_equals_it_read_alone(planning in any::<bool>(), events in events()) {
        let fold = fold(planning);
        let rules = fold.rules();
        let mut state = PartitionState::default();
        for event in &events {
            fold.apply(&mut state, event);
            for sku in state.skus.values() {
                // and a line reserving for a channel an earlier contract named
                let mut stock = sku.stock.clone();
                stock.reserved.insert(Pool::Dedicated("gone".into()), 3);
                let atps = stock.atps(rules);
                let mut pools: Vec<Pool> = rules.stocked_pools().to_vec();
                pools.extend(rules.contract.channels.iter().map(|c| Pool::Dedicated(c.id.clone())));
                pools.extend(stock.reserved.keys().cloned());
                pools.push(Pool::Dedicated("a channel no contract names".into()));
                for pool in &pools {
                    prop_assert_eq!(atps.of(rules, pool), stock.atp(rules, pool), "{:?}", pool);
                }
            }
        }
    }

    #[test]
    fn batches_with_restarts_equal_one_at_a_time(planning in any::<bool>(), events in events(), cuts in prop::collection::vec(1..20usize, 1..10)) {
        let fold = fold(planning);
        let (straight, final_state) = run_straight(&fold, &events);
        let mut state = PartitionState::default();
        let mut batched = Vec::new();
        let mut rest: &[Event] = &events;
        for cut in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let (batch, tail) = rest.split_at((*cut).min(rest.len()));
            batched.extend(batch.iter().map(|e| fold.apply(&mut state, e)));
            state = persist_and_restore(&state);
            rest = tail;
        }
        prop_assert_eq!(straight, batched);
        prop_assert_eq!(final_state, state);
    }

    #[test]
    fn evicting_and_reloading_any_sku_between_any_two_events_changes_nothing(
        planning in any::<bool>(),
        events in events(),
        evictions in prop::collection::vec(0..5u8, 120),
    ) {
        let fold = fold(planning);
        let (straight, whole) = run_straight(&fold, &events);
        let mut engine = Engine { fold: &fold, stored: Stored::default(), loaded: HashMap::new(), seen: HashSet::new() };
        let mut outcomes = Vec::new();
        for (event, evict) in events.iter().zip(evictions.iter().cycle()) {
            outcomes.push(engine.apply(event));
            match evict {
                0 => engine.loaded.clear(),
                1 => { engine.loaded.remove("SKU-0"); }
                2 => { engine.loaded.remove("SKU-1"); }
                _ => {}
            }
        }
        prop_assert_eq!(straight, outcomes);
        for (sku, state) in &whole.skus {
            let stored = engine.stored.load_whole(sku);
            prop_assert_eq!(Some(state), stored.as_ref(), "{}", sku);
        }
    }

    /// The memo that spares stock events the price rules (`price_alerts::Steady`) is exact:
    /// forgetting it before every event changes no output and no state.
    #[test]
    fn sparing_unchanged_prices_the_price_rules_changes_nothing(planning in any::<bool>(), events in events()) {
        let fold = fold(planning);
        let (straight, whole) = run_straight(&fold, &events);
        let mut state = PartitionState::default();
        let mut forgetful = Vec::new();
        for event in &events {
            for sku_state in state.skus.values_mut() {
                sku_state.prices_steady.clear();
            }
            forgetful.push(fold.apply(&mut state, event));
        }
        prop_assert_eq!(straight, forgetful);
        prop_assert_eq!(whole, state);
    }

    #[test]
    fn refused_and_duplicate_events_change_nothing(planning in any::<bool>(), events in events()) {
        let fold = fold(planning);
        let mut state = PartitionState::default();
        for event in &events {
            let before = state.clone();
            match fold.apply(&mut state, event) {
                Outcome::Rejected(_) | Outcome::Duplicate => prop_assert_eq!(&before, &state),
                Outcome::Applied { .. } => prop_assert!(state.seen.contains(event.event_id.as_str())),
            }
        }
    }

    /// Every replenishment record suggests a whole number of units >= 0 (a multiple of the
    /// case pack for a reorder, at least min_transfer_units for a transfer), and every
    /// routing advice names a location of the channel's ship_from.
    #[test]
    fn suggestions_are_never_negative_and_routing_stays_within_ship_from(events in events()) {
        let fold = fold(true);
        let mut state = PartitionState::default();
        for event in &events {
            let Outcome::Applied { outputs, .. } = fold.apply(&mut state, event) else { continue };
            for output in outputs {
                match output {
                    Output::Replenishment(r) => {
                        prop_assert!(r.units >= 0, "{:?}", r);
                        prop_assert!(r.needed >= 0 && r.shared_spare >= 0, "{:?}", r);
                        let action = ReplenishmentAction::try_from(r.action).unwrap();
                        match action {
                            ReplenishmentAction::Reorder => {
                                prop_assert!(r.units > 0 && r.units % r.case_pack == 0 && r.units >= r.needed, "{:?}", r);
                            }
                            ReplenishmentAction::Transfer => {
                                prop_assert!(r.units >= r.min_transfer_units.max(1), "{:?}", r);
                                prop_assert!(r.units <= r.needed && r.units <= r.shared_spare, "{:?}", r);
                            }
                            _ => prop_assert_eq!(r.units, 0),
                        }
                    }
                    Output::Routing(r) => {
                        let channel = fold.rules().channel(&r.channel).expect("a routed channel is known");
                        prop_assert!(channel.ship_from.iter().any(|l| *l == r.location), "{:?}", r);
                        if r.state == RoutingState::Advised as i32 {
                            let free = r.candidates.iter().map(|c| c.free).max().unwrap_or(i64::MIN);
                            let chosen = r.candidates.iter().find(|c| c.location == r.location).expect("chosen is a candidate");
                            prop_assert_eq!(r.split, chosen.free < r.quantity);
                            if r.split { prop_assert_eq!(chosen.free, free); }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
