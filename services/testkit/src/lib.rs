//! Test support: a real nisshi Kafka-protocol broker on a free loopback port.
//!
//! Nothing here is mocked. [`Broker::start`] spawns the `nisshi` binary that
//! `deploy/install-broker.sh` installs, waits until it answers metadata
//! requests, and kills it when dropped. The helpers ([`Broker::create_topic`],
//! [`Broker::produce`], [`Broker::read_all`]) use plain rdkafka clients, so
//! end-to-end tests can seed topics and check what services wrote.

use std::{
    env, fs,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer as _},
    message::{Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use tempfile::TempDir;

/// The nisshi version that `deploy/install-broker.sh` installs.
pub const NISSHI_VERSION: &str = "0.7.0";

/// Environment variable that points at a nisshi binary, overriding the cache.
pub const NISSHI_ENV: &str = "OMNIFOLD_NISSHI";

/// Environment variable with the broker's log filter (`RUST_LOG` syntax, e.g.
/// `debug`). The test's own `RUST_LOG` is not passed on, so the broker logs
/// errors only unless this is set.
pub const BROKER_LOG_ENV: &str = "OMNIFOLD_BROKER_LOG";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const QUIET_PERIOD: Duration = Duration::from_millis(500);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the broker (`$0 "$@"`) under a watchdog: when this shell's stdin
/// reaches end of file, because the test process closed it or died in any way
/// (even SIGKILL or `process::exit`, which skip `Drop`), the broker is killed.
/// The shell exits with the broker's status.
const WATCHDOG: &str = r#"
exec 3<&0
"$0" "$@" </dev/null 3<&- &
broker=$!
(read -r _ <&3; kill -KILL "$broker" 2>/dev/null) </dev/null &
watcher=$!
exec 3<&-
wait "$broker"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// Where the broker keeps its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// In memory: gone when the broker stops.
    #[default]
    Memory,
    /// A sqlite file in the broker's temporary directory.
    Sqlite,
}

/// One record read back from a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Partition the record was read from.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// Record key, if any.
    pub key: Option<Vec<u8>>,
    /// Record value, if any (a tombstone has none).
    pub value: Option<Vec<u8>>,
    /// Record headers in order; a header without a value has an empty one.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A nisshi broker process listening on `127.0.0.1` at a free port.
///
/// Dropping it kills the process and removes its data and log.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    storage: Storage,
    producer: FutureProducer,
    dir: TempDir,
}

impl Broker {
    /// Starts a broker with in-memory storage and waits until it is ready.
    pub async fn start() -> Result<Self> {
        Self::start_with_storage(Storage::Memory).await
    }

    /// Starts a broker with the given storage and waits until it is ready.
    ///
    /// Fails if the nisshi binary is missing (run `deploy/install-broker.sh`)
    /// or if the broker does not answer metadata requests within 30 s.
    pub async fn start_with_storage(storage: Storage) -> Result<Self> {
        let binary = nisshi_binary()?;
        let dir = tempfile::Builder::new().prefix("omnifold-broker-").tempdir()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match spawn_ready(&binary, dir.path(), storage).await {
                Ok((child, port)) => return Self::assemble(child, port, storage, dir),
                // another process may take the free port between probe and bind
                Err(error @ StartError::Exited(_)) => last_error = Some(error.into()),
                Err(error) => return Err(error.into()),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("broker did not start")))
    }

    fn assemble(child: Child, port: u16, storage: Storage, dir: TempDir) -> Result<Self> {
        let producer = client_config(&bootstrap(port))
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000")
            .create()
            .context("create producer")?;
        Ok(Self { child: Some(child), port, storage, producer, dir })
    }

    /// The `bootstrap.servers` value for clients: `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        bootstrap(self.port)
    }

    /// The port the broker listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A client config with `bootstrap.servers` set, to build further clients.
    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.bootstrap())
    }

    /// The path of the broker's combined stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// The last `lines` lines of the broker log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    /// Creates a topic with `partitions` partitions and replication factor 1;
    /// `compact` sets `cleanup.policy=compact`.
    pub async fn create_topic(&self, name: &str, partitions: i32, compact: bool) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().context("create admin client")?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        if compact {
            topic = topic.set("cleanup.policy", "compact");
        }
        let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
        let results =
            admin.create_topics([&topic], &options).await.with_context(|| format!("create topic {name}"))?;
        for result in results {
            result.map_err(|(topic, code)| anyhow!("create topic {topic}: {code}"))?;
        }
        Ok(())
    }

    /// Produces one record with the broker's idempotent producer and waits for
    /// its acknowledgement; returns the record's partition and offset.
    pub async fn produce(&self, topic: &str, key: &[u8], value: &[u8]) -> Result<(i32, i64)> {
        self.produce_with_headers(topic, key, value, &[]).await
    }

    /// Like [`Broker::produce`], with headers.
    pub async fn produce_with_headers(
        &self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(i32, i64)> {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (key, value)| all.insert(Header { key, value: Some(*value) }));
        let record = FutureRecord::to(topic).key(key).payload(value).headers(headers);
        let delivery = self
            .producer
            .send(record, CLIENT_TIMEOUT)
            .await
            .map_err(|(error, _)| anyhow!("produce to {topic}: {error}"))?;
        Ok((delivery.partition, delivery.offset))
    }

    /// Reads every partition of `topic` from the beginning, without a consumer
    /// group. Returns once at least `expected_min` records were read and none
    /// arrived for 500 ms, or at `timeout` with what was read so far. Records
    /// are sorted by partition, then offset.
    pub async fn read_all(&self, topic: &str, expected_min: usize, timeout: Duration) -> Result<Vec<Record>> {
        let config = self.client_config();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_all_blocking(&config, &topic, expected_min, timeout))
            .await
            .context("join reader task")?
    }

    /// Starts the broker again on the same port and storage after [`Broker::kill`] (or kills
    /// it first): what sqlite storage kept is there again, memory storage starts empty.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let binary = nisshi_binary()?;
        let log = self.log_path();
        let mut child = spawn(&binary, self.dir.path(), self.storage, self.port, &log)?;
        if let Err(error) = wait_ready(&mut child, self.port, &log).await {
            stop(&mut child);
            return Err(error.into());
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the broker process and waits for it; does nothing if it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("bootstrap", &self.bootstrap())
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// The nisshi binary: `$OMNIFOLD_NISSHI`, else the one that
/// `deploy/install-broker.sh` installs into the cache directory.
pub fn nisshi_binary() -> Result<PathBuf> {
    let path = match non_empty_env(NISSHI_ENV) {
        Some(path) => PathBuf::from(path),
        None => cache_dir()?.join(format!("nisshi-{NISSHI_VERSION}")).join("bin").join("nisshi"),
    };
    if !path.is_file() {
        bail!(
            "nisshi broker not found at {}: run deploy/install-broker.sh (or set {NISSHI_ENV})",
            path.display()
        );
    }
    Ok(path)
}

/// `${OMNIFOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omnifold}`, as in the script.
fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = non_empty_env("OMNIFOLD_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let base = match non_empty_env("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => non_empty_env("HOME")
            .map(|home| Path::new(&home).join(".cache"))
            .ok_or_else(|| anyhow!("cannot locate the cache: HOME is not set"))?,
    };
    Ok(base.join("omnifold"))
}

fn non_empty_env(name: &str) -> Option<String> {
    env::var(name).ok().filter(|value| !value.is_empty())
}

fn bootstrap(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// A loopback port nothing listens on, for a server a test starts.
///
/// It is drawn below the kernel's ephemeral range (`ip_local_port_range`), because a port the
/// kernel handed out for port 0 is also what it hands to the next outgoing connection: a
/// Kafka client in a parallel test took one between the probe and the server's bind.
pub fn free_loopback_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    for _ in 0..1000 {
        let port = low + (random_u64() % u64::from(high - low)) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free loopback port");
    listener.local_addr().expect("a local address").port()
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.finish()
}

fn storage_url(storage: Storage, dir: &Path) -> String {
    match storage {
        Storage::Memory => "memory://nisshi/".to_owned(),
        // nisshi drops one leading "/" of the path, so an absolute path needs four
        Storage::Sqlite => format!("sqlite:///{}", dir.join("nisshi.db").display()),
    }
}

/// Why a start attempt failed; only an early exit is worth another attempt.
#[derive(Debug)]
enum StartError {
    Exited(anyhow::Error),
    Other(anyhow::Error),
}

impl From<StartError> for anyhow::Error {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Exited(error) | StartError::Other(error) => error,
        }
    }
}

async fn spawn_ready(binary: &Path, dir: &Path, storage: Storage) -> Result<(Child, u16), StartError> {
    let port = free_loopback_port();
    let log = dir.join("broker.log");
    let mut child = spawn(binary, dir, storage, port, &log).map_err(StartError::Other)?;
    match wait_ready(&mut child, port, &log).await {
        Ok(()) => Ok((child, port)),
        Err(error) => {
            stop(&mut child);
            Err(error)
        }
    }
}

fn spawn(binary: &Path, dir: &Path, storage: Storage, port: u16, log: &Path) -> Result<Child> {
    let listener = format!("tcp://{}", bootstrap(port));
    // appended to, so a restarted broker's log follows the first one's
    let stdout = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let stderr = stdout.try_clone()?;
    let mut command = Command::new("/bin/sh");
    command.args(["-c", WATCHDOG]).arg(binary).env_remove("RUST_LOG");
    if let Some(filter) = non_empty_env(BROKER_LOG_ENV) {
        command.env("RUST_LOG", filter);
    }
    command
        .arg("broker")
        .args(["--listener-url", &listener])
        .args(["--advertised-listener-url", &listener])
        .args(["--storage-engine", &storage_url(storage, dir)])
        .args(["--group-initial-rebalance-delay", "0s"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))
}

/// Kills the broker by closing the watchdog's stdin, and reaps it; kills the
/// watchdog itself if the broker is not gone within 5 s.
fn stop(child: &mut Child) {
    drop(child.stdin.take());
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // kill fails only if the process already exited; wait reaps it either way
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls metadata until the broker answers, it exits, or 30 s pass.
async fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), StartError> {
    let consumer: Arc<BaseConsumer> = client_config(&bootstrap(port))
        .create()
        .map(Arc::new)
        .map_err(|error| StartError::Other(anyhow!("create metadata client: {error}")))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = log_tail(log, 20);
            return Err(StartError::Exited(anyhow!(
                "broker exited during startup ({status}), log tail:\n{tail}"
            )));
        }
        if answers_metadata(Arc::clone(&consumer)).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let tail = log_tail(log, 20);
            return Err(StartError::Other(anyhow!(
                "broker not ready on {} after {READY_TIMEOUT:?}, log tail:\n{tail}",
                bootstrap(port)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn answers_metadata(consumer: Arc<BaseConsumer>) -> bool {
    tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_millis(500)).is_ok())
        .await
        .unwrap_or(false)
}

fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return format!("(no log at {})", path.display());
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_all_blocking(
    config: &ClientConfig,
    topic: &str,
    expected_min: usize,
    timeout: Duration,
) -> Result<Vec<Record>> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = config
        .clone()
        // librdkafka refuses a manual assign without a group id, though nothing is committed
        .set("group.id", "omnifold-testkit-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .context("create reader")?;
    consumer.assign(&from_beginning(&consumer, topic)?).context("assign partitions")?;

    let mut records = Vec::new();
    let mut last_record = Instant::now();
    while Instant::now() < deadline {
        if records.len() >= expected_min && last_record.elapsed() >= QUIET_PERIOD {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                records.push(to_record(&message));
                last_record = Instant::now();
            }
            Some(Err(error)) => tracing::debug!(%error, topic, "read_all poll error"),
            None => {}
        }
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    Ok(records)
}

/// Every partition of `topic`, each at its beginning.
fn from_beginning(consumer: &BaseConsumer, topic: &str) -> Result<TopicPartitionList> {
    let metadata = consumer
        .fetch_metadata(Some(topic), CLIENT_TIMEOUT)
        .with_context(|| format!("fetch metadata of {topic}"))?;
    let found = metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic} not in metadata"))?;
    if let Some(error) = found.error() {
        bail!("topic {topic}: {error:?}");
    }
    let mut list = TopicPartitionList::new();
    for partition in found.partitions() {
        list.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
    }
    Ok(list)
}

fn to_record(message: &impl Message) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| (header.key.to_owned(), header.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}
