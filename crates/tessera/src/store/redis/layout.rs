//! How a session is laid out in Redis: its key names and its value.
//!
//! Public so that the benchmark's seeder writes exactly what the server
//! writes (bench/tessera-bench).
//!
//! A session is one string, not a hash of fields: a hash whose user agent
//! is longer than Redis's `hash-max-listpack-value` (64 bytes by default,
//! and a browser's is about 110) is stored as a full hash table, ~700 bytes
//! a session; one string is ~330. It is also one `GET` to read and nothing
//! to assemble. The value, version 1:
//!
//! ```text
//! 1 <last seen> <expires> <created>\x1f<id>\x1f<user id>\x1f<address>\x1f<user agent>
//! ```
//!
//! Times are Unix milliseconds in exactly 13 digits (until the year 2286),
//! so the last-seen time sits at a fixed offset and activity rewrites it in
//! place (`SETRANGE`, which keeps the time to live). The address and user
//! agent are empty when unknown and start with `=` when known (so an empty
//! one survives the round trip). `\x1f` (unit separator) cannot occur in an
//! id, an address or an HTTP header value; the user agent comes last, so
//! even if it held one the fields before it would still parse.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::core::secret::{SecretHash, session_tag};
use crate::core::sessions::{SessionRecord, UserMemo};
use crate::core::time::{from_millis, to_millis};
use crate::store::{StoreError, StoreResult};

/// The first byte of every value this layout writes.
const VERSION: u8 = b'1';
/// Digits in every time.
const TIME_DIGITS: usize = 13;
/// Where the last-seen time starts (0-based; Lua's `string.sub` adds one).
pub const SEEN_AT: usize = 2;
/// Where the absolute expiry starts.
const EXPIRES_AT: usize = SEEN_AT + TIME_DIGITS + 1;
/// Where the creation time starts.
const CREATED_AT: usize = EXPIRES_AT + TIME_DIGITS + 1;
/// The length of the fixed part, up to and including the first separator.
const HEAD: usize = CREATED_AT + TIME_DIGITS + 1;
/// Between the variable fields.
const SEPARATOR: char = '\x1f';
/// Before a known address or user agent.
const KNOWN: char = '=';

/// Lua helpers the scripts share (prepended to each): the times at their
/// offsets, and the n-th separated field (1 = id, 2 = user id) of a value,
/// `nil` for a value this layout did not write.
pub(super) const LUA_HELPERS: &str = r"
local function seen_of(v) return tonumber(string.sub(v, 3, 15)) end
local function expires_of(v) return tonumber(string.sub(v, 17, 29)) end
local function field(v, n)
  if string.sub(v, 1, 2) ~= '1 ' then return nil end
  local from = 45
  for _ = 2, n do
    local at = string.find(v, '\31', from, true)
    if not at then return nil end
    from = at + 1
  end
  local to = string.find(v, '\31', from, true)
  if not to then return nil end
  return string.sub(v, from, to - 1)
end
";

/// How many bytes of a value hold its version and both times `scan` reads
/// (`GETRANGE key 0 TIMES_END`, inclusive).
pub(super) const TIMES_END: usize = CREATED_AT - 2;

/// `<prefix>{tt}`: the hash tag of a tag byte.
fn tag_part(prefix: &str, tag: u8) -> String {
    format!("{prefix}{{{tag:02x}}}")
}

/// What a session key is, before its member.
pub fn session_base(prefix: &str, tag: u8) -> String {
    format!("{}s:", tag_part(prefix, tag))
}

/// What a user's index key is, before the user id.
pub fn index_base(prefix: &str, tag: u8) -> String {
    format!("{}u:", tag_part(prefix, tag))
}

/// A session's hash as key suffix and index member: base64url.
pub fn member(hash: &SecretHash) -> String {
    URL_SAFE_NO_PAD.encode(hash.0)
}

/// The key of the session with this hash.
pub fn session_key(prefix: &str, hash: &SecretHash) -> String {
    format!("{}{}", session_base(prefix, hash.0[0]), member(hash))
}

/// The key of a user's index.
pub fn index_key(prefix: &str, user_id: &str) -> String {
    format!("{}{user_id}", index_base(prefix, session_tag(user_id)))
}

/// A time as the value holds it: 13 digits.
pub fn stamp(ms: i64) -> StoreResult<String> {
    if !(0..10_i64.pow(TIME_DIGITS as u32)).contains(&ms) {
        return Err(StoreError::Backend(format!(
            "a session time out of range for Redis: {ms} ms"
        )));
    }
    Ok(format!("{ms:0width$}", width = TIME_DIGITS))
}

/// A session's value. Fails for a time out of range, or an id that holds
/// the separator.
pub fn encode(s: &SessionRecord) -> StoreResult<String> {
    if s.id.contains(SEPARATOR) || s.user_id.contains(SEPARATOR) {
        return Err(StoreError::Backend(
            "a session or user id with a control character".into(),
        ));
    }
    let ip = s.ip.as_deref().unwrap_or_default();
    let agent = s.user_agent.as_deref().unwrap_or_default();
    let mut v =
        String::with_capacity(HEAD + s.id.len() + s.user_id.len() + ip.len() + agent.len() + 5);
    v.push(char::from(VERSION));
    for (i, t) in [s.last_seen_at, s.expires_at, s.created_at]
        .into_iter()
        .enumerate()
    {
        v.push(' ');
        v.push_str(&stamp(to_millis(t))?);
        debug_assert_eq!(v.len(), [EXPIRES_AT, CREATED_AT, HEAD][i] - 1);
    }
    for part in [s.id.as_str(), s.user_id.as_str()] {
        v.push(SEPARATOR);
        v.push_str(part);
    }
    for known in [&s.ip, &s.user_agent] {
        v.push(SEPARATOR);
        if let Some(text) = known {
            v.push(KNOWN);
            v.push_str(text);
        }
    }
    Ok(v)
}

/// A time at `at`, 13 digits.
fn time_at(v: &[u8], at: usize) -> Option<i64> {
    let digits = v.get(at..at + TIME_DIGITS)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The last-seen and expiry times of a value, or of its first
/// [`TIMES_END`] + 1 bytes.
pub(super) fn times(v: &[u8]) -> Option<(i64, i64)> {
    if v.first() != Some(&VERSION) {
        return None;
    }
    Some((time_at(v, SEEN_AT)?, time_at(v, EXPIRES_AT)?))
}

/// An optional field: empty is unknown, `=text` is known.
fn optional(field: &str) -> Option<Option<String>> {
    if field.is_empty() {
        return Some(None);
    }
    field.strip_prefix(KNOWN).map(|t| Some(t.to_owned()))
}

/// A session from its hash and value; `None` for a value this layout did
/// not write (treated as absent).
pub fn decode(hash: SecretHash, v: &[u8]) -> Option<SessionRecord> {
    let (seen, expires) = times(v)?;
    let created = time_at(v, CREATED_AT)?;
    if v.get(HEAD - 1) != Some(&(SEPARATOR as u8)) {
        return None;
    }
    let rest = std::str::from_utf8(v.get(HEAD..)?).ok()?;
    let mut fields = rest.splitn(4, SEPARATOR);
    let (id, user_id) = (fields.next()?, fields.next()?);
    let (ip, user_agent) = (optional(fields.next()?)?, optional(fields.next()?)?);
    Some(SessionRecord {
        token_hash: hash,
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        created_at: from_millis(created),
        last_seen_at: from_millis(seen),
        expires_at: from_millis(expires),
        ip,
        user_agent,
        user_memo: UserMemo::default(),
    })
}

/// A hash from its member; `None` for text that is not one.
pub(super) fn hash_of(member_text: &str) -> Option<SecretHash> {
    URL_SAFE_NO_PAD
        .decode(member_text)
        .ok()
        .and_then(|b| SecretHash::from_slice(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ip: Option<&str>, agent: Option<&str>) -> SessionRecord {
        SessionRecord {
            token_hash: SecretHash([7; 32]),
            id: "ses_abc".into(),
            user_id: "usr_def".into(),
            created_at: from_millis(1_700_000_000_000),
            last_seen_at: from_millis(1_700_000_100_000),
            expires_at: from_millis(1_702_592_000_000),
            ip: ip.map(str::to_owned),
            user_agent: agent.map(str::to_owned),
            user_memo: UserMemo::default(),
        }
    }

    fn same(a: &SessionRecord, b: &SessionRecord) -> bool {
        (a.token_hash == b.token_hash)
            && (&a.id, &a.user_id, &a.ip, &a.user_agent)
                == (&b.id, &b.user_id, &b.ip, &b.user_agent)
            && (a.created_at, a.last_seen_at, a.expires_at)
                == (b.created_at, b.last_seen_at, b.expires_at)
    }

    #[test]
    fn a_value_reads_back_as_written() {
        for (ip, agent) in [
            (Some("203.0.113.9"), Some("Mozilla/5.0 (X11) \u{e9}")),
            (None, None),
            (Some(""), Some("")),
            (
                None,
                Some("=starts with the marker\x1fand holds a separator"),
            ),
        ] {
            let r = record(ip, agent);
            let v = encode(&r).unwrap();
            let back = decode(r.token_hash, v.as_bytes()).unwrap();
            assert!(same(&r, &back), "{ip:?} {agent:?}: {v:?}");
        }
    }

    #[test]
    fn the_times_sit_where_the_scripts_read_them() {
        let v = encode(&record(None, None)).unwrap();
        assert_eq!(&v[SEEN_AT..SEEN_AT + 13], "1700000100000");
        assert_eq!(&v[EXPIRES_AT..EXPIRES_AT + 13], "1702592000000");
        assert_eq!(&v[CREATED_AT..CREATED_AT + 13], "1700000000000");
        assert_eq!(
            times(&v.as_bytes()[..=TIMES_END]),
            Some((1_700_000_100_000, 1_702_592_000_000))
        );
        // The Lua helpers' offsets, 1-based.
        assert!(LUA_HELPERS.contains("string.sub(v, 3, 15)"));
        assert!(LUA_HELPERS.contains("string.sub(v, 17, 29)"));
        assert!(LUA_HELPERS.contains(&format!("local from = {}", HEAD + 1)));
    }

    #[test]
    fn values_it_did_not_write_are_absent() {
        let good = encode(&record(Some("::1"), None)).unwrap();
        let hash = SecretHash([7; 32]);
        for bad in [
            "",
            "2",
            &good.replacen('1', "2", 1),
            &good[..HEAD - 1],
            &good.replace("=::1", "::1"),
            &good.replacen("17", "1x", 1),
        ] {
            assert!(decode(hash, bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn times_out_of_range_and_separators_are_refused() {
        assert!(stamp(-1).is_err());
        assert!(stamp(10_000_000_000_000).is_err());
        assert_eq!(stamp(5).unwrap(), "0000000000005");
        let mut r = record(None, None);
        r.id = "ses\x1fx".into();
        assert!(encode(&r).is_err());
    }
}
