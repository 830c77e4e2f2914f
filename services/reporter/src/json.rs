//! The JSON form of a snapshot, published on `omnifold.snapshots.json.v1` and described by
//! `schemas/contribution-snapshot.schema.json`. Built from the protobuf form, so both
//! topics always say the same; fields keep the protobuf names, absent figures are left out,
//! amounts are decimal strings and `alerts_raised` is an object by kind.

use std::collections::BTreeMap;

use omnifold_proto::{ContributionSnapshot, Decision};
use serde::{Deserialize, Serialize};

/// The schema the JSON snapshots satisfy.
pub const SNAPSHOT_SCHEMA: &str = include_str!("../../../schemas/contribution-snapshot.schema.json");

/// One snapshot as JSON; the field order is the schema's, so the bytes are stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotJson {
    pub week: String,
    pub channel: String,
    pub channel_name: String,
    pub revision: u32,
    pub week_start_ms: i64,
    pub week_end_ms: i64,
    pub currency: String,
    pub gross_revenue: String,
    pub discounts: String,
    pub net_revenue: String,
    pub cogs: String,
    pub restocked_cogs: String,
    pub channel_fees: String,
    pub fulfillment_costs: String,
    pub refunds: String,
    pub contribution_before_operating: String,
    pub operating_cost: String,
    pub contribution: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contribution_margin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_share: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_cost_share: Option<String>,
    pub orders_shipped: i64,
    pub units_shipped: i64,
    pub alerts_raised: BTreeMap<String, i64>,
    pub critical_alerts: i64,
    pub negative_weeks: u32,
    pub owner: String,
    pub decision: String,
    pub next_action: String,
    pub changed_fields: Vec<String>,
}

impl From<&ContributionSnapshot> for SnapshotJson {
    fn from(s: &ContributionSnapshot) -> Self {
        SnapshotJson {
            week: s.week.clone(),
            channel: s.channel.clone(),
            channel_name: s.channel_name.clone(),
            revision: s.revision,
            week_start_ms: s.week_start_ms,
            week_end_ms: s.week_end_ms,
            currency: s.currency.clone(),
            gross_revenue: s.gross_revenue.clone(),
            discounts: s.discounts.clone(),
            net_revenue: s.net_revenue.clone(),
            cogs: s.cogs.clone(),
            restocked_cogs: s.restocked_cogs.clone(),
            channel_fees: s.channel_fees.clone(),
            fulfillment_costs: s.fulfillment_costs.clone(),
            refunds: s.refunds.clone(),
            contribution_before_operating: s.contribution_before_operating.clone(),
            operating_cost: s.operating_cost.clone(),
            contribution: s.contribution.clone(),
            contribution_margin: s.contribution_margin.clone(),
            revenue_share: s.revenue_share.clone(),
            operating_cost_share: s.operating_cost_share.clone(),
            orders_shipped: s.orders_shipped,
            units_shipped: s.units_shipped,
            alerts_raised: s.alerts_raised.iter().map(|a| (a.kind.clone(), a.count)).collect(),
            critical_alerts: s.critical_alerts,
            negative_weeks: s.negative_weeks,
            owner: s.owner.clone(),
            decision: Decision::try_from(s.decision).unwrap_or(Decision::Unspecified).name().to_string(),
            next_action: s.next_action.clone(),
            changed_fields: s.changed_fields.clone(),
        }
    }
}

/// The JSON text of a snapshot.
pub fn snapshot_json(snapshot: &ContributionSnapshot) -> String {
    serde_json::to_string(&SnapshotJson::from(snapshot)).expect("a snapshot serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnifold_proto::AlertCount;

    fn sample() -> ContributionSnapshot {
        ContributionSnapshot {
            week: "2026-W47".into(),
            channel: "amazon".into(),
            channel_name: "Amazon US".into(),
            revision: 2,
            week_start_ms: 1_794_787_200_000,
            week_end_ms: 1_795_392_000_000,
            currency: "USD".into(),
            gross_revenue: "500".into(),
            discounts: "3.333333333333".into(),
            net_revenue: "496.666666666667".into(),
            cogs: "240".into(),
            restocked_cogs: "0".into(),
            channel_fees: "60".into(),
            fulfillment_costs: "30".into(),
            refunds: "0".into(),
            contribution_before_operating: "166.666666666667".into(),
            operating_cost: "150".into(),
            contribution: "16.666666666667".into(),
            contribution_margin: Some("0.033557046980".into()),
            revenue_share: Some("0.4".into()),
            operating_cost_share: None,
            orders_shipped: 2,
            units_shipped: 14,
            alerts_raised: vec![AlertCount { kind: "OVERSELL".into(), count: 1 }],
            owner: "Luis Ortega".into(),
            critical_alerts: 1,
            negative_weeks: 0,
            decision: Decision::Fix as i32,
            next_action:
                "Luis Ortega to stop amazon selling past its allocation: 1 oversell alert on 1 SKU (SKU-0005) in 2026-W47."
                    .into(),
            changed_fields: vec!["contribution".into(), "alerts_raised".into()],
        }
    }

    #[test]
    fn the_json_form_satisfies_its_schema() {
        let schema: serde_json::Value = serde_json::from_str(SNAPSHOT_SCHEMA).expect("the schema is json");
        let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
        let json: serde_json::Value = serde_json::from_str(&snapshot_json(&sample())).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&json).map(|e| format!("{}: {e}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{errors:#?}");
        assert!(json.get("operating_cost_share").is_none(), "absent figures are left out");
        assert_eq!(json["alerts_raised"]["OVERSELL"], 1);
    }

    #[test]
    fn the_schema_refuses_floats_and_unknown_fields() {
        let schema: serde_json::Value = serde_json::from_str(SNAPSHOT_SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&snapshot_json(&sample())).unwrap();
        json["contribution"] = serde_json::json!(16.67);
        json["surprise"] = serde_json::json!(true);
        json["week"] = serde_json::json!("2026-W54");
        assert_eq!(validator.iter_errors(&json).count(), 3);
    }
}
