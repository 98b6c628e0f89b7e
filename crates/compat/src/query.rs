//! Query strings and path segments, decoded the way Starlette decodes them.

use std::collections::HashMap;

/// Percent-decodes `s` (and `+` as space when `plus_is_space`), reading the bytes as
/// UTF-8 with replacement characters, like `urllib.parse.unquote(errors="replace")`.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters: pairs split on `&`, blank values kept, the last value of a repeated
/// name wins (Starlette's `request.query_params[name]`).
#[derive(Debug, Default, Clone)]
pub struct Query {
    last: HashMap<String, String>,
    all: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut q = Query::default();
        for piece in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            let (k, v) = (percent_decode(k, true), percent_decode(v, true));
            q.last.insert(k.clone(), v.clone());
            q.all.push((k, v));
        }
        q
    }

    /// The value FastAPI validates for a scalar parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.last.get(name).map(String::as_str)
    }

    /// Every value of a repeated parameter, in order (FastAPI's `List[...]` parameters).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.all
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb", false), "a/b");
        assert_eq!(percent_decode("%EF%BC%96x", false), "\u{ff16}x");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(percent_decode("%ff", false), "\u{fffd}");
    }

    #[test]
    fn last_wins_and_blank_kept() {
        let q = Query::parse(Some("limit=1&limit=2&offset&&x=%20"));
        assert_eq!(q.get("limit"), Some("2"));
        assert_eq!(q.get("offset"), Some(""));
        assert_eq!(q.get("x"), Some(" "));
        assert_eq!(q.get_all("limit").collect::<Vec<_>>(), ["1", "2"]);
    }
}
