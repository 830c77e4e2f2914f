//! Tests against a real nisshi broker: no mocks.
//!
//! They need the broker binary: run `deploy/install-broker.sh` first.

use std::{collections::BTreeSet, time::Duration};

use anyhow::Result;
use omnifold_testkit::{Broker, Storage};
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer as _},
};

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn produces_and_reads_back_every_record() -> Result<()> {
    let broker = Broker::start().await?;
    broker.create_topic("events", 3, false).await?;

    for i in 0..100 {
        let key = format!("key-{}", i % 7);
        broker.produce("events", key.as_bytes(), format!("value-{i}").as_bytes()).await?;
    }
    let records = broker.read_all("events", 100, TIMEOUT).await?;

    assert_eq!(records.len(), 100);
    let partitions: BTreeSet<i32> = records.iter().map(|record| record.partition).collect();
    assert_eq!(partitions, BTreeSet::from([0, 1, 2]));
    let values: BTreeSet<Vec<u8>> = records.iter().filter_map(|record| record.value.clone()).collect();
    assert_eq!(values.len(), 100, "no duplicates and no losses");
    Ok(())
}

#[tokio::test]
async fn two_brokers_run_at_once() -> Result<()> {
    let (first, second) = tokio::try_join!(Broker::start(), Broker::start())?;
    assert_ne!(first.port(), second.port());

    first.create_topic("only-first", 1, false).await?;
    second.create_topic("only-second", 1, false).await?;
    first.produce("only-first", b"k", b"one").await?;
    second.produce("only-second", b"k", b"two").await?;

    let one = first.read_all("only-first", 1, TIMEOUT).await?;
    let two = second.read_all("only-second", 1, TIMEOUT).await?;
    assert_eq!(one[0].value.as_deref(), Some(&b"one"[..]));
    assert_eq!(two[0].value.as_deref(), Some(&b"two"[..]));
    assert!(second.read_all("only-first", 0, Duration::from_secs(2)).await.is_err());
    Ok(())
}

#[tokio::test]
async fn reads_back_keys_and_headers() -> Result<()> {
    let broker = Broker::start().await?;
    broker.create_topic("with-headers", 1, false).await?;
    let headers: [(&str, &[u8]); 2] = [("event-type", b"created"), ("schema", b"v1")];
    broker.produce_with_headers("with-headers", b"k", b"v", &headers).await?;

    let records = broker.read_all("with-headers", 1, TIMEOUT).await?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(
        records[0].headers,
        vec![("event-type".to_owned(), b"created".to_vec()), ("schema".to_owned(), b"v1".to_vec())]
    );
    Ok(())
}

#[tokio::test]
async fn accepts_a_compacted_topic() -> Result<()> {
    let broker = Broker::start().await?;
    broker.create_topic("snapshots", 2, true).await?;
    broker.produce("snapshots", b"k", b"v").await?;
    assert_eq!(broker.read_all("snapshots", 1, TIMEOUT).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn rejects_a_topic_created_twice() -> Result<()> {
    let broker = Broker::start().await?;
    broker.create_topic("twice", 1, false).await?;
    assert!(broker.create_topic("twice", 1, false).await.is_err());
    Ok(())
}

#[tokio::test]
async fn reports_watermarks_and_committed_offsets() -> Result<()> {
    let broker = Broker::start().await?;
    broker.create_topic("offsets", 1, false).await?;
    for i in 0..5 {
        broker.produce("offsets", b"k", format!("{i}").as_bytes()).await?;
    }
    let config = broker.client_config();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: BaseConsumer =
            config.clone().set("group.id", "offsets-group").set("enable.auto.commit", "false").create()?;
        assert_eq!(consumer.fetch_watermarks("offsets", 0, TIMEOUT)?, (0, 5));

        let mut commit = TopicPartitionList::new();
        commit.add_partition_offset("offsets", 0, Offset::Offset(3))?;
        consumer.commit(&commit, CommitMode::Sync)?;

        let mut query = TopicPartitionList::new();
        query.add_partition("offsets", 0);
        let committed = consumer.committed_offsets(query, TIMEOUT)?;
        let offset = committed.find_partition("offsets", 0).map(|entry| entry.offset());
        assert_eq!(offset, Some(Offset::Offset(3)));
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn keeps_records_in_sqlite_storage() -> Result<()> {
    let broker = Broker::start_with_storage(Storage::Sqlite).await?;
    broker.create_topic("durable", 1, false).await?;
    broker.produce("durable", b"k", b"v").await?;
    assert_eq!(broker.read_all("durable", 1, TIMEOUT).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn kill_stops_the_broker() -> Result<()> {
    let mut broker = Broker::start().await?;
    let address = broker.bootstrap();
    broker.kill();
    assert!(std::net::TcpStream::connect(&address).is_err());
    broker.kill();
    Ok(())
}
