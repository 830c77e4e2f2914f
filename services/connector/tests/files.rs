//! Watched directories: each file processed once (by name and hash), bad rows rejected into
//! `<file>.rejects.csv` while the good rows are published, Amazon notifications deduplicated
//! on NotificationId; the Amazon source's watcher stops with the source's shutdown.

use std::path::Path;
use std::time::Duration;

use omnifold_connector::amazon::{self, AmazonMapping, AmazonSourceOptions};
use omnifold_connector::b2b::B2bMapping;
use omnifold_connector::config::ConnectorConfig;
use omnifold_connector::files::{AmazonDir, DropDir};
use omnifold_connector::publish::MemorySink;
use omnifold_proto::Body;

/// A channel sample from the repository's `tests/fixtures/payloads`.
fn payload(name: &str) -> Vec<u8> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/payloads").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read the channel sample {}: {e}", path.display()))
}

fn b2b() -> B2bMapping {
    B2bMapping {
        channel: "wholesale".into(),
        currency: "USD".into(),
        product_id_qualifiers: vec!["SK".into(), "VP".into(), "BP".into()],
        locations: [("NJ".to_string(), "wh-nj".to_string())].into(),
        ..B2bMapping::default()
    }
}

const ORDERS: &str = "\
order_id,line_id,sku,quantity,unit_price,currency,discount,occurred_at
PO-1,1,SKU-0001,12,18.50,USD,,2026-11-02T09:00:00Z
PO-1,2,,5,18.50,USD,,2026-11-02T09:00:00Z
PO-1,3,SKU-0002,-4,30.00,USD,,2026-11-02T09:00:00Z
PO-1,4,SKU-0003,6,12.00,USD,3.00,1794182400000
PO-1,5,SKU-0004,1,twelve,USD,,2026-11-02T09:00:00Z
PO-1,6,SKU-0005,1,2.00,USD,,last tuesday
";

const STOCK: &str = "\
sku,location_id,on_hand,counted_at
SKU-0001,NJ,140,2026-11-02T06:00:00Z
SKU-0002,wh-nj,-3,2026-11-02T06:00:00Z
SKU-0003,fba-us,22,2026-11-02T06:00:00Z
";

#[tokio::test]
async fn drop_dir_publishes_good_rows_rejects_bad_ones_and_processes_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.csv"), ORDERS).unwrap();
    std::fs::write(dir.path().join("stock.csv"), STOCK).unwrap();
    std::fs::write(dir.path().join("po.edi"), payload("edi-x12-850.edi")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();

    let mut drop_dir = DropDir::open(dir.path(), None, b2b()).unwrap();
    let mut sink = MemorySink::default();
    let reports = drop_dir.scan(&mut sink).await.unwrap();
    let summary: Vec<(&str, usize, usize)> =
        reports.iter().map(|r| (r.name.as_str(), r.published, r.rejected)).collect();
    assert_eq!(summary, [("notes.txt", 0, 1), ("orders.csv", 2, 4), ("po.edi", 3, 0), ("stock.csv", 2, 1)]);

    let rejects = std::fs::read_to_string(dir.path().join("orders.csv.rejects.csv")).unwrap();
    assert_eq!(
        rejects,
        "row,reason,message\n\
         line 3,empty_sku,sku is empty\n\
         line 4,bad_quantity,\"quantity \"\"-4\"\" is not a whole number above 0\"\n\
         line 6,missing_price,\"unit_price \"\"twelve\"\" is not an amount\"\n\
         line 7,bad_time,\"occurred_at \"\"last tuesday\"\" is not a date-time or Unix ms\"\n"
    );
    let stock_rejects = std::fs::read_to_string(dir.path().join("stock.csv.rejects.csv")).unwrap();
    assert!(stock_rejects.contains("line 3,bad_quantity"), "{stock_rejects}");
    assert!(
        std::fs::read_to_string(dir.path().join("notes.txt.rejects.csv")).unwrap().contains("bad_header")
    );

    let ids: Vec<&str> = sink.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "b2b:order:PO-1:line:1:placed",
            "b2b:order:PO-1:line:4:placed",
            "x12:000123456:4600000406:line:000100001:placed",
            "x12:000123456:4600000406:line:000200001:placed",
            "x12:000123456:4600000406:line:000200002:placed",
            "b2b:stock:SKU-0001:wh-nj:1793599200000",
            "b2b:stock:SKU-0003:fba-us:1793599200000",
        ]
    );
    let Some(Body::OrderLinePlaced(line)) = &sink.events[1].body else { panic!() };
    assert_eq!((line.quantity, line.discount.as_ref().unwrap().amount.as_str()), (6, "3.00"));

    // nothing new: nothing processed again, also after a restart
    assert!(drop_dir.scan(&mut sink).await.unwrap().is_empty());
    let mut reopened = DropDir::open(dir.path(), None, b2b()).unwrap();
    assert!(reopened.scan(&mut sink).await.unwrap().is_empty());
    assert_eq!(sink.events.len(), 7);

    // a file replaced under the same name with new content is new
    std::fs::write(
        dir.path().join("stock.csv"),
        "sku,location_id,on_hand,counted_at\nSKU-0001,NJ,90,2026-11-03T06:00:00Z\n",
    )
    .unwrap();
    let reports = reopened.scan(&mut sink).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].published, reports[0].rejected), (1, 0));
}

#[tokio::test]
async fn x12_rows_with_errors_are_rejected_by_segment() {
    let text = String::from_utf8(payload("edi-x12-850.edi")).unwrap();
    // break the second line's quantity and drop the third line's part numbers
    let text = text.replace("PO1*000200001*2000*YD", "PO1*000200001*lots*YD").replace(
        "PO1*000200002*1000*YD*3.41*WE***BP*A_QF001-RED*VN*SINGLE LINE DIAMOND PATTERN",
        "PO1*000200002*1000*YD*3.41*WE",
    );
    let mapped = b2b().map_x12(&text);
    assert_eq!(mapped.events.len(), 1);
    let refused: Vec<(&str, &str)> = mapped.refused.iter().map(|r| (r.item.as_str(), r.reason)).collect();
    assert_eq!(refused, [("segment 33", "bad_quantity"), ("segment 42", "empty_sku")]);

    // a purchase order cancellation (BEG01 = 01) cancels its lines
    let cancel = String::from_utf8(payload("edi-x12-850.edi")).unwrap().replace("BEG*00*SA", "BEG*01*SA");
    let mapped = b2b().map_x12(&cancel);
    assert_eq!(mapped.events.len(), 3);
    assert!(matches!(mapped.events[0].body, Some(Body::OrderLineCancelled(_))));
    assert_eq!(mapped.events[0].event_id, "x12:000123456:4600000406:line:000100001:cancelled");
}

/// What many EDI and spreadsheet exports put before the first byte.
const BOM: &str = "\u{feff}";

#[tokio::test]
async fn a_leading_byte_order_mark_is_ignored_in_x12_and_csv_files() {
    let plain = String::from_utf8(payload("edi-x12-850.edi")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("po.edi"), format!("{BOM}{plain}")).unwrap();
    std::fs::write(dir.path().join("orders.csv"), format!("{BOM}{ORDERS}")).unwrap();

    let mut sink = MemorySink::default();
    let reports = DropDir::open(dir.path(), None, b2b()).unwrap().scan(&mut sink).await.unwrap();
    let summary: Vec<(&str, usize, usize)> =
        reports.iter().map(|r| (r.name.as_str(), r.published, r.rejected)).collect();
    assert_eq!(summary, [("orders.csv", 2, 4), ("po.edi", 3, 0)]);
    let mut expected = b2b().map_csv(ORDERS).events;
    expected.extend(b2b().map_x12(&plain).events);
    assert_eq!(sink.events, expected, "the same events as without the mark");
}

#[test]
fn a_po1_with_only_a_vendor_item_number_maps_by_default() {
    let config = ConnectorConfig::parse(
        "[drop_dir]\nchannel = \"wholesale\"\ndir = \"/tmp/drop\"\ncurrency = \"USD\"\n",
    )
    .unwrap();
    let options = config.drop_dir.unwrap();
    assert_eq!(options.product_id_qualifiers, ["SK", "VP", "BP", "VN"]);
    let text = String::from_utf8(payload("edi-x12-850.edi")).unwrap().replace(
        "PO1*000100001*2500*YD*2.53*WE***BP*A_QU001-BLK*VN*SINGLE LINE DIAMOND PATTERN",
        "PO1*000100001*2500*YD*2.53*WE***VN*V-QU001-BLK",
    );
    let mapped = B2bMapping::from_options(&options).map_x12(&text);
    assert!(mapped.refused.is_empty(), "{:?}", mapped.refused);
    let Some(Body::OrderLinePlaced(line)) = &mapped.events[0].body else { panic!("{:?}", mapped.events) };
    assert_eq!((line.line_id.as_str(), line.sku.as_str()), ("000100001", "V-QU001-BLK"));
    // a line with a buyer's part number too keeps taking that one
    let Some(Body::OrderLinePlaced(line)) = &mapped.events[1].body else { panic!() };
    assert_eq!(line.sku, "A_QF001-BLK");
}

#[tokio::test]
async fn amazon_dir_deduplicates_on_notification_id() {
    let dir = tempfile::tempdir().unwrap();
    let offer = payload("amazon-any-offer-changed.json");
    std::fs::write(dir.path().join("a.json"), &offer).unwrap();
    // the same notification delivered twice, as another file (pretty-printed differently)
    let again: serde_json::Value = serde_json::from_slice(&offer).unwrap();
    std::fs::write(dir.path().join("b.json"), serde_json::to_vec(&again).unwrap()).unwrap();
    std::fs::write(dir.path().join("c.json"), payload("amazon-orders-getOrderItems-sandbox.json")).unwrap();
    std::fs::write(dir.path().join("d.json"), b"{ not json").unwrap();

    let mapping = AmazonMapping {
        channel: "amazon".into(),
        default_marketplace: "ATVPDKIKX0DER".into(),
        default_fulfillment_channel: "AFN".into(),
        fba_locations: [("ATVPDKIKX0DER".to_string(), "fba-us".to_string())].into(),
        asins: [("123".to_string(), "SKU-0001".to_string())].into(),
        ..AmazonMapping::default()
    };
    let mut watcher = AmazonDir::open(dir.path(), mapping.clone()).unwrap();
    let mut sink = MemorySink::default();
    let reports = watcher.scan(&mut sink).await.unwrap();
    let summary: Vec<(&str, usize, usize)> =
        reports.iter().map(|r| (r.name.as_str(), r.published, r.rejected)).collect();
    assert_eq!(summary, [("a.json", 2, 0), ("c.json", 1, 0), ("d.json", 0, 1)]);
    assert_eq!(sink.events.len(), 3);

    let mut reopened = AmazonDir::open(dir.path(), mapping).unwrap();
    std::fs::write(dir.path().join("e.json"), &offer).unwrap();
    assert!(
        reopened.scan(&mut sink).await.unwrap().is_empty(),
        "a known NotificationId is not published again"
    );
    assert_eq!(sink.events.len(), 3);
}

fn amazon_source_options(dir: &Path) -> AmazonSourceOptions {
    let config = ConnectorConfig::parse(
        r#"
[amazon]
channel = "amazon"
listen = "127.0.0.1:0"
default_marketplace = "ATVPDKIKX0DER"
[amazon.fba_locations]
ATVPDKIKX0DER = "fba-us"
[amazon.asins]
123 = "SKU-0001"
"#,
    )
    .unwrap();
    let amazon = config.amazon.unwrap();
    AmazonSourceOptions { amazon, http: true, dir: Some(dir.to_path_buf()), poll_ms: 20 }
}

/// Whether the directory's state file names `file`, i.e. it was processed.
fn processed(dir: &Path, file: &str) -> bool {
    let state = std::fs::read_to_string(dir.join(".omnifold-processed")).unwrap_or_default();
    state.lines().any(|line| line.split('\t').nth(1) == Some(file))
}

async fn until_processed(dir: &Path, file: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !processed(dir, file) {
        assert!(tokio::time::Instant::now() < deadline, "{file} was not processed in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn amazon_watcher_beside_the_receiver_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let source =
        amazon::source(amazon_source_options(dir.path()), || Ok(MemorySink::default())).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(source.run(async {
        let _ = stopped.await;
    }));

    std::fs::write(dir.path().join("a.json"), payload("amazon-any-offer-changed.json")).unwrap();
    until_processed(dir.path(), "a.json").await;

    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), running).await;
    ended.expect("the source stops on shutdown").unwrap().expect("the source ran");

    // the watcher is gone with the receiver: a file dropped now stays where it is
    std::fs::write(dir.path().join("b.json"), payload("amazon-orders-getOrderItems-sandbox.json")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(processed(dir.path(), "a.json") && !processed(dir.path(), "b.json"));
}
