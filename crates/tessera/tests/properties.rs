//! Property tests of the policy invariants (issue #19), through the public
//! API only:
//!
//! - **backoff bounds** (`core::limits`): over any sequence of login
//!   attempts, waits lie within [1 s, `max_backoff`], nothing locks before
//!   the failure threshold, a success resets, the advertised wait suffices,
//!   and no (account, address) pair is ever locked by another pair's
//!   failures; the per-address bucket never admits more than its burst plus
//!   what the elapsed time allows.
//! - **revocation order** (`core::revocation`): a token is refused exactly
//!   when its `jti` or `sid` is denied or its `iat` is before its user's
//!   cut-off; more revocations never un-revoke anything; the order in which
//!   a node learns them does not matter; pruning forgets nothing that can
//!   still match a live token.
//! - **token claims round trip** (`tessera_wire::jwt`): claims written as a
//!   compact token's payload read back equal when their times are within
//!   1970..=9999, and are refused as `TimesOutOfRange` otherwise.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::sample::select;
use tessera::core::limits::{LimitPolicy, Limits, RetryAfter};
use tessera::core::revocation::{Revocation, RevocationSet};
use tessera_wire::jwt::{self, AccessClaims, ClaimsError};
use time::{Duration, OffsetDateTime};

// ---------------------------------------------------------------------------
// Backoff and the per-address bucket
// ---------------------------------------------------------------------------

/// Distinct accounts (distinct under any case folding or normalisation).
const ACCOUNTS: [&str; 3] = ["alice@example.com", "bob@example.org", "carol@example.net"];

/// Distinct client addresses: IPv4 ones, and IPv6 ones in different /64s
/// (a limiter may key IPv6 clients by /64).
fn addresses() -> Vec<IpAddr> {
    [
        "192.0.2.1",
        "198.51.100.7",
        "2001:db8:1::1",
        "2001:db8:2::7",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect()
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::days(20_000)
}

fn policies() -> impl Strategy<Value = LimitPolicy> {
    (
        0u32..=600,
        1u32..=10,
        // Mostly whole seconds up to a day (the configuration's range), and
        // sub-second values, which the configuration accepts too.
        prop_oneof![
            (1i64..=86_400).prop_map(Duration::seconds),
            (1i64..=3_000).prop_map(Duration::milliseconds),
        ],
    )
        .prop_map(
            |(ip_per_minute, failure_threshold, max_backoff)| LimitPolicy {
                ip_per_minute,
                failure_threshold,
                max_backoff,
            },
        )
}

/// The longest wait a refusal may name: `max_backoff` in whole seconds,
/// rounded up (a `Retry-After` counts seconds), and never under 1 s.
fn longest_wait(policy: &LimitPolicy) -> u64 {
    let ms = u64::try_from(policy.max_backoff.whole_milliseconds()).unwrap();
    ms.div_ceil(1000).max(1)
}

/// Time steps: often none or a little, sometimes long.
fn steps() -> impl Strategy<Value = Duration> {
    prop_oneof![
        3 => Just(Duration::ZERO),
        5 => (1i64..=3_000).prop_map(Duration::milliseconds),
        2 => (1i64..=2_000).prop_map(Duration::seconds),
    ]
}

#[derive(Debug, Clone)]
enum Attempt {
    /// A login attempt that fails (if it gets as far as the password).
    Fail,
    /// A login attempt that succeeds (idem).
    Succeed,
}

/// What one (account, address) pair has seen since its last success.
#[derive(Debug, Default, Clone, Copy)]
struct Pair {
    /// Failures recorded since the last success.
    failures: u32,
    /// The latest wait advertised and when: no refusal may outlast it
    /// without another failure.
    lock: Option<(OffsetDateTime, u64)>,
    /// The wait of the previous lock in this run of failures.
    last_wait: u64,
}

fn attempts() -> impl Strategy<Value = Vec<(usize, usize, Attempt, Duration)>> {
    prop::collection::vec(
        (
            0..ACCOUNTS.len(),
            0usize..4,
            prop_oneof![6 => Just(Attempt::Fail), 1 => Just(Attempt::Succeed)],
            steps(),
        ),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Logins as the server runs them (check the pair, then record the
    /// outcome) for any mix of accounts, addresses, outcomes and timing.
    #[test]
    fn backoff_stays_within_its_bounds(policy in policies(), seq in attempts()) {
        let limits = Limits::new(policy);
        let ips = addresses();
        let cap = longest_wait(&policy);
        let mut pairs: HashMap<(usize, usize), Pair> = HashMap::new();
        let mut now = t0();
        for (account, ip, attempt, step) in seq {
            now += step;
            let name = ACCOUNTS[account];
            let addr = Some(ips[ip]);
            let pair = pairs.entry((account, ip)).or_default();
            if let Err(RetryAfter(wait)) = limits.check_account(name, addr, now) {
                prop_assert!(
                    pair.failures >= policy.failure_threshold,
                    "{name} from {addr:?} refused after {} failures (threshold {})",
                    pair.failures, policy.failure_threshold
                );
                prop_assert!((1..=cap).contains(&wait), "wait {wait} s, cap {cap} s");
                // The refusal lies within the wait last advertised.
                let (since, advertised) = pair.lock.expect("refused without a lock");
                let until = since + Duration::seconds(i64::try_from(advertised).unwrap());
                prop_assert!(now < until, "refused at {now} after the wait ended at {until}");
                continue;
            }
            match attempt {
                Attempt::Succeed => {
                    limits.record_success(name, addr);
                    *pair = Pair::default();
                    prop_assert!(limits.check_account(name, addr, now).is_ok(), "a success did not reset");
                }
                Attempt::Fail => {
                    pair.failures += 1;
                    let lock = limits.record_failure(name, addr, now);
                    if pair.failures < policy.failure_threshold {
                        prop_assert_eq!(lock, None, "locked before the threshold");
                        prop_assert!(limits.check_account(name, addr, now).is_ok());
                    } else {
                        let Some(RetryAfter(wait)) = lock else {
                            return Err(TestCaseError::fail(format!(
                                "failure {} (threshold {}) did not lock",
                                pair.failures, policy.failure_threshold
                            )));
                        };
                        prop_assert!((1..=cap).contains(&wait), "wait {wait} s, cap {cap} s");
                        prop_assert!(wait >= pair.last_wait, "the wait shrank: {} then {wait}", pair.last_wait);
                        prop_assert_eq!(limits.check_account(name, addr, now), Err(RetryAfter(wait)));
                        pair.lock = Some((now, wait));
                        pair.last_wait = wait;
                    }
                }
            }
        }
        // Whatever happened, every advertised wait suffices.
        for ((account, ip), pair) in pairs {
            if let Some((since, wait)) = pair.lock {
                let then = since + Duration::seconds(i64::try_from(wait).unwrap());
                prop_assert!(
                    limits.check_account(ACCOUNTS[account], Some(ips[ip]), then.max(now)).is_ok(),
                    "still locked after the advertised {wait} s"
                );
            }
        }
    }

    /// An attacker's failures for an account from one address never lock
    /// that account from another address, nor another account.
    #[test]
    fn someone_elses_failures_never_lock_a_pair(
        policy in policies(),
        failures in 1usize..60,
        step in steps(),
        attacker in 0usize..4,
        victim in 0usize..4,
    ) {
        prop_assume!(attacker != victim);
        let limits = Limits::new(policy);
        let ips = addresses();
        let mut now = t0();
        for _ in 0..failures {
            // The attacker keeps failing, whether or not it is refused.
            if limits.check_account(ACCOUNTS[0], Some(ips[attacker]), now).is_ok() {
                limits.record_failure(ACCOUNTS[0], Some(ips[attacker]), now);
            }
            prop_assert!(limits.check_account(ACCOUNTS[0], Some(ips[victim]), now).is_ok());
            prop_assert!(limits.check_account(ACCOUNTS[1], Some(ips[attacker]), now).is_ok());
            now += step;
        }
    }

    /// Requests from a few addresses at any timing: per address, the
    /// requests admitted between any two instants never exceed the burst
    /// (`ip_per_minute`) plus the rate's allowance for the time between.
    #[test]
    fn the_bucket_never_admits_more_than_burst_plus_allowance(
        per_minute in 1u32..=600,
        seq in prop::collection::vec((0usize..3, steps()), 1..400),
    ) {
        let limits = Limits::new(LimitPolicy { ip_per_minute: per_minute, ..LimitPolicy::default() });
        let ips = addresses();
        let mut admitted: Vec<Vec<OffsetDateTime>> = vec![Vec::new(); 3];
        let mut now = t0();
        for (ip, step) in seq {
            now += step;
            match limits.check_ip(Some(ips[ip]), now) {
                Ok(()) => admitted[ip].push(now),
                Err(RetryAfter(wait)) => prop_assert!(
                    (1..=60).contains(&wait),
                    "a bucket wait of {wait} s is more than a minute"
                ),
            }
        }
        for times in &admitted {
            for (i, first) in times.iter().enumerate() {
                for (j, last) in times.iter().enumerate().skip(i) {
                    let elapsed_ns = u128::try_from((*last - *first).whole_nanoseconds()).unwrap();
                    let allowance = (elapsed_ns * u128::from(per_minute)).div_ceil(60_000_000_000);
                    let count = u128::try_from(j - i + 1).unwrap();
                    prop_assert!(
                        count <= u128::from(per_minute) + allowance,
                        "{count} admitted within {elapsed_ns} ns at {per_minute}/min"
                    );
                }
            }
        }
    }

    /// A fresh address gets its whole burst at once, whatever other
    /// addresses did; once refused, the advertised wait suffices.
    #[test]
    fn a_burst_is_admitted_and_the_wait_suffices(
        per_minute in 1u32..=300,
        others in prop::collection::vec((0usize..2, steps()), 0..200),
    ) {
        let limits = Limits::new(LimitPolicy { ip_per_minute: per_minute, ..LimitPolicy::default() });
        let ips = addresses();
        let mut now = t0();
        for (ip, step) in others {
            now += step;
            let _ = limits.check_ip(Some(ips[ip]), now);
        }
        let fresh = Some(ips[3]);
        for n in 0..per_minute {
            prop_assert!(limits.check_ip(fresh, now).is_ok(), "request {n} of the burst refused");
        }
        let Err(RetryAfter(wait)) = limits.check_ip(fresh, now) else {
            return Err(TestCaseError::fail("admitted beyond the burst"));
        };
        prop_assert!((1..=60).contains(&wait));
        let later = now + Duration::seconds(i64::try_from(wait).unwrap());
        prop_assert!(limits.check_ip(fresh, later).is_ok(), "refused after the advertised {wait} s");
        // An unknown address is never limited.
        prop_assert!(limits.check_ip(None, now).is_ok());
    }
}

#[test]
fn a_rate_of_zero_limits_nothing() {
    let limits = Limits::new(LimitPolicy {
        ip_per_minute: 0,
        ..LimitPolicy::default()
    });
    let ip = Some(addresses()[0]);
    for _ in 0..10_000 {
        assert!(limits.check_ip(ip, t0()).is_ok());
    }
}

// ---------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------

const SIDS: [&str; 3] = ["fam_a", "fam_b", "ses_c"];
const SUBS: [&str; 3] = ["usr_a", "usr_b", "usr_c"];
/// Tokens per test world.
const WORLD: usize = 8;
/// Access tokens live 600 s in these tests.
const TTL: i64 = 600;

/// The tokens a test talks about: `tok_0`..`tok_7`, each issued once (its
/// `jti` names one `sid`, `sub` and `iat`), over few sessions, users and
/// instants so that revocations hit.
fn worlds() -> impl Strategy<Value = Vec<AccessClaims>> {
    prop::collection::vec((select(&SIDS[..]), select(&SUBS[..]), instants()), WORLD).prop_map(
        |tokens| {
            tokens
                .into_iter()
                .enumerate()
                .map(|(i, (sid, sub, iat))| AccessClaims {
                    iss: "https://auth.example.com".into(),
                    sub: sub.into(),
                    aud: "https://auth.example.com".into(),
                    exp: iat + TTL,
                    iat,
                    nbf: None,
                    jti: format!("tok_{i}"),
                    client_id: "tessera".into(),
                    roles: vec!["user".into()],
                    sid: sid.into(),
                    scope: None,
                })
                .collect()
        },
    )
}

/// Issue times and cut-offs: few values, so that they often coincide.
fn instants() -> impl Strategy<Value = i64> {
    prop_oneof![(0i64..8).prop_map(|i| i * 25), 0i64..200]
}

/// What a revocation is about, resolved against a world by `resolve`.
#[derive(Debug, Clone)]
enum Revoke {
    /// Token `i` of the world, denied until its `exp`.
    Token(usize),
    /// A family or session, until the given time.
    Family(&'static str, i64),
    /// A user's cut-off, and when it may be forgotten.
    User(&'static str, i64, i64),
}

fn revokes() -> impl Strategy<Value = Vec<Revoke>> {
    prop::collection::vec(
        prop_oneof![
            (0..WORLD).prop_map(Revoke::Token),
            (select(&SIDS[..]), 0i64..1_000).prop_map(|(sid, exp)| Revoke::Family(sid, exp)),
            (select(&SUBS[..]), instants(), 0i64..1_000)
                .prop_map(|(sub, nb, forget)| Revoke::User(sub, nb, forget)),
        ],
        0..16,
    )
}

/// The revocation as the server records it, with its `user_forget_after`.
fn resolve(world: &[AccessClaims], r: &Revoke) -> (Revocation, i64) {
    match *r {
        Revoke::Token(i) => (
            Revocation::Token {
                jti: world[i].jti.clone(),
                exp: world[i].exp,
            },
            0,
        ),
        Revoke::Family(sid, exp) => (
            Revocation::Family {
                sid: sid.into(),
                exp,
            },
            0,
        ),
        Revoke::User(sub, not_before, forget) => (
            Revocation::User {
                sub: sub.into(),
                not_before,
            },
            forget,
        ),
    }
}

/// The contract's rule (../shared/API.md, "Revocation feed"): refused
/// exactly when the `jti` or `sid` is denied, or `iat` is before the user's
/// cut-off.
fn refused_by_rule(revs: &[(Revocation, i64)], c: &AccessClaims) -> bool {
    revs.iter().any(|(r, _)| match r {
        Revocation::Token { jti, .. } => *jti == c.jti,
        Revocation::Family { sid, .. } => *sid == c.sid,
        Revocation::User { sub, not_before } => *sub == c.sub && c.iat < *not_before,
        // Browser sessions only: no access token is refused by it.
        Revocation::Sessions { .. } => false,
    })
}

fn set_of(revs: &[(Revocation, i64)]) -> RevocationSet {
    let set = RevocationSet::default();
    for (r, forget) in revs {
        set.apply(r, *forget);
    }
    set
}

fn resolved(world: &[AccessClaims], revs: &[Revoke]) -> Vec<(Revocation, i64)> {
    revs.iter().map(|r| resolve(world, r)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_token_is_refused_exactly_by_the_rule(world in worlds(), revs in revokes()) {
        let revs = resolved(&world, &revs);
        let set = set_of(&revs);
        for c in &world {
            prop_assert_eq!(
                set.is_revoked(c),
                refused_by_rule(&revs, c),
                "{} (sid {}, sub {}, iat {})", &c.jti, &c.sid, &c.sub, c.iat
            );
        }
        // A user's cut-off is the latest one given.
        for sub in SUBS {
            let latest = revs.iter().filter_map(|(r, _)| match r {
                Revocation::User { sub: s, not_before } if s == sub => Some(*not_before),
                _ => None,
            }).max();
            prop_assert_eq!(set.user_not_before(sub), latest);
        }
    }

    /// Applying revocations one by one never un-revokes a token, and a
    /// user's cut-off never moves back.
    #[test]
    fn more_revocations_never_unrevoke(world in worlds(), revs in revokes()) {
        let set = RevocationSet::default();
        let mut refused = vec![false; world.len()];
        let mut cutoffs: HashMap<&str, i64> = HashMap::new();
        for (r, forget) in resolved(&world, &revs) {
            set.apply(&r, forget);
            for (c, was) in world.iter().zip(refused.iter_mut()) {
                let now = set.is_revoked(c);
                prop_assert!(now || !*was, "{} un-revoked by {:?}", &c.jti, r);
                *was = now;
            }
            for sub in SUBS {
                if let Some(nb) = set.user_not_before(sub) {
                    let before = cutoffs.insert(sub, nb);
                    prop_assert!(before.is_none_or(|b| b <= nb), "{sub}'s cut-off moved back");
                } else {
                    prop_assert!(!cutoffs.contains_key(sub), "{sub}'s cut-off vanished");
                }
            }
        }
    }

    /// Nodes learn revocations in different orders (their own at once,
    /// others' by polling): the decisions do not depend on the order.
    #[test]
    fn the_order_revocations_arrive_in_does_not_matter(
        world in worlds(),
        (revs, shuffled) in revokes().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
    ) {
        let (a, b) = (set_of(&resolved(&world, &revs)), set_of(&resolved(&world, &shuffled)));
        for c in &world {
            prop_assert_eq!(a.is_revoked(c), b.is_revoked(c), "{}", &c.jti);
        }
        for sub in SUBS {
            prop_assert_eq!(a.user_not_before(sub), b.user_not_before(sub));
        }
        for now in [0, 300, 700, 1_000] {
            a.prune(now);
            b.prune(now);
            prop_assert_eq!(a.len(), b.len(), "after pruning at {}", now);
            for c in &world {
                prop_assert_eq!(a.is_revoked(c), b.is_revoked(c), "{} after pruning at {}", &c.jti, now);
            }
        }
    }

    /// Pruning at `now` keeps every revocation that still matters: a token
    /// still live at `now` (`exp` not passed) that a revocation covers for
    /// its whole life (its own `jti`, a family whose `exp` is no earlier
    /// than the token's, a cut-off after its `iat` kept until its `exp`)
    /// stays refused. And pruning never refuses anything new.
    #[test]
    fn pruning_forgets_nothing_that_can_still_match(
        world in worlds(),
        revs in revokes(),
        now in 0i64..1_200,
    ) {
        let revs = resolved(&world, &revs);
        let set = set_of(&revs);
        let before: Vec<bool> = world.iter().map(|c| set.is_revoked(c)).collect();
        set.prune(now);
        for (c, was) in world.iter().zip(before) {
            let is = set.is_revoked(c);
            prop_assert!(!is || was, "pruning revoked {}", &c.jti);
            let covered = revs.iter().any(|(r, forget)| match r {
                Revocation::Token { jti, .. } => *jti == c.jti,
                Revocation::Family { sid, exp } => *sid == c.sid && *exp >= c.exp,
                Revocation::User { sub, not_before } => {
                    *sub == c.sub && c.iat < *not_before && *forget >= c.exp
                }
                Revocation::Sessions { .. } => false,
            });
            if covered && c.exp >= now {
                prop_assert!(is, "pruning at {} un-revoked {} (exp {})", now, &c.jti, c.exp);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Token claims round trip
// ---------------------------------------------------------------------------

/// 9999-12-31T23:59:59Z, the latest time a token may name.
fn latest_unix() -> i64 {
    time::macros::datetime!(9999-12-31 23:59:59 UTC).unix_timestamp()
}

/// Times: mostly plausible, often at or past either bound, sometimes any.
fn times() -> impl Strategy<Value = i64> {
    let latest = latest_unix();
    prop_oneof![
        4 => 0i64..=4_102_444_800,
        2 => select(vec![-1, 0, 1, latest - 1, latest, latest + 1, i64::MIN, i64::MAX]),
        1 => (latest - 1_000)..=(latest + 1_000),
        1 => any::<i64>(),
    ]
}

fn access_claims() -> impl Strategy<Value = AccessClaims> {
    let text = || any::<String>();
    (
        (
            text(),
            text(),
            text(),
            times(),
            times(),
            prop::option::of(times()),
        ),
        (
            text(),
            text(),
            prop::collection::vec(text(), 0..4),
            text(),
            prop::option::of(text()),
        ),
    )
        .prop_map(
            |((iss, sub, aud, exp, iat, nbf), (jti, client_id, roles, sid, scope))| AccessClaims {
                iss,
                sub,
                aud,
                exp,
                iat,
                nbf,
                jti,
                client_id,
                roles,
                sid,
                scope,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn claims_round_trip_through_a_compact_token(claims in access_claims(), sorted_keys: bool) {
        let json = if sorted_keys {
            // Another issuer's key order (serde_json's map is sorted).
            serde_json::to_vec(&serde_json::to_value(&claims).unwrap()).unwrap()
        } else {
            serde_json::to_vec(&claims).unwrap()
        };
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1"}"#);
        let token = format!("{header}.{}.c2lnbmF0dXJl", URL_SAFE_NO_PAD.encode(json));
        let compact = jwt::split(&token).expect("three parts");
        prop_assert_eq!(compact.header().unwrap().alg, "EdDSA");
        let latest = latest_unix();
        let in_range = |t: i64| (0..=latest).contains(&t);
        let expected = if in_range(claims.exp) && in_range(claims.iat) && claims.nbf.is_none_or(in_range) {
            Ok(claims.clone())
        } else {
            Err(ClaimsError::TimesOutOfRange)
        };
        prop_assert_eq!(claims.times_in_range(), expected.is_ok());
        prop_assert_eq!(compact.claims(), expected);
    }
}

#[test]
fn the_latest_time_is_the_end_of_year_9999() {
    assert_eq!(jwt::LATEST_UNIX, latest_unix());
}
