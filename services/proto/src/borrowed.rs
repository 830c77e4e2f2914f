//! Protobuf encodings written straight from borrowed fields, for the output the coordinator
//! publishes most (a channel's availability, more than one per event): building the generated
//! message first copies each of its strings into a `String` of its own only to encode it and
//! drop it, three allocations per record.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::v1::ChannelAvailability;

/// The fields of a [`ChannelAvailability`], borrowed; [`ChannelAvailabilityRef::encode_to_vec`]
/// writes the bytes the generated message would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAvailabilityRef<'a> {
    pub sku: &'a str,
    pub channel: &'a str,
    pub available: i64,
    /// An [`crate::AllocationMode`], as the message holds it.
    pub mode: i32,
    /// An [`crate::AllocationRule`], as the message holds it.
    pub rule: i32,
    pub reason_event_id: &'a str,
    pub decided_at_ms: i64,
}

impl ChannelAvailabilityRef<'_> {
    /// The message's encoding: its fields in tag order, those at their default left out, as
    /// prost writes a proto3 message.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        put_str(1, self.sku, &mut buf);
        put_str(2, self.channel, &mut buf);
        put_int(3, self.available, &mut buf);
        put_int(4, i64::from(self.mode), &mut buf);
        put_int(5, i64::from(self.rule), &mut buf);
        put_str(6, self.reason_event_id, &mut buf);
        put_int(7, self.decided_at_ms, &mut buf);
        buf
    }

    pub fn encoded_len(&self) -> usize {
        str_len(1, self.sku)
            + str_len(2, self.channel)
            + int_len(3, self.available)
            + int_len(4, i64::from(self.mode))
            + int_len(5, i64::from(self.rule))
            + str_len(6, self.reason_event_id)
            + int_len(7, self.decided_at_ms)
    }

    /// The generated message holding the same fields.
    pub fn to_message(&self) -> ChannelAvailability {
        ChannelAvailability {
            sku: self.sku.to_string(),
            channel: self.channel.to_string(),
            available: self.available,
            mode: self.mode,
            rule: self.rule,
            reason_event_id: self.reason_event_id.to_string(),
            decided_at_ms: self.decided_at_ms,
        }
    }
}

fn put_str(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// An `int32` or `int64` field: both are a varint of the value sign-extended to 64 bits.
fn put_int(tag: u32, value: i64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value as u64, buf);
    }
}

fn str_len(tag: u32, value: &str) -> usize {
    match value.len() {
        0 => 0,
        len => key_len(tag) + encoded_len_varint(len as u64) + len,
    }
}

fn int_len(tag: u32, value: i64) -> usize {
    match value {
        0 => 0,
        value => key_len(tag) + encoded_len_varint(value as u64),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use proptest::prelude::*;

    use super::*;

    fn encodes_as_the_message(fields: ChannelAvailabilityRef<'_>) {
        let message = fields.to_message();
        assert_eq!(fields.encode_to_vec(), message.encode_to_vec(), "{fields:?}");
        assert_eq!(fields.encoded_len(), message.encoded_len(), "{fields:?}");
        assert_eq!(ChannelAvailability::decode(&fields.encode_to_vec()[..]).unwrap(), message);
    }

    #[test]
    fn defaults_negatives_and_long_strings_encode_as_the_generated_message_does() {
        let long = "x".repeat(300);
        let base = ChannelAvailabilityRef {
            sku: "SKU-1",
            channel: "shopify",
            available: 12,
            mode: 2,
            rule: 3,
            reason_event_id: "ev-1",
            decided_at_ms: 1_794_182_460_000,
        };
        encodes_as_the_message(base);
        encodes_as_the_message(ChannelAvailabilityRef {
            sku: "",
            channel: "",
            available: 0,
            mode: 0,
            rule: 0,
            reason_event_id: "",
            decided_at_ms: 0,
        });
        encodes_as_the_message(ChannelAvailabilityRef { available: -5, mode: -1, decided_at_ms: -1, ..base });
        encodes_as_the_message(ChannelAvailabilityRef { sku: &long, reason_event_id: "ü-ß", ..base });
    }

    proptest! {
        #[test]
        fn any_fields_encode_as_the_generated_message_does(
            sku in ".{0,40}",
            channel in "[a-z-]{0,30}",
            available: i64,
            mode: i32,
            rule: i32,
            reason_event_id in ".{0,200}",
            decided_at_ms: i64,
        ) {
            encodes_as_the_message(ChannelAvailabilityRef {
                sku: &sku,
                channel: &channel,
                available,
                mode,
                rule,
                reason_event_id: &reason_event_id,
                decided_at_ms,
            });
        }
    }
}
