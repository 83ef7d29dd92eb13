//! A tiny JSON writer (the workload needs no parser and no serde): values,
//! objects that keep their key order, and RFC 8259 string escaping.

use std::fmt::Write as _;

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// Written with three decimals (enough for ms and rates); NaN and
    /// infinities become `null`.
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Obj),
}

/// A JSON object whose keys keep insertion order. Setting a key twice
/// replaces the earlier value in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Obj(Vec<(String, Json)>);

impl Obj {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Set `key` to `value` (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Json>) -> Self {
        self.set(key, value);
        self
    }

    /// Set `key` to `value`.
    pub fn set(&mut self, key: &str, value: impl Into<Json>) -> &mut Self {
        let value = value.into();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.0.push((key.to_owned(), value));
        }
        self
    }

    /// Append every key of `other` (replacing duplicates).
    pub fn extend(&mut self, other: Obj) -> &mut Self {
        for (k, v) in other.0 {
            self.set(&k, v);
        }
        self
    }

    /// The object as one line of JSON (no trailing newline).
    pub fn to_line(&self) -> String {
        let mut s = String::with_capacity(256);
        write_obj(self, &mut s);
        s
    }
}

impl Json {
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            Json::Float(f) => {
                if f.is_finite() {
                    let _ = write!(out, "{f:.3}");
                } else {
                    out.push_str("null");
                }
            }
            Json::Str(s) => write_str(s, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Obj(o) => write_obj(o, out),
        }
    }
}

fn write_obj(o: &Obj, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in o.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(k, out);
        out.push(':');
        v.write(out);
    }
    out.push('}');
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A hex string such as "0x7f1234560000" (addresses are strings so that no
/// consumer loses precision).
pub fn hex(v: u64) -> Json {
    Json::Str(format!("{v:#x}"))
}

impl From<bool> for Json {
    fn from(v: bool) -> Self {
        Json::Bool(v)
    }
}
impl From<i32> for Json {
    fn from(v: i32) -> Self {
        Json::Int(v.into())
    }
}
impl From<i64> for Json {
    fn from(v: i64) -> Self {
        Json::Int(v)
    }
}
impl From<u32> for Json {
    fn from(v: u32) -> Self {
        Json::UInt(v.into())
    }
}
impl From<u64> for Json {
    fn from(v: u64) -> Self {
        Json::UInt(v)
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Self {
        Json::UInt(v as u64)
    }
}
impl From<f64> for Json {
    fn from(v: f64) -> Self {
        Json::Float(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Self {
        Json::Str(v.to_owned())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Self {
        Json::Str(v)
    }
}
impl From<&String> for Json {
    fn from(v: &String) -> Self {
        Json::Str(v.clone())
    }
}
impl From<Obj> for Json {
    fn from(v: Obj) -> Self {
        Json::Obj(v)
    }
}
impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Self {
        Json::Arr(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Self {
        v.map_or(Json::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_order_and_replace() {
        let mut o = Obj::new()
            .with("scenario", "pte-touch")
            .with("pid", 42i32)
            .with("ok", true);
        o.set("pid", 43i32);
        assert_eq!(
            o.to_line(),
            r#"{"scenario":"pte-touch","pid":43,"ok":true}"#
        );
    }

    #[test]
    fn values() {
        let o = Obj::new()
            .with("a", vec![1u64, 2, 3])
            .with("n", Option::<u64>::None)
            .with("f", 1.5f64)
            .with("nan", f64::NAN)
            .with("neg", -7i64)
            .with("v", hex(0x7f00_0000_1000))
            .with("o", Obj::new().with("x", "y"))
            .with("e", Vec::<Json>::new());
        assert_eq!(
            o.to_line(),
            r#"{"a":[1,2,3],"n":null,"f":1.500,"nan":null,"neg":-7,"v":"0x7f0000001000","o":{"x":"y"},"e":[]}"#
        );
    }

    #[test]
    fn escaping() {
        let o = Obj::new().with("s", "a\"b\\c\nd\te\u{1}f/é");
        assert_eq!(o.to_line(), r#"{"s":"a\"b\\c\nd\te\u0001f/é"}"#);
    }

    #[test]
    fn extend_merges() {
        let mut a = Obj::new().with("x", 1u32).with("y", 2u32);
        a.extend(Obj::new().with("y", 3u32).with("z", 4u32));
        assert_eq!(a.to_line(), r#"{"x":1,"y":3,"z":4}"#);
    }
}
