//! Which connector and adapter published an event, told from its event id.
//!
//! Events carry no header naming their source: the connectors publish the event alone, keyed
//! by SKU. What they do fix is the form of the ids they derive (`services/connector/src/
//! sources`), one per adapter, so the id is how the event log itself says where an event came
//! from. Any other id was written by a producer of the contract's JSON form, through the
//! generic NDJSON connector.

/// A connector (`omnifold-connector` subcommand) and the adapter within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSource {
    pub connector: &'static str,
    pub adapter: &'static str,
}

/// Id shapes, tried in order: (prefix, what must also appear, connector, adapter).
const SHAPES: [(&str, &str, &str, &str); 19] = [
    ("shopify:order:", "", "shopify", "orders webhook"),
    ("shopify:fulfillment:", "", "shopify", "fulfillments webhook"),
    ("shopify:refund:", "", "shopify", "refunds webhook"),
    ("shopify:inventory:", "", "shopify", "inventory levels webhook"),
    ("shopify:webhook:", ":inventory:", "shopify", "inventory levels webhook"),
    ("shopify:webhook:", ":variant:", "shopify", "products webhook"),
    ("woocommerce:order:", "", "woocommerce", "orders webhook"),
    ("amazon:order:", ":placed", "amazon", "order items (POST /amazon/order-items)"),
    ("amazon:order:", "", "amazon", "order change notifications"),
    ("amazon:fba:", "", "amazon", "FBA inventory notifications"),
    ("amazon:mfn:", "", "amazon", "MFN quantity notifications"),
    ("amazon:notification:", ":fba:", "amazon", "FBA inventory notifications"),
    ("amazon:notification:", ":offer:", "amazon", "offer change notifications"),
    ("amazon:notification:", ":buybox:", "amazon", "pricing health notifications"),
    ("amazon:notification:", ":mfn", "amazon", "MFN quantity notifications"),
    ("amazon:myi:", "", "amazon", "FBA inventory reports (watched directory)"),
    ("x12:", "", "drop-dir", "X12 850 purchase orders"),
    ("b2b:order:", "", "drop-dir", "CSV orders"),
    ("b2b:stock:", "", "drop-dir", "CSV stock counts"),
];

const GENERIC: EventSource = EventSource { connector: "ndjson", adapter: "contract JSON lines" };

impl EventSource {
    /// The source an event id names.
    pub fn of(event_id: &str) -> EventSource {
        SHAPES
            .iter()
            .find(|(prefix, infix, _, _)| {
                event_id.strip_prefix(prefix).is_some_and(|rest| infix.is_empty() || rest.contains(infix))
            })
            .map_or(GENERIC, |(_, _, connector, adapter)| EventSource { connector, adapter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_each_adapter_by_its_ids() {
        let cases = [
            ("shopify:order:820982911946154500:line:466157049:placed", "shopify", "orders webhook"),
            ("shopify:fulfillment:255858046:line:466157049:shipped", "shopify", "fulfillments webhook"),
            (
                "shopify:webhook:b54557e4:inventory:271878346596884015:905684977",
                "shopify",
                "inventory levels webhook",
            ),
            ("shopify:webhook:b54557e4:variant:642667041472714922:price", "shopify", "products webhook"),
            (
                "amazon:order:902-3159896-1390916:item:68828574383266:placed",
                "amazon",
                "order items (POST /amazon/order-items)",
            ),
            (
                "amazon:order:902-3159896-1390916:item:68828574383266:shipped:1",
                "amazon",
                "order change notifications",
            ),
            ("amazon:notification:8498e8ce:fba:ATVPDKIKX0DER", "amazon", "FBA inventory notifications"),
            ("amazon:notification:8498e8ce:mfn", "amazon", "MFN quantity notifications"),
            ("shopify:inventory:808950810:655441491:1794182400000:42", "shopify", "inventory levels webhook"),
            (
                "amazon:fba:SELLERSKU-1:ATVPDKIKX0DER:1794182400000:50",
                "amazon",
                "FBA inventory notifications",
            ),
            ("amazon:mfn:NLS-SHOES-03:1794182400000:99", "amazon", "MFN quantity notifications"),
            ("x12:ACME:PO-7:line:1", "drop-dir", "X12 850 purchase orders"),
            ("b2b:stock:SKU-1:wh-nj:1794182400000", "drop-dir", "CSV stock counts"),
            ("woocommerce:order:727:line:315:placed", "woocommerce", "orders webhook"),
            ("ev-00000001", "ndjson", "contract JSON lines"),
            ("shopify:something-else", "ndjson", "contract JSON lines"),
        ];
        for (id, connector, adapter) in cases {
            assert_eq!(EventSource::of(id), EventSource { connector, adapter }, "{id}");
        }
    }
}
