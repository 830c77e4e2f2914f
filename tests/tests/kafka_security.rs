//! Secured Kafka against the real broker: records go through omnifold's runtime clients over
//! TLS with settings from a `--kafka-config` file, once to nisshi's own TLS listener and once
//! through a TLS terminator (Debian's stunnel4) in front of a plain nisshi, as a managed
//! cluster's load balancer would be. The test makes its own CA and server certificate; a
//! client that trusts another CA is refused with an error that says so.

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnifold_runtime::topics::{Cleanup, TopicSpec};
use omnifold_runtime::{BrokerHealth, KafkaClientArgs, KafkaOptions};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tempfile::TempDir;

const RECORDS: usize = 20;
/// Only so that a broken setup fails instead of hanging; nothing is timed.
const GIVE_UP: Duration = Duration::from_secs(120);

/// A process killed when the test ends, however it ends.
struct Running(Child, &'static str);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    omnifold_testkit::free_loopback_port()
}

/// Waits until `port` accepts connections; fails if `process` exits first.
fn wait_listening(process: &mut Running, port: u16, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("{} exited ({status}):\n{}", process.1, std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(start.elapsed() < GIVE_UP, "{} is not listening on {port}", process.1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost it signed, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("omnifold test ca {name}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-server.pem")),
        key: dir.join(format!("{name}-server.key")),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// How a test's nisshi runs beyond its ports.
#[derive(Default)]
struct Setup<'a> {
    /// TLS with this server certificate.
    tls: Option<&'a Pki>,
    /// Clients must authenticate with SASL SCRAM.
    authentication: bool,
    /// A sqlite file instead of memory, to keep users across a restart.
    sqlite: Option<&'a Path>,
}

/// nisshi on `listen`, advertising `advertise` to clients.
fn start_nisshi(dir: &Path, listen: u16, advertise: u16, setup: Setup<'_>) -> Running {
    let binary = omnifold_testkit::nisshi_binary().expect("nisshi is installed (deploy/install-broker.sh)");
    let log = dir.join("nisshi.log");
    let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let mut command = Command::new(binary);
    command
        .arg("broker")
        .args(["--listener-url", &format!("tcp://127.0.0.1:{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{advertise}")])
        .arg("--storage-engine")
        // nisshi drops one leading "/" of the path
        .arg(setup.sqlite.map_or("memory://nisshi/".to_string(), |db| format!("sqlite:///{}", db.display())))
        .args(["--group-initial-rebalance-delay", "0s"])
        .env_remove("RUST_LOG")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    if let Some(pki) = setup.tls {
        command.arg("--cert").arg(&pki.cert).arg("--key").arg(&pki.key);
    }
    if setup.authentication {
        command.arg("--authentication");
    }
    let mut nisshi = Running(command.spawn().expect("spawn nisshi"), "nisshi");
    wait_listening(&mut nisshi, listen, &log);
    nisshi
}

/// The client options a service builds from `--bootstrap` and `--kafka-config`.
fn options_from_file(dir: &Path, port: u16, name: &str, properties: &str) -> KafkaOptions {
    let file = dir.join(name);
    std::fs::write(&file, properties).unwrap();
    let args = KafkaClientArgs {
        bootstrap: Some(format!("127.0.0.1:{port}")),
        kafka_config: Some(file),
        kafka_set: Vec::new(),
    };
    args.options().expect("the kafka config is valid")
}

fn tls_properties(ca: &Path) -> String {
    format!("# as for a managed cluster\nsecurity.protocol = SSL\nssl.ca.location = {}\n", ca.display())
}

/// Creates a topic, produces records with the runtime's idempotent producer and reads them
/// back with its assigning consumer.
async fn round_trip(options: &KafkaOptions, topic: &str) -> Vec<String> {
    let spec =
        TopicSpec { name: topic.to_string(), partitions: 1, cleanup: Cleanup::Delete, retention_ms: None };
    options.ensure_topics(&[spec]).await.expect("create the topic over tls");
    let producer = options.idempotent_producer(BrokerHealth::new(None)).expect("producer");
    let sent: Vec<String> = (0..RECORDS).map(|i| format!("record-{i}")).collect();
    let waves = producer.context().waves().clone();
    let wave = waves.begin(sent.len());
    for value in &sent {
        producer
            .send(BaseRecord::<str, str, usize>::with_opaque_to(topic, wave).key(value).payload(value))
            .map_err(|(error, _)| error)
            .expect("produce over tls");
    }
    let delivered = tokio::time::timeout(Duration::from_secs(30), waves.finish(wave));
    delivered.await.expect("delivered in time").expect("produce over tls");
    let consumer = options.assigning_consumer("kafka-security-test").expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let consumer = Arc::new(consumer);
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut read = Vec::new();
        while read.len() < RECORDS {
            assert!(start.elapsed() < GIVE_UP, "read back only {read:?}");
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message = message.expect("consume over tls");
                read.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
            }
        }
        assert_eq!(read, sent, "records read back over tls");
        read
    })
    .await
    .unwrap()
}

/// A client context that keeps what librdkafka reports.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<String>>>);

impl ClientContext for Recorded {
    fn log(&self, _: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.lock().unwrap().push(format!("{facility}: {message}"));
    }

    fn error(&self, error: ClientError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Recorded {}

/// What a client with the wrong CA or credentials is told: the first error that holds `needle`.
fn refusal(options: &KafkaOptions, needle: &str) -> String {
    let recorded = Recorded::default();
    let consumer: BaseConsumer<Recorded> =
        options.client_config().create_with_context(recorded.clone()).unwrap();
    let start = Instant::now();
    loop {
        let answer = consumer.fetch_metadata(None, Duration::from_secs(2));
        assert!(answer.is_err(), "a client with the wrong ca or credentials got metadata");
        // errors reach the context when the consumer is polled
        assert!(consumer.poll(Duration::from_millis(100)).is_none_or(|m| m.is_err()));
        let errors = recorded.0.lock().unwrap().clone();
        if let Some(error) = errors.iter().find(|e| e.contains(needle)) {
            return error.clone();
        }
        assert!(start.elapsed() < GIVE_UP, "no error with {needle:?} reported, only {errors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_over_tls_to_the_brokers_own_listener_and_another_ca_is_refused() {
    let dir = TempDir::new().unwrap();
    let pki = make_pki(dir.path(), "good");
    let port = free_port();
    let _nisshi = start_nisshi(dir.path(), port, port, Setup { tls: Some(&pki), ..Setup::default() });

    let options = tls_round_trip_and_refusal(dir.path(), port, &pki, "secured.native").await;
    assert_eq!(options.extra.get("security.protocol").map(String::as_str), Some("SSL"));

    // a service binary takes the same settings from OMNIFOLD_KAFKA_* variables alone
    let events = TopicSpec {
        name: "omnifold.events".into(),
        partitions: 1,
        cleanup: Cleanup::Delete,
        retention_ms: None,
    };
    options.ensure_topics(&[events]).await.unwrap();
    let status = coordinator()
        .args(["status", "--bootstrap", &format!("127.0.0.1:{port}")])
        .env("OMNIFOLD_KAFKA_SECURITY_PROTOCOL", "SSL")
        .env("OMNIFOLD_KAFKA_SSL_CA_LOCATION", &pki.ca)
        .output()
        .unwrap();
    assert!(status.status.success(), "status over tls failed:\n{}", shown(&status));
}

fn coordinator() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_e2e-coordinator"));
    command.env_remove("OMNIFOLD_BOOTSTRAP").env_remove("OMNIFOLD_KAFKA_CONFIG").stdin(Stdio::null());
    command
}

fn shown(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn secrets_are_refused_on_the_command_line_and_never_shown() {
    let refused = coordinator()
        .args([
            "status",
            "--kafka-set",
            "security.protocol=SASL_SSL",
            "--kafka-set",
            "sasl.password=hunter2-cli",
        ])
        .output()
        .unwrap();
    let text = shown(&refused);
    assert!(!refused.status.success(), "a password on the command line was taken:\n{text}");
    assert!(text.contains("sasl.password") && text.contains("OMNIFOLD_KAFKA_SASL_PASSWORD"), "{text}");
    assert!(!text.contains("hunter2-cli"), "the refusal shows the secret:\n{text}");

    let dir = TempDir::new().unwrap();
    let file = dir.path().join("kafka.properties");
    std::fs::write(
        &file,
        "security.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-512\nsasl.password=hunter2-file\n",
    )
    .unwrap();
    for args in [&["run", "--help"][..], &["status", "--help"][..]] {
        let help = coordinator()
            .args(args)
            .env("OMNIFOLD_KAFKA_CONFIG", &file)
            .env("OMNIFOLD_KAFKA_SASL_PASSWORD", "hunter2-env")
            .output()
            .unwrap();
        let text = shown(&help);
        assert!(
            help.status.success() && text.contains("--kafka-config") && text.contains("--kafka-set"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "--help shows a secret:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_over_tls_through_stunnel_in_front_of_the_broker() {
    let Some(stunnel) = ["stunnel4", "stunnel"].iter().find_map(|name| find_binary(name)) else {
        println!("SKIPPED the stunnel test: stunnel is not installed (apt-get install -y stunnel4)");
        return;
    };
    let dir = TempDir::new().unwrap();
    let pki = make_pki(dir.path(), "good");
    let (plain, tls) = (free_port(), free_port());
    // clients connect to the address in metadata, so the broker advertises the terminator
    let _nisshi = start_nisshi(dir.path(), plain, tls, Setup::default());
    let config = dir.path().join("stunnel.conf");
    std::fs::write(
        &config,
        format!(
            "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls}\nconnect = 127.0.0.1:{plain}\n\
             cert = {}\nkey = {}\n",
            pki.cert.display(),
            pki.key.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stunnel.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut terminator = Running(
        Command::new(stunnel)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn stunnel"),
        "stunnel",
    );
    wait_listening(&mut terminator, tls, &log);

    tls_round_trip_and_refusal(dir.path(), tls, &pki, "secured.stunnel").await;
}

/// Records round-trip over TLS on `port` with the CA of `pki`, and a client trusting another
/// CA is refused in the handshake. Returns the working options.
async fn tls_round_trip_and_refusal(dir: &Path, port: u16, pki: &Pki, topic: &str) -> KafkaOptions {
    let options = options_from_file(dir, port, "kafka.properties", &tls_properties(&pki.ca));
    let read = round_trip(&options, topic).await;
    assert_eq!(read.len(), RECORDS);
    let other = make_pki(dir, "other");
    let wrong = options_from_file(dir, port, "wrong.properties", &tls_properties(&other.ca));
    let error = refusal(&wrong, "SSL handshake failed");
    assert!(error.contains("certificate verify failed"), "{error}");
    options
}

/// An executable `name` on `PATH`, if any.
fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_with_sasl_scram_over_tls_and_a_wrong_password_is_refused() {
    let dir = TempDir::new().unwrap();
    let pki = make_pki(dir.path(), "good");
    let db = dir.path().join("nisshi.db");
    let password = "correct horse battery staple";
    // a broker that requires authentication answers nothing before it, so the user is made
    // first, with the same storage and no authentication
    {
        let port = free_port();
        let _open = start_nisshi(dir.path(), port, port, Setup { sqlite: Some(&db), ..Setup::default() });
        let created = Command::new(omnifold_testkit::nisshi_binary().unwrap())
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{port}"),
                "--mechanism",
                "scram512",
            ])
            .args(["omnifold", password])
            .output()
            .unwrap();
        assert!(created.status.success(), "nisshi user create failed:\n{}", shown(&created));
    }
    let port = free_port();
    let setup = Setup { tls: Some(&pki), authentication: true, sqlite: Some(&db) };
    let _nisshi = start_nisshi(dir.path(), port, port, setup);

    let sasl = |password: &str| {
        format!(
            "{}sasl.mechanisms=SCRAM-SHA-512\nsasl.username=omnifold\nsasl.password={password}\n",
            tls_properties(&pki.ca).replace("security.protocol = SSL", "security.protocol = SASL_SSL")
        )
    };
    let options = options_from_file(dir.path(), port, "kafka.properties", &sasl(password));
    assert_eq!(options.extra.get("sasl.mechanisms").map(String::as_str), Some("SCRAM-SHA-512"));
    assert!(!format!("{options:?}").contains(password), "{options:?}");
    let read = round_trip(&options, "secured.sasl").await;
    assert_eq!(read.len(), RECORDS);

    let wrong = options_from_file(dir.path(), port, "wrong.properties", &sasl("tr0ub4dor&3"));
    let error = refusal(&wrong, "SASL");
    assert!(error.to_lowercase().contains("authentication"), "{error}");

    // the coordinator binary with the password from the environment only
    let events = TopicSpec {
        name: "omnifold.events".into(),
        partitions: 1,
        cleanup: Cleanup::Delete,
        retention_ms: None,
    };
    options.ensure_topics(&[events]).await.unwrap();
    let file = dir.path().join("no-password.properties");
    std::fs::write(&file, sasl(password).replace(&format!("sasl.password={password}\n"), "")).unwrap();
    let status = coordinator()
        .args(["status", "--bootstrap", &format!("127.0.0.1:{port}")])
        .arg("--kafka-config")
        .arg(&file)
        .env("OMNIFOLD_KAFKA_SASL_PASSWORD", password)
        .output()
        .unwrap();
    assert!(status.status.success(), "status over sasl_ssl failed:\n{}", shown(&status));
    assert!(!shown(&status).contains(password), "{}", shown(&status));
}
