//! `omnifold-connector`: publish channel events to omnifold, push availability back, and page
//! on-call.
//!
//! Each command builds one source's (or a sink's) options from the command line and the
//! connector config, builds it (a source with the publisher), and runs it until ctrl-c or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use omnifold_connector::amazon::{self, AmazonSourceOptions};
use omnifold_connector::b2b;
use omnifold_connector::config::{ConnectorConfig, DropDirOptions, ShopifyApi};
use omnifold_connector::ndjson::{self, NdjsonOptions};
use omnifold_connector::oncall::{self, DeliveryOptions, Oncall, OncallOptions, PAGERDUTY_ENDPOINT};
use omnifold_connector::publish::{PublishError, Publisher};
use omnifold_connector::pushback::Pushback;
use omnifold_connector::shopify::{self, ShopifySourceOptions};
use omnifold_connector::spapi;
use omnifold_connector::woocommerce;
use omnifold_domain::Rules;
use omnifold_runtime::cli::KafkaArgs;
use omnifold_runtime::telemetry::{init_logs, serve_metrics, shutdown_signal};
use omnifold_runtime::{KafkaClientArgs, KafkaOptions, TopicOptions, Topics, load_contract};

#[derive(Parser)]
#[command(
    version,
    about = "omnifold connectors: channel payloads in, contract events out, availability back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where events go, and what they are checked against.
#[derive(Args, Clone)]
struct Publishing {
    /// The brokers and the client settings (TLS, SASL...).
    #[command(flatten)]
    client: KafkaClientArgs,
    #[arg(long, env = "OMNIFOLD_TOPIC_PREFIX", default_value = "omnifold.")]
    topic_prefix: String,
    /// The coordination contract: events are checked against it before they are sent, and
    /// a connector config's channels and locations must be in it.
    #[arg(long, env = "OMNIFOLD_CONTRACT")]
    contract: Option<PathBuf>,
    /// Partitions of the events topic when it has to be created.
    #[arg(long, default_value_t = 6)]
    events_partitions: i32,
}

/// What every command but `ndjson` shares.
#[derive(Args, Clone)]
struct Common {
    #[command(flatten)]
    publishing: Publishing,
    /// The connector config (channels, id mappings, secret references).
    #[arg(long, env = "OMNIFOLD_CONNECTORS", default_value = "deploy/local/connectors.toml")]
    config: PathBuf,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9465.
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Publish NDJSON events (CONTRACT.md section 2, JSON form) from a file or stdin; a line
    /// that gives no event goes to the dead-letter topic with its file and line.
    Ndjson {
        /// The file to read; stdin when absent or `-`.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        publishing: Publishing,
    },
    /// Receive Shopify webhooks on POST /webhooks/shopify.
    Shopify {
        #[command(flatten)]
        common: Common,
        /// Listen here instead of `[shopify] listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Receive Amazon SP-API notifications (POST /amazon/notifications) and getOrderItems
    /// responses (POST /amazon/order-items); with --dir also watch a directory of them.
    Amazon {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Also process the JSON notification files (and MYI .tsv reports) in this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only watch --dir, without the HTTP endpoint.
        #[arg(long)]
        no_http: bool,
        /// Process --dir once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Poll Amazon's Orders API (SP-API getOrders and getOrderItems, `[amazon.sp_api]`) and
    /// publish the orders through the `[amazon]` mapping. The client secret and refresh
    /// token come from the config's env or file references only.
    AmazonPoll {
        #[command(flatten)]
        common: Common,
        /// Poll up to now (less `settle_ms`) once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Receive WooCommerce order webhooks on POST /webhooks/woocommerce.
    Woocommerce {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Watch the wholesale drop directory (X12 850, CSV orders and stock counts).
    DropDir {
        #[command(flatten)]
        common: Common,
        /// Watch this directory instead of `[drop_dir] dir`.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Process the files present once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Push each channel's availability (omnifold.availability.v1) back to the channel APIs.
    Pushback {
        #[command(flatten)]
        common: Common,
        /// Exit once every partition is read to its end and nothing waits to be pushed.
        #[arg(long)]
        exit_when_caught_up: bool,
        /// Shopify's Admin API: graphql (inventorySetQuantities with compare-and-swap) or the
        /// legacy rest (inventory_levels/set); overrides `[pushback.shopify] api`.
        #[arg(long, value_name = "graphql|rest")]
        shopify_api: Option<ShopifyApi>,
    },
    /// Deliver escalations (omnifold.escalations.v1) to an on-call endpoint in the PagerDuty
    /// Events API v2 shape, exactly once per escalation id. The routing key comes from
    /// --routing-key-file or OMNIFOLD_PAGERDUTY_ROUTING_KEY.
    Oncall {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Where events are POSTed.
        #[arg(long, env = "OMNIFOLD_PAGERDUTY_ENDPOINT", default_value = PAGERDUTY_ENDPOINT)]
        endpoint: String,
        /// The sink's own store directory (the escalation ids delivered, its positions).
        #[arg(long, env = "OMNIFOLD_ONCALL_STORE", default_value = ".omnifold/oncall")]
        store: PathBuf,
        /// A file holding the PagerDuty routing key.
        #[arg(long)]
        routing_key_file: Option<PathBuf>,
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9466.
        #[arg(long)]
        metrics: Option<SocketAddr>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logs();
    match Cli::parse().command {
        Command::Ndjson { file, publishing } => run_ndjson(NdjsonOptions { file }, &publishing).await,
        Command::Shopify { common, listen } => {
            let setup = Setup::new(&common).await?;
            let shopify = setup.section(&setup.config.shopify, "shopify")?;
            let mut options = ShopifySourceOptions::from_config(&setup.config, &shopify);
            options.shopify.listen = listen.unwrap_or(options.shopify.listen);
            shopify::source(options, setup.publisher()?)?.run(shutdown_signal()).await?;
            Ok(())
        }
        Command::Woocommerce { common, listen } => {
            let setup = Setup::new(&common).await?;
            let mut options = setup.section(&setup.config.woocommerce, "woocommerce")?;
            options.listen = listen.unwrap_or(options.listen);
            woocommerce::source(options, setup.publisher()?)?.run(shutdown_signal()).await?;
            Ok(())
        }
        Command::Amazon { common, listen, dir, no_http, once } => {
            let setup = Setup::new(&common).await?;
            let mut amazon = setup.section(&setup.config.amazon, "amazon")?;
            amazon.listen = listen.unwrap_or(amazon.listen);
            // without a directory, --no-http and --once have nothing to apply to
            let (once, no_http) = (once && dir.is_some(), no_http && dir.is_some());
            let options = AmazonSourceOptions { amazon, http: !(once || no_http), dir, poll_ms: 2000 };
            run_amazon(options, once, &setup).await
        }
        Command::AmazonPoll { common, once } => {
            let setup = Setup::new(&common).await?;
            let amazon = setup.section(&setup.config.amazon, "amazon")?;
            let mut poll = spapi::source(amazon, setup.publisher()?).await?;
            if once {
                let report = poll.run_once().await?;
                eprintln!("{report:?}");
                return Ok(());
            }
            poll.run(shutdown_signal()).await?;
            Ok(())
        }
        Command::DropDir { common, dir, once } => {
            let setup = Setup::new(&common).await?;
            let mut options = setup.section(&setup.config.drop_dir, "drop_dir")?;
            options.dir = dir.unwrap_or(options.dir);
            run_drop_dir(options, once, &setup).await
        }
        Command::Pushback { common, exit_when_caught_up, shopify_api } => {
            let mut setup = Setup::new(&common).await?;
            if let (Some(api), Some(shopify)) =
                (shopify_api, setup.config.pushback.as_mut().and_then(|p| p.shopify.as_mut()))
            {
                shopify.api = api;
            }
            let (kafka, topics) = common.publishing.kafka_and_topics()?;
            let mut pushback = Pushback::new(&kafka, &topics, &setup.config)?;
            let stats = pushback.run(shutdown_signal(), exit_when_caught_up).await?;
            eprintln!("{stats:?}");
            Ok(())
        }
        Command::Oncall { kafka, endpoint, store, routing_key_file, metrics } => {
            if let Some(addr) = metrics {
                serve_metrics(addr).map_err(anyhow::Error::msg)?;
            }
            let options = OncallOptions {
                kafka: kafka.kafka()?,
                topics: kafka.topic_options(),
                group_id: oncall::DEFAULT_GROUP.to_string(),
                endpoint,
                store,
                routing_key_file,
                delivery: DeliveryOptions::default(),
            };
            Oncall::new(options)?.run(shutdown_signal()).await.context("the on-call sink failed")
        }
    }
}

impl Publishing {
    fn kafka_and_topics(&self) -> anyhow::Result<(KafkaOptions, Topics)> {
        Ok((self.client.options()?, Topics::new(&self.topic_prefix)))
    }

    fn rules(&self) -> anyhow::Result<Option<Rules>> {
        Ok(self.contract.as_ref().map(|path| load_contract(path)).transpose()?)
    }

    /// Creates the topics that are missing.
    async fn ensure_topics(&self) -> anyhow::Result<()> {
        let (kafka, topics) = self.kafka_and_topics()?;
        let options = TopicOptions {
            prefix: self.topic_prefix.clone(),
            events_partitions: self.events_partitions,
            ..TopicOptions::default()
        };
        kafka.ensure_topics(&topics.specs(&options)).await?;
        Ok(())
    }

    fn publisher(&self, kafka: &KafkaOptions, rules: Option<Rules>) -> Result<Publisher, PublishError> {
        Publisher::new(kafka, &Topics::new(&self.topic_prefix), rules)
    }
}

/// What a command of the connector config starts from: metrics served, the config read and
/// checked against the contract, the topics there.
struct Setup {
    publishing: Publishing,
    /// Resolved once: the file and environment are read at start, not per publisher.
    kafka: KafkaOptions,
    config_path: PathBuf,
    config: ConnectorConfig,
    rules: Option<Rules>,
}

impl Setup {
    async fn new(common: &Common) -> anyhow::Result<Setup> {
        if let Some(addr) = common.metrics {
            serve_metrics(addr).map_err(anyhow::Error::msg)?;
        }
        let config = ConnectorConfig::load(&common.config)?;
        let rules = common.publishing.rules()?;
        if let Some(rules) = &rules {
            let problems = config.problems(rules);
            anyhow::ensure!(
                problems.is_empty(),
                "{} does not fit the contract:\n  {}",
                common.config.display(),
                problems.join("\n  ")
            );
        }
        common.publishing.ensure_topics().await?;
        let publishing = common.publishing.clone();
        let (kafka, _) = publishing.kafka_and_topics()?;
        Ok(Setup { publishing, kafka, config_path: common.config.clone(), config, rules })
    }

    fn publisher(&self) -> Result<Publisher, PublishError> {
        self.publishing.publisher(&self.kafka, self.rules.clone())
    }

    /// A section of the config the command needs, as `[name]`.
    fn section<T: Clone>(&self, section: &Option<T>, name: &str) -> anyhow::Result<T> {
        let path = self.config_path.display();
        section.clone().with_context(|| format!("{path} has no [{name}] section"))
    }
}

async fn run_ndjson(options: NdjsonOptions, publishing: &Publishing) -> anyhow::Result<()> {
    publishing.ensure_topics().await?;
    let (kafka, topics) = publishing.kafka_and_topics()?;
    let publisher = publishing.publisher(&kafka, publishing.rules()?)?;
    let on_refused = |line: usize, reason: &str| eprintln!("line {line}: {reason}");
    let report = ndjson::source(options, publisher).await?.run(shutdown_signal(), on_refused).await?;
    eprintln!(
        "{} lines read, {} events published, {} refused (dead-lettered to {})",
        report.lines,
        report.published,
        report.refused.len(),
        topics.deadletter
    );
    Ok(())
}

async fn run_amazon(options: AmazonSourceOptions, once: bool, setup: &Setup) -> anyhow::Result<()> {
    let mut source = amazon::source(options, || setup.publisher()).await?;
    if once {
        let reports = source.run_once().await?;
        eprintln!("{} files processed", reports.len());
        return Ok(());
    }
    source.run(shutdown_signal()).await?;
    Ok(())
}

async fn run_drop_dir(options: DropDirOptions, once: bool, setup: &Setup) -> anyhow::Result<()> {
    let mut source = b2b::source(options, setup.publisher()?).await?;
    if !once {
        return Ok(source.run(shutdown_signal()).await?);
    }
    for report in source.run_once().await? {
        eprintln!("{}: {} published, {} rejected", report.name, report.published, report.rejected);
    }
    Ok(())
}
