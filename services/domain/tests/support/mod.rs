//! What the data-driven scenario runners share: the scenario epoch and clock notation, and a
//! base contract patched per scenario (JSON merge patch, RFC 7396).

use omnifold_domain::Contract;
use serde_json::Value;

/// 2026-11-09T00:00:00Z, a Monday.
pub const EPOCH_MS: i64 = 1_794_182_400_000;

/// A contract from TOML text with a scenario's patch applied; it must be sound.
pub fn patched_contract(base_toml: &str, patch: &Value) -> Contract {
    let mut value: Value = toml::from_str(base_toml).expect("the scenario contract parses");
    merge_patch(&mut value, patch);
    let contract: Contract = serde_json::from_value(value).expect("the patched contract deserializes");
    assert_eq!(contract.problems(), vec![], "the patched contract is sound");
    contract
}

/// JSON merge patch (RFC 7396).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        if !patch.is_null() {
            *target = patch.clone();
        }
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let target = target.as_object_mut().expect("just made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// `<days>d<HH>:<MM>` after the epoch, in Unix milliseconds.
pub fn parse_at(at: &str) -> i64 {
    let (days, clock) = at.split_once('d').unwrap_or_else(|| panic!("bad at {at:?}, want like 2d13:30"));
    let (hours, minutes) = clock.split_once(':').unwrap_or_else(|| panic!("bad at {at:?}"));
    let days: i64 = days.parse().expect("days");
    let hours: i64 = hours.parse().expect("hours");
    let minutes: i64 = minutes.parse().expect("minutes");
    EPOCH_MS + ((days * 24 + hours) * 60 + minutes) * 60_000
}
