//! A minimal protobuf encoder: just what the Perfetto writer needs.
//!
//! Messages are written into one growing buffer. A nested message's length
//! is not known until it is written, so [`Proto::message`] reserves one byte
//! for it and shifts the body when the length needs more (rare: Perfetto
//! packets are small). Every length is minimally encoded.

/// Protobuf wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;

/// An encoder writing into a reusable buffer.
#[derive(Default)]
pub struct Proto {
    buf: Vec<u8>,
}

impl Proto {
    pub fn new() -> Self {
        Proto {
            buf: Vec::with_capacity(256),
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    /// `uint32`, `uint64` and enum fields.
    pub fn uint(&mut self, field: u32, v: u64) {
        self.tag(field, VARINT);
        self.varint(v);
    }

    /// `int32`/`int64` fields (negative values take ten bytes, as in protobuf).
    pub fn int(&mut self, field: u32, v: i64) {
        self.tag(field, VARINT);
        self.varint(v as u64);
    }

    pub fn bool(&mut self, field: u32, v: bool) {
        self.uint(field, u64::from(v));
    }

    /// `fixed64` fields.
    pub fn fixed64(&mut self, field: u32, v: u64) {
        self.tag(field, I64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn double(&mut self, field: u32, v: f64) {
        self.tag(field, I64);
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    pub fn bytes_field(&mut self, field: u32, v: &[u8]) {
        self.tag(field, LEN);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub fn string(&mut self, field: u32, v: &str) {
        self.bytes_field(field, v.as_bytes());
    }

    /// A nested message, written by `body`.
    pub fn message(&mut self, field: u32, body: impl FnOnce(&mut Self)) {
        self.tag(field, LEN);
        let at = self.buf.len();
        self.buf.push(0);
        body(self);
        let len = self.buf.len() - at - 1;
        if len < 0x80 {
            self.buf[at] = len as u8;
            return;
        }
        let mut prefix = [0u8; 10];
        let mut n = 0;
        let mut v = len as u64;
        while v >= 0x80 {
            prefix[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        prefix[n] = v as u8;
        n += 1;
        self.buf.splice(at..at + 1, prefix[..n].iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_match_the_protobuf_encoding() {
        let mut p = Proto::new();
        // The protobuf documentation's example: field 1 = 150 -> 08 96 01.
        p.uint(1, 150);
        assert_eq!(p.bytes(), [0x08, 0x96, 0x01]);
        p.clear();
        // int64 -1: ten bytes of varint.
        p.int(4, -1);
        assert_eq!(
            p.bytes(),
            [
                0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]
        );
        p.clear();
        // Field 58 needs a two-byte tag: (58 << 3) | 0 = 464 = d0 03.
        p.uint(58, 3);
        assert_eq!(p.bytes(), [0xd0, 0x03, 0x03]);
        p.clear();
        // fixed64 field 47, little-endian.
        p.fixed64(47, 0x0102_0304_0506_0708);
        assert_eq!(
            p.bytes(),
            [0xf9, 0x02, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]
        );
        p.clear();
        p.string(2, "testing");
        assert_eq!(p.bytes(), b"\x12\x07testing");
        p.clear();
        p.bool(2, true);
        p.double(5, 1.0);
        assert_eq!(p.bytes(), [0x10, 0x01, 0x29, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
    }

    #[test]
    fn nested_messages_get_their_length() {
        // TracePacket { timestamp: 1000, trusted_packet_sequence_id: 1,
        //   track_event { type: TYPE_SLICE_BEGIN, track_uuid: 5, name: "x" } }
        let mut p = Proto::new();
        p.uint(8, 1000);
        p.uint(10, 1);
        p.message(11, |m| {
            m.uint(9, 1);
            m.uint(11, 5);
            m.string(23, "x");
        });
        assert_eq!(
            p.bytes(),
            [
                0x40, 0xe8, 0x07, // timestamp
                0x50, 0x01, // trusted_packet_sequence_id
                0x5a, 0x08, // track_event, 8 bytes
                0x48, 0x01, // type
                0x58, 0x05, // track_uuid
                0xba, 0x01, 0x01, b'x', // name
            ]
        );
    }

    #[test]
    fn long_nested_messages_shift_their_body() {
        let long = "a".repeat(300);
        let mut p = Proto::new();
        p.uint(1, 7);
        p.message(2, |m| {
            m.message(3, |m| m.string(4, &long));
            m.uint(5, 1);
        });
        p.uint(6, 9);
        // inner: 22 ac 02 <300 bytes> = 303; outer body: 1a af 02 <303> 28 01 = 308.
        let b = p.bytes();
        assert_eq!(&b[..2], [0x08, 0x07]);
        assert_eq!(&b[2..5], [0x12, 0xb4, 0x02], "outer length 308");
        assert_eq!(&b[5..8], [0x1a, 0xaf, 0x02], "middle length 303");
        assert_eq!(&b[8..11], [0x22, 0xac, 0x02], "inner length 300");
        assert!(b[11..311].iter().all(|&c| c == b'a'));
        assert_eq!(&b[311..], [0x28, 0x01, 0x30, 0x09]);
    }

    #[test]
    fn empty_message_is_tag_and_zero() {
        let mut p = Proto::new();
        p.message(8, |_| {});
        assert_eq!(p.bytes(), [0x42, 0x00]);
    }
}
