//! Forgetting a deleted user's email in what is kept about them: what
//! [`super::UserStore::delete_user`] does to the user's audit events, in one
//! place for every backend.
//!
//! An event keeps its `user_id` (the id is opaque and is what the rest of
//! the log refers to) but no string in it may still name the address. A
//! string *mentions* the email when the email's key (`tessera_wire::email`:
//! NFKC with full case folding) is found in the string's key, so
//! `ALICE@Example.com`, `alice@example.com` and a fullwidth spelling are all
//! caught, inside longer text too; such a string is replaced as a whole by
//! [`REDACTED`] (cutting out only the address could leave a part of it).

use serde_json::Value;

/// What a string that mentioned the email becomes.
pub const REDACTED: &str = "[deleted]";

/// Every character whose key holds an `@` (`@`, the small and the
/// fullwidth commercial at): a text without any of them cannot mention an
/// email, so a backend reads only the events that hold one (checked
/// against every code point in the tests below).
pub const AT_SIGNS: [char; 3] = ['@', '\u{FE6B}', '\u{FF20}'];

/// The forms of a user's email to look for: the key the users table holds
/// and the key of the stored address (the same under the current rules; a
/// key stored under older rules may differ).
pub fn forms(email: &str, email_key: &str) -> Vec<String> {
    let mut forms = vec![tessera_wire::email::key(email_key)];
    let of_address = tessera_wire::email::key(email);
    if !forms.contains(&of_address) {
        forms.push(of_address);
    }
    forms.retain(|f| f.contains('@'));
    forms
}

/// Adds to `forms` the address an event of the user recorded as theirs
/// (`user_created` keeps the address the account was made with): a user
/// whose email was changed before the deletion is forgotten under every
/// address the log holds for them, not only the last one.
pub fn add_recorded(forms: &mut Vec<String>, detail: &Value) {
    if let Some(email) = detail.get("email").and_then(Value::as_str) {
        let key = tessera_wire::email::key(email);
        if key.contains('@') && !forms.contains(&key) {
            forms.push(key);
        }
    }
}

/// Whether `text` mentions one of `forms`.
pub fn mentions(text: &str, forms: &[String]) -> bool {
    if !text.contains(AT_SIGNS) {
        return false;
    }
    let key = tessera_wire::email::key(text);
    forms.iter().any(|form| key.contains(form.as_str()))
}

/// Replaces, in place, every string of `value` (object keys included, at
/// any depth) that mentions one of `forms` by [`REDACTED`]; returns
/// whether anything changed.
pub fn scrub(value: &mut Value, forms: &[String]) -> bool {
    match value {
        Value::String(s) => {
            if mentions(s, forms) {
                *s = REDACTED.to_owned();
                true
            } else {
                false
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| scrub(item, forms) | changed),
        Value::Object(map) => {
            let mut changed = false;
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                changed |= scrub(&mut item, forms);
                let key = if mentions(&key, forms) {
                    changed = true;
                    REDACTED.to_owned()
                } else {
                    key
                };
                map.insert(key, item);
            }
            changed
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// [`scrub`] for an optional text column (`user_agent`): the new value
/// when it changes.
pub fn scrub_text(text: Option<&str>, forms: &[String]) -> Option<String> {
    text.filter(|t| mentions(t, forms))
        .map(|_| REDACTED.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_spelling_of_the_address_is_found_and_replaced_whole() {
        let forms = forms("Zoë.Smith@Example.org", "zoë.smith@example.org");
        assert_eq!(forms, ["zoë.smith@example.org"]);
        let mut detail = json!({
            "email": "ZOË.SMITH@EXAMPLE.ORG",
            "nested": {"list": ["x", "invited Zoe\u{308}.Smith@example.org today"]},
            "fullwidth": "zoë.smith\u{FF20}example.org",
            "zoë.smith@example.org": 1,
            "other": "bob@example.org",
            "actor": "usr_1",
            "n": 3,
        });
        assert!(scrub(&mut detail, &forms));
        assert_eq!(
            detail,
            json!({
                "email": REDACTED,
                "nested": {"list": ["x", REDACTED]},
                "fullwidth": REDACTED,
                REDACTED: 1,
                "other": "bob@example.org",
                "actor": "usr_1",
                "n": 3,
            })
        );
        let mut clean = json!({"actor": "usr_1", "via": "admin"});
        assert!(!scrub(&mut clean, &forms));
        assert_eq!(
            scrub_text(Some("curl (zoë.smith@example.org)"), &forms).as_deref(),
            Some(REDACTED)
        );
        assert_eq!(scrub_text(Some("curl/8"), &forms), None);
        assert_eq!(scrub_text(None, &forms), None);
    }

    #[test]
    fn an_address_the_log_recorded_is_forgotten_too() {
        let mut forms = forms("new@example.org", "new@example.org");
        add_recorded(
            &mut forms,
            &json!({"email": "Old@Example.org", "roles": []}),
        );
        add_recorded(&mut forms, &json!({"email": "new@example.org"}));
        add_recorded(&mut forms, &json!({"email": "not an address"}));
        add_recorded(&mut forms, &json!({"via": "admin"}));
        assert_eq!(forms, ["new@example.org", "old@example.org"]);
        let mut login = json!({"detail": "signed in as OLD@example.org"});
        assert!(scrub(&mut login, &forms));
    }

    #[test]
    fn an_older_key_is_looked_for_too() {
        let forms = forms("Straße@example.de", "straße@example.de");
        assert_eq!(forms, ["strasse@example.de"]);
        assert!(mentions("STRASSE@EXAMPLE.DE", &forms));
        let both = super::forms("new@example.org", "old@example.org");
        assert_eq!(both, ["old@example.org", "new@example.org"]);
    }

    /// The prefilter is sound: no character outside [`AT_SIGNS`] has an
    /// `@` in its key.
    #[test]
    fn only_the_at_signs_have_an_at_in_their_key() {
        let mut found: Vec<char> = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| tessera_wire::email::key(c.encode_utf8(&mut [0; 4])).contains('@'))
            .collect();
        found.sort_unstable();
        let mut expected = AT_SIGNS.to_vec();
        expected.sort_unstable();
        assert_eq!(found, expected);
    }
}
