//! Loading the coordination contract: TOML, checked against
//! `schemas/coordination-contract.schema.json`, then against the rules a schema cannot
//! express. A bad file is refused with every problem and its path.

use std::fmt;
use std::path::{Path, PathBuf};

use omnifold_domain::{Contract, ContractProblem, Rules};

/// The schema the contract file must satisfy, compiled into every service.
pub const CONTRACT_SCHEMA: &str = include_str!("../../../schemas/coordination-contract.schema.json");

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read contract {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("contract {path} is not valid toml: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("contract {path} is invalid:\n{problems}")]
    Invalid { path: PathBuf, problems: Problems },
}

/// Every problem of a refused contract, one per line.
#[derive(Debug)]
pub struct Problems(pub Vec<ContractProblem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads, validates and prepares the contract at `path`.
pub fn load_contract(path: &Path) -> Result<Rules, ContractError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ContractError::Read { path: path.to_path_buf(), source })?;
    parse_contract(&text).map_err(|error| match error {
        ParseError::Toml(message) => ContractError::Toml { path: path.to_path_buf(), message },
        ParseError::Invalid(problems) => {
            ContractError::Invalid { path: path.to_path_buf(), problems: Problems(problems) }
        }
    })
}

#[derive(Debug)]
pub enum ParseError {
    Toml(String),
    Invalid(Vec<ContractProblem>),
}

/// Validates contract text: schema first (every violation, with its path), then the
/// contract's own rules.
pub fn parse_contract(text: &str) -> Result<Rules, ParseError> {
    let value: serde_json::Value = toml::from_str(text).map_err(|e| ParseError::Toml(e.to_string()))?;
    let problems = schema_problems(&value);
    if !problems.is_empty() {
        return Err(ParseError::Invalid(problems));
    }
    let contract: Contract = serde_json::from_value(value).map_err(|e| {
        ParseError::Invalid(vec![ContractProblem { path: String::new(), message: e.to_string() }])
    })?;
    let problems = contract.problems();
    if !problems.is_empty() {
        return Err(ParseError::Invalid(problems));
    }
    Ok(Rules::new(contract))
}

fn schema_problems(value: &serde_json::Value) -> Vec<ContractProblem> {
    let schema: serde_json::Value =
        serde_json::from_str(CONTRACT_SCHEMA).expect("the bundled schema is json");
    let validator = jsonschema::validator_for(&schema).expect("the bundled schema compiles");
    validator
        .iter_errors(value)
        .map(|error| ContractProblem { path: error.instance_path().to_string(), message: error.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/local/contract.toml");

    fn problems(text: &str) -> Vec<String> {
        match parse_contract(text) {
            Ok(_) => Vec::new(),
            Err(ParseError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            Err(ParseError::Toml(message)) => vec![message],
        }
    }

    #[test]
    fn the_example_contract_is_valid() {
        let rules = parse_contract(EXAMPLE).expect("example contract");
        let contract = &rules.contract;
        assert_eq!(contract.channels.len(), 4);
        assert_eq!(contract.locations.len(), 3);
        assert!(contract.locations.iter().any(|l| l.dedicated_to.as_deref() == Some("amazon")));
        let currencies: std::collections::BTreeSet<_> =
            contract.channels.iter().map(|c| &c.currency).collect();
        assert_eq!(currencies.len(), 2);
    }

    #[test]
    fn names_every_schema_problem_with_its_path() {
        let bad = EXAMPLE.replacen("max_share = \"0.7\"", "max_share = 0.7", 1).replacen(
            "scarcity_mode = \"proportional\"",
            "scarcity_mode = \"lottery\"",
            1,
        );
        let mut found = problems(&bad);
        found.sort();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("/allocation/scarcity_mode: \"lottery\" is not one of"), "{found:#?}");
        assert!(found[1].starts_with("/channels/0/max_share: 0.7 is not of type \"string\""), "{found:#?}");
    }

    #[test]
    fn a_contract_without_operations_is_refused_naming_the_section() {
        let start = EXAMPLE.find("[operations]").expect("the example has [operations]");
        let end = start + EXAMPLE[start..].find("[[channels]]").unwrap();
        let without = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
        let found = problems(&without).join("\n");
        assert!(found.contains("\"operations\" is a required property"), "{found}");
    }

    #[test]
    fn refuses_the_contract_rules() {
        let bad = EXAMPLE
            .replacen("fee_rate = \"0.029\"", "fee_rate = \"0.9\"", 1)
            .replacen("dedicated_to = \"amazon\"", "dedicated_to = \"ebay\"", 1)
            .replacen("EUR = \"1.08\"", "EUR = \"0\"", 1)
            .replacen("max_share = \"0.7\"", "max_share = \"1.5\"", 1)
            .replacen("id = \"wholesale\"", "id = \"shopify\"", 1);
        let found = problems(&bad).join("\n");
        for expected in [
            "/fx/EUR: rate 0 is not greater than 0",
            "/channels: duplicate channel id shopify",
            "/channels/0/max_share: 1.5 is outside [0, 1]",
            "/channels/0/fee_rate: fee_rate 0.9 + margin_floor",
            "/locations/1/dedicated_to: unknown channel ebay",
        ] {
            assert!(found.contains(expected), "missing {expected:?} in:\n{found}");
        }
    }
}
