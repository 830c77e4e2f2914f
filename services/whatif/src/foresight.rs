//! What a replay knows before it folds, having the whole history: which events carry an id
//! no other event of their partition carries, and which are the last to name their order
//! line.
//!
//! The coordinator must remember every id it accepted and keep every line, because it never
//! knows what comes next; a replay does. An id that occurs once needs no lookup and no
//! keeping ([`omnifold_domain::Fold::apply_unrepeated`]), and a settled line that no later
//! event names can be let go ([`omnifold_domain::PartitionState::let_go_settled_line`]).
//! Neither changes an output; each scenario's state then holds the open lines and the
//! repeated ids, not ten million of each.
//!
//! Ids and lines are compared by a 64-bit hash. A collision can only make an id look
//! repeated, or hide a line's last use: the replay then does what the coordinator does
//! (looks the id up, keeps the line), never less.

use std::hash::{Hash, Hasher};

use omnifold_domain::fact::LineKey;
use omnifold_proto::{Body, Event};
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};

use crate::History;

const UNIQUE_ID: u8 = 1;
const LAST_LINE_USE: u8 = 2;

/// Per event of a history, what later events hold for it.
#[derive(Debug, Clone, Default)]
pub struct Foresight {
    flags: Vec<u8>,
}

impl Foresight {
    /// One pass over the history, forward for ids and backward for lines.
    pub fn of(history: &History) -> Foresight {
        let mut flags = vec![UNIQUE_ID; history.len()];
        let mut first_of_id: FxHashMap<u64, u32> = FxHashMap::default();
        let mut lines: Vec<Option<u64>> = Vec::with_capacity(history.len());
        for (i, event) in history.events().enumerate() {
            let partition = history.partitions[i];
            let id = hash(&(partition, event.event_id.as_str()));
            if let Some(first) = first_of_id.insert(id, i as u32) {
                flags[first as usize] &= !UNIQUE_ID;
                flags[i] &= !UNIQUE_ID;
            }
            lines.push(line_of(&event).map(|(sku, line)| hash(&(partition, sku, line))));
        }
        let mut named_later = FxHashSet::default();
        for (i, line) in lines.into_iter().enumerate().rev() {
            if let Some(line) = line
                && named_later.insert(line)
            {
                flags[i] |= LAST_LINE_USE;
            }
        }
        Foresight { flags }
    }

    /// Whether no other event of its partition carries the event's id.
    pub fn unique_id(&self, index: usize) -> bool {
        self.flags.get(index).is_some_and(|f| f & UNIQUE_ID != 0)
    }

    /// Whether the event names an order line no later event names.
    pub fn last_line_use(&self, index: usize) -> bool {
        self.flags.get(index).is_some_and(|f| f & LAST_LINE_USE != 0)
    }
}

/// The SKU and order line an event names, if it names one.
pub fn line_of(event: &Event) -> Option<(&str, LineKey)> {
    let (sku, order_id, line_id) = match event.body.as_ref()? {
        Body::OrderLinePlaced(b) => (&b.sku, &b.order_id, &b.line_id),
        Body::OrderLineCancelled(b) => (&b.sku, &b.order_id, &b.line_id),
        Body::OrderLineShipped(b) => (&b.sku, &b.order_id, &b.line_id),
        Body::OrderLineReturned(b) => (&b.sku, &b.order_id, &b.line_id),
        _ => return None,
    };
    let line = LineKey {
        channel: event.channel.as_str().into(),
        order_id: order_id.as_str().into(),
        line_id: line_id.as_str().into(),
    };
    Some((sku, line))
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = FxHasher::default();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnifold_proto::{OrderLinePlaced, OrderLineShipped, StockCounted};

    fn event(id: &str, body: Body) -> Event {
        Event { event_id: id.into(), channel: "shop".into(), occurred_at_ms: 1, body: Some(body) }
    }

    fn placed(line: &str) -> Body {
        Body::OrderLinePlaced(OrderLinePlaced {
            order_id: "o".into(),
            line_id: line.into(),
            sku: "s".into(),
            quantity: 1,
            ..Default::default()
        })
    }

    fn shipped(line: &str) -> Body {
        Body::OrderLineShipped(OrderLineShipped {
            order_id: "o".into(),
            line_id: line.into(),
            sku: "s".into(),
            quantity: 1,
            ..Default::default()
        })
    }

    #[test]
    fn repeated_ids_per_partition_and_the_last_use_of_each_line_are_found() {
        let mut history = History::default();
        history.partition_count = 2;
        let count = Body::StockCounted(StockCounted { sku: "s".into(), ..Default::default() });
        history.push(event("a", placed("1")), Some(0));
        history.push(event("b", placed("2")), Some(0));
        history.push(event("a", placed("1")), Some(0)); // a redelivery
        history.push(event("a", count), Some(1)); // the same id in another partition
        history.push(event("c", shipped("1")), Some(0));
        history.push(event("d", shipped("2")), Some(1)); // line 2 of another partition
        let seen = Foresight::of(&history);
        let unique: Vec<bool> = (0..6).map(|i| seen.unique_id(i)).collect();
        assert_eq!(unique, [false, true, false, true, true, true]);
        let last: Vec<bool> = (0..6).map(|i| seen.last_line_use(i)).collect();
        assert_eq!(last, [false, true, false, false, true, true]);
    }
}
