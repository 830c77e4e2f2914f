//! Property tests of the fold's invariants (ARCHITECTURE.md, "Invariants"):
//! - replaying the same events gives identical state and outputs;
//! - folding in batches, with the state serialized and restored between batches as the
//!   runtime does at every commit, equals folding one event at a time;
//! - a refused or duplicate event changes nothing.

use omnifold_domain::{Contract, Fold, Outcome, PartitionState, Rules, SkuState};
use omnifold_proto::Event;
use omnifold_proto::json::event_from_json;
use proptest::prelude::*;

const EPOCH_MS: i64 = 1_794_182_400_000;

fn fold() -> Fold {
    let contract: Contract = toml::from_str(include_str!("scenarios/contract.toml")).expect("contract");
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
        Op::Garbage => {
            format!(r#"{{{},"type":"StockCounted","sku":"","location_id":"wh","on_hand":1}}"#, envelope(""))
        }
    }
}

/// Events with mostly rising times (sometimes late by up to a day) and some repeated ids.
fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((op(), 0..240i64, 0..10u8), 1..120).prop_map(|ops| {
        let mut at = EPOCH_MS;
        ops.iter()
            .enumerate()
            .map(|(i, (op, step_min, dice))| {
                at += step_min * 60_000;
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

/// What the runtime does at every commit: each SKU state through postcard and back.
fn persist_and_restore(state: &PartitionState) -> PartitionState {
    let skus = state
        .skus
        .iter()
        .map(|(sku, s)| {
            let bytes = postcard::to_allocvec(s).expect("state serializes");
            (sku.clone(), postcard::from_bytes::<SkuState>(&bytes).expect("state deserializes"))
        })
        .collect();
    PartitionState { skus, seen: state.seen.clone() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replay_gives_identical_state_and_outputs(events in events()) {
        let fold = fold();
        let (first_outcomes, first_state) = run_straight(&fold, &events);
        let (second_outcomes, second_state) = run_straight(&fold, &events);
        prop_assert_eq!(first_outcomes, second_outcomes);
        prop_assert_eq!(first_state, second_state);
    }

    #[test]
    fn batches_with_restarts_equal_one_at_a_time(events in events(), cuts in prop::collection::vec(1..20usize, 1..10)) {
        let fold = fold();
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
    fn refused_and_duplicate_events_change_nothing(events in events()) {
        let fold = fold();
        let mut state = PartitionState::default();
        for event in &events {
            let before = state.clone();
            match fold.apply(&mut state, event) {
                Outcome::Rejected(_) | Outcome::Duplicate => prop_assert_eq!(&before, &state),
                Outcome::Applied { .. } => prop_assert!(state.seen.contains(&event.event_id)),
            }
        }
    }
}
