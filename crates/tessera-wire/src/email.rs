//! Email addresses: the rules one must meet, the form shown for it, and the
//! key that makes every spelling of it one account.
//!
//! [`canonical`] gives two strings for an acceptable address:
//!
//! - **`display`**: what the user typed, trimmed of surrounding whitespace
//!   and in Unicode NFC, so that the same text typed on two keyboards (a
//!   precomposed `é` or `e` + U+0301) is stored and shown alike. It is not
//!   case-folded: `Zoë@Example.org` is shown as typed.
//! - **`key`**: the uniqueness key, the one the users table holds and a login
//!   looks up. It is the address's *compatibility caseless* form (Unicode
//!   §3.13, D146: `NFKD(toCasefold(NFKD(toCasefold(NFD(X)))))`), stored in
//!   NFC; see [`key`].
//!
//! ## Why this key
//!
//! Two addresses are one account when they are the same text to a reader.
//! The key therefore identifies, beyond what NFC alone would:
//!
//! - **Case, by full Unicode case folding** (CaseFolding.txt, statuses C and
//!   F), not `str::to_lowercase`. Folding is Unicode's definition of
//!   case-insensitive matching (D144); lowercasing is not: `STRASSE` and
//!   `straße` (ß folds to `ss`, and `ẞ` too), `ΣΑΣ`/`σας`/`σασ` (lowercasing
//!   picks `ς` or `σ` by position; folding maps both to `σ`), Cherokee, and
//!   the Greek iota-subscript forms all slip through `to_lowercase`. The
//!   price is a rare false conflict: `a@faß.de` and `a@fass.de` are
//!   different mailboxes under IDNA2008, yet one key. That costs the second
//!   person a registration (409, which an operator can sort out); the other
//!   way round, a look-alike address would let someone pass as another user.
//!   Folding can leave a string unnormalised, so it is normalised again.
//! - **Compatibility variants, by NFKC**: fullwidth `ａｌｉｃｅ`, ligatures
//!   (`ﬁ` is `fi`), mathematical letters (`𝐚`), the Kelvin sign, superscript
//!   digits. They draw as the plain letters do (a ligature is identical), so
//!   the "NFC, then fold" would still leave look-alike accounts. The
//!   domain part is mapped this way anyway when it is resolved (IDNA's UTS
//!   #46 mapping is NFKC with case folding), so the key names the same host
//!   the address reaches.
//!
//! The key must meet the same character and shape rules as what was typed:
//! a fullwidth `＠`, a `‥` or a `＜` is read as the `@`, `..` or `<` it
//! stands for, and refused as that would be.
//!
//! Not covered: look-alikes across scripts (Cyrillic `а` for Latin `a`,
//! Turkish dotless `ı`). They are different letters that draw alike; telling
//! them apart needs Unicode's confusable skeletons (UTS #39) or a
//! mixed-script rule, and would refuse real addresses.
//!
//! Normalisation and case folding of assigned characters never change from
//! one Unicode version to the next (Unicode's stability policy); a code point
//! unassigned today could map differently once assigned, which is why the
//! server re-keys stored addresses by a named step (`store::rekey`).
//!
//! ## Invisible characters
//!
//! Any `Default_Ignorable_Code_Point` ([`is_default_ignorable`]) is refused:
//! zero-width spaces and joiners, bidi controls, the soft hyphen, variation
//! selectors, tags, Hangul fillers, the Mongolian vowel separator. A
//! renderer shows none of them, so two addresses differing only by one
//! look the same. So is U+2800 BRAILLE PATTERN BLANK and the interlinear
//! annotation controls (U+FFF9..U+FFFB), which draw nothing either but are
//! not in that property. The zero-width (non-)joiners that some Persian
//! and Indic spellings use are refused with them: an address is an
//! identifier, and an invisible difference is what this rule is about.

use std::fmt;

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;

/// The longest address, in bytes (RFC 5321's path limit less the brackets).
pub const MAX_LEN: usize = 254;
/// The longest local part (before `@`), in bytes (RFC 5321).
pub const LOCAL_MAX_LEN: usize = 64;
/// The longest label of the domain, in bytes (RFC 1035).
pub const LABEL_MAX_LEN: usize = 63;
/// The longest key, in bytes. Compatibility mappings can lengthen text
/// (`㌀` is four letters), so the key has its own bound, far above what
/// an address of [`MAX_LEN`] bytes reaches in practice and well below what
/// a database index entry may hold (PostgreSQL's B-tree: about 2.7 kB).
pub const KEY_MAX_LEN: usize = 1024;

/// Characters RFC 5322 only allows quoted (and the backtick, for shells).
const SPECIAL: &str = "<>()[]\\,;:\"`";

/// An acceptable address: what is shown, and the uniqueness key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// Trimmed, NFC, case kept.
    pub display: String,
    /// See [`key`].
    pub key: String,
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailError {
    Empty,
    /// Over [`MAX_LEN`] bytes (or its key over [`KEY_MAX_LEN`]).
    TooLong,
    /// Holds a character that draws nothing (see the module's notes).
    Invisible(char),
    /// Holds whitespace, a control character or one of ``<>()[]\,;:"` ``.
    Forbidden,
    NoAt,
    /// The local part is empty or too long, or there is a second `@`.
    LocalPart,
    Domain,
    /// The local part starts or ends with a dot, or has two in a row.
    Dots,
}

impl fmt::Display for EmailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmailError::Empty => f.write_str("it is empty"),
            EmailError::TooLong => write!(f, "it is longer than {MAX_LEN} bytes"),
            EmailError::Invisible(c) => write!(
                f,
                "it contains an invisible character (U+{:04X}) that would make it look like another address",
                u32::from(*c)
            ),
            EmailError::Forbidden => {
                f.write_str("it contains a space, control or special character")
            }
            EmailError::NoAt => f.write_str("it has no @"),
            EmailError::LocalPart => {
                f.write_str("the part before @ is empty, too long or repeated")
            }
            EmailError::Domain => f.write_str("the domain is not a dotted host name"),
            EmailError::Dots => f.write_str("the part before @ has misplaced dots"),
        }
    }
}

impl std::error::Error for EmailError {}

/// Checks `raw` with deliberately conservative rules and gives its display
/// form and key. The rules: surrounding whitespace is trimmed; then at most
/// [`MAX_LEN`] bytes; one `@`; a non-empty local part of at most
/// [`LOCAL_MAX_LEN`] bytes without leading, trailing or doubled dots; a
/// domain of at least two dot-separated labels, each 1 to
/// [`LABEL_MAX_LEN`] bytes and not starting or ending with `-`; no
/// whitespace, control characters, invisible characters (module notes) or
/// ``<>()[]\,;:"` ``. Unicode letters are allowed (RFC 6531). The key must
/// meet the same rules (its byte limits aside, see [`KEY_MAX_LEN`]).
pub fn canonical(raw: &str) -> Result<Canonical, EmailError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Empty);
    }
    // Before any normalisation: the work done on a refused input is bounded
    // by the limit, not by what the client sent.
    if trimmed.len() > MAX_LEN {
        return Err(EmailError::TooLong);
    }
    let display: String = trimmed.nfc().collect();
    if display.len() > MAX_LEN {
        return Err(EmailError::TooLong);
    }
    check_characters(&display)?;
    check_shape(&display, true)?;
    let key = key(&display);
    check_characters(&key)?;
    check_shape(&key, false)?;
    if key.len() > KEY_MAX_LEN {
        return Err(EmailError::TooLong);
    }
    Ok(Canonical { display, key })
}

/// The key of any text: NFD, full case folding, NFKD, full case folding
/// again, then NFKC (Unicode's compatibility caseless matching, D146, in
/// composed form). Two strings have the same key exactly when
/// `caseless::compatibility_caseless_match_str` says they match. No rule is
/// checked here: this is also what a search fragment is mapped with, so
/// that it finds keys.
pub fn key(text: &str) -> String {
    text.chars()
        .nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkc()
        .collect()
}

fn check_characters(s: &str) -> Result<(), EmailError> {
    for c in s.chars() {
        if is_default_ignorable(c) || draws_nothing(c) {
            return Err(EmailError::Invisible(c));
        }
        if c.is_whitespace() || c.is_control() || SPECIAL.contains(c) {
            return Err(EmailError::Forbidden);
        }
    }
    Ok(())
}

/// The shape rules; `limits`: also the byte limits of the parts.
fn check_shape(s: &str, limits: bool) -> Result<(), EmailError> {
    let Some((local, domain)) = s.split_once('@') else {
        return Err(EmailError::NoAt);
    };
    if local.is_empty() || (limits && local.len() > LOCAL_MAX_LEN) || domain.contains('@') {
        return Err(EmailError::LocalPart);
    }
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && (!limits || label.len() <= LABEL_MAX_LEN)
    });
    if !domain.contains('.') || !labels_ok {
        return Err(EmailError::Domain);
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(EmailError::Dots);
    }
    Ok(())
}

/// Unicode's `Default_Ignorable_Code_Point` property, from
/// DerivedCoreProperties.txt of Unicode 16.0.0 (its 27 lines, 4,174 code
/// points, with adjacent ranges merged; the same set as in Unicode 14.0,
/// against whose database this table was also checked). Reserved code
/// points are in the property too, so a character assigned there later is
/// refused already. Sorted, for a binary search.
const DEFAULT_IGNORABLE: [(char, char); 17] = [
    ('\u{00AD}', '\u{00AD}'),   // SOFT HYPHEN
    ('\u{034F}', '\u{034F}'),   // COMBINING GRAPHEME JOINER
    ('\u{061C}', '\u{061C}'),   // ARABIC LETTER MARK
    ('\u{115F}', '\u{1160}'),   // HANGUL CHOSEONG FILLER, JUNGSEONG FILLER
    ('\u{17B4}', '\u{17B5}'),   // KHMER VOWEL INHERENT AQ, AA
    ('\u{180B}', '\u{180F}'),   // MONGOLIAN FREE VARIATION SELECTORS, VOWEL SEPARATOR
    ('\u{200B}', '\u{200F}'),   // ZERO WIDTH SPACE, (NON-)JOINER, LRM, RLM
    ('\u{202A}', '\u{202E}'),   // bidi embeddings and overrides
    ('\u{2060}', '\u{206F}'), // WORD JOINER, invisible operators, bidi isolates, deprecated format
    ('\u{3164}', '\u{3164}'), // HANGUL FILLER
    ('\u{FE00}', '\u{FE0F}'), // VARIATION SELECTOR-1..16
    ('\u{FEFF}', '\u{FEFF}'), // ZERO WIDTH NO-BREAK SPACE (byte order mark)
    ('\u{FFA0}', '\u{FFA0}'), // HALFWIDTH HANGUL FILLER
    ('\u{FFF0}', '\u{FFF8}'), // reserved
    ('\u{1BCA0}', '\u{1BCA3}'), // SHORTHAND FORMAT controls
    ('\u{1D173}', '\u{1D17A}'), // MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    ('\u{E0000}', '\u{E0FFF}'), // tags (LANGUAGE TAG, TAG SPACE..CANCEL TAG), VARIATION SELECTOR-17..256, reserved
];

/// Whether `c` has Unicode's `Default_Ignorable_Code_Point` property: a
/// renderer that does not support it shows nothing for it.
pub fn is_default_ignorable(c: char) -> bool {
    DEFAULT_IGNORABLE
        .binary_search_by(|&(first, last)| {
            if last < c {
                std::cmp::Ordering::Less
            } else if first > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Not default-ignorable, yet drawn as nothing: U+2800 BRAILLE PATTERN
/// BLANK (a favourite for "empty" names) and the interlinear annotation
/// controls.
fn draws_nothing(c: char) -> bool {
    matches!(c, '\u{2800}' | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(s: &str) -> String {
        canonical(s).unwrap().key
    }

    #[test]
    fn the_rules_of_before_still_hold() {
        let e = canonical("  Alice.Smith@Example.COM ").unwrap();
        assert_eq!(e.display, "Alice.Smith@Example.COM");
        assert_eq!(e.key, "alice.smith@example.com");
        assert!(canonical("o'brien@example.com").is_ok());
        assert!(canonical("ünïcødé@exämple.org").is_ok());
        for (bad, why) in [
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("plain", EmailError::NoAt),
            ("a@b", EmailError::Domain),
            ("a@@b.com", EmailError::LocalPart),
            ("@example.com", EmailError::LocalPart),
            ("a b@example.com", EmailError::Forbidden),
            ("a@exa mple.com", EmailError::Forbidden),
            ("x'; DROP TABLE users;--@example.com", EmailError::Forbidden),
            ("a\u{0}@example.com", EmailError::Forbidden),
            ("\"q\"@example.com", EmailError::Forbidden),
            (".a@example.com", EmailError::Dots),
            ("a..b@example.com", EmailError::Dots),
            ("a.@example.com", EmailError::Dots),
            ("a@-example.com", EmailError::Domain),
            ("a@example-.com", EmailError::Domain),
            ("a@example..com", EmailError::Domain),
        ] {
            assert_eq!(canonical(bad), Err(why), "{bad:?}");
        }
        let local = "a".repeat(64);
        assert!(canonical(&format!("{local}@example.com")).is_ok());
        assert_eq!(
            canonical(&format!("a{local}@example.com")),
            Err(EmailError::LocalPart)
        );
        let label = "d".repeat(63);
        assert!(canonical(&format!("a@{label}.com")).is_ok());
        assert_eq!(
            canonical(&format!("a@d{label}.com")),
            Err(EmailError::Domain)
        );
        let longest = format!("{local}@{label}.{label}.{}.com", "d".repeat(57));
        assert_eq!(longest.len(), 254);
        assert!(canonical(&longest).is_ok());
        assert_eq!(
            canonical(&format!("{local}@{label}.{label}.{}.com", "d".repeat(58))),
            Err(EmailError::TooLong)
        );
        // A huge input is refused on its length, whatever it holds.
        assert_eq!(
            canonical(&"\u{0301}".repeat(100_000)),
            Err(EmailError::TooLong)
        );
    }

    #[test]
    fn display_is_nfc_of_what_was_typed_and_keeps_case() {
        let nfd = "Zoe\u{0308}@Exa\u{0308}mple.org";
        let e = canonical(nfd).unwrap();
        assert_eq!(e.display, "Zoë@Exämple.org");
        assert_eq!(e.key, "zoë@exämple.org");
        assert_eq!(canonical("Zoë@Exämple.org").unwrap(), e);
        // Combining marks in another order are the same text.
        assert_eq!(
            key_of("a\u{0323}\u{0302}@x.org"),
            key_of("a\u{0302}\u{0323}@x.org")
        );
    }

    #[test]
    fn case_is_folded_fully_and_compatibility_variants_are_one_key() {
        let same = [
            ("straße@example.de", "STRASSE@EXAMPLE.DE"),
            ("straße@example.de", "strasse@example.de"),
            ("STRAẞE@example.de", "strasse@example.de"),
            ("σίσυφος@example.gr", "ΣΊΣΥΦΟΣ@EXAMPLE.GR"),
            ("σίσυφοσ@example.gr", "σίσυφος@example.gr"),
            ("ᾳ@example.gr", "ΑΙ@example.gr"),
            ("ｐａｙｐａｌ@example.com", "paypal@example.com"),
            ("ＰＡＹＰＡＬ@example.com", "paypal@example.com"),
            ("oﬃce@example.com", "office@example.com"),
            ("\u{1D41A}lice@example.com", "alice@example.com"),
            ("\u{212A}im@example.com", "kim@example.com"),
            ("x²@example.com", "x2@example.com"),
            ("user@ｅｘａｍｐｌｅ.ｃｏｍ", "user@example.com"),
            ("İ@example.com", "i\u{0307}@example.com"),
        ];
        for (a, b) in same {
            assert_eq!(key_of(a), key_of(b), "{a} and {b}");
            assert!(caseless::compatibility_caseless_match_str(a, b));
        }
        // What they show is what was typed.
        assert_eq!(
            canonical("ｐａｙｐａｌ@example.com").unwrap().display,
            "ｐａｙｐａｌ@example.com"
        );
        // Different letters stay different (cross-script look-alikes are
        // not this rule's business).
        for (a, b) in [
            ("ılker@example.com", "ilker@example.com"),
            ("\u{0430}lice@example.com", "alice@example.com"),
            ("zoe@example.org", "zoë@example.org"),
        ] {
            assert_ne!(key_of(a), key_of(b), "{a} and {b}");
        }
    }

    #[test]
    fn the_key_is_checked_as_what_it_stands_for() {
        for (bad, why) in [
            ("a＠b@example.com", EmailError::LocalPart),
            ("a‥b@example.com", EmailError::Dots),
            ("a＜b@example.com", EmailError::Forbidden),
            ("a\u{00B4}b@example.com", EmailError::Forbidden),
            ("a@example．．com", EmailError::Domain),
            ("a\u{FDFA}@example.com", EmailError::Forbidden),
        ] {
            assert_eq!(canonical(bad), Err(why), "{bad:?}");
        }
        // Expansion is bounded by the key's own limit, far above real use.
        let squares = format!("{}@example.com", "\u{3300}".repeat(21));
        let e = canonical(&squares).unwrap();
        assert!(e.key.len() > e.display.len() * 3, "{}", e.key);
    }

    #[test]
    fn every_default_ignorable_code_point_is_refused() {
        let mut refused = 0u32;
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if is_default_ignorable(c) {
                refused += 1;
                let email = format!("a{c}b@example.com");
                assert_eq!(
                    canonical(&email),
                    Err(EmailError::Invisible(c)),
                    "U+{:04X}",
                    u32::from(c)
                );
            }
        }
        assert_eq!(refused, 4174, "the property's size in Unicode 16.0");
        for c in [
            '\u{00AD}',
            '\u{034F}',
            '\u{061C}',
            '\u{115F}',
            '\u{17B4}',
            '\u{180E}',
            '\u{200B}',
            '\u{200D}',
            '\u{202E}',
            '\u{2060}',
            '\u{2066}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{FEFF}',
            '\u{FFA0}',
            '\u{1BCA0}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E0100}',
        ] {
            assert!(is_default_ignorable(c), "U+{:04X}", u32::from(c));
        }
        for c in [
            'a',
            '\u{00AC}',
            '\u{00AE}',
            '\u{2800}',
            '\u{1BCA4}',
            '\u{E1000}',
        ] {
            assert!(!is_default_ignorable(c), "U+{:04X}", u32::from(c));
        }
        assert_eq!(
            canonical("a\u{2800}@example.com"),
            Err(EmailError::Invisible('\u{2800}'))
        );
        // Leading and trailing, too (trim takes only whitespace).
        assert_eq!(
            canonical("\u{FEFF}a@example.com"),
            Err(EmailError::Invisible('\u{FEFF}'))
        );
        assert!(
            EmailError::Invisible('\u{200B}')
                .to_string()
                .contains("U+200B")
        );
    }

    #[test]
    fn the_table_is_sorted_and_disjoint() {
        for pair in DEFAULT_IGNORABLE.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
    }

    #[test]
    fn keys_are_stable_under_themselves() {
        // A key read again as an address gives the same key: two spellings
        // meet in one place, whichever is typed first.
        for c in (0..=0x3FFFFu32).filter_map(char::from_u32) {
            let once = key(&c.to_string());
            assert_eq!(key(&once), once, "U+{:04X}", u32::from(c));
        }
    }
}
