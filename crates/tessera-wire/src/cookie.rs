//! The `Cookie` request header (RFC 6265 §5.4: `name=value` pairs joined by
//! `; `).

/// The value of cookie `name` among `headers` (the values of every `Cookie`
/// header, in order); the first match wins. Surrounding double quotes are
/// dropped (RFC 6265 allows a quoted value).
pub fn find<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_named_pair_across_headers() {
        let headers = ["a=1; sid=\"x\"", "sid=y"];
        assert_eq!(find(headers, "sid"), Some("x"));
        assert_eq!(find(headers, "a"), Some("1"));
        assert_eq!(find(headers, "b"), None);
        assert_eq!(find(["sidx=1; =2; sid"], "sid"), None);
    }
}
