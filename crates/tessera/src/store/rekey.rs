//! Re-keying stored emails when the key's definition changes: a data step
//! that runs after the schema migrations (`serve` and every CLI command run
//! it through [`super::migrate_reporting`]), on every backend through
//! [`super::UserStore::rekey_emails`].
//!
//! Users registered before emails were normalised have keys made by
//! lowercasing alone: an NFD spelling, or `straße`, has a key no login can
//! reach any more, and a new registration of the NFC spelling would not
//! conflict with it. The step gives each such user the key the current
//! rules give its email ([`crate::core::accounts::email_key`]). It never
//! merges or deletes: when two or more users would end up with one key,
//! none of them changes, and each such collision is logged (a WARN line
//! naming the user ids, never the emails, which are personal data) and
//! shown by `tessera doctor` until an operator resolves it. The same goes
//! for a user whose email the current rules refuse.
//!
//! Cheap when there is nothing to do: only emails holding a non-ASCII
//! character are read (an ASCII email's key is its lowercase form under
//! either definition), and once a run leaves nothing unresolved the step is
//! recorded as done (`data_migrations`), after which a start costs one read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;

use super::StoreOptions;

/// The step's name as recorded when done. A later change to the key's
/// definition gets a new name, so that stored keys are made again.
pub const EMAIL_KEYS_STEP: &str = "email_keys_nfkc_casefold";

/// A user's new key from its stored email, or `None` when the current rules
/// refuse the email.
pub type KeyFn<'a> = dyn Fn(&str) -> Option<String> + Send + Sync + 'a;

/// What a run of [`super::UserStore::rekey_emails`] did (or, in a dry run,
/// would do). Ids are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyOutcome {
    /// The step was recorded as done before this call: nothing was read.
    pub already_done: bool,
    /// Users whose email was looked at (those with a non-ASCII character).
    pub scanned: u64,
    /// Users whose key changed.
    pub changed: Vec<String>,
    /// Users that would share one key, a group each; none of them changed.
    pub collisions: Vec<Vec<String>>,
    /// Users whose email the current rules refuse; unchanged.
    pub refused: Vec<String>,
    /// The step is recorded as done (now or before).
    pub done: bool,
}

impl RekeyOutcome {
    /// The answer when the step was recorded as done before: nothing read.
    pub fn already_done() -> Self {
        Self {
            already_done: true,
            done: true,
            ..Self::default()
        }
    }

    /// Whether something is left for an operator to resolve.
    pub fn unresolved(&self) -> bool {
        !self.collisions.is_empty() || !self.refused.is_empty()
    }
}

/// A user the step looks at: its id, current key, and new key.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub id: String,
    pub key: String,
    pub new_key: Option<String>,
}

impl Candidate {
    fn moves(&self) -> bool {
        self.new_key.as_ref().is_some_and(|k| *k != self.key)
    }
}

/// The new keys that differ from the current ones: whoever holds one of
/// them now may collide (the backend reads those holders for [`plan`]).
pub(crate) fn wanted_keys(candidates: &[Candidate]) -> Vec<String> {
    let keys: BTreeSet<&String> = candidates
        .iter()
        .filter(|c| c.moves())
        .filter_map(|c| c.new_key.as_ref())
        .collect();
    keys.into_iter().cloned().collect()
}

/// What to write: `(id, new key)` for each user to change, and what to
/// report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub updates: Vec<(String, String)>,
    pub collisions: Vec<Vec<String>>,
    pub refused: Vec<String>,
}

/// Decides the step: `candidates` are the users looked at, `holders` every
/// user (looked at or not) whose current key is one of [`wanted_keys`].
///
/// Every candidate is first given its new key; every group of two or more
/// users that would then share a key is a collision, and its members keep
/// their current keys. Keeping a key can make a new collision (another user
/// was to take it), so this repeats until no key is shared. The updates
/// left never share a key with each other or with anyone who keeps theirs.
pub(crate) fn plan(candidates: &[Candidate], holders: &[(String, String)]) -> Plan {
    let looked_at: BTreeSet<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
    // The key each user ends with, and whether it is a new one.
    let mut ends: BTreeMap<&str, (&str, bool)> = BTreeMap::new();
    for c in candidates {
        let moves = c.moves();
        let key = match (&c.new_key, moves) {
            (Some(new), true) => new.as_str(),
            _ => c.key.as_str(),
        };
        ends.insert(c.id.as_str(), (key, moves));
    }
    for (id, key) in holders {
        if !looked_at.contains(id.as_str()) {
            ends.insert(id.as_str(), (key.as_str(), false));
        }
    }
    let mut collisions: BTreeSet<Vec<String>> = BTreeSet::new();
    loop {
        let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, (key, _)) in &ends {
            by_key.entry(key).or_default().push(id);
        }
        let mut kept = Vec::new();
        for ids in by_key.values().filter(|ids| ids.len() > 1) {
            collisions.insert(ids.iter().map(|id| (*id).to_owned()).collect());
            kept.extend(ids.iter().copied().filter(|id| ends[id].1));
        }
        if kept.is_empty() {
            break;
        }
        for id in kept {
            if let Some(c) = candidates.iter().find(|c| c.id == id) {
                ends.insert(c.id.as_str(), (c.key.as_str(), false));
            }
        }
    }
    Plan {
        updates: candidates
            .iter()
            .filter(|c| ends.get(c.id.as_str()).is_some_and(|(_, moves)| *moves))
            .filter_map(|c| Some((c.id.clone(), c.new_key.clone()?)))
            .collect(),
        collisions: collisions.into_iter().collect(),
        refused: candidates
            .iter()
            .filter(|c| c.new_key.is_none())
            .map(|c| c.id.clone())
            .collect(),
    }
}

/// A key no real one can equal (keys hold no control character), held for
/// a moment while keys change hands within the step's transaction.
pub(crate) fn placeholder(id: &str) -> String {
    format!("\u{1}rekey\u{1}{id}")
}

/// The outcome of a run whose `plan` was made from `scanned` users.
pub(crate) fn outcome(scanned: u64, plan: Plan, done: bool) -> RekeyOutcome {
    let mut changed: Vec<String> = plan.updates.into_iter().map(|(id, _)| id).collect();
    changed.sort();
    RekeyOutcome {
        already_done: false,
        scanned,
        changed,
        collisions: plan.collisions,
        refused: plan.refused,
        done,
    }
}

/// The key function of the current rules.
fn current_key(email: &str) -> Option<String> {
    crate::core::accounts::email_key(email)
}

/// How long the step's statements may run: longer than a request's, since
/// on its first run it reads every user with a non-ASCII email.
const STEP_STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the email re-keying step on the database at `url` (already
/// migrated), logging what it did: an INFO line when keys changed, a WARN
/// line per collision and for the users whose emails are refused, naming
/// user ids only. A write that lost a race with a registration on another
/// node is logged and left for the next start.
pub async fn run(url: &str) -> anyhow::Result<RekeyOutcome> {
    let stores = super::open(
        url,
        &StoreOptions {
            pool_size: 2,
            statement_timeout: STEP_STATEMENT_TIMEOUT,
            ..StoreOptions::default()
        },
    )
    .await?;
    let result = stores
        .users
        .rekey_emails(
            EMAIL_KEYS_STEP,
            &current_key,
            true,
            OffsetDateTime::now_utc(),
        )
        .await;
    stores.backend.close().await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(super::StoreError::Conflict) => {
            tracing::warn!(
                step = EMAIL_KEYS_STEP,
                "re-keying emails met a registration made meanwhile; nothing was changed, the next start tries again"
            );
            return Ok(RekeyOutcome::default());
        }
        Err(e) => return Err(anyhow::anyhow!("cannot re-key emails: {e}")),
    };
    log(&outcome);
    Ok(outcome)
}

/// The log lines for `outcome` (ids only: an email is personal data).
pub fn log(outcome: &RekeyOutcome) {
    if !outcome.changed.is_empty() {
        tracing::info!(
            step = EMAIL_KEYS_STEP,
            changed = outcome.changed.len(),
            "email keys re-made with the current rules (Unicode normalisation and case folding)"
        );
    }
    for ids in &outcome.collisions {
        tracing::warn!(
            step = EMAIL_KEYS_STEP,
            user_ids = %ids.join(","),
            "these accounts' emails are one address under the current rules (Unicode normalisation and case folding): none was changed or merged, and at most one of them can sign in with its email until an operator gives the others another email (`tessera doctor` explains)"
        );
    }
    if !outcome.refused.is_empty() {
        tracing::warn!(
            step = EMAIL_KEYS_STEP,
            user_ids = %outcome.refused.join(","),
            "these accounts' emails are refused by the current rules (an invisible character, or a compatibility form of a forbidden one): they were left as they are and cannot sign in with their email until an operator changes it (`tessera doctor` explains)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, key: &str, new_key: Option<&str>) -> Candidate {
        Candidate {
            id: id.into(),
            key: key.into(),
            new_key: new_key.map(str::to_owned),
        }
    }

    fn h(id: &str, key: &str) -> (String, String) {
        (id.into(), key.into())
    }

    fn updates(plan: &Plan) -> Vec<(&str, &str)> {
        plan.updates
            .iter()
            .map(|(id, k)| (id.as_str(), k.as_str()))
            .collect()
    }

    #[test]
    fn keys_change_unless_shared() {
        let candidates = [
            c("u1", "old1", Some("new1")),
            c("u2", "same", Some("same")),
            c("u3", "old3", Some("taken")),
            c("u4", "old4", Some("twice")),
            c("u5", "old5", Some("twice")),
            c("u6", "old6", None),
        ];
        assert_eq!(
            wanted_keys(&candidates),
            ["new1", "taken", "twice"].map(String::from)
        );
        let plan = plan(&candidates, &[h("ascii", "taken")]);
        assert_eq!(updates(&plan), [("u1", "new1")]);
        assert_eq!(
            plan.collisions,
            vec![
                vec!["ascii".to_owned(), "u3".to_owned()],
                vec!["u4".to_owned(), "u5".to_owned()]
            ]
        );
        assert_eq!(plan.refused, ["u6"]);
    }

    #[test]
    fn keys_may_change_hands_and_kept_keys_block_in_turn() {
        // A swap and a chain: each key is free once its holder moves.
        let swap = [
            c("a", "k1", Some("k2")),
            c("b", "k2", Some("k1")),
            c("x", "k3", Some("k4")),
            c("y", "k4", Some("k5")),
        ];
        let holders = [h("b", "k2"), h("a", "k1"), h("y", "k4")];
        let p = plan(&swap, &holders);
        assert_eq!(
            updates(&p),
            [("a", "k2"), ("b", "k1"), ("x", "k4"), ("y", "k5")]
        );
        assert!(p.collisions.is_empty());

        // `m` cannot take `fixed`'s key, so keeps its own, which `n` wanted.
        let cascade = [c("m", "km", Some("kf")), c("n", "kn", Some("km"))];
        let p = plan(&cascade, &[h("fixed", "kf"), h("m", "km")]);
        assert!(p.updates.is_empty(), "{p:?}");
        assert_eq!(
            p.collisions,
            vec![
                vec!["fixed".to_owned(), "m".to_owned()],
                vec!["m".to_owned(), "n".to_owned()]
            ]
        );
    }

    #[test]
    fn a_placeholder_is_no_key() {
        let p = placeholder("usr_a");
        assert!(p.contains("usr_a"));
        assert!(crate::core::accounts::email_key(&p).is_none());
    }
}
