//! Where a service's Kafka client settings come from, in one place: the brokers, a librdkafka
//! properties file (`--kafka-config`), `OMNIFOLD_KAFKA_<PROPERTY>` environment variables and
//! `--kafka-set KEY=VALUE` flags, merged into [`KafkaOptions`] so that every producer,
//! consumer and admin client of the service gets them (TLS, SASL, timeouts...).
//!
//! Precedence, lowest first: the file, the environment, the command line. The brokers are
//! `--bootstrap` (or `OMNIFOLD_BOOTSTRAP`), else `bootstrap.servers` from the environment or
//! the file, else `127.0.0.1:9092`.
//!
//! Secrets (any property whose name holds `password` or `secret`, and inline private keys)
//! come from the file or the environment only: a command line is visible to every user of the
//! machine in the process list and lands in shell history, so `--kafka-set` refuses them.
//! [`KafkaOptions`]'s `Debug` prints them as `<redacted>`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use rdkafka::ClientConfig;

use crate::KafkaOptions;

/// The environment variables that set librdkafka properties start with this.
pub const ENV_PREFIX: &str = "OMNIFOLD_KAFKA_";
/// The environment variable of `--kafka-config`; it names a file, not a property.
pub const CONFIG_ENV: &str = "OMNIFOLD_KAFKA_CONFIG";
/// The brokers when nothing else names them.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

const BOOTSTRAP_PROPERTY: &str = "bootstrap.servers";
const REDACTED: &str = "<redacted>";

/// Properties that hold a secret although their names do not say `password` or `secret`.
const SECRET_PROPERTIES: &[&str] = &["ssl.key.pem", "ssl_key", "sasl.oauthbearer.config"];

/// Whether `property`'s value is a secret: never logged, never taken from the command line.
pub fn is_secret(property: &str) -> bool {
    let name = property.to_ascii_lowercase();
    name.contains("password") || name.contains("secret") || SECRET_PROPERTIES.contains(&name.as_str())
}

/// The librdkafka property an `OMNIFOLD_KAFKA_<PROPERTY>` variable sets: the rest of its name
/// in lower case with `_` read as `.`, and `__` as one `_` (no librdkafka property a service
/// needs has an underscore, but the escape keeps every name reachable).
/// `OMNIFOLD_KAFKA_SASL_MECHANISMS` sets `sasl.mechanisms`. `None` for other variables and for
/// [`CONFIG_ENV`].
pub fn env_property(variable: &str) -> Option<String> {
    if variable == CONFIG_ENV {
        return None;
    }
    let rest = variable.strip_prefix(ENV_PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    let lower = rest.to_ascii_lowercase();
    Some(lower.split("__").map(|part| part.replace('_', ".")).collect::<Vec<_>>().join("_"))
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("cannot read the kafka config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: expected a librdkafka property as key=value, found {line:?}")]
    NotAProperty { origin: String, line: String },
    #[error("{origin}: {property} is set twice in the file")]
    Duplicate { origin: String, property: String },
    #[error("environment variable {variable} is not valid utf-8")]
    NotUnicode { variable: String },
    #[error(
        "--kafka-set {property} is refused: it holds a secret, which a command line shows to every \
         user of the machine; set it in the --kafka-config file or in {variable}"
    )]
    SecretOnCommandLine { property: String, variable: String },
    #[error("--kafka-set bootstrap.servers is refused: name the brokers with --bootstrap")]
    BootstrapOnCommandLine,
    #[error("{origin}: librdkafka refuses {property}{shown}: {reason}")]
    Refused { origin: String, property: String, shown: String, reason: String },
}

/// The Kafka client arguments every service binary flattens into its command line.
#[derive(Clone, Default, clap::Args)]
pub struct KafkaClientArgs {
    /// Kafka bootstrap servers [default: bootstrap.servers of the kafka config, else
    /// 127.0.0.1:9092].
    #[arg(long, env = "OMNIFOLD_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// A librdkafka properties file (key=value lines, # comments) for every Kafka client of
    /// the service: security.protocol, ssl.*, sasl.* and so on. OMNIFOLD_KAFKA_<PROPERTY>
    /// variables override it (OMNIFOLD_KAFKA_SECURITY_PROTOCOL sets security.protocol).
    #[arg(long, env = CONFIG_ENV, value_name = "FILE")]
    pub kafka_config: Option<PathBuf>,
    /// One librdkafka property, over the file and the environment (repeatable). Secrets
    /// (passwords, client secrets, private keys) are refused here: put them in the file or
    /// the environment.
    // a plain string: a clap parse error would echo the value, which may be a secret
    #[arg(long = "kafka-set", value_name = "KEY=VALUE")]
    pub kafka_set: Vec<String>,
}

/// By hand: a refused `--kafka-set` secret is still held here until [`KafkaClientArgs::options`].
impl fmt::Debug for KafkaClientArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kafka_set: Vec<&str> =
            self.kafka_set.iter().map(|s| if is_secret(s) { REDACTED } else { s.as_str() }).collect();
        f.debug_struct("KafkaClientArgs")
            .field("bootstrap", &self.bootstrap)
            .field("kafka_config", &self.kafka_config)
            .field("kafka_set", &kafka_set)
            .finish()
    }
}

impl KafkaClientArgs {
    /// The client options from these arguments, the file they name and the process
    /// environment.
    pub fn options(&self) -> Result<KafkaOptions, KafkaConfigError> {
        let file = match &self.kafka_config {
            Some(path) => Some((
                path.as_path(),
                std::fs::read_to_string(path)
                    .map_err(|source| KafkaConfigError::Read { path: path.clone(), source })?,
            )),
            None => None,
        };
        let file = file.as_ref().map(|(path, text)| (*path, text.as_str()));
        resolve(self.bootstrap.as_deref(), file, std::env::vars_os(), &self.kafka_set)
    }
}

/// One `--kafka-set KEY=VALUE`, refusing secrets and the brokers.
pub fn parse_setting(text: &str) -> Result<(String, String), KafkaConfigError> {
    let not_a_property = || KafkaConfigError::NotAProperty {
        origin: "--kafka-set".to_string(),
        line: if is_secret(text) { REDACTED.to_string() } else { text.to_string() },
    };
    let (key, value) = text.split_once('=').ok_or_else(not_a_property)?;
    let key = key.trim();
    if key.is_empty() {
        return Err(not_a_property());
    }
    if is_secret(key) {
        return Err(KafkaConfigError::SecretOnCommandLine {
            property: key.to_string(),
            variable: env_variable(key),
        });
    }
    if key == BOOTSTRAP_PROPERTY {
        return Err(KafkaConfigError::BootstrapOnCommandLine);
    }
    Ok((key.to_string(), value.to_string()))
}

/// The `OMNIFOLD_KAFKA_<PROPERTY>` variable that sets `property`.
pub fn env_variable(property: &str) -> String {
    let name: String = property
        .split('_')
        .map(|part| part.replace('.', "_").to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("__");
    format!("{ENV_PREFIX}{name}")
}

/// A properties file's settings in order: `key=value` lines, blank lines and `#` or `!`
/// comments skipped, spaces around key and value trimmed.
pub fn parse_properties(path: &Path, text: &str) -> Result<Vec<(String, String)>, KafkaConfigError> {
    let mut seen = BTreeMap::new();
    let mut settings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let origin = format!("{}:{}", path.display(), index + 1);
        let Some((key, value)) = line.split_once('=').filter(|(key, _)| !key.trim().is_empty()) else {
            // the line may be a stray secret: show it only when it cannot be one
            let shown = if is_secret(line) { REDACTED.to_string() } else { line.to_string() };
            return Err(KafkaConfigError::NotAProperty { origin, line: shown });
        };
        let key = key.trim().to_string();
        if seen.insert(key.clone(), ()).is_some() {
            return Err(KafkaConfigError::Duplicate { origin, property: key });
        }
        settings.push((key, value.trim().to_string()));
    }
    Ok(settings)
}

/// Merges the sources (file < environment < `cli`) and checks each property with librdkafka,
/// so that a misspelt name or a bad value is refused at start with where it came from.
pub fn resolve(
    bootstrap: Option<&str>,
    file: Option<(&Path, &str)>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
    cli: &[String],
) -> Result<KafkaOptions, KafkaConfigError> {
    // property -> (value, where it came from)
    let mut merged: BTreeMap<String, (String, String)> = BTreeMap::new();
    if let Some((path, text)) = file {
        for (key, value) in parse_properties(path, text)? {
            merged.insert(key, (value, path.display().to_string()));
        }
    }
    let mut from_env = Vec::new();
    for (variable, value) in env {
        let Some(property) = variable.to_str().and_then(env_property) else { continue };
        let variable = variable.to_string_lossy().into_owned();
        let value =
            value.into_string().map_err(|_| KafkaConfigError::NotUnicode { variable: variable.clone() })?;
        // an empty variable is unset, as for the services' other variables
        if !value.is_empty() {
            from_env.push((property, (value, variable)));
        }
    }
    // the process environment has no order; sorting keeps the result the same on every run
    from_env.sort();
    merged.extend(from_env);
    for setting in cli {
        let (key, value) = parse_setting(setting)?;
        merged.insert(key, (value, "--kafka-set".to_string()));
    }
    let from_sources = merged.remove(BOOTSTRAP_PROPERTY).map(|(value, _)| value);
    let bootstrap_servers =
        bootstrap.map(str::to_string).or(from_sources).unwrap_or_else(|| DEFAULT_BOOTSTRAP.to_string());
    for (key, (value, origin)) in &merged {
        check_property(key, value, origin)?;
    }
    let extra = merged.into_iter().map(|(key, (value, _))| (key, value)).collect();
    Ok(KafkaOptions { bootstrap_servers, extra })
}

fn check_property(key: &str, value: &str, origin: &str) -> Result<(), KafkaConfigError> {
    let mut config = ClientConfig::new();
    config.set(key, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(error) => {
            let reason = match &error {
                rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description.clone(),
                other => other.to_string(),
            };
            let shown = if is_secret(key) { String::new() } else { format!(" = {value:?}") };
            Err(KafkaConfigError::Refused {
                origin: origin.to_string(),
                property: key.to_string(),
                shown,
                reason,
            })
        }
    }
}

/// `extra` as `Debug` shows it: secrets as `<redacted>`.
pub(crate) struct Redacted<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(key, value)| (key, if is_secret(key) { REDACTED } else { value.as_str() })),
            )
            .finish()
    }
}

/// What the linked librdkafka was built with (`builtin.features`), e.g. `ssl`, `sasl_scram`.
pub fn builtin_features() -> Vec<String> {
    ClientConfig::new()
        .create_native_config()
        .and_then(|config| config.get("builtin.features"))
        .map(|features| features.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    #[test]
    fn librdkafka_has_tls_and_sasl_plain_and_scram() {
        let features = builtin_features();
        for wanted in ["ssl", "sasl_plain", "sasl_scram"] {
            assert!(features.iter().any(|f| f == wanted), "{wanted} missing from {features:?}");
        }
    }

    #[test]
    fn env_names_map_to_properties_and_back() {
        assert_eq!(env_property("OMNIFOLD_KAFKA_SECURITY_PROTOCOL").as_deref(), Some("security.protocol"));
        assert_eq!(env_property("OMNIFOLD_KAFKA_SASL_PASSWORD").as_deref(), Some("sasl.password"));
        assert_eq!(env_property("OMNIFOLD_KAFKA_SSL__KEY").as_deref(), Some("ssl_key"));
        assert_eq!(env_property(CONFIG_ENV), None);
        assert_eq!(env_property("OMNIFOLD_BOOTSTRAP"), None);
        for property in ["ssl.ca.location", "ssl_key", "sasl.oauthbearer.client.secret"] {
            assert_eq!(env_property(&env_variable(property)).as_deref(), Some(property));
        }
    }

    #[test]
    fn file_then_env_then_command_line() {
        let file = "# managed cluster\nsecurity.protocol = SASL_SSL\nsasl.mechanisms=PLAIN\n\
                    sasl.username=file-user\nsasl.password=file-secret\nclient.id=from-file\n\
                    bootstrap.servers=broker-a:9093\n";
        let options = resolve(
            None,
            Some((Path::new("kafka.properties"), file)),
            env(&[
                ("OMNIFOLD_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512"),
                ("OMNIFOLD_KAFKA_SASL_PASSWORD", "env-secret"),
                ("OMNIFOLD_KAFKA_CLIENT_ID", "from-env"),
                ("OMNIFOLD_KAFKA_CONFIG", "kafka.properties"),
                ("OMNIFOLD_KAFKA_SOCKET_TIMEOUT_MS", ""),
                ("PATH", "/usr/bin"),
            ]),
            &["client.id=from-cli".to_string()],
        )
        .unwrap();
        assert_eq!(options.bootstrap_servers, "broker-a:9093");
        let expected: BTreeMap<String, String> = [
            ("client.id", "from-cli"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.password", "env-secret"),
            ("sasl.username", "file-user"),
            ("security.protocol", "SASL_SSL"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(options.extra, expected);
        // the settings reach every client's config
        let config = options.client_config();
        assert_eq!(config.get("sasl.password"), Some("env-secret"));
        assert_eq!(config.get("bootstrap.servers"), Some("broker-a:9093"));
    }

    #[test]
    fn bootstrap_flag_wins_and_defaults_to_loopback() {
        let file = "bootstrap.servers=broker-a:9093\n";
        let options = resolve(Some("flag:9092"), Some((Path::new("f"), file)), env(&[]), &[]).unwrap();
        assert_eq!(options.bootstrap_servers, "flag:9092");
        let from_env = resolve(
            None,
            Some((Path::new("f"), file)),
            env(&[("OMNIFOLD_KAFKA_BOOTSTRAP_SERVERS", "env:9092")]),
            &[],
        )
        .unwrap();
        assert_eq!(from_env.bootstrap_servers, "env:9092");
        assert!(from_env.extra.is_empty());
        assert_eq!(resolve(None, None, env(&[]), &[]).unwrap().bootstrap_servers, DEFAULT_BOOTSTRAP);
    }

    #[test]
    fn secrets_are_refused_on_the_command_line() {
        for key in
            ["sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret"]
        {
            let error = parse_setting(&format!("{key}=hunter2")).unwrap_err().to_string();
            assert!(error.contains(key) && error.contains("secret"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains(&env_variable(key)), "{error}");
        }
        assert_eq!(
            parse_setting("security.protocol=SSL").unwrap(),
            ("security.protocol".to_string(), "SSL".to_string())
        );
        assert!(matches!(
            parse_setting("bootstrap.servers=x:1"),
            Err(KafkaConfigError::BootstrapOnCommandLine)
        ));
        assert!(matches!(parse_setting("no-equals"), Err(KafkaConfigError::NotAProperty { .. })));
        let args =
            KafkaClientArgs { kafka_set: vec!["sasl.password=hunter2".to_string()], ..Default::default() };
        assert!(!format!("{args:?}").contains("hunter2"), "{args:?}");
        assert!(matches!(args.options(), Err(KafkaConfigError::SecretOnCommandLine { .. })));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let options = resolve(
            None,
            Some((Path::new("f"), "sasl.password=file-secret-1\nssl.key.password=key-secret-2\n")),
            env(&[("OMNIFOLD_KAFKA_SSL_KEYSTORE_PASSWORD", "keystore-secret-3")]),
            &["security.protocol=SASL_SSL".to_string()],
        )
        .unwrap();
        let shown = format!("{options:?} {options:#?}");
        for secret in ["file-secret-1", "key-secret-2", "keystore-secret-3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("sasl.password") && shown.contains(REDACTED) && shown.contains("SASL_SSL"),
            "{shown}"
        );
    }

    #[test]
    fn bad_input_is_refused_with_where_it_came_from() {
        let error =
            resolve(None, Some((Path::new("k.properties"), "a.b=1\nnot a property\n")), env(&[]), &[])
                .unwrap_err()
                .to_string();
        assert!(error.contains("k.properties:2"), "{error}");
        let error = resolve(None, Some((Path::new("k.properties"), "acks=1\nacks=all\n")), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("k.properties:2") && error.contains("set twice"), "{error}");
        let error = resolve(None, None, env(&[("OMNIFOLD_KAFKA_SECURITY_PROTOKOL", "SSL")]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("OMNIFOLD_KAFKA_SECURITY_PROTOKOL") && error.contains("security.protokol"),
            "{error}"
        );
        let error = resolve(None, Some((Path::new("k"), "security.protocol=TLS\n")), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("security.protocol") && error.contains("\"TLS\""), "{error}");
    }
}
