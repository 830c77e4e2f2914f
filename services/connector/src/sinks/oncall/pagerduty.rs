//! An escalation as a PagerDuty Events API v2 trigger event, and the routing key it carries.

use std::path::Path;

use omnifold_proto::{Escalation, EscalationRule, Severity};
use serde::{Deserialize, Serialize};

use super::OncallError;

/// The environment variable read for the routing key when no file is given.
pub const ROUTING_KEY_ENV: &str = "OMNIFOLD_PAGERDUTY_ROUTING_KEY";
/// PagerDuty's Events API v2.
pub const PAGERDUTY_ENDPOINT: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's limits on a dedup key and a summary.
const MAX_DEDUP_KEY: usize = 255;
const MAX_SUMMARY: usize = 1024;

/// The PagerDuty routing key. It is a secret: its `Debug` is redacted and it is never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoutingKey(String);

impl RoutingKey {
    pub fn new(key: impl Into<String>) -> Self {
        RoutingKey(key.into())
    }

    /// From the file when one is given, else from [`ROUTING_KEY_ENV`]; surrounding whitespace
    /// (a file's final newline) is not part of the key.
    pub fn resolve(file: Option<&Path>) -> Result<RoutingKey, OncallError> {
        let key = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| OncallError::RoutingKeyFile { path: path.to_path_buf(), source })?,
            None => std::env::var(ROUTING_KEY_ENV).unwrap_or_default(),
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(OncallError::NoRoutingKey);
        }
        Ok(RoutingKey(key.to_string()))
    }

    /// Removes the key from text that may echo it (an endpoint's error answer).
    pub(super) fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "<routing key>")
    }
}

impl std::fmt::Debug for RoutingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoutingKey(<redacted>)")
    }
}

/// A PagerDuty Events API v2 event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagerDutyEvent {
    pub routing_key: RoutingKey,
    pub event_action: String,
    pub dedup_key: String,
    pub payload: PagerDutyPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagerDutyPayload {
    pub summary: String,
    pub source: String,
    pub severity: String,
    pub component: String,
    pub custom_details: CustomDetails,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomDetails {
    pub owner: String,
    pub on_call: String,
    pub rule: String,
    pub cause: Vec<String>,
    pub occurred_at_ms: i64,
    /// In full, for when the dedup key had to be shortened.
    pub escalation_id: String,
}

/// The trigger event of an escalation.
pub fn pagerduty_event(escalation: &Escalation, routing_key: &RoutingKey) -> PagerDutyEvent {
    let rule = EscalationRule::try_from(escalation.rule).unwrap_or_default().name();
    PagerDutyEvent {
        routing_key: routing_key.clone(),
        event_action: "trigger".to_string(),
        dedup_key: dedup_key(&escalation.escalation_id),
        payload: PagerDutyPayload {
            summary: truncate(&escalation.summary, MAX_SUMMARY),
            source: "omnifold".to_string(),
            severity: pagerduty_severity(escalation.severity).to_string(),
            component: escalation.channel.clone(),
            custom_details: CustomDetails {
                owner: escalation.owner.clone(),
                on_call: escalation.on_call.clone(),
                rule: rule.to_string(),
                cause: escalation.cause.clone(),
                occurred_at_ms: escalation.occurred_at_ms,
                escalation_id: escalation.escalation_id.clone(),
            },
        },
    }
}

/// An unknown severity pages as critical: better a loud page than a muted one.
fn pagerduty_severity(severity: i32) -> &'static str {
    match Severity::try_from(severity).unwrap_or_default() {
        Severity::Warning => "warning",
        Severity::Info => "info",
        Severity::Critical | Severity::Unspecified => "critical",
    }
}

/// The escalation id, or for one longer than PagerDuty takes, its head and a hash of the
/// whole: still derived only from the id, so a re-sent page gets the same key.
pub fn dedup_key(escalation_id: &str) -> String {
    if escalation_id.len() <= MAX_DEDUP_KEY {
        return escalation_id.to_string();
    }
    let hash = format!("~{:016x}", fnv1a(escalation_id.as_bytes()));
    format!("{}{hash}", truncate(escalation_id, MAX_DEDUP_KEY - hash.len()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// At most `max` bytes, cut at a character boundary.
pub(super) fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::sinks::oncall) fn escalation() -> Escalation {
        Escalation {
            escalation_id: "critical_alert/map_violation/SKU-0001/channel=amazon/pw-08".into(),
            severity: Severity::Critical as i32,
            channel: "amazon".into(),
            owner: "Luis Ortega".into(),
            on_call: "pd-marketplaces".into(),
            summary: "amazon sells SKU-0001 at 47.00 USD, below its minimum advertised price of 49.00 USD"
                .into(),
            cause: vec!["map_violation/SKU-0001/channel=amazon/pw-08".into()],
            rule: EscalationRule::CriticalAlert as i32,
            occurred_at_ms: 1_794_182_880_000,
        }
    }

    #[test]
    fn an_escalation_maps_to_a_pagerduty_trigger() {
        let event = pagerduty_event(&escalation(), &RoutingKey::new("R0UT1NG"));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "routing_key": "R0UT1NG",
                "event_action": "trigger",
                "dedup_key": "critical_alert/map_violation/SKU-0001/channel=amazon/pw-08",
                "payload": {
                    "summary": "amazon sells SKU-0001 at 47.00 USD, below its minimum advertised price of 49.00 USD",
                    "source": "omnifold",
                    "severity": "critical",
                    "component": "amazon",
                    "custom_details": {
                        "owner": "Luis Ortega",
                        "on_call": "pd-marketplaces",
                        "rule": "CRITICAL_ALERT",
                        "cause": ["map_violation/SKU-0001/channel=amazon/pw-08"],
                        "occurred_at_ms": 1_794_182_880_000i64,
                        "escalation_id": "critical_alert/map_violation/SKU-0001/channel=amazon/pw-08"
                    }
                }
            })
        );
    }

    #[test]
    fn severities_map_to_pagerduty_ones() {
        let severity = |s: Severity| pagerduty_severity(s as i32);
        assert_eq!(severity(Severity::Critical), "critical");
        assert_eq!(severity(Severity::Warning), "warning");
        assert_eq!(severity(Severity::Info), "info");
        assert_eq!(severity(Severity::Unspecified), "critical");
        assert_eq!(pagerduty_severity(99), "critical");
    }

    #[test]
    fn the_routing_key_never_shows_in_debug_output() {
        let event = pagerduty_event(&escalation(), &RoutingKey::new("R0UT1NG"));
        let debug = format!("{event:?}");
        assert!(!debug.contains("R0UT1NG"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn the_routing_key_comes_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "abc123\n").unwrap();
        assert_eq!(RoutingKey::resolve(Some(&path)).unwrap(), RoutingKey::new("abc123"));
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(RoutingKey::resolve(Some(&path)), Err(OncallError::NoRoutingKey)));
        let missing = dir.path().join("missing");
        assert!(matches!(RoutingKey::resolve(Some(&missing)), Err(OncallError::RoutingKeyFile { .. })));
    }

    #[test]
    fn long_ids_get_a_stable_dedup_key_within_pagerduty_limits() {
        let short = "order_spike/shopify/SKU-1/e3";
        assert_eq!(dedup_key(short), short);
        let long = format!("price_jump/shopify/SKU-1/{}", "x".repeat(300));
        let key = dedup_key(&long);
        assert_eq!(key.len(), MAX_DEDUP_KEY);
        assert_eq!(key, dedup_key(&long), "derived from the id only");
        assert!(key.starts_with("price_jump/shopify/SKU-1/xxx"));
        let other = format!("{long}y");
        assert_ne!(dedup_key(&other), key);
    }

    #[test]
    fn summaries_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
