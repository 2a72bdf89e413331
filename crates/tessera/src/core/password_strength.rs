//! Passwords worth having: a password being set (registration, a change, a
//! reset, an administrator's) must not be easy to guess.
//!
//! The rule is the [`zxcvbn`] estimate (crate `zxcvbn` 3.x, MIT licence, a
//! Rust port of Dropbox's zxcvbn): it counts the guesses an attacker who
//! tries the likeliest passwords first would need, from frequency lists it
//! embeds in the binary (nothing is downloaded, nothing is looked up
//! elsewhere): the 30 000 most common passwords of a public breach corpus
//! (Xato's ten million leaked passwords), the most frequent English words
//! (Wikipedia, US television and film), US census names and surnames, and
//! patterns (keyboard rows such as `qwertyuiop`, repeats, sequences, dates,
//! years, l33t substitutions, reversed words). A password below
//! [`MIN_SCORE`] (fewer than about 10⁶ guesses, which covers every entry of
//! those lists, with a digit or a year added) is refused with 422
//! `validation_failed`, the message naming the rule and zxcvbn's feedback.
//!
//! The account's own details count as the likeliest guesses of all: its
//! email, the local part and the pieces of the address ([`user_inputs`]),
//! so `alice@…` cannot pick `alice2024`; and a password that holds one of
//! them must pass the rule again with them taken out, so
//! `alice.wonder@…` cannot pick `alicewonder2024` either.
//!
//! **Cost** (release build, this project's 2-vCPU machine kind): a check
//! takes ~0.05–0.4 ms for a common password, ~1–2 ms for a four-word
//! passphrase or 43 random characters, and up to ~25 ms (idle) to ~60 ms
//! (loaded) for a 100-character one (zxcvbn reads the first 100 characters
//! only); the first call in a process also builds the dictionaries
//! (~15–35 ms). So it is run only where a
//! password is being set, never on a login, and on the hashing pool
//! (`Tessera::check_new_password`), like the argon2 hash that follows it:
//! fairly shared, bounded, and never on the async runtime's threads.
//! The password is never logged; zxcvbn's messages never quote it.

use zxcvbn::Score;

use super::Tessera;
use super::accounts::Password;
use super::error::{CoreError, CoreResult};
use super::passwords::Principals;

/// The lowest zxcvbn score a new password may have: 2, "more than ~10⁶
/// guesses" (0 is ≤ 10³, 1 is ≤ 10⁶: the common-password lists and what is
/// made from them).
pub const MIN_SCORE: Score = Score::Two;

/// The message's beginning: what rule the password broke.
const RULE: &str = "password is too easy to guess";

/// Shortest piece of an email kept as a guess of its own (shorter ones,
/// `a`, `jo`, match inside too many good passwords).
const MIN_PIECE: usize = 3;

/// The account's details a password must not be made from: the email, its
/// local part, and the pieces of the local part and of the domain (without
/// its last label) split at `.`, `_`, `-` and `+`, lowercased, each once.
pub fn user_inputs(email: &str) -> Vec<String> {
    let email = email.trim().to_lowercase();
    let mut inputs: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if s.chars().count() >= MIN_PIECE && !inputs.iter().any(|i| i == s) {
            inputs.push(s.to_owned());
        }
    };
    add(&email);
    let (local, domain) = email.rsplit_once('@').unwrap_or((email.as_str(), ""));
    add(local);
    for piece in local.split(['.', '_', '-', '+']) {
        add(piece);
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() > 1 {
        for label in &labels[..labels.len() - 1] {
            for piece in label.split('-') {
                add(piece);
            }
        }
    }
    inputs
}

/// The strength rule alone (see the module's doc): `Ok` when `password`
/// scores at least [`MIN_SCORE`] with `user_inputs` as the likeliest
/// guesses, and still does once every user input it contains is taken out
/// (zxcvbn alone counts any three pieces as 10⁸ guesses at least, which
/// would let `alicewonder2024` through for `alice.wonder@…`); otherwise a
/// validation error naming the rule, with zxcvbn's warning and suggestions
/// when it has them.
pub fn check(password: &str, user_inputs: &[&str]) -> CoreResult<()> {
    let estimate = zxcvbn::zxcvbn(password, user_inputs);
    if estimate.score() < MIN_SCORE {
        return Err(CoreError::Validation(refusal(
            contains_user_input(password, user_inputs),
            estimate.feedback(),
        )));
    }
    if let Some(rest) = without_user_inputs(password, user_inputs) {
        let rest = zxcvbn::zxcvbn(&rest, user_inputs);
        if rest.score() < MIN_SCORE {
            return Err(CoreError::Validation(refusal(true, None)));
        }
    }
    Ok(())
}

/// Whether `password` holds one of `user_inputs` (any case).
fn contains_user_input(password: &str, user_inputs: &[&str]) -> bool {
    without_user_inputs(password, user_inputs).is_some()
}

/// `password` (lowercased) with every user input it holds taken out,
/// longest first; `None` when it holds none.
fn without_user_inputs(password: &str, user_inputs: &[&str]) -> Option<String> {
    let mut inputs: Vec<String> = user_inputs
        .iter()
        .filter(|i| i.chars().count() >= MIN_PIECE)
        .map(|i| i.to_lowercase())
        .collect();
    inputs.sort_by_key(|i| std::cmp::Reverse(i.len()));
    let mut rest = password.to_lowercase();
    let mut found = false;
    for input in &inputs {
        if rest.contains(input.as_str()) {
            rest = rest.replace(input.as_str(), "");
            found = true;
        }
    }
    found.then_some(rest)
}

/// The refusal's message: the rule, then why and what to do instead.
fn refusal(made_of_email: bool, feedback: Option<&zxcvbn::feedback::Feedback>) -> String {
    let mut why: Vec<String> = Vec::new();
    if made_of_email {
        why.push("It is made from your email address.".to_owned());
    }
    if let Some(feedback) = feedback {
        why.extend(feedback.warning().map(|w| w.to_string()));
        why.extend(feedback.suggestions().iter().map(|s| s.to_string()));
    }
    if why.len() <= usize::from(made_of_email) {
        why.push(
            "Add another word or two, or more characters: \
             not a common password, a name or a pattern."
                .to_owned(),
        );
    }
    format!("{RULE}: {}", why.join(" "))
}

impl Tessera {
    /// The rule for a password being set for the account with `email`
    /// ([`Password::check_new`]): the length policy at once (before any
    /// pool place is taken), then the strength estimate on the hashing
    /// pool, for `who` (see the module's doc for why there).
    pub(crate) async fn check_new_password(
        &self,
        who: &Principals,
        password: &Password,
        email: &str,
    ) -> CoreResult<()> {
        password.check_policy()?;
        let password = password.clone();
        let inputs = user_inputs(email);
        self.passwords
            .pool()
            .run_for(who, move || {
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                password.check_new(&inputs)
            })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secret::BearerSecret;

    fn refused(password: &str, email: &str) -> String {
        let inputs = user_inputs(email);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        match Password::new(password.into()).check_new(&inputs) {
            Err(CoreError::Validation(message)) => message,
            other => panic!("{password:?} should be refused, got {other:?}"),
        }
    }

    fn accepted(password: &str, email: &str) -> bool {
        let inputs = user_inputs(email);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Password::new(password.into()).check_new(&inputs).is_ok()
    }

    #[test]
    fn common_passwords_are_refused_naming_the_rule() {
        for common in [
            "password1",
            "qwertyuiop",
            "iloveyou12",
            "password",
            "12345678",
            "letmein1",
            "P@ssw0rd",
            "trustno1",
        ] {
            let message = refused(common, "someone@example.com");
            assert!(
                message.starts_with("password is too easy to guess: "),
                "{common}: {message}"
            );
            if common != "password" {
                assert!(!message.contains(common), "never quoted: {message}");
            }
        }
        assert_eq!(
            refused("qwertyuiop", "someone@example.com"),
            "password is too easy to guess: This is a top-100 common password. \
             Add another word or two. Uncommon words are better."
        );
        assert!(refused("password1", "someone@example.com").contains("very common password"));
    }

    #[test]
    fn passwords_made_from_the_email_are_refused() {
        // Strong enough for someone else, not for Alice.
        assert!(accepted("alicewonder2024", "bob@example.com"));
        for (password, email) in [
            ("alice2024", "alice@x.org"),
            ("alicewonder2024", "alice.wonder@example.com"),
            ("Wonder-Alice", "alice.wonder@example.com"),
            ("ALICE.wonder+2024", "alice.wonder@example.com"),
            ("examplecorp1", "jo@examplecorp.com"),
        ] {
            let message = refused(password, email);
            assert!(
                message.starts_with("password is too easy to guess: "),
                "{message}"
            );
        }
        assert_eq!(
            refused("alicewonder2024", "alice.wonder@example.com"),
            "password is too easy to guess: It is made from your email address. \
             Add another word or two, or more characters: not a common password, \
             a name or a pattern."
        );
        assert!(
            refused("alice2024", "alice@x.org").contains("made from your email address"),
            "the message says why"
        );
        // A part of the email in a password strong without it is fine.
        assert!(accepted(
            "alice correct horse battery staple",
            "alice@x.org"
        ));
    }

    #[test]
    fn good_passwords_are_accepted() {
        for good in [
            "correct horse battery staple",
            "Tr0ub4dour&3xylophone",
            "a brand new passphrase",
            "mauve-kettle-orbit-42",
        ] {
            assert!(accepted(good, "alice@example.com"), "{good}");
        }
        // What the server makes itself (a password nobody knows) passes.
        for _ in 0..20 {
            assert!(accepted(
                BearerSecret::generate().expose(),
                "alice@example.com"
            ));
        }
    }

    #[test]
    fn the_length_policy_comes_first() {
        let message = refused("Xk9#", "a@example.com");
        assert_eq!(message, "password must be at least 8 characters");
        let message = refused(&"a".repeat(1025), "a@example.com");
        assert_eq!(message, "password must be at most 1024 characters");
    }

    #[test]
    fn user_inputs_are_the_email_and_its_pieces() {
        assert_eq!(
            user_inputs(" Alice.Wonder+news@Mail.Example-Corp.co.uk "),
            [
                "alice.wonder+news@mail.example-corp.co.uk",
                "alice.wonder+news",
                "alice",
                "wonder",
                "news",
                "mail",
                "example",
                "corp",
            ]
        );
        assert_eq!(user_inputs("jo@x.io"), ["jo@x.io"]);
    }
}
