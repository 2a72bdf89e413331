//! What `tessera doctor` says about stored accounts: emails whose keys the
//! re-keying step (`store::rekey`) could not bring to the current rules.
//! Pure over that step's dry run, so every rule is unit-tested; users are
//! named by id only (an email is personal data).

use super::{Finding, finding};
use crate::inspect::Severity;
use crate::store::rekey::RekeyOutcome;

/// At most this many groups or users are named in one finding; the WARN
/// lines the step logs at every start name them all.
const NAMED: usize = 10;

fn named(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED {
        text.push_str(&format!(
            " and {} more (each is named in a WARN line at start)",
            items.len() - NAMED
        ));
    }
    text
}

/// How an operator gives an account another email by hand.
const RENAME: &str =
    "UPDATE users SET email = '<address>', email_key = lower('<address>') WHERE id = '<id>'";

/// The findings for a dry run of the step (after `serve` or any command
/// ran it for real).
pub fn email_key_findings(outcome: &RekeyOutcome) -> Vec<Finding> {
    use Severity::{Info, Warning};
    let mut out = Vec::new();
    if !outcome.collisions.is_empty() {
        let groups: Vec<String> = outcome.collisions.iter().map(|g| g.join(", ")).collect();
        out.push(finding(
            Warning,
            format!(
                "{} group(s) of accounts have emails that are one address under the current rules (Unicode normalisation and case folding), so at most one account of each can sign in with its email; nothing was merged or changed: {}",
                groups.len(),
                named(&groups)
            ),
            format!(
                "for each group, decide which account keeps the address and give the others another email ({RENAME}); the next start (or any `tessera` command) then gives them their keys"
            ),
        ));
    }
    if !outcome.refused.is_empty() {
        out.push(finding(
            Warning,
            format!(
                "{} account(s) have emails the current rules refuse (an invisible character, or a compatibility form of a forbidden character), so they cannot sign in with their email: {}",
                outcome.refused.len(),
                named(&outcome.refused)
            ),
            format!(
                "give each of them a valid email ({RENAME}); the next start (or any `tessera` command) then gives them their keys"
            ),
        ));
    }
    if out.is_empty() {
        out.push(if outcome.changed.is_empty() {
            finding(
                Info,
                "stored email keys follow the current rules (NFKC and full Unicode case folding)",
                "none needed",
            )
        } else {
            finding(
                Info,
                format!(
                    "{} stored email key(s) still follow the old rules (lowercase only)",
                    outcome.changed.len()
                ),
                "none needed: the next start (or any `tessera` command) re-makes them",
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_and_refused_emails_are_warnings_naming_ids_only() {
        let outcome = RekeyOutcome {
            scanned: 5,
            collisions: vec![vec!["usr_a".into(), "usr_b".into()]],
            refused: vec!["usr_c".into()],
            ..RekeyOutcome::default()
        };
        let f = email_key_findings(&outcome);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|f| f.severity == Severity::Warning));
        assert!(f[0].problem.contains("usr_a, usr_b"), "{f:?}");
        assert!(f[1].problem.contains("usr_c"), "{f:?}");
        assert!(f.iter().all(|f| f.fix.contains("UPDATE users")));
    }

    #[test]
    fn long_lists_are_cut_and_a_clean_store_is_fine() {
        let outcome = RekeyOutcome {
            refused: (0..25).map(|i| format!("usr_{i:02}")).collect(),
            ..RekeyOutcome::default()
        };
        let f = email_key_findings(&outcome);
        assert!(f[0].problem.contains("usr_09 and 15 more"), "{f:?}");
        assert!(!f[0].problem.contains("usr_10"), "{f:?}");

        let done = RekeyOutcome {
            already_done: true,
            done: true,
            ..RekeyOutcome::default()
        };
        let f = email_key_findings(&done);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
    }
}
