//! Wholesale / B2B files: X12 850 purchase orders and CSV exports (order lines, stock
//! counts). Mapping is per row: a bad row is refused with its number and reason, the good
//! rows still map.
//!
//! Ids: `x12:<sender>:<po>:line:<PO101>:placed|cancelled`,
//! `b2b:order:<order>:line:<line>:placed`, `b2b:stock:<sku>:<location>:<counted at ms>`: the
//! same fact dropped again (even under another file name) maps to the same id. A stock count
//! older than the last one applied for its (sku, location) is ignored (`stale_level`): the
//! marks are kept in memory, for the run ([`LevelMarks`]).
//!
//! The source: the drop directory of `[drop_dir]`, watched by [`files`](crate::files) and
//! built by [`source`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use omnifold_proto::{Body, OrderLineCancelled, OrderLinePlaced, StockCounted};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::config::DropDirOptions;
use crate::decimal::parse_decimal;
use crate::files::{DirSource, FilesError};
use crate::mapping::{Mapped, money, money_if_positive};
use crate::publish::Sink;
use crate::sources::levels::LevelMarks;
use crate::timefmt::{parse_ms, parse_yyyymmdd_ms};

/// The drop directory of `[drop_dir]`, publishing to `sink`.
pub async fn source<S: Sink>(
    options: DropDirOptions,
    sink: S,
) -> Result<DirSource<B2bMapping, S>, FilesError> {
    let poll = Duration::from_millis(options.poll_ms);
    let mapping = B2bMapping::from_options(&options);
    DirSource::open(options.dir, options.state, mapping, sink, poll).await
}

/// How partner ids become contract ids; built from `[drop_dir]`.
#[derive(Debug, Clone, Default)]
pub struct B2bMapping {
    pub channel: String,
    pub currency: String,
    pub product_id_qualifiers: Vec<String>,
    pub parts: BTreeMap<String, String>,
    pub locations: BTreeMap<String, String>,
    /// The newest stock count applied per (sku, location) in the files' own names; clones
    /// share them.
    pub levels: Arc<LevelMarks>,
}

impl B2bMapping {
    pub fn from_options(options: &DropDirOptions) -> Self {
        B2bMapping {
            channel: options.channel.clone(),
            currency: options.currency.clone(),
            product_id_qualifiers: options.product_id_qualifiers.clone(),
            parts: options.parts.clone(),
            locations: options.locations.clone(),
            levels: Arc::default(),
        }
    }

    /// Maps an X12 interchange of 850 purchase orders. Refusals name the segment number
    /// (counted from 1 over the whole file) and why.
    pub fn map_x12(&self, text: &str) -> Mapped {
        let text = strip_bom(text);
        let mut mapped = Mapped::default();
        let Some(delimiters) = Delimiters::of(text) else {
            mapped.refuse("segment 1", "malformed", "the file does not start with a valid ISA segment");
            return mapped;
        };
        let segments: Vec<&str> =
            text.split(delimiters.segment).map(str::trim).filter(|s| !s.is_empty()).collect();
        let mut sender = String::new();
        let mut po: Option<PurchaseOrder> = None;
        for (index, segment) in segments.iter().enumerate() {
            let number = index + 1;
            let elements: Vec<&str> = segment.split(delimiters.element).collect();
            let element = |i: usize| elements.get(i).map(|e| e.trim()).unwrap_or("");
            match elements[0].trim() {
                "ISA" => sender = element(6).to_string(),
                "ST" if element(1) == "850" => po = Some(PurchaseOrder::default()),
                "ST" => mapped.ignore(
                    format!("segment {number}"),
                    "unsupported_transaction",
                    format!("transaction set {} is not a purchase order (850)", element(1)),
                ),
                "BEG" => {
                    if let Some(po) = &mut po {
                        po.purpose = element(1).to_string();
                        po.number = element(3).to_string();
                        po.date = parse_yyyymmdd_ms(element(5));
                        po.segment = number;
                    }
                }
                "CUR" => {
                    if let Some(po) = &mut po
                        && matches!(element(1), "BY" | "SE")
                        && !element(2).is_empty()
                    {
                        po.currency = Some(element(2).to_string());
                    }
                }
                "PO1" => {
                    if let Some(po) = &mut po {
                        po.lines.push((number, elements.iter().map(|e| e.trim().to_string()).collect()));
                    }
                }
                "SE" => {
                    if let Some(po) = po.take() {
                        self.purchase_order(&mut mapped, &sender, po);
                    }
                }
                _ => {}
            }
        }
        if let Some(po) = po {
            mapped.refuse(
                format!("segment {}", po.segment),
                "malformed",
                format!("purchase order {} has no SE segment: the transaction is incomplete", po.number),
            );
        }
        mapped
    }

    fn purchase_order(&self, mapped: &mut Mapped, sender: &str, po: PurchaseOrder) {
        let beg = format!("segment {}", po.segment);
        if po.number.is_empty() {
            mapped.refuse(beg, "malformed", "BEG03 (purchase order number) is missing");
            return;
        }
        let Some(at) = po.date.filter(|ms| *ms > 0) else {
            mapped.refuse(
                beg,
                "bad_time",
                format!("BEG05 of purchase order {} is not a CCYYMMDD date", po.number),
            );
            return;
        };
        let cancel = match po.purpose.as_str() {
            "00" => false,
            "01" => true,
            other => {
                mapped.refuse(
                    beg,
                    "unsupported_purpose",
                    format!("BEG01 {other:?}: only 00 (original) and 01 (cancel)"),
                );
                return;
            }
        };
        let currency = po.currency.as_deref().unwrap_or(&self.currency);
        let sender = if sender.is_empty() { "unknown" } else { sender };
        for (number, el) in &po.lines {
            let what = format!("segment {number}");
            let get = |i: usize| el.get(i).map(String::as_str).unwrap_or("");
            let line_id = get(1);
            if line_id.is_empty() {
                mapped.refuse(what, "malformed", "PO101 (line number) is missing");
                continue;
            }
            let Some(sku) = self.product_sku(el) else {
                mapped.refuse(
                    what,
                    "empty_sku",
                    format!("line {line_id} has none of the product ids {:?}", self.product_id_qualifiers),
                );
                continue;
            };
            let id = format!("x12:{sender}:{}:line:{line_id}", po.number);
            if cancel {
                mapped.push(
                    format!("{id}:cancelled"),
                    &self.channel,
                    at,
                    Body::OrderLineCancelled(OrderLineCancelled {
                        order_id: po.number.clone(),
                        line_id: line_id.to_string(),
                        sku,
                    }),
                );
                continue;
            }
            let quantity = match parse_decimal(get(2)) {
                Some(q) if q > Decimal::ZERO && q.fract().is_zero() => q.to_i64(),
                _ => None,
            };
            let Some(quantity) = quantity else {
                mapped.refuse(
                    what,
                    "bad_quantity",
                    format!("PO102 {:?} is not a whole quantity above 0", get(2)),
                );
                continue;
            };
            let Some(price) = parse_decimal(get(4)).filter(|p| *p >= Decimal::ZERO) else {
                mapped.refuse(what, "missing_price", format!("PO104 {:?} is not a unit price", get(4)));
                continue;
            };
            mapped.push(
                format!("{id}:placed"),
                &self.channel,
                at,
                Body::OrderLinePlaced(OrderLinePlaced {
                    order_id: po.number.clone(),
                    line_id: line_id.to_string(),
                    sku,
                    quantity,
                    unit_price: Some(money(price, currency)),
                    discount: None,
                    channel_fee: None,
                    location_id: None,
                }),
            );
        }
    }

    /// The PO1 product id under the first configured qualifier present (PO106/107 pairs on).
    fn product_sku(&self, elements: &[String]) -> Option<String> {
        let pairs: Vec<(&str, &str)> = elements
            .get(6..)
            .unwrap_or(&[])
            .chunks(2)
            .filter_map(|pair| match pair {
                [q, id] if !q.is_empty() && !id.is_empty() => Some((q.as_str(), id.as_str())),
                _ => None,
            })
            .collect();
        self.product_id_qualifiers.iter().find_map(|wanted| {
            pairs
                .iter()
                .find(|(q, _)| q == wanted)
                .map(|(_, id)| self.parts.get(*id).cloned().unwrap_or(id.to_string()))
        })
    }

    /// Maps a CSV export: order lines (columns order_id, line_id, sku, quantity,
    /// unit_price, occurred_at; optional currency, discount, location_id) or stock counts
    /// (sku, location_id, on_hand, counted_at). Refusals name the file line.
    pub fn map_csv(&self, text: &str) -> Mapped {
        let text = strip_bom(text);
        let mut mapped = Mapped::default();
        let mut reader =
            csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
        let header: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(|c| c.to_ascii_lowercase()).collect(),
            Err(e) => {
                mapped.refuse("line 1", "malformed", format!("unreadable header: {e}"));
                return mapped;
            }
        };
        let col = |name: &str| header.iter().position(|c| c == name);
        let kind = if ["order_id", "line_id", "sku", "quantity", "unit_price", "occurred_at"]
            .iter()
            .all(|c| col(c).is_some())
        {
            CsvKind::Orders
        } else if ["sku", "location_id", "on_hand"].iter().all(|c| col(c).is_some())
            && (col("counted_at").is_some() || col("occurred_at").is_some())
        {
            CsvKind::Stock
        } else {
            mapped.refuse(
                "line 1",
                "bad_header",
                "the header is neither an order export (order_id, line_id, sku, quantity, unit_price, occurred_at) \
                 nor a stock count (sku, location_id, on_hand, counted_at)",
            );
            return mapped;
        };
        for record in reader.records() {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    mapped.refuse(format!("line {line}"), "malformed", format!("unreadable row: {e}"));
                    continue;
                }
            };
            let line = record.position().map_or(0, |p| p.line());
            let what = format!("line {line}");
            let row = Row { header: &header, record: &record };
            match kind {
                CsvKind::Orders => self.csv_order(&mut mapped, &what, &row),
                CsvKind::Stock => self.csv_stock(&mut mapped, &what, &row),
            }
        }
        mapped
    }

    fn csv_order(&self, mapped: &mut Mapped, what: &str, row: &Row<'_>) {
        let get = |name: &str| row.get(name);
        let (order, line, sku) = (get("order_id"), get("line_id"), get("sku"));
        if order.is_empty() || line.is_empty() {
            mapped.refuse(what, "missing_field", "order_id and line_id are required");
            return;
        }
        if sku.is_empty() {
            mapped.refuse(what, "empty_sku", "sku is empty");
            return;
        }
        let Some(quantity) = get("quantity").parse::<i64>().ok().filter(|q| *q > 0) else {
            mapped.refuse(
                what,
                "bad_quantity",
                format!("quantity {:?} is not a whole number above 0", get("quantity")),
            );
            return;
        };
        let Some(price) = parse_decimal(get("unit_price")).filter(|p| *p >= Decimal::ZERO) else {
            mapped.refuse(
                what,
                "missing_price",
                format!("unit_price {:?} is not an amount", get("unit_price")),
            );
            return;
        };
        let discount = match get("discount") {
            "" => Decimal::ZERO,
            text => match parse_decimal(text).filter(|d| *d >= Decimal::ZERO) {
                Some(d) => d,
                None => {
                    mapped.refuse(what, "bad_amount", format!("discount {text:?} is not an amount"));
                    return;
                }
            },
        };
        let Some(at) = time(get("occurred_at")) else {
            mapped.refuse(
                what,
                "bad_time",
                format!("occurred_at {:?} is not a date-time or Unix ms", get("occurred_at")),
            );
            return;
        };
        let currency = match get("currency") {
            "" => self.currency.as_str(),
            c => c,
        };
        let location_id = match get("location_id") {
            "" => None,
            l => Some(self.location(l)),
        };
        mapped.push(
            format!("b2b:order:{order}:line:{line}:placed"),
            &self.channel,
            at,
            Body::OrderLinePlaced(OrderLinePlaced {
                order_id: order.to_string(),
                line_id: line.to_string(),
                sku: self.parts.get(sku).cloned().unwrap_or(sku.to_string()),
                quantity,
                unit_price: Some(money(price, currency)),
                discount: money_if_positive(discount, currency),
                channel_fee: None,
                location_id,
            }),
        );
    }

    fn csv_stock(&self, mapped: &mut Mapped, what: &str, row: &Row<'_>) {
        let get = |name: &str| row.get(name);
        let (sku, location) = (get("sku"), get("location_id"));
        if sku.is_empty() {
            mapped.refuse(what, "empty_sku", "sku is empty");
            return;
        }
        if location.is_empty() {
            mapped.refuse(what, "missing_location", "location_id is empty");
            return;
        }
        let Some(on_hand) = get("on_hand").parse::<i64>().ok().filter(|q| *q >= 0) else {
            mapped.refuse(
                what,
                "bad_quantity",
                format!("on_hand {:?} is not a whole number >= 0", get("on_hand")),
            );
            return;
        };
        let when = if get("counted_at").is_empty() { get("occurred_at") } else { get("counted_at") };
        let Some(at) = time(when) else {
            mapped.refuse(what, "bad_time", format!("counted_at {when:?} is not a date-time or Unix ms"));
            return;
        };
        let key = format!("stock:{sku}:{location}");
        let sku = self.parts.get(sku).cloned().unwrap_or(sku.to_string());
        let location_id = self.location(location);
        mapped.push_level(
            format!("b2b:stock:{sku}:{location_id}:{at}"),
            key,
            at,
            Body::StockCounted(StockCounted { sku, location_id, on_hand }),
        );
    }

    fn location(&self, name: &str) -> String {
        self.locations.get(name).cloned().unwrap_or_else(|| name.to_string())
    }
}

/// One CSV record, read by column name.
struct Row<'a> {
    header: &'a [String],
    record: &'a csv::StringRecord,
}

impl<'a> Row<'a> {
    fn get(&self, name: &str) -> &'a str {
        self.header.iter().position(|c| c == name).and_then(|i| self.record.get(i)).unwrap_or("")
    }
}

#[derive(Clone, Copy)]
enum CsvKind {
    Orders,
    Stock,
}

/// RFC 3339 or Unix milliseconds.
fn time(text: &str) -> Option<i64> {
    let ms = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        parse_ms(text)
    };
    ms.filter(|ms| *ms > 0)
}

#[derive(Default)]
struct PurchaseOrder {
    purpose: String,
    number: String,
    date: Option<i64>,
    currency: Option<String>,
    segment: usize,
    lines: Vec<(usize, Vec<String>)>,
}

struct Delimiters {
    element: char,
    segment: char,
}

impl Delimiters {
    /// The ISA segment fixes them: the element separator is its 4th character, and the
    /// segment terminator follows the component separator (ISA16).
    fn of(text: &str) -> Option<Self> {
        let text = text.trim_start();
        if !text.starts_with("ISA") {
            return None;
        }
        let element = text[3..].chars().next()?;
        let mut separators = 0;
        let mut chars = text.char_indices();
        for (_, c) in chars.by_ref() {
            if c == element {
                separators += 1;
                if separators == 16 {
                    break;
                }
            }
        }
        let _component = chars.next()?;
        let (_, segment) = chars.next()?;
        (separators == 16 && segment != element).then_some(Delimiters { element, segment })
    }
}

/// Whether text looks like X12.
pub fn is_x12(text: &str) -> bool {
    strip_bom(text).trim_start().starts_with("ISA")
}

/// The text after a leading UTF-8 byte-order mark, which many EDI and spreadsheet exports
/// write; it is not whitespace, so it would hide `ISA` or the first column's name.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}
