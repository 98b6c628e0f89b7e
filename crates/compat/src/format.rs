//! Output formats as pydantic and Python print them.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Writes `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` into `buf` (years 0..=9999), returning the
/// length; hand-rolled because listing hundreds of resources formats thousands of these.
fn write_datetime(t: DateTime<Utc>, buf: &mut [u8; 27]) -> usize {
    fn put(buf: &mut [u8], at: usize, value: u32, width: usize) {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    put(buf, 0, t.year().clamp(0, 9999) as u32, 4);
    buf[4] = b'-';
    put(buf, 5, t.month(), 2);
    buf[7] = b'-';
    put(buf, 8, t.day(), 2);
    buf[10] = b'T';
    put(buf, 11, t.hour(), 2);
    buf[13] = b':';
    put(buf, 14, t.minute(), 2);
    buf[16] = b':';
    put(buf, 17, t.second(), 2);
    let micros = t.nanosecond() / 1000 % 1_000_000;
    if micros == 0 {
        buf[19] = b'Z';
        20
    } else {
        buf[19] = b'.';
        put(buf, 20, micros, 6);
        buf[26] = b'Z';
        27
    }
}

/// A UTC datetime that serializes the way pydantic does: six fraction digits when the
/// microseconds are not zero, none otherwise, and `Z`.
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub DateTime<Utc>);

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 27];
        let n = write_datetime(self.0, &mut buf);
        serializer.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
    }
}

/// `repr()` of a Python string: single quotes unless the text holds a single quote and
/// no double quote, with backslash escapes for quotes, backslashes and non-printables.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr()` of a Python list of strings: `['a', 'b']`.
pub fn py_list_repr<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| py_repr(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn datetimes() {
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 15, 30).unwrap();
        let json = |t| serde_json::to_string(&Timestamp(t)).unwrap();
        assert_eq!(json(t), r#""2026-11-22T10:15:30Z""#);
        let t = t + chrono::Duration::microseconds(123_456);
        assert_eq!(json(t), r#""2026-11-22T10:15:30.123456Z""#);
    }

    #[test]
    fn reprs() {
        assert_eq!(py_list_repr(&["a", "b'c"]), "['a', \"b'c\"]");
        assert_eq!(py_repr("a\"'b"), "'a\"\\'b'");
    }
}
