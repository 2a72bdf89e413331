//! Revocation of stateless access tokens, decided in memory.
//!
//! An access token is checked without touching the database, so revocations
//! live in a set in every process: a denied `jti` (until its `exp`), a revoked
//! family or session (`sid`), and per-user cut-offs (every token of `sub`
//! issued before `not_before` is dead). The set is loaded from the store before
//! the server accepts requests, updated at once by this process's own
//! revocations and within one poll interval by other processes'. Entries are
//! dropped once no token they could match can still be live.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::Serialize;

use super::tokens::AccessClaims;

/// One revocation, with the Unix time after which it no longer matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Revocation {
    /// One access token, denied until its `exp`.
    Token { jti: String, exp: i64 },
    /// Every token carrying `sid` (a refresh family or a browser session).
    Family { sid: String, exp: i64 },
    /// Every token of `sub` issued before `not_before`.
    User { sub: String, not_before: i64 },
    /// Every browser session of `sub` created before `before` (Unix
    /// milliseconds): a logout everywhere, a suspension, a password change.
    /// Internal: the session path checks it, so sessions a store gives back
    /// after they were deleted stay refused; the revocation feed leaves it
    /// out (no token carries it).
    #[serde(skip)]
    Sessions { sub: String, before: i64 },
}

impl Revocation {
    pub fn kind(&self) -> &'static str {
        match self {
            Revocation::Token { .. } => "token",
            Revocation::Family { .. } => "family",
            Revocation::User { .. } => "user",
            Revocation::Sessions { .. } => "sessions",
        }
    }

    /// Whether outside verifiers get it on the revocation feed.
    pub fn is_public(&self) -> bool {
        !matches!(self, Revocation::Sessions { .. })
    }

    pub fn subject(&self) -> &str {
        match self {
            Revocation::Token { jti, .. } => jti,
            Revocation::Family { sid, .. } => sid,
            Revocation::User { sub, .. } | Revocation::Sessions { sub, .. } => sub,
        }
    }

    /// `exp` for tokens and families, `not_before` for users, `before`
    /// (milliseconds) for sessions.
    pub fn time(&self) -> i64 {
        match self {
            Revocation::Token { exp, .. } | Revocation::Family { exp, .. } => *exp,
            Revocation::User { not_before, .. } => *not_before,
            Revocation::Sessions { before, .. } => *before,
        }
    }

    pub fn from_parts(kind: &str, subject: String, time: i64) -> Option<Self> {
        match kind {
            "token" => Some(Revocation::Token {
                jti: subject,
                exp: time,
            }),
            "family" => Some(Revocation::Family {
                sid: subject,
                exp: time,
            }),
            "user" => Some(Revocation::User {
                sub: subject,
                not_before: time,
            }),
            "sessions" => Some(Revocation::Sessions {
                sub: subject,
                before: time,
            }),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Sets {
    tokens: HashMap<String, i64>,
    families: HashMap<String, i64>,
    /// sub → (not_before, forget after)
    users: HashMap<String, (i64, i64)>,
    /// sub → (sessions created before this, in ms, are ended; forget after)
    sessions: HashMap<String, (i64, i64)>,
}

/// The in-memory revocation set.
#[derive(Default)]
pub struct RevocationSet {
    sets: RwLock<Sets>,
}

impl RevocationSet {
    /// Records a revocation; `forget_after` is when it stops mattering for
    /// user cut-offs (tokens issued before it have all expired by then).
    pub fn apply(&self, r: &Revocation, user_forget_after: i64) {
        let Ok(mut sets) = self.sets.write() else {
            return;
        };
        match r {
            // Kept until the latest expiry heard of, as for families, so the
            // order revocations arrive in never shortens one.
            Revocation::Token { jti, exp } => {
                let e = sets.tokens.entry(jti.clone()).or_insert(*exp);
                *e = (*e).max(*exp);
            }
            Revocation::Family { sid, exp } => {
                let e = sets.families.entry(sid.clone()).or_insert(*exp);
                *e = (*e).max(*exp);
            }
            Revocation::User { sub, not_before } => {
                let e = sets
                    .users
                    .entry(sub.clone())
                    .or_insert((*not_before, user_forget_after));
                *e = (e.0.max(*not_before), e.1.max(user_forget_after));
            }
            Revocation::Sessions { sub, before } => {
                let e = sets
                    .sessions
                    .entry(sub.clone())
                    .or_insert((*before, user_forget_after));
                *e = (e.0.max(*before), e.1.max(user_forget_after));
            }
        }
    }

    /// Whether these (signature-checked) claims are revoked. Fails closed if
    /// the set is poisoned.
    pub fn is_revoked(&self, c: &AccessClaims) -> bool {
        let Ok(sets) = self.sets.read() else {
            return true;
        };
        sets.tokens.contains_key(&c.jti)
            || sets.families.contains_key(&c.sid)
            || sets
                .users
                .get(&c.sub)
                .is_some_and(|(not_before, _)| c.iat < *not_before)
    }

    /// Whether a browser session (`sid` of `user_id`, created at
    /// `created_ms`) was ended: every session that ends alone (logout, a
    /// device revoked, a password change's old session, the oldest beyond
    /// the per-user cap) revokes its id as a family, and every ending of
    /// all a user's sessions (logout everywhere, suspension, password
    /// change) records a [`Revocation::Sessions`] cut-off. The session path
    /// checks both, so a session a store gives back after it was deleted (a
    /// Redis replica promoted before it had the delete, Redis restarted
    /// from an older snapshot, a restored backup) is still refused, for as
    /// long as the entry is kept. Fails closed if the set is poisoned.
    pub fn is_session_ended(&self, sid: &str, user_id: &str, created_ms: i64) -> bool {
        let Ok(sets) = self.sets.read() else {
            return true;
        };
        sets.families.contains_key(sid)
            || sets
                .sessions
                .get(user_id)
                .is_some_and(|(before, _)| created_ms < *before)
    }

    /// The cut-off of a user, if any: new tokens are issued no earlier.
    pub fn user_not_before(&self, sub: &str) -> Option<i64> {
        self.sets.read().ok()?.users.get(sub).map(|(nb, _)| *nb)
    }

    /// Drops entries that can no longer match a live token.
    pub fn prune(&self, now: i64) {
        if let Ok(mut sets) = self.sets.write() {
            sets.tokens.retain(|_, exp| *exp >= now);
            sets.families.retain(|_, exp| *exp >= now);
            sets.users.retain(|_, (_, forget)| *forget >= now);
            sets.sessions.retain(|_, (_, forget)| *forget >= now);
        }
    }

    pub fn len(&self) -> usize {
        self.sets
            .read()
            .map(|s| s.tokens.len() + s.families.len() + s.users.len() + s.sessions.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str, sid: &str, sub: &str, iat: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://auth.example".into(),
            sub: sub.into(),
            aud: "https://auth.example".into(),
            exp: iat + 600,
            iat,
            nbf: None,
            jti: jti.into(),
            client_id: "tessera".into(),
            roles: vec![],
            sid: sid.into(),
            scope: None,
        }
    }

    #[test]
    fn each_kind_of_revocation_matches_what_it_should() {
        let set = RevocationSet::default();
        let a = claims("j1", "fam_a", "usr_a", 1000);
        let b = claims("j2", "fam_b", "usr_b", 1000);
        assert!(!set.is_revoked(&a));
        set.apply(
            &Revocation::Token {
                jti: "j1".into(),
                exp: 1600,
            },
            0,
        );
        assert!(set.is_revoked(&a) && !set.is_revoked(&b));
        set.apply(
            &Revocation::Family {
                sid: "fam_b".into(),
                exp: 1700,
            },
            0,
        );
        assert!(set.is_revoked(&b));
        let c = claims("j3", "fam_c", "usr_c", 1000);
        let later = claims("j4", "fam_c", "usr_c", 1001);
        set.apply(
            &Revocation::User {
                sub: "usr_c".into(),
                not_before: 1001,
            },
            1700,
        );
        assert!(set.is_revoked(&c), "issued before the cut-off");
        assert!(!set.is_revoked(&later), "issued at or after the cut-off");
        assert_eq!(set.user_not_before("usr_c"), Some(1001));
    }

    #[test]
    fn pruning_forgets_only_what_cannot_match_any_more() {
        let set = RevocationSet::default();
        set.apply(
            &Revocation::Token {
                jti: "j1".into(),
                exp: 100,
            },
            0,
        );
        set.apply(
            &Revocation::Family {
                sid: "s".into(),
                exp: 300,
            },
            0,
        );
        set.apply(
            &Revocation::User {
                sub: "u".into(),
                not_before: 50,
            },
            200,
        );
        set.prune(150);
        assert_eq!(set.len(), 2);
        set.prune(301);
        assert!(set.is_empty());
    }

    #[test]
    fn a_sessions_cut_off_ends_the_users_older_sessions_only() {
        let set = RevocationSet::default();
        assert!(!set.is_session_ended("ses_a", "usr_a", 1_000));
        set.apply(
            &Revocation::Sessions {
                sub: "usr_a".into(),
                before: 2_000,
            },
            99,
        );
        assert!(set.is_session_ended("ses_a", "usr_a", 1_999), "older");
        assert!(
            !set.is_session_ended("ses_b", "usr_a", 2_000),
            "at the cut-off"
        );
        assert!(
            !set.is_session_ended("ses_c", "usr_b", 1_000),
            "another user"
        );
        set.apply(
            &Revocation::Family {
                sid: "ses_d".into(),
                exp: 99,
            },
            0,
        );
        assert!(set.is_session_ended("ses_d", "usr_b", 5_000), "ended alone");
        assert!(
            !Revocation::Sessions {
                sub: "u".into(),
                before: 1
            }
            .is_public()
        );
        set.prune(100);
        assert!(set.is_empty());
    }

    #[test]
    fn parts_round_trip() {
        for r in [
            Revocation::Token {
                jti: "j".into(),
                exp: 1,
            },
            Revocation::Family {
                sid: "s".into(),
                exp: 2,
            },
            Revocation::User {
                sub: "u".into(),
                not_before: 3,
            },
            Revocation::Sessions {
                sub: "u".into(),
                before: 3,
            },
        ] {
            assert_eq!(
                Revocation::from_parts(r.kind(), r.subject().to_owned(), r.time()),
                Some(r)
            );
        }
    }
}
