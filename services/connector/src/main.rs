//! `omnifold-connector`: publish channel events to omnifold, and push availability back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use omnifold_connector::amazon::AmazonMapping;
use omnifold_connector::b2b::B2bMapping;
use omnifold_connector::config::ConnectorConfig;
use omnifold_connector::files::{AmazonDir, DropDir, watch};
use omnifold_connector::http::{Intake, amazon_router, bind, serve, shopify_router, woocommerce_router};
use omnifold_connector::ndjson::{Origin, publish_lines_from};
use omnifold_connector::publish::Publisher;
use omnifold_connector::pushback::Pushback;
use omnifold_connector::shopify::ShopifyMapping;
use omnifold_connector::woocommerce::WooMapping;
use omnifold_domain::Rules;
use omnifold_runtime::telemetry::{init_logs, serve_metrics, shutdown_signal};
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics, load_contract};
use tokio::io::BufReader;

#[derive(Parser)]
#[command(
    version,
    about = "omnifold connectors: channel payloads in, contract events out, availability back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    #[arg(long, env = "OMNIFOLD_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, env = "OMNIFOLD_TOPIC_PREFIX", default_value = "omnifold.")]
    topic_prefix: String,
    /// The coordination contract: events are checked against it before they are sent, and
    /// the connector config's channels and locations must be in it.
    #[arg(long, env = "OMNIFOLD_CONTRACT")]
    contract: Option<PathBuf>,
    /// The connector config (channels, id mappings, secret references).
    #[arg(long, env = "OMNIFOLD_CONNECTORS", default_value = "deploy/local/connectors.toml")]
    config: PathBuf,
    /// Partitions of the events topic when it has to be created.
    #[arg(long, default_value_t = 6)]
    events_partitions: i32,
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
        #[arg(long, env = "OMNIFOLD_BOOTSTRAP", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long, env = "OMNIFOLD_TOPIC_PREFIX", default_value = "omnifold.")]
        topic_prefix: String,
        /// Check every event against this contract before sending it.
        #[arg(long, env = "OMNIFOLD_CONTRACT")]
        contract: Option<PathBuf>,
        /// Partitions of the events topic when it has to be created.
        #[arg(long, default_value_t = 6)]
        events_partitions: i32,
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
        /// Exit once every record in the topic at start is pushed.
        #[arg(long)]
        exit_when_caught_up: bool,
    },
}

struct Setup {
    kafka: KafkaOptions,
    topics: Topics,
    rules: Option<Rules>,
    config: ConnectorConfig,
}

async fn setup(common: &Common) -> anyhow::Result<Setup> {
    if let Some(addr) = common.metrics {
        serve_metrics(addr).map_err(anyhow::Error::msg)?;
    }
    let config = ConnectorConfig::load(&common.config)?;
    let rules = common.contract.as_ref().map(|path| load_contract(path)).transpose()?;
    if let Some(rules) = &rules {
        let problems = config.problems(rules);
        if !problems.is_empty() {
            anyhow::bail!(
                "{} does not fit the contract:\n  {}",
                common.config.display(),
                problems.join("\n  ")
            );
        }
    }
    let kafka = KafkaOptions { bootstrap_servers: common.bootstrap.clone(), ..KafkaOptions::default() };
    let topics = Topics::new(&common.topic_prefix);
    let options = TopicOptions {
        prefix: common.topic_prefix.clone(),
        events_partitions: common.events_partitions,
        ..TopicOptions::default()
    };
    kafka.ensure_topics(&topics.specs(&options)).await?;
    Ok(Setup { kafka, topics, rules, config })
}

fn section<'a, T>(section: &'a Option<T>, name: &str, path: &std::path::Path) -> anyhow::Result<&'a T> {
    section.as_ref().ok_or_else(|| anyhow::anyhow!("{} has no [{name}] section", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logs();
    match Cli::parse().command {
        Command::Ndjson { file, bootstrap, topic_prefix, contract, events_partitions } => {
            ndjson(file, bootstrap, topic_prefix, contract, events_partitions).await
        }
        Command::Shopify { common, listen } => {
            let Setup { kafka, topics, rules, config } = setup(&common).await?;
            let options = section(&config.shopify, "shopify", &common.config)?;
            let mapping = ShopifyMapping::from_config(&config, options);
            let intake = Intake::new(Publisher::new(&kafka, &topics, rules)?);
            let router = shopify_router(mapping, options.secret.load()?, intake, options.max_body_bytes);
            let addr = listen.unwrap_or(options.listen);
            let listener = bind(addr).await?;
            tracing::info!(%addr, "shopify webhooks on POST /webhooks/shopify");
            serve(listener, router, shutdown_signal()).await?;
            Ok(())
        }
        Command::Woocommerce { common, listen } => {
            let Setup { kafka, topics, rules, config } = setup(&common).await?;
            let options = section(&config.woocommerce, "woocommerce", &common.config)?;
            let intake = Intake::new(Publisher::new(&kafka, &topics, rules)?);
            let router = woocommerce_router(
                WooMapping::from_options(options),
                options.secret.load()?,
                intake,
                options.max_body_bytes,
            );
            let addr = listen.unwrap_or(options.listen);
            let listener = bind(addr).await?;
            tracing::info!(%addr, "woocommerce webhooks on POST /webhooks/woocommerce");
            serve(listener, router, shutdown_signal()).await?;
            Ok(())
        }
        Command::Amazon { common, listen, dir, no_http, once } => {
            let Setup { kafka, topics, rules, config } = setup(&common).await?;
            let options = section(&config.amazon, "amazon", &common.config)?;
            let mapping = AmazonMapping::from_options(options);
            if let Some(dir) = dir {
                let mut watcher = AmazonDir::open(&dir, mapping.clone())?;
                let mut publisher = Publisher::new(&kafka, &topics, rules.clone())?;
                if once {
                    let reports = watcher.scan(&mut publisher).await?;
                    eprintln!("{} files processed", reports.len());
                    return Ok(());
                }
                if no_http {
                    let watcher = tokio::sync::Mutex::new((watcher, publisher));
                    watch(Duration::from_secs(2), shutdown_signal(), || async {
                        let mut guard = watcher.lock().await;
                        let (watcher, publisher) = &mut *guard;
                        watcher.scan(publisher).await.map(drop)
                    })
                    .await?;
                    return Ok(());
                }
                tokio::spawn(async move {
                    let watcher = tokio::sync::Mutex::new((watcher, publisher));
                    let result = watch(Duration::from_secs(2), std::future::pending(), || async {
                        let mut guard = watcher.lock().await;
                        let (watcher, publisher) = &mut *guard;
                        watcher.scan(publisher).await.map(drop)
                    })
                    .await;
                    if let Err(error) = result {
                        tracing::error!(%error, "amazon directory watcher stopped");
                    }
                });
            }
            let token = options.token.as_ref().map(|t| t.load()).transpose()?;
            let intake = Intake::new(Publisher::new(&kafka, &topics, rules)?);
            let router = amazon_router(mapping, token, intake, options.max_body_bytes);
            let addr = listen.unwrap_or(options.listen);
            let listener = bind(addr).await?;
            tracing::info!(%addr, "amazon notifications on POST /amazon/notifications, /amazon/order-items");
            serve(listener, router, shutdown_signal()).await?;
            Ok(())
        }
        Command::DropDir { common, dir, once } => {
            let Setup { kafka, topics, rules, config } = setup(&common).await?;
            let options = section(&config.drop_dir, "drop_dir", &common.config)?;
            let dir = dir.unwrap_or_else(|| options.dir.clone());
            let mut drop_dir =
                DropDir::open(&dir, options.state.as_deref(), B2bMapping::from_options(options))?;
            let mut publisher = Publisher::new(&kafka, &topics, rules)?;
            if once {
                for report in drop_dir.scan(&mut publisher).await? {
                    eprintln!(
                        "{}: {} published, {} rejected",
                        report.name, report.published, report.rejected
                    );
                }
                return Ok(());
            }
            tracing::info!(dir = %dir.display(), "watching the drop directory");
            let state = tokio::sync::Mutex::new((drop_dir, publisher));
            watch(Duration::from_millis(options.poll_ms), shutdown_signal(), || async {
                let mut guard = state.lock().await;
                let (drop_dir, publisher) = &mut *guard;
                drop_dir.scan(publisher).await.map(drop)
            })
            .await?;
            Ok(())
        }
        Command::Pushback { common, exit_when_caught_up } => {
            let Setup { kafka, topics, config, .. } = setup(&common).await?;
            let mut pushback = Pushback::new(&kafka, &topics, &config)?;
            let stats = pushback.run(shutdown_signal(), exit_when_caught_up).await?;
            eprintln!("{stats:?}");
            Ok(())
        }
    }
}

async fn ndjson(
    file: Option<PathBuf>,
    bootstrap: String,
    topic_prefix: String,
    contract: Option<PathBuf>,
    events_partitions: i32,
) -> anyhow::Result<()> {
    let kafka = KafkaOptions { bootstrap_servers: bootstrap, ..KafkaOptions::default() };
    let topics = Topics::new(&topic_prefix);
    let options = TopicOptions { prefix: topic_prefix, events_partitions, ..TopicOptions::default() };
    kafka.ensure_topics(&topics.specs(&options)).await?;
    let rules = contract.map(|path| load_contract(&path)).transpose()?;
    let mut publisher = Publisher::new(&kafka, &topics, rules)?;
    let on_refused = |line: usize, reason: &str| eprintln!("line {line}: {reason}");
    let report = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
            // absolute, so that a dead letter's source names the file wherever it is read
            let origin = Origin::File(std::path::absolute(&path)?);
            publish_lines_from(BufReader::new(file), &origin, &mut publisher, on_refused).await?
        }
        None => {
            let stdin = BufReader::new(tokio::io::stdin());
            publish_lines_from(stdin, &Origin::Stdin, &mut publisher, on_refused).await?
        }
    };
    eprintln!(
        "{} lines read, {} events published, {} refused (dead-lettered to {})",
        report.lines,
        report.published,
        report.refused.len(),
        topics.deadletter
    );
    Ok(())
}
