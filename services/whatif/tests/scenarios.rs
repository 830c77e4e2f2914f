//! Every kind of override, replayed over a history small enough to work by hand
//! (`tests/contract.toml`: shop max_share 1, fee 0.1, 200 USD a week; whole max_share 0.5,
//! 100 USD a week, with its own location `ded`; `wh` is shared; no safety stock).
//!
//! The history, one SKU, in 2026-W46 (t0 = Monday 2026-11-09 00:00 UTC), and what the current
//! contract publishes after each event (shared sellable = ATP(wh) - 0; available(shop) =
//! floor(1 x sellable); available(whole) = ATP(ded) + floor(0.5 x sellable)):
//!
//! | # | time    | event                                  | shop | whole |
//! |---|---------|----------------------------------------|------|-------|
//! | 0 | t0+0:30 | shop lists the SKU at 10 USD           |      |       |
//! | 1 | t0+1:00 | count wh = 100                         | 100  | 50    |
//! | 2 | t0+1:00 | count ded = 20                         |      | 70    |
//! | 3 | t0+2:00 | whole places O1 x10 at 5 (shared pool) | 90   | 65    |
//! | 4 | t0+3:00 | shop places S1 x60 at 10               | 30   | 35    |
//! | 5 | t0+1d   | whole ships O1 x10 from wh             |      |       |
//! | 6 | t0+1d   | shop ships S1 x60 from wh              |      |       |
//! | 7 | t0+8d   | unit cost 2 (closes W46: 8d - 1 h > 7d)|      |       |
//!
//! 7 decisions; final shop 30, whole 35. W46: shop 600 revenue - 200 = 400; whole
//! 50 - 100 = -50; total 350.

use std::path::{Path, PathBuf};

use omnifold_domain::report::Snapshot;
use omnifold_proto::Event;
use omnifold_proto::json::event_from_json;
use omnifold_whatif::answer::answer;
use omnifold_whatif::{Channels, History, Override, Run, Scenario, run_all};
use rust_decimal::Decimal;

const T0: i64 = 1_794_182_400_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn contract() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract.toml")
}

fn event(id: &str, channel: &str, at: i64, body: &str) -> Event {
    let channel = if channel.is_empty() { String::new() } else { format!("\"channel\":\"{channel}\",") };
    let line = format!("{{\"event_id\":\"{id}\",{channel}\"occurred_at_ms\":{at},{body}}}");
    event_from_json(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn history() -> History {
    let usd = |amount: &str| format!("{{\"amount\":\"{amount}\",\"currency\":\"USD\"}}");
    let events = vec![
        event(
            "e0",
            "shop",
            T0 + HOUR / 2,
            &format!("\"type\":\"PriceSet\",\"sku\":\"S\",\"price\":{}", usd("10")),
        ),
        event(
            "e1",
            "",
            T0 + HOUR,
            "\"type\":\"StockCounted\",\"sku\":\"S\",\"location_id\":\"wh\",\"on_hand\":100",
        ),
        event(
            "e2",
            "",
            T0 + HOUR,
            "\"type\":\"StockCounted\",\"sku\":\"S\",\"location_id\":\"ded\",\"on_hand\":20",
        ),
        event(
            "e3",
            "whole",
            T0 + 2 * HOUR,
            &format!(
                "\"type\":\"OrderLinePlaced\",\"order_id\":\"O1\",\"line_id\":\"1\",\"sku\":\"S\",\"quantity\":10,\"unit_price\":{}",
                usd("5")
            ),
        ),
        event(
            "e4",
            "shop",
            T0 + 3 * HOUR,
            &format!(
                "\"type\":\"OrderLinePlaced\",\"order_id\":\"S1\",\"line_id\":\"1\",\"sku\":\"S\",\"quantity\":60,\"unit_price\":{}",
                usd("10")
            ),
        ),
        event(
            "e5",
            "whole",
            T0 + DAY,
            "\"type\":\"OrderLineShipped\",\"order_id\":\"O1\",\"line_id\":\"1\",\"sku\":\"S\",\"quantity\":10,\"location_id\":\"wh\"",
        ),
        event(
            "e6",
            "shop",
            T0 + DAY,
            "\"type\":\"OrderLineShipped\",\"order_id\":\"S1\",\"line_id\":\"1\",\"sku\":\"S\",\"quantity\":60,\"location_id\":\"wh\"",
        ),
        event(
            "e7",
            "",
            T0 + 8 * DAY,
            &format!("\"type\":\"CostSet\",\"sku\":\"S\",\"unit_cost\":{}", usd("2")),
        ),
    ];
    History::from_events(events, 1)
}

fn scenario(name: &str, overrides: &[&str], history: &History) -> Scenario {
    let overrides: Vec<Override> = overrides.iter().map(|o| Override::parse(o).expect("override")).collect();
    Scenario::build(name, &contract(), &overrides, history.start_ms()).expect("scenario builds")
}

fn baseline() -> Scenario {
    Scenario::baseline(omnifold_runtime::load_contract(&contract()).expect("contract"))
}

/// Baseline and one alternative, replayed.
fn replay(overrides: &[&str]) -> (History, Vec<Scenario>, Vec<Run>) {
    let history = history();
    let scenarios = vec![baseline(), scenario("alt", overrides, &history)];
    let runs = run_all(&history, &scenarios, None);
    (history, scenarios, runs)
}

fn available(run: &Run, channel: &str) -> i64 {
    run.final_availability.get(&(channel.to_string(), "S".to_string())).copied().unwrap_or(0)
}

fn week(run: &Run, channel: &str) -> Snapshot {
    run.snapshots.iter().find(|s| s.figures.channel == channel).cloned().expect("a W46 snapshot")
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[test]
fn the_baseline_is_the_table_in_the_header() {
    let (_, _, runs) = replay(&["set channels.shop.max_share=1"]);
    let base = &runs[0];
    assert_eq!(base.decisions.len(), 7);
    assert_eq!((available(base, "shop"), available(base, "whole")), (30, 35));
    assert_eq!(base.snapshots.len(), 2, "W46 for both channels");
    assert_eq!(week(base, "shop").figures.contribution, dec("400"));
    assert_eq!(week(base, "whole").figures.contribution, dec("-50"));
    // setting a value to what it is changes nothing
    assert_eq!(runs[1].decisions, base.decisions);
}

/// Retiring whole at t0+12h. Events 0-4 fold as in the baseline. Event 5 (whole's
/// shipment, t0+1d) is dropped, and as the SKU's first event after the cut it retires whole
/// there: O1's 10 open units are cancelled (shared reserved 70 -> 60) and `ded` becomes
/// shared, so shared sellable = (100 + 20) - 60 = 60: shop 60 (was 30), whole 0 (was 35).
/// Event 6 ships 60 from wh: on-hand 40 + 20, reserved 0, sellable 60, unchanged.
/// Decisions changed: the 2 published at event 5. Units shifted: shop's +30.
/// W46: whole keeps its operating cost (it is retired from W47, the first week starting
/// after the cut) but loses its 50 of revenue: -100; shop 400; total 300, 50 less.
#[test]
fn retiring_a_channel_mid_week_frees_its_stock_and_drops_its_revenue() {
    let (history, scenarios, runs) = replay(&["retire whole@2026-11-09T12:00Z"]);
    let alt = &runs[1];
    assert_eq!((alt.dropped, alt.synthetic), (1, 1), "O1's shipment dropped, O1 cancelled");
    assert_eq!((available(alt, "shop"), available(alt, "whole")), (60, 0));
    assert_eq!(week(alt, "whole").figures.contribution, dec("-100"));
    assert_eq!(week(alt, "whole").figures.operating_cost, dec("100"));
    assert_eq!(week(alt, "shop").figures.contribution, dec("400"));
    let channels = Channels::of(&scenarios);
    let answer = answer(&history, &history.sku_index(), &channels, &scenarios, &runs);
    let a = &answer.scenarios[1];
    assert_eq!(a.availability.decisions_changed, 2);
    assert_eq!(a.availability.units_shifted, 30);
    assert_eq!(a.total_contribution.value(), dec("300"));
    assert_eq!(a.total_contribution.delta(), dec("-50"));
    assert!(!a.weeks.iter().any(|w| w.retired), "W46 is before the retirement week");
}

/// Retiring whole from the start: all its events are dropped and `ded` is shared from the
/// first event: e1 shop 100; e2 shop 120 (wh 100 + ded 20); e4 shop 60 (120 - 60 reserved);
/// e6 ships 60 from wh: 40 + 20 on hand, nothing reserved, 60. Whole never publishes.
/// W46: whole has no revenue and no operating cost: 0, RETIRED; shop 400; total 400 (+50).
#[test]
fn retiring_a_channel_from_the_start_removes_its_operating_cost() {
    let (history, scenarios, runs) = replay(&["retire whole"]);
    let alt = &runs[1];
    assert_eq!(alt.dropped, 2);
    let shop: Vec<i64> = alt.decisions.iter().map(|d| d.available).collect();
    assert_eq!(shop, [100, 120, 60]);
    assert_eq!(week(alt, "whole").figures.contribution, Decimal::ZERO);
    let answer = answer(&history, &history.sku_index(), &Channels::of(&scenarios), &scenarios, &runs);
    let a = &answer.scenarios[1];
    assert_eq!(a.total_contribution.delta(), dec("50"));
    let whole = a.weeks.iter().find(|w| w.channel == "whole").unwrap();
    assert_eq!(
        (whole.decision.as_str(), whole.baseline_decision.as_str(), whole.retired),
        ("RETIRED", "FIX", true)
    );
}

/// shop's max_share 1 -> 0.6: shop gets floor(0.6 x sellable): 60 at e1 (was 100), 54 at e3
/// (was 90), 18 at e4 (was 30); whole's numbers do not change. 3 decisions changed; shop's
/// final number 18, 12 fewer; nobody gains. At e4 shop places 60 against the 54 it was last
/// offered: one ALLOCATION_BREACH, which the baseline (90 offered) does not have.
#[test]
fn tightening_a_max_share_changes_that_channels_numbers_only() {
    let (history, scenarios, runs) = replay(&["set channels.shop.max_share=0.6"]);
    let (base, alt) = (&runs[0], &runs[1]);
    let shop = |run: &Run| -> Vec<i64> {
        run.decisions.iter().filter(|d| d.channel == 0).map(|d| d.available).collect()
    };
    assert_eq!(shop(base), [100, 90, 30]);
    assert_eq!(shop(alt), [60, 54, 18]);
    assert_eq!(available(alt, "whole"), 35);
    let answer = answer(&history, &history.sku_index(), &Channels::of(&scenarios), &scenarios, &runs);
    let a = &answer.scenarios[1];
    assert_eq!(a.availability.decisions_changed, 3);
    assert_eq!(a.availability.units_shifted, 0);
    assert_eq!(a.availability.channels[0].final_available.delta, -12);
    assert_eq!(
        (a.stock_conflicts.allocation_breach.value, a.stock_conflicts.allocation_breach.delta),
        (1, 1)
    );
    assert_eq!(a.total_contribution.delta(), Decimal::ZERO, "demand is held fixed");
    assert_eq!(a.availability.most_affected_skus[0].sku, "S");
}

/// Scarcity below 50 sellable: at e4, 30 are left. Priority: shop takes min(30, 30) = 30,
/// whole what remains, 0, plus its own 20. Proportional (shop placed 60, whole 10 in 28
/// days): shop floor(30 x 60/70) = 25, whole floor(30 x 10/70) = 4, the leftover unit to the
/// largest remainder (shop, .71): shop 26, whole 4 + 20 = 24.
#[test]
fn the_scarcity_mode_decides_who_gets_scarce_stock() {
    let history = history();
    let scenarios = vec![
        baseline(),
        scenario("proportional", &["set allocation.scarcity_threshold=50"], &history),
        scenario(
            "priority",
            &["set allocation.scarcity_threshold=50", "set allocation.scarcity_mode=priority"],
            &history,
        ),
    ];
    let runs = run_all(&history, &scenarios, None);
    assert_eq!((available(&runs[1], "shop"), available(&runs[1], "whole")), (26, 24));
    assert_eq!((available(&runs[2], "shop"), available(&runs[2], "whole")), (30, 20));
    assert!(runs[2].scarcity_ms.values().sum::<i64>() > 0, "scarce from e4 to the end");
}

/// margin_floor 0.2 -> 0.85: the floor test at e7 is 10 x (1 - 0.1 - 0.85) = 0.5 < 2 (the unit
/// cost): PRICE_BELOW_FLOOR, and a CRITICAL_ALERT page to shop. The baseline (10 x 0.7 = 7)
/// has neither.
#[test]
fn raising_a_margin_floor_raises_price_conflicts_and_pages() {
    let (history, scenarios, runs) = replay(&["set channels.shop.margin_floor=0.85"]);
    let answer = answer(&history, &history.sku_index(), &Channels::of(&scenarios), &scenarios, &runs);
    let a = &answer.scenarios[1];
    assert_eq!(a.pricing_conflicts["PRICE_BELOW_FLOOR"].value, 1);
    assert_eq!(a.pricing_conflicts["PRICE_BELOW_FLOOR"].delta, 1);
    assert_eq!(a.pages_by_rule["CRITICAL_ALERT/PRICE_BELOW_FLOOR"].delta, 1);
}

/// Retire whole from the start and shift half its units to shop: e3's 10 units give
/// floor(0.5 x 10) = 5 placed on shop at shop's price, 10, with shop's fee 0.1 x 10 x 5 = 5;
/// e5's shipment of O1's 10 ships 10 x 5/10 = 5 of them. Shop's W46: 600 + 50 revenue, 5 of
/// fees, 200 of operating cost: 445. Availability: e3 shop 115 (120 - 5), e4 55, unchanged
/// after.
#[test]
fn shifting_moves_a_fraction_of_the_retired_channels_units_at_the_targets_price() {
    let (history, scenarios, runs) = replay(&["retire whole", "shift whole=shop:0.5"]);
    let alt = &runs[1];
    assert_eq!((alt.shifted_units, alt.unshifted_units), (5, 0));
    assert_eq!(available(alt, "shop"), 55);
    let shop = week(alt, "shop").figures;
    assert_eq!(
        (shop.gross_revenue, shop.channel_fees, shop.contribution),
        (dec("650"), dec("5"), dec("445"))
    );
    assert_eq!(shop.units_shipped, 65);
    let answer = answer(&history, &history.sku_index(), &Channels::of(&scenarios), &scenarios, &runs);
    assert_eq!(answer.scenarios[1].shift.as_ref().unwrap().units_shifted, 5);
}

/// A whole alternative file is the same as the sets that give it.
#[test]
fn a_contract_file_and_the_same_change_by_set_replay_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alt.toml");
    let text =
        std::fs::read_to_string(contract()).unwrap().replacen("max_share = \"1\"", "max_share = \"0.6\"", 1);
    std::fs::write(&path, text).unwrap();
    let history = history();
    let by_file = format!("contract {}", path.display());
    let scenarios = vec![
        scenario("file", &[&by_file], &history),
        scenario("set", &["set channels.shop.max_share=0.6"], &history),
    ];
    let runs = run_all(&history, &scenarios, None);
    assert_eq!(runs[0].decisions, runs[1].decisions);
    assert_eq!(runs[0].snapshots, runs[1].snapshots);
}

#[test]
fn bad_overrides_are_refused_with_the_reason() {
    let history = history();
    let build = |overrides: &[&str]| {
        let overrides: Vec<Override> = overrides.iter().map(|o| Override::parse(o).unwrap()).collect();
        Scenario::build("bad", &contract(), &overrides, history.start_ms()).unwrap_err().to_string()
    };
    let unknown_key = build(&["set channels.shop.colour=red"]);
    assert!(unknown_key.contains("colour"), "{unknown_key}");
    let unknown_channel = build(&["set channels.ebay.max_share=0.3"]);
    assert!(
        unknown_channel.contains("no entry \"ebay\"") && unknown_channel.contains("shop, whole"),
        "{unknown_channel}"
    );
    let out_of_range = build(&["set channels.shop.max_share=1.5"]);
    assert!(out_of_range.contains("/channels/0/max_share"), "{out_of_range}");
    assert!(build(&["retire ebay"]).contains("unknown channel ebay"));
    assert!(build(&["shift whole=shop:0.3"]).contains("does not retire"));
    assert!(build(&["set allocation.scarcity_mode=random"]).contains("scarcity_mode"));
}

#[test]
fn the_answer_follows_its_published_schema() {
    let (history, scenarios, runs) = replay(&["retire whole@2026-W46", "shift whole=shop:0.3"]);
    let answer = answer(&history, &history.sku_index(), &Channels::of(&scenarios), &scenarios, &runs);
    let value = serde_json::to_value(&answer).unwrap();
    let schema: serde_json::Value = serde_json::from_str(omnifold_whatif::ANSWER_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(&value).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let page = omnifold_whatif::page::render_page(&answer);
    for section in ["availability", "stock", "pricing", "contribution", "weeks"] {
        assert!(page.contains(&format!("<section id=\"{section}\">")), "{section}");
        assert!(page.contains(&format!("id=\"chart-{section}\"")), "a chart in {section}");
    }
    assert!(
        !page.contains("src=") && !page.contains("href=") && !page.contains("<link"),
        "no external asset"
    );
    assert!(omnifold_whatif::table::render_table(&answer).contains("Demand is held fixed"));
}
