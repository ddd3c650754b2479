//! serde helpers for CRI fields whose JSON form in berth's records predates the proto type.

/// `bytes` fields that hold text (env values: `KeyValue.value` was a `string` before CRI
/// v0.34): written as a JSON string when valid UTF-8 (as records always held them), else as
/// an array of numbers; both forms are read.
pub mod bytes_as_string {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(v) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(v),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }

    #[cfg(test)]
    mod tests {
        use crate::cri::KeyValue;

        #[test]
        fn text_values_stay_json_strings_and_binary_round_trips() {
            let kv = KeyValue {
                key: "A".into(),
                value: b"x=1".to_vec(),
            };
            let json = serde_json::to_string(&kv).unwrap();
            assert_eq!(json, r#"{"key":"A","value":"x=1"}"#);
            assert_eq!(serde_json::from_str::<KeyValue>(&json).unwrap(), kv);
            let bin = KeyValue {
                key: "B".into(),
                value: vec![0xff, 0, 7],
            };
            let json = serde_json::to_string(&bin).unwrap();
            assert_eq!(serde_json::from_str::<KeyValue>(&json).unwrap(), bin);
        }
    }
}
