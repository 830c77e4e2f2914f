//! Scenarios: the current contract (the baseline) and the alternatives to replay beside it.
//!
//! An alternative is a full contract file, or the current one with overrides:
//!
//! - `set KEY=VALUE`: one value of the contract's TOML tree. Array tables are addressed by id
//!   (`channels.amazon.max_share`, `locations.fba-us.dedicated_to`) or by index
//!   (`channels.0.priority`). The value keeps the type of the value it replaces (a decimal
//!   stays a string, a count an integer); a key the file leaves out takes the first of
//!   string, integer, boolean that the contract's schema accepts. The result is checked by
//!   the contract's own validation (`omnifold_runtime::parse_contract`): an unknown key, a
//!   bad value or a broken rule is refused with its path.
//! - `retire CHANNEL[@TIME]`: the channel is retired at TIME (the start of the history when
//!   absent); see [`Cut`] for exactly what that means.
//! - `shift FROM=TO:FRACTION`: that fraction of the retired channel's units goes to TO; see
//!   `crate::replay` for what it assumes.

use std::path::{Path, PathBuf};

use omnifold_domain::Rules;
use omnifold_domain::calendar::{civil_from_days, days_from_civil};
use omnifold_domain::report::{Calendar, Week};
use omnifold_runtime::contract_file::{ParseError, Problems, parse_contract};
use rust_decimal::Decimal;

/// A scenario that cannot be built, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read contract {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("contract {what} is not valid toml: {message}")]
    Toml { what: String, message: String },
    #[error("scenario {scenario}: the changed contract is invalid:\n{problems}")]
    Invalid { scenario: String, problems: Problems },
    #[error("scenario {scenario}: {message}")]
    Override { scenario: String, message: String },
}

/// One change asked for on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Override {
    /// A whole contract file in place of the current one.
    Contract(PathBuf),
    /// One value of the contract tree.
    Set { key: String, value: String },
    /// Retire a channel from `at` (a time as written, see [`parse_time`]); `None`: from the
    /// start of the history.
    Retire { channel: String, at: Option<String> },
    /// Move `fraction` of the retired channel's units to `to`.
    Shift { from: String, to: String, fraction: Decimal },
}

impl Override {
    /// Parses one override as written after its flag: `retire wholesale@2026-11-16`,
    /// `set channels.amazon.max_share=0.4`, `shift wholesale=shopify:0.3`,
    /// `contract path.toml`.
    pub fn parse(text: &str) -> Result<Override, String> {
        let text = text.trim();
        let (verb, rest) = text.split_once(char::is_whitespace).ok_or_else(|| {
            format!("{text:?} is not an override: want set KEY=VALUE, retire CHANNEL[@TIME], shift FROM=TO:FRACTION or contract FILE")
        })?;
        let rest = rest.trim();
        match verb {
            "set" => Override::set(rest),
            "retire" => Override::retire(rest),
            "shift" => Override::shift(rest),
            "contract" => Ok(Override::Contract(PathBuf::from(rest))),
            other => Err(format!("unknown override {other:?}: want set, retire, shift or contract")),
        }
    }

    pub fn set(text: &str) -> Result<Override, String> {
        let (key, value) = text.split_once('=').ok_or_else(|| format!("--set {text:?}: want KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("--set {text:?}: the key is empty"));
        }
        Ok(Override::Set { key: key.to_string(), value: value.trim().to_string() })
    }

    pub fn retire(text: &str) -> Result<Override, String> {
        let (channel, at) = match text.split_once('@') {
            Some((channel, at)) => (channel.trim(), Some(at.trim().to_string())),
            None => (text.trim(), None),
        };
        if channel.is_empty() {
            return Err(format!("--retire {text:?}: want CHANNEL[@TIME]"));
        }
        Ok(Override::Retire { channel: channel.to_string(), at })
    }

    pub fn shift(text: &str) -> Result<Override, String> {
        let bad = || format!("--shift {text:?}: want FROM=TO:FRACTION, e.g. wholesale=shopify:0.3");
        let (from, rest) = text.split_once('=').ok_or_else(bad)?;
        let (to, fraction) = rest.split_once(':').ok_or_else(bad)?;
        let fraction: Decimal = fraction.trim().parse().map_err(|_| bad())?;
        if fraction <= Decimal::ZERO || fraction > Decimal::ONE {
            return Err(format!("--shift {text:?}: the fraction {fraction} is outside (0, 1]"));
        }
        let (from, to) = (from.trim().to_string(), to.trim().to_string());
        if from.is_empty() || to.is_empty() || from == to {
            return Err(bad());
        }
        Ok(Override::Shift { from, to, fraction })
    }

    /// How the override is written back, for titles and the JSON answer.
    pub fn describe(&self) -> String {
        match self {
            Override::Contract(path) => format!("contract {}", path.display()),
            Override::Set { key, value } => format!("set {key}={value}"),
            Override::Retire { channel, at: Some(at) } => format!("retire {channel}@{at}"),
            Override::Retire { channel, at: None } => format!("retire {channel}"),
            Override::Shift { from, to, fraction } => format!("shift {from}={to}:{fraction}"),
        }
    }
}

/// One `--alt` alternative: `[NAME:] OVERRIDE; OVERRIDE...`. A name is the text before the
/// first `:` when it has no space (so `shift a=b:0.3` is not named `shift a=b`); unnamed, it is
/// `alt-<n>`.
pub fn parse_alternative(text: &str, n: usize) -> Result<(String, Vec<Override>), String> {
    let (name, spec) = match text.split_once(':') {
        Some((name, spec)) if !name.trim().is_empty() && !name.trim().contains(char::is_whitespace) => {
            (name.trim().to_string(), spec)
        }
        _ => (format!("alt-{n}"), text),
    };
    let overrides = spec
        .split(';')
        .filter(|part| !part.trim().is_empty())
        .map(Override::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--alt {text:?}: {e}"))?;
    if overrides.is_empty() {
        return Err(format!("--alt {text:?} changes nothing"));
    }
    Ok((name, overrides))
}

/// A channel retired at an instant.
///
/// From `at_ms` on: the channel's events (`occurred_at_ms >= at_ms`) are dropped; per SKU, at
/// the SKU's first event at or after `at_ms` (or at the end of the history, for a SKU with
/// none, when the history reaches `at_ms`), its prices, promotions and competitor
/// observations on the channel are withdrawn and its open order lines are cancelled (their
/// reservations freed), and from then on the SKU is folded under `after`: the contract
/// with the channel offered nothing (`sells_from_shared_pool = false`, `max_share = 0`), the
/// locations dedicated to it shared by every channel, and no weekly operating cost. Its
/// weekly operating cost and the recorded costs (`ChannelCostRecorded`) spread over weeks are
/// removed from the first reporting week that starts at or after `at_ms`.
#[derive(Debug, Clone)]
pub struct Cut {
    pub channel: String,
    pub at_ms: i64,
    /// `None`: from the start of the history.
    pub from_start: bool,
    pub after: Rules,
}

/// Units of the retired channel moved to another channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    pub to: String,
    pub fraction: Decimal,
}

/// One scenario, ready to replay.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub changes: Vec<String>,
    /// The contract the scenario folds under (before its cut, if any).
    pub rules: Rules,
    pub cut: Option<Cut>,
    pub shift: Option<Shift>,
}

impl Scenario {
    /// The current contract, unchanged.
    pub fn baseline(rules: Rules) -> Scenario {
        Scenario { name: "baseline".into(), changes: Vec::new(), rules, cut: None, shift: None }
    }

    /// The current contract with `overrides` applied in order (a `contract` override
    /// replaces the whole file, later `set`s change it).
    pub fn build(
        name: &str,
        current: &Path,
        overrides: &[Override],
        history_start_ms: Option<i64>,
    ) -> Result<Scenario, ScenarioError> {
        let fail = |message: String| ScenarioError::Override { scenario: name.to_string(), message };
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|source| ScenarioError::Read { path: path.to_path_buf(), source })
        };
        let mut text = read(current)?;
        let mut sets = Vec::new();
        let (mut retire, mut shift) = (None, None);
        for change in overrides {
            match change {
                Override::Contract(path) => text = read(path)?,
                Override::Set { key, value } => sets.push((key.clone(), value.clone())),
                Override::Retire { channel, at } => {
                    if retire.replace((channel.clone(), at.clone())).is_some() {
                        return Err(fail(
                            "retires more than one channel: give each retirement its own scenario".into(),
                        ));
                    }
                }
                Override::Shift { from, to, fraction } => {
                    if shift.replace((from.clone(), to.clone(), *fraction)).is_some() {
                        return Err(fail("shifts more than once".into()));
                    }
                }
            }
        }
        let mut tree: toml::Table = toml::from_str(&text)
            .map_err(|e| ScenarioError::Toml { what: name.to_string(), message: e.to_string() })?;
        for (key, value) in &sets {
            set_value(&mut tree, key, value)
                .map_err(|message| fail(format!("--set {key}={value}: {message}")))?;
        }
        let rules = validate(name, &tree)?;
        let cut = match &retire {
            None => None,
            Some((channel, at)) => {
                if rules.channel(channel).is_none() {
                    return Err(fail(format!(
                        "retires unknown channel {channel} (known: {})",
                        known(&rules)
                    )));
                }
                let calendar = Calendar::of(&rules.contract.reporting);
                let (at_ms, from_start) = match at {
                    Some(at) => (parse_time(at, &calendar).map_err(fail)?, false),
                    None => (history_start_ms.unwrap_or(i64::MIN), true),
                };
                let after = validate(name, &retired_tree(&tree, channel))?;
                Some(Cut { channel: channel.clone(), at_ms, from_start, after })
            }
        };
        let shift = match shift {
            None => None,
            Some((from, to, fraction)) => {
                match &cut {
                    Some(cut) if cut.channel == from => {}
                    _ => {
                        return Err(fail(format!(
                            "shifts units of {from}, which this scenario does not retire"
                        )));
                    }
                }
                if rules.channel(&to).is_none() {
                    return Err(fail(format!("shifts to unknown channel {to} (known: {})", known(&rules))));
                }
                Some(Shift { to, fraction })
            }
        };
        let changes = overrides.iter().map(Override::describe).collect();
        Ok(Scenario { name: name.to_string(), changes, rules, cut, shift })
    }
}

fn known(rules: &Rules) -> String {
    rules.channels_in_order().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ")
}

fn validate(name: &str, tree: &toml::Table) -> Result<Rules, ScenarioError> {
    let text = toml::to_string(tree).expect("a toml table serializes");
    parse_contract(&text).map_err(|error| match error {
        ParseError::Toml(message) => ScenarioError::Toml { what: name.to_string(), message },
        ParseError::Invalid(problems) => {
            ScenarioError::Invalid { scenario: name.to_string(), problems: Problems(problems) }
        }
    })
}

/// The contract a retired channel leaves: offered nothing, its locations shared, no weekly
/// operating cost (see [`Cut`]).
fn retired_tree(tree: &toml::Table, channel: &str) -> toml::Table {
    let mut tree = tree.clone();
    if let Some(toml::Value::Array(channels)) = tree.get_mut("channels") {
        for entry in channels.iter_mut().filter_map(toml::Value::as_table_mut) {
            if entry.get("id").and_then(toml::Value::as_str) == Some(channel) {
                entry.insert("sells_from_shared_pool".into(), toml::Value::Boolean(false));
                entry.insert("max_share".into(), toml::Value::String("0".into()));
                if let Some(toml::Value::Table(cost)) = entry.get_mut("weekly_operating_cost") {
                    cost.insert("amount".into(), toml::Value::String("0".into()));
                }
            }
        }
    }
    if let Some(toml::Value::Array(locations)) = tree.get_mut("locations") {
        for entry in locations.iter_mut().filter_map(toml::Value::as_table_mut) {
            if entry.get("dedicated_to").and_then(toml::Value::as_str) == Some(channel) {
                entry.remove("dedicated_to");
            }
        }
    }
    tree
}

/// Sets `key` (dotted; array entries by `id` or index) to `value` in the tree.
pub fn set_value(tree: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{key:?} has an empty part"));
    }
    let (last, path) = parts.split_last().expect("at least one part");
    let mut table = tree;
    let mut walked = String::new();
    let mut i = 0;
    while i < path.len() {
        let part = path[i];
        walked = if walked.is_empty() { part.to_string() } else { format!("{walked}.{part}") };
        let next = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match next {
            toml::Value::Table(inner) => inner,
            toml::Value::Array(items) => {
                let Some(selector) = path.get(i + 1).copied() else {
                    return Err(format!(
                        "{walked} is a list: name an entry by id, e.g. {walked}.<id>.{last}"
                    ));
                };
                i += 1;
                let ids: Vec<String> = items
                    .iter()
                    .filter_map(|item| item.get("id").and_then(toml::Value::as_str).map(str::to_string))
                    .collect();
                let position = items
                    .iter()
                    .position(|item| item.get("id").and_then(toml::Value::as_str) == Some(selector))
                    .or_else(|| selector.parse::<usize>().ok().filter(|n| *n < items.len()));
                let Some(position) = position else {
                    return Err(format!("{walked} has no entry {selector:?} (ids: {})", ids.join(", ")));
                };
                walked = format!("{walked}.{selector}");
                items[position].as_table_mut().ok_or_else(|| format!("{walked} is not a table"))?
            }
            _ => return Err(format!("{walked} is a value, not a table")),
        };
        i += 1;
    }
    let typed = match table.get(*last) {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_string()),
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(value.parse().map_err(|_| format!("{key} is an integer, {value:?} is not"))?)
        }
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            value.parse().map_err(|_| format!("{key} is true or false, {value:?} is not"))?,
        ),
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(value.parse().map_err(|_| format!("{key} is a number, {value:?} is not"))?)
        }
        Some(_) => return Err(format!("{key} is a table or a list, not a value to set")),
        // absent: a decimal is written as a string, counts and flags as themselves; the
        // contract's validation refuses whichever does not fit
        None => guess(value),
    };
    table.insert(last.to_string(), typed);
    Ok(())
}

/// The type of a value the file leaves out: a bare integer or boolean as itself, anything
/// else (a decimal such as `0.4`, an id) as a string. A whole decimal for a key the file
/// leaves out is written quoted (`--set 'channels.amazon.max_share="1"'`), else the schema
/// refuses the integer with the key's path.
fn guess(value: &str) -> toml::Value {
    if let Ok(flag) = value.parse::<bool>() {
        return toml::Value::Boolean(flag);
    }
    match value.parse::<i64>() {
        Ok(n) if !value.starts_with('"') => toml::Value::Integer(n),
        _ => toml::Value::String(value.trim_matches('"').to_string()),
    }
}

/// An instant as written on the command line: Unix milliseconds, an ISO week (its start,
/// `2026-W47`), a date (`2026-11-16`, its 00:00 UTC) or a UTC time (`2026-11-16T08:30:00Z`).
pub fn parse_time(text: &str, calendar: &Calendar) -> Result<i64, String> {
    let bad =
        || format!("{text:?} is not a time: want Unix ms, 2026-W47, 2026-11-16 or 2026-11-16T08:30:00Z");
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if text.contains("-W") {
        let week: Week = text.parse().map_err(|_| bad())?;
        return Ok(calendar.start_ms(week));
    }
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time.strip_suffix('Z').ok_or_else(bad)?)),
        None => (text, None),
    };
    let fields: Vec<i64> = date.split('-').map(|f| f.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let [year, month, day] = fields[..] else { return Err(bad()) };
    let (month, day) = (u32::try_from(month).map_err(|_| bad())?, u32::try_from(day).map_err(|_| bad())?);
    let days = days_from_civil(year, month, day);
    // a date that does not exist (2026-02-30) does not come back from its day number
    if !(1..=12).contains(&month) || civil_from_days(days) != (year, month, day) {
        return Err(bad());
    }
    let mut ms = days * 86_400_000;
    if let Some(time) = time {
        let fields: Vec<i64> =
            time.split(':').map(|f| f.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
        let (h, m, s) = match fields[..] {
            [h, m] => (h, m, 0),
            [h, m, s] => (h, m, s),
            _ => return Err(bad()),
        };
        if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..60).contains(&s) {
            return Err(bad());
        }
        ms += ((h * 60 + m) * 60 + s) * 1_000;
    }
    Ok(ms)
}

/// An instant as `2026-11-16T08:30:00Z` (seconds left out when 0).
pub fn format_time(ms: i64) -> String {
    let rest = ms.rem_euclid(86_400_000) / 1_000;
    let (year, month, day) = civil_from_days(ms.div_euclid(86_400_000));
    let (h, m, s) = (rest / 3_600, rest % 3_600 / 60, rest % 60);
    if s == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form() {
        let calendar = Calendar::new(0);
        let monday = 1_794_182_400_000; // 2026-11-09T00:00:00Z
        assert_eq!(parse_time("2026-11-09", &calendar), Ok(monday));
        assert_eq!(parse_time("2026-W46", &calendar), Ok(monday));
        assert_eq!(parse_time("2026-11-09T01:30Z", &calendar), Ok(monday + 5_400_000));
        assert_eq!(parse_time("1794182400000", &calendar), Ok(monday));
        assert!(parse_time("2026-13-01", &calendar).is_err());
        assert!(parse_time("2026-02-30", &calendar).is_err(), "a day the month does not have");
        assert!(parse_time("next week", &calendar).is_err());
        assert_eq!(format_time(monday + 5_400_000), "2026-11-09T01:30Z");
    }

    #[test]
    fn an_alternative_is_named_before_its_first_colon_unless_that_is_an_override() {
        let (name, overrides) =
            parse_alternative("no-b2b: retire wholesale@2026-W47; shift wholesale=shopify:0.3", 1).unwrap();
        assert_eq!((name.as_str(), overrides.len()), ("no-b2b", 2));
        let (name, overrides) =
            parse_alternative("shift wholesale=shopify:0.3; retire wholesale", 2).unwrap();
        assert_eq!((name.as_str(), overrides.len()), ("alt-2", 2));
        assert!(parse_alternative("empty: ; ", 3).unwrap_err().contains("changes nothing"));
        assert!(parse_alternative("x: frobnicate y", 4).unwrap_err().contains("unknown override"));
    }

    #[test]
    fn overrides_parse_and_refuse_what_they_cannot_read() {
        assert_eq!(
            Override::parse("shift wholesale=shopify:0.3"),
            Ok(Override::Shift {
                from: "wholesale".into(),
                to: "shopify".into(),
                fraction: "0.3".parse().unwrap()
            })
        );
        assert!(Override::parse("shift wholesale=shopify:1.5").is_err());
        assert!(Override::parse("retire").is_err());
        assert!(Override::parse("unset x").is_err());
        assert_eq!(
            Override::parse("retire wholesale@2026-W47"),
            Ok(Override::Retire { channel: "wholesale".into(), at: Some("2026-W47".into()) })
        );
    }
}
