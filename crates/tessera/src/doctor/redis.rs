//! What `tessera doctor` checks on the Redis that holds the sessions (when
//! `TESSERA_REDIS_URL` is set): that it answers (the one server; the seeds
//! of a cluster, and `cluster_state:ok`; or the sentinels, and the primary
//! they name answering as a primary), its version, its eviction policy,
//! its persistence, the round trip from this machine, and its replicas.
//!
//! [`read`] asks the servers, read-only and within a few seconds (`INFO`,
//! `CONFIG GET`, `PING`, `CLUSTER INFO`/`NODES`, `SENTINEL …`); the rules,
//! [`redis_findings`], are pure over what it read ([`RedisFacts`]), so each
//! one is unit-tested. Nothing printed carries a password: the URL is shown
//! through [`crate::config::shown_redis_url`], servers as `host:port`, and
//! error texts are scrubbed of the URL's passwords.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ::redis::AsyncConnectionConfig;
use ::redis::aio::MultiplexedConnection;
use futures_util::future::join_all;

use super::{Finding, finding};
use crate::inspect::Severity;
use crate::store::redis::target::{SentinelTarget, Target};
use crate::store::redis::tls::{self, Certificates, TlsFiles};

/// How long connecting to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Everything asked of one server (servers are asked in parallel).
const SERVER_DEADLINE: Duration = Duration::from_secs(5);
/// Round trips timed per server (after one untimed).
const PINGS: usize = 5;
/// A median round trip above this is worth a warning: every session check
/// that misses a node's cache pays one.
pub const SLOW_ROUND_TRIP: Duration = Duration::from_millis(5);
/// The oldest Redis Tessera supports (Debian 12 ships 7.0).
const OLDEST_SUPPORTED: (u32, u32) = (6, 2);
/// At most this many servers are named in one finding.
const NAMED: usize = 6;
/// Where a per-server finding names its servers (see [`per_server`]).
const AT: &str = "\u{0}at\u{0}";

/// What the Redis of `TESSERA_REDIS_URL` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisFacts {
    /// `TESSERA_REDIS_URL` without its passwords.
    pub url: String,
    pub shape: Shape,
    /// Every data server that answered: the one server; every node of a
    /// cluster's map; the primary the sentinels name and its replicas.
    pub servers: Vec<ServerFacts>,
    /// Why Tessera cannot use this Redis from here, if it cannot.
    pub unreachable: Option<String>,
}

/// How Redis is run, as the URL says, with what that way of running it
/// reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Single,
    Cluster(ClusterFacts),
    Sentinel(SentinelFacts),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Seeds in the URL.
    pub seeds: usize,
    /// Seeds that did not answer: (`host:port`, why).
    pub seeds_down: Vec<(String, String)>,
    /// Seeds that answered with cluster support disabled.
    pub not_cluster: Vec<String>,
    /// `cluster_state` as the first seed that answered says it.
    pub state: Option<String>,
    /// The nodes of its `CLUSTER NODES`.
    pub map: Vec<ClusterNode>,
    /// Nodes of the map, not marked failing, that did not answer from
    /// here: (`host:port`, why).
    pub nodes_down: Vec<(String, String)>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: String,
    /// `host:port`.
    pub addr: String,
    /// The hostname it announces (`cluster-announce-hostname`), if any:
    /// what a TLS certificate names.
    pub hostname: Option<String>,
    pub primary: bool,
    /// Marked `fail` or `fail?`.
    pub failing: bool,
    /// A replica's primary (its id).
    pub primary_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentinelFacts {
    /// The primary's name (the URL's path).
    pub master: String,
    /// Sentinels in the URL.
    pub sentinels: usize,
    /// Sentinels that did not answer: (`host:port`, why).
    pub sentinels_down: Vec<(String, String)>,
    /// What each sentinel that answered names as the primary (`None`: no
    /// primary of that name).
    pub named: Vec<(String, Option<String>)>,
    /// The primary most of them name.
    pub primary: Option<String>,
    /// The primary's quorum (`SENTINEL MASTER`).
    pub quorum: Option<u32>,
    /// The replicas the sentinels know (`SENTINEL REPLICAS`).
    pub replicas: Vec<String>,
    /// `SENTINEL CKQUORUM`: whether a failover could be authorised now.
    pub ckquorum: Option<Result<String, String>>,
    /// Replicas that did not answer from here: (`host:port`, why).
    pub replicas_down: Vec<(String, String)>,
}

/// What one data server said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    /// `host:port`.
    pub addr: String,
    /// The fields of `INFO` (empty when it was refused, see `info_error`).
    pub info: BTreeMap<String, String>,
    pub info_error: Option<String>,
    /// `CONFIG GET` of `maxmemory-policy`, `save` and `appendfsync`
    /// (`None` when refused, see `config_error`).
    pub policy: Option<String>,
    pub save: Option<String>,
    pub appendfsync: Option<String>,
    pub config_error: Option<String>,
    /// Median of [`PINGS`] round trips.
    pub round_trip: Option<Duration>,
}

impl ServerFacts {
    /// A server's facts from the text of its `INFO`.
    pub fn from_info(addr: &str, info: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            info: parse_info(info),
            ..Self::default()
        }
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.info.get(name).map(String::as_str)
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.field(name)?.trim().parse().ok()
    }

    fn role(&self) -> Option<&str> {
        self.field("role")
    }

    fn is_primary(&self) -> bool {
        self.role() == Some("master")
    }

    /// `Redis 7.0.15` (or `Valkey 8.0.1`).
    fn product(&self) -> String {
        match (self.field("valkey_version"), self.field("redis_version")) {
            (Some(v), _) => format!("Valkey {v}"),
            (None, Some(v)) => format!("Redis {v}"),
            (None, None) => "Redis".to_owned(),
        }
    }
}

/// `INFO`'s `name:value` lines.
fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `(major, minor)` of a version such as `7.0.15`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

/// `a, b and c` (at most [`NAMED`], then how many more).
fn names<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(NAMED).map(AsRef::as_ref).collect();
    let more = items.len().saturating_sub(NAMED);
    match (shown.as_slice(), more) {
        ([], _) => String::new(),
        ([one], 0) => (*one).to_owned(),
        (all, 0) => format!(
            "{} and {}",
            all[..all.len() - 1].join(", "),
            all[all.len() - 1]
        ),
        (all, more) => format!("{} and {more} more", all.join(", ")),
    }
}

/// `a (why); b (why)`.
fn with_reasons(items: &[(String, String)]) -> String {
    let mut text = items
        .iter()
        .take(NAMED)
        .map(|(addr, why)| format!("{addr}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > NAMED {
        text.push_str(&format!("; and {} more", items.len() - NAMED));
    }
    text
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn milliseconds(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Applies `rule` to every server and merges equal findings into one that
/// names all their servers (where the rule wrote [`AT`]).
fn per_server(
    servers: &[ServerFacts],
    rule: impl Fn(&ServerFacts) -> Option<Finding>,
) -> Vec<Finding> {
    let mut groups: Vec<(Finding, Vec<&str>)> = Vec::new();
    for s in servers {
        let Some(f) = rule(s) else { continue };
        match groups.iter_mut().find(|(g, _)| *g == f) {
            Some((_, at)) => at.push(&s.addr),
            None => groups.push((f, vec![&s.addr])),
        }
    }
    groups
        .into_iter()
        .map(|(f, at)| {
            let at = names(&at);
            Finding {
                severity: f.severity,
                problem: f.problem.replace(AT, &at),
                fix: f.fix.replace(AT, &at),
            }
        })
        .collect()
}

/// The findings for what [`read`] found.
pub fn redis_findings(facts: &RedisFacts) -> Vec<Finding> {
    use Severity::Danger;
    let mut out = Vec::new();
    if let Some(why) = &facts.unreachable {
        out.push(finding(
            Danger,
            format!(
                "Redis at {} cannot be reached: {why}. Sessions live there: every sign-in, sign-out and session check that misses a node's cache fails (503) until it answers",
                facts.url
            ),
            "start Redis, or correct TESSERA_REDIS_URL (address, port, password, TLS, the primary's name for Sentinel); this machine must be able to connect (firewall, bind, protected-mode)",
        ));
    }
    let mut data = facts.servers.as_slice();
    match &facts.shape {
        Shape::Single => {
            if let Some(server) = facts.servers.first() {
                out.extend(single(server));
                if server.field("redis_mode") == Some("sentinel") {
                    // A sentinel holds no data: nothing more to check.
                    data = &[];
                }
            }
        }
        Shape::Cluster(c) => out.extend(cluster(c)),
        Shape::Sentinel(s) => out.extend(sentinel(s, &facts.servers)),
    }
    out.extend(per_server(data, info_refused));
    out.extend(per_server(data, version));
    out.extend(per_server(data, eviction));
    out.extend(per_server(data, memory));
    out.extend(per_server(data, persistence));
    let used: Vec<&ServerFacts> = match &facts.shape {
        Shape::Single => data.iter().collect(),
        _ => data.iter().filter(|s| s.is_primary()).collect(),
    };
    out.extend(round_trip(&used));
    if let (Shape::Single, Some(server)) = (&facts.shape, data.first()) {
        out.extend(single_replicas(server));
    }
    out
}

/// What one server given alone must be: a primary, not a cluster node or
/// a sentinel.
fn single(s: &ServerFacts) -> Vec<Finding> {
    use Severity::Danger;
    let at = &s.addr;
    let mut out = Vec::new();
    if s.field("redis_mode") == Some("sentinel") {
        out.push(finding(
            Danger,
            format!(
                "{at} is a Redis Sentinel, which holds no data, but TESSERA_REDIS_URL names it as the server: every sign-in and session check fails"
            ),
            format!(
                "to find the primary through Sentinel, use TESSERA_REDIS_URL=redis+sentinel://{at}[,other sentinels]/<primary's name>"
            ),
        ));
        return out;
    }
    if s.field("redis_mode") == Some("cluster") || s.field("cluster_enabled") == Some("1") {
        out.push(finding(
            Danger,
            format!(
                "{at} is a node of a Redis Cluster, but TESSERA_REDIS_URL names it as one server: commands on keys it does not serve fail (MOVED), so sign-ins and session checks of most users fail"
            ),
            "list the cluster's nodes in TESSERA_REDIS_URL, comma-separated (redis://node1:port,redis://node2:port,…): Tessera then follows the cluster's map",
        ));
    }
    if s.role() == Some("slave") {
        out.push(finding(
            Danger,
            format!(
                "Redis at {at} is a replica, read-only: every sign-in and sign-out fails (READONLY)"
            ),
            "point TESSERA_REDIS_URL at the primary, or use Sentinel (redis+sentinel://…) so that the primary is found again after a failover",
        ));
    }
    out
}

/// Whether anything stands in for one server given alone.
fn single_replicas(s: &ServerFacts) -> Option<Finding> {
    use Severity::Info;
    let at = &s.addr;
    if s.role() != Some("master") {
        return None;
    }
    let replicas = s.number("connected_slaves")?;
    Some(if replicas == 0 {
        finding(
            Info,
            format!(
                "Redis at {at} has no replica: if the server is lost, so are the sessions (everyone signs in again), and nothing stands in while it is down (503)"
            ),
            "none needed; for failover, add a replica watched by Sentinel and use TESSERA_REDIS_URL=redis+sentinel://…",
        )
    } else {
        finding(
            Info,
            format!(
                "Redis at {at} has {}, but with one server in TESSERA_REDIS_URL nothing moves Tessera to a replica when this primary fails",
                plural(replicas as usize, "replica", "replicas")
            ),
            "none needed; for automatic failover, let Sentinel watch them and use TESSERA_REDIS_URL=redis+sentinel://…",
        )
    })
}

/// A cluster: its seeds, its state, its map's nodes reachable from here,
/// and a replica per primary.
fn cluster(c: &ClusterFacts) -> Vec<Finding> {
    use Severity::{Danger, Info, Warning};
    let mut out = Vec::new();
    if !c.not_cluster.is_empty() {
        out.push(finding(
            Danger,
            format!(
                "{} {} with cluster support disabled, yet TESSERA_REDIS_URL lists several URLs, which Tessera takes for a Redis Cluster's seeds: sessions cannot be stored",
                names(&c.not_cluster),
                if c.not_cluster.len() == 1 { "answers" } else { "answer" }
            ),
            "give one URL for one server (redis+sentinel://… for Sentinel); several, comma-separated, only for a Redis Cluster",
        ));
    }
    let answered = c.seeds - c.seeds_down.len();
    if !c.seeds_down.is_empty() && answered > 0 {
        out.push(finding(
            Warning,
            format!(
                "{} of the {} cluster seeds in TESSERA_REDIS_URL {} ({}): a Tessera node that starts while the others are down cannot connect",
                c.seeds_down.len(),
                c.seeds,
                if c.seeds_down.len() == 1 { "does not answer" } else { "do not answer" },
                with_reasons(&c.seeds_down)
            ),
            "replace the seeds that are gone with live nodes of the cluster in TESSERA_REDIS_URL",
        ));
    }
    let Some(state) = &c.state else {
        return out;
    };
    let primaries: Vec<&ClusterNode> = c.map.iter().filter(|n| n.primary).collect();
    let replicas = c.map.len() - primaries.len();
    if state != "ok" {
        out.push(finding(
            Danger,
            format!(
                "the Redis Cluster says cluster_state:{state}: commands on slots no live primary serves fail, so sign-ins and session checks of some or all users get 503"
            ),
            "repair the cluster: `redis-cli --cluster check <node>`, then restart or fail over the primaries that are down",
        ));
    }
    let failing: Vec<&str> = c
        .map
        .iter()
        .filter(|n| n.failing)
        .map(|n| n.addr.as_str())
        .collect();
    if !failing.is_empty() {
        out.push(finding(
            Warning,
            format!("the Redis Cluster marks {} as failing", names(&failing)),
            "restart or replace them (`redis-cli --cluster check <node>` shows the cluster's view)",
        ));
    }
    let down_is = |primary: bool| -> Vec<(String, String)> {
        c.nodes_down
            .iter()
            .filter(|(addr, _)| {
                c.map
                    .iter()
                    .any(|n| &n.addr == addr && n.primary == primary)
            })
            .cloned()
            .collect()
    };
    let announce = "every Tessera node must reach every cluster node at the address the cluster announces (behind NAT or in containers, set cluster-announce-ip and cluster-announce-port)";
    let primaries_down = down_is(true);
    if !primaries_down.is_empty() {
        out.push(finding(
            Danger,
            format!(
                "primaries of the Redis Cluster that it says are up do not answer from this machine ({}): sessions on their slots fail from here (503)",
                with_reasons(&primaries_down)
            ),
            announce,
        ));
    }
    let replicas_down = down_is(false);
    if !replicas_down.is_empty() {
        out.push(finding(
            Warning,
            format!(
                "replicas of the Redis Cluster do not answer from this machine ({}): once promoted, they will not either",
                with_reasons(&replicas_down)
            ),
            announce,
        ));
    }
    let alone: Vec<&str> = primaries
        .iter()
        .filter(|p| {
            !p.failing
                && !c
                    .map
                    .iter()
                    .any(|r| r.primary_id.as_deref() == Some(p.id.as_str()) && !r.failing)
        })
        .map(|p| p.addr.as_str())
        .collect();
    let summary = format!(
        "Redis Cluster (cluster_state:{state}): {}, {}; {} of {} seeds answer",
        plural(primaries.len(), "primary", "primaries"),
        plural(replicas, "replica", "replicas"),
        answered,
        c.seeds
    );
    if alone.is_empty() {
        out.push(finding(
            Info,
            format!("{summary}; every primary has a replica to fail over to"),
            "none needed",
        ));
    } else {
        out.push(finding(
            Info,
            format!(
                "{summary}; {} {} no replica: if one fails, its slots fail until it is back (503 for the users whose sessions live there) and their sessions are lost",
                names(&alone),
                if alone.len() == 1 { "has" } else { "have" }
            ),
            "none needed; for failover, give every primary a replica (`redis-cli --cluster add-node NEW EXISTING --cluster-slave`)",
        ));
    }
    out
}

/// Sentinel: the sentinels answer and agree, the primary they name is one,
/// and a failover could happen.
fn sentinel(s: &SentinelFacts, servers: &[ServerFacts]) -> Vec<Finding> {
    use Severity::{Danger, Info, Warning};
    let mut out = Vec::new();
    let master = &s.master;
    let answered = s.sentinels - s.sentinels_down.len();
    if !s.sentinels_down.is_empty() && answered > 0 {
        out.push(finding(
            Warning,
            format!(
                "{} of the {} sentinels in TESSERA_REDIS_URL {} ({}): fewer are left to notice a failure and agree on a failover",
                s.sentinels_down.len(),
                s.sentinels,
                if s.sentinels_down.len() == 1 { "does not answer" } else { "do not answer" },
                with_reasons(&s.sentinels_down)
            ),
            "restart them, or list the sentinels that run in TESSERA_REDIS_URL",
        ));
    }
    let Some(primary) = &s.primary else {
        return out;
    };
    let disagree: Vec<String> = s
        .named
        .iter()
        .filter(|(_, named)| named.as_ref() != Some(primary))
        .map(|(sentinel, named)| match named {
            Some(other) => format!("{sentinel} names {other}"),
            None => format!("{sentinel} knows no primary \"{master}\""),
        })
        .collect();
    if !disagree.is_empty() {
        out.push(finding(
            Warning,
            format!(
                "the sentinels disagree on the primary \"{master}\": most name {primary}, but {}",
                disagree.join(", ")
            ),
            format!(
                "compare `SENTINEL MASTER {master}` on each sentinel: they settle after a failover; if not, their configurations differ"
            ),
        ));
    }
    let role = servers
        .iter()
        .find(|x| &x.addr == primary)
        .and_then(ServerFacts::role);
    if let Some(role) = role
        && role != "master"
    {
        out.push(finding(
            Danger,
            format!(
                "the primary the sentinels name, {primary}, says it is a {}: sign-ins and sign-outs fail (READONLY) until a failover completes",
                if role == "slave" { "replica" } else { role }
            ),
            format!(
                "check `SENTINEL MASTER {master}` and the server's replicaof; if no failover is under way, repair it (`SENTINEL FAILOVER {master}`)"
            ),
        ));
    }
    if let Some(Err(why)) = &s.ckquorum {
        out.push(finding(
            Warning,
            format!("Sentinel could not fail over \"{master}\" now: {why}"),
            "run at least three sentinels, on separate machines, with a quorum a majority of them reaches (e.g. quorum 2 of 3)",
        ));
    }
    if s.replicas.is_empty() {
        out.push(finding(
            Warning,
            format!(
                "Sentinel knows no replica of \"{master}\": nothing to promote if the primary fails (Redis is then down, 503, until it is back, and its sessions may be lost)"
            ),
            format!("add a replica (replicaof {primary}) for Sentinel to promote"),
        ));
    }
    if !s.replicas_down.is_empty() {
        out.push(finding(
            Warning,
            format!(
                "replicas Sentinel names do not answer from this machine ({}): once promoted, they will not either",
                with_reasons(&s.replicas_down)
            ),
            "check the replicas; Tessera reaches a promoted replica at the address Sentinel names (behind NAT or in containers, set replica-announce-ip)",
        ));
    }
    out.push(finding(
        Info,
        format!(
            "Sentinel: {answered} of {} sentinels answer and name {primary}{} as the primary \"{master}\", with {}{}",
            s.sentinels,
            match role {
                Some("master") => " (which says it is the primary)",
                _ => "",
            },
            plural(s.replicas.len(), "replica", "replicas"),
            match (s.quorum, &s.ckquorum) {
                (Some(q), Some(Ok(_))) => format!("; quorum {q}, a failover can be authorised"),
                (Some(q), _) => format!("; quorum {q}"),
                _ => String::new(),
            }
        ),
        "none needed",
    ));
    out
}

fn info_refused(s: &ServerFacts) -> Option<Finding> {
    let why = s.info_error.as_ref()?;
    Some(finding(
        Severity::Warning,
        format!(
            "Redis at {AT} refused INFO ({why}): its version, persistence and replicas are not checked"
        ),
        "allow INFO to the user in TESSERA_REDIS_URL (ACL: +info), or check them by hand",
    ))
}

fn version(s: &ServerFacts) -> Option<Finding> {
    use Severity::{Info, Warning};
    if s.info_error.is_some() {
        return None;
    }
    let product = s.product();
    Some(match s.field("redis_version").and_then(major_minor) {
        None => finding(
            Warning,
            format!(
                "the version of the Redis at {AT} could not be read (INFO: redis_version {:?})",
                s.field("redis_version").unwrap_or("")
            ),
            "use Redis 6.2 or newer (or a server compatible with it)",
        ),
        Some(v) if v < OLDEST_SUPPORTED => finding(
            Warning,
            format!(
                "{product} at {AT} is older than 6.2, the oldest Tessera supports (and past its end of life: no more security fixes)"
            ),
            "upgrade Redis to 6.2 or newer (Debian 12 ships 7.0)",
        ),
        Some(_) => finding(Info, format!("{product} at {AT}"), "none needed"),
    })
}

fn eviction(s: &ServerFacts) -> Option<Finding> {
    use Severity::{Danger, Info, Warning};
    let fix = "CONFIG SET maxmemory-policy noeviction now, and maxmemory-policy noeviction in redis.conf (or the provider's parameter group) so that it stays; give Redis memory enough for the sessions";
    let Some(policy) = &s.policy else {
        let why = s.config_error.as_deref().unwrap_or("no answer");
        return Some(finding(
            Warning,
            format!(
                "the maxmemory-policy of the Redis at {AT} could not be read (CONFIG GET: {why}): under an allkeys-* or volatile-* policy it evicts session keys silently"
            ),
            "check the eviction policy in the provider's settings (parameter group, console): it must be noeviction",
        ));
    };
    Some(if policy == "noeviction" {
        finding(
            Info,
            format!(
                "maxmemory-policy noeviction at {AT}: no session key is ever evicted (when Redis is full, sign-ins fail with 503 instead)"
            ),
            "none needed",
        )
    } else if policy.starts_with("allkeys-") || policy.starts_with("volatile-") {
        let volatile = if policy.starts_with("volatile-") {
            " (every key Tessera writes has a time to live, so a volatile-* policy evicts them as readily as allkeys-* would)"
        } else {
            ""
        };
        finding(
            Danger,
            format!(
                "maxmemory-policy {policy} at {AT}: when Redis is full it evicts keys silently, session keys included{volatile}: users are signed out, and worse, a user's session index may be evicted while their sessions remain, so a logout-everywhere misses those sessions"
            ),
            fix,
        )
    } else {
        finding(
            Warning,
            format!("maxmemory-policy {policy} at {AT} is not a policy Tessera knows"),
            fix,
        )
    })
}

fn memory(s: &ServerFacts) -> Option<Finding> {
    let max = s.number("maxmemory").filter(|m| *m > 0)?;
    let used = s.number("used_memory")?;
    if used.saturating_mul(10) < max.saturating_mul(9) {
        return None;
    }
    let mib = |b: u64| b / (1024 * 1024);
    Some(finding(
        Severity::Warning,
        format!(
            "Redis at {} uses {}% of its maxmemory ({} of {} MiB): once full, new sign-ins fail (noeviction) or keys are evicted",
            s.addr,
            used.saturating_mul(100) / max,
            mib(used),
            mib(max)
        ),
        "raise maxmemory (with the memory to back it), or shorten TESSERA_SESSION_IDLE_TIMEOUT so that fewer sessions are kept",
    ))
}

fn persistence(s: &ServerFacts) -> Option<Finding> {
    use Severity::{Info, Warning};
    if s.info_error.is_some() {
        return None;
    }
    if s.field("aof_enabled") == Some("1") {
        let lost = match s.appendfsync.as_deref() {
            Some("always") => " (appendfsync always: no write is lost)",
            Some("everysec") => {
                " (appendfsync everysec: a crash loses at most about a second of writes)"
            }
            Some("no") => {
                " (appendfsync no: a crash loses the writes the system had not flushed, up to about 30 s)"
            }
            _ => "",
        };
        return Some(finding(
            Info,
            format!(
                "Redis at {AT} logs every write to its append-only file: a restart keeps everyone signed in{lost}"
            ),
            "none needed",
        ));
    }
    let keep = "appendonly yes (with appendfsync everysec) in redis.conf, and CONFIG SET appendonly yes now";
    Some(match s.save.as_deref().map(str::trim) {
        Some("") => finding(
            Warning,
            format!(
                "Redis at {AT} keeps nothing on disk (no append-only file, no snapshots): a Redis restart signs everyone out. That is safe (sessions are lost, none comes back, nothing leaks); users just sign in again"
            ),
            format!("if users should stay signed in across a Redis restart: {keep}"),
        ),
        Some(schedule) => finding(
            Warning,
            format!(
                "Redis at {AT} takes snapshots only (save {schedule}; no append-only file): a clean shutdown saves first, but after a crash it reloads the last snapshot, and sessions ended since it was taken (sign-outs, logouts everywhere, revoked devices) can come back until they expire"
            ),
            format!(
                "{keep}; or no persistence at all (save \"\"), so that a restart signs everyone out instead"
            ),
        ),
        None => finding(
            Warning,
            format!(
                "Redis at {AT} has no append-only file, and whether it takes snapshots could not be read (CONFIG GET: {}): after a crash it either signs everyone out (safe) or reloads an old snapshot, in which ended sessions can come back",
                s.config_error.as_deref().unwrap_or("no answer")
            ),
            "check persistence in the provider's settings: prefer the append-only file (appendonly yes, appendfsync everysec)",
        ),
    })
}

/// The slowest median round trip among the servers Tessera sends commands
/// to.
fn round_trip(servers: &[&ServerFacts]) -> Option<Finding> {
    use Severity::{Info, Warning};
    let timed: Vec<(&str, Duration)> = servers
        .iter()
        .filter_map(|s| Some((s.addr.as_str(), s.round_trip?)))
        .collect();
    let (addr, worst) = timed.iter().copied().max_by_key(|(_, d)| *d)?;
    let over = if timed.len() == 1 {
        format!("{PINGS} PINGs to {addr}")
    } else {
        format!(
            "{PINGS} PINGs to each of {} servers, slowest {addr}",
            timed.len()
        )
    };
    Some(if worst > SLOW_ROUND_TRIP {
        finding(
            Warning,
            format!(
                "the round trip from this machine to Redis takes {} (median of {over}): every session check that misses a node's cache waits for one, and a sign-in for several",
                milliseconds(worst)
            ),
            "run Redis near the Tessera nodes (same network, same zone), and run the doctor on a Tessera node; if Redis itself is slow, see `redis-cli --latency` and LATENCY DOCTOR",
        )
    } else {
        finding(
            Info,
            format!(
                "round trip from this machine to Redis: {} (median of {over})",
                milliseconds(worst)
            ),
            "none needed",
        )
    })
}

/// Doctor's Redis part: the findings, and a line for the summary when
/// Redis cannot be reached.
#[derive(Debug, Default)]
pub struct RedisReport {
    pub findings: Vec<Finding>,
    pub unreachable: Option<String>,
}

/// Reads `url`'s Redis and judges it.
pub async fn examine(url: &str, tls: &TlsFiles) -> RedisReport {
    let facts = read(url, tls).await;
    RedisReport {
        findings: redis_findings(&facts),
        unreachable: facts
            .unreachable
            .as_ref()
            .map(|_| format!("Redis at {} cannot be reached", facts.url)),
    }
}

/// Asks the Redis of `url` (a `TESSERA_REDIS_URL`, with the TLS files of
/// `redis_tls_*`) what the rules need.
pub async fn read(url: &str, tls: &TlsFiles) -> RedisFacts {
    let shown = crate::config::shown_redis_url(url);
    let target = match Target::parse(url) {
        Ok(target) => target,
        Err(why) => {
            return RedisFacts {
                url: shown,
                shape: Shape::Single,
                servers: Vec::new(),
                unreachable: Some(format!("TESSERA_REDIS_URL: {why}")),
            };
        }
    };
    let certs = match tls.load() {
        Ok(certs) => certs,
        Err(e) => {
            return RedisFacts {
                url: shown,
                shape: Shape::Single,
                servers: Vec::new(),
                unreachable: Some(format!(
                    "TESSERA_{}: {}",
                    e.setting.to_ascii_uppercase(),
                    e.problem
                )),
            };
        }
    };
    let scrub = Scrub::of(&target, certs);
    let mut facts = match &target {
        Target::Single(url) => read_single(url, &scrub).await,
        Target::Cluster(seeds) => read_cluster(seeds, &scrub).await,
        Target::Sentinel(s) => read_sentinel(s, &scrub).await,
    };
    facts.url = shown;
    facts
}

/// How to reach Redis: the URL's passwords, removed from error texts (the
/// client's errors do not carry them, but nothing printed may depend on
/// that), and the TLS certificates.
struct Scrub {
    secrets: Vec<String>,
    certs: Certificates,
}

impl Scrub {
    fn of(target: &Target, certs: Certificates) -> Self {
        let mut secrets = Vec::new();
        let mut add = |p: &str| {
            if !p.is_empty() {
                secrets.push(p.to_owned());
                let decoded = percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned();
                if decoded != p {
                    secrets.push(decoded);
                }
            }
        };
        match target {
            Target::Single(url) => {
                if let Some(p) = url::Url::parse(url)
                    .ok()
                    .as_ref()
                    .and_then(url::Url::password)
                {
                    add(p);
                }
            }
            Target::Cluster(seeds) => {
                for url in seeds {
                    if let Some(p) = url::Url::parse(url)
                        .ok()
                        .as_ref()
                        .and_then(url::Url::password)
                    {
                        add(p);
                    }
                }
            }
            Target::Sentinel(s) => {
                if let Some(p) = &s.password {
                    add(p);
                }
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets, certs }
    }

    fn text(&self, e: impl std::fmt::Display) -> String {
        let mut text = e.to_string();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        text
    }
}

/// `host:port` of a `redis://` URL.
fn addr_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("?"),
            u.port().unwrap_or(6379)
        ),
        Err(_) => "?".to_owned(),
    }
}

/// `url` with another host and port (the same scheme, credentials and
/// database).
fn moved(url: &str, host: &str, port: u16) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    u.set_host(Some(&host)).ok()?;
    u.set_port(Some(port)).ok()?;
    Some(u.into())
}

/// `host:port` with brackets around an IPv6 address.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `(host, port)` of `host:port` (`[v6]:port` too).
fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

async fn connect(url: &str, scrub: &Scrub) -> Result<MultiplexedConnection, String> {
    let client = tls::client(url, &scrub.certs).map_err(|e| scrub.text(e))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    match tokio::time::timeout(
        CONNECT_TIMEOUT + Duration::from_secs(1),
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(scrub.text(e)),
        Err(_) => Err(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// `CONFIG GET name`: its value, `None` when the server has no such
/// parameter.
async fn config_get(
    c: &mut MultiplexedConnection,
    name: &str,
) -> ::redis::RedisResult<Option<String>> {
    let reply: BTreeMap<String, String> = ::redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(c)
        .await?;
    Ok(reply.get(name).cloned())
}

/// Everything the rules need from one data server; `Err` when it does not
/// answer.
async fn ask_server(url: &str, addr: &str, scrub: &Scrub) -> Result<ServerFacts, String> {
    let ask = async {
        let mut c = connect(url, scrub).await?;
        let _: String = ::redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| scrub.text(e))?;
        let mut facts = ServerFacts {
            addr: addr.to_owned(),
            ..ServerFacts::default()
        };
        match ::redis::cmd("INFO").query_async::<String>(&mut c).await {
            Ok(text) => facts.info = parse_info(&text),
            Err(e) => facts.info_error = Some(scrub.text(e)),
        }
        let config = async {
            Ok::<_, ::redis::RedisError>((
                config_get(&mut c, "maxmemory-policy").await?,
                config_get(&mut c, "save").await?,
                config_get(&mut c, "appendfsync").await?,
            ))
        };
        match config.await {
            Ok((policy, save, appendfsync)) => {
                facts.policy = policy;
                facts.save = save;
                facts.appendfsync = appendfsync;
            }
            Err(e) => facts.config_error = Some(scrub.text(e)),
        }
        let mut times = Vec::with_capacity(PINGS);
        for _ in 0..PINGS {
            let start = Instant::now();
            let pong: ::redis::RedisResult<String> = ::redis::cmd("PING").query_async(&mut c).await;
            if pong.is_ok() {
                times.push(start.elapsed());
            }
        }
        times.sort_unstable();
        facts.round_trip = times.get(times.len() / 2).copied();
        Ok(facts)
    };
    tokio::time::timeout(SERVER_DEADLINE, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", SERVER_DEADLINE.as_secs())))
}

async fn read_single(url: &str, scrub: &Scrub) -> RedisFacts {
    let (servers, unreachable) = match ask_server(url, &addr_of(url), scrub).await {
        Ok(facts) => (vec![facts], None),
        Err(why) => (Vec::new(), Some(why)),
    };
    RedisFacts {
        url: String::new(),
        shape: Shape::Single,
        servers,
        unreachable,
    }
}

/// What one seed of a cluster said.
enum Seed {
    Cluster { state: String, nodes: String },
    NotCluster,
}

async fn ask_seed(url: &str, scrub: &Scrub) -> Result<Seed, String> {
    let ask = async {
        let mut c = connect(url, scrub).await?;
        let info: String = match ::redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut c)
            .await
        {
            Ok(info) => info,
            Err(e) if e.to_string().contains("cluster support disabled") => {
                return Ok(Seed::NotCluster);
            }
            Err(e) => return Err(scrub.text(e)),
        };
        let nodes: String = ::redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .map_err(|e| scrub.text(e))?;
        let state = parse_info(&info)
            .remove("cluster_state")
            .unwrap_or_else(|| "unknown".to_owned());
        Ok(Seed::Cluster { state, nodes })
    };
    tokio::time::timeout(SERVER_DEADLINE, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", SERVER_DEADLINE.as_secs())))
}

/// The nodes of a `CLUSTER NODES` reply that have an address.
fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, hostname) = match f.get(1)?.split_once(',') {
                Some((addr, hostname)) => (addr, Some(hostname).filter(|h| !h.is_empty())),
                None => (*f.get(1)?, None),
            };
            let addr = addr.split('@').next()?;
            let flags: Vec<&str> = f.get(2)?.split(',').collect();
            if flags.iter().any(|x| matches!(*x, "noaddr" | "handshake")) {
                return None;
            }
            let (host, port) = split_addr(addr)?;
            if port == 0 || host.is_empty() {
                return None;
            }
            Some(ClusterNode {
                id: f[0].to_owned(),
                addr: addr.to_owned(),
                hostname: hostname.map(str::to_owned),
                primary: flags.contains(&"master"),
                failing: flags.iter().any(|x| matches!(*x, "fail" | "fail?")),
                primary_id: f.get(3).filter(|m| **m != "-").map(|m| (*m).to_owned()),
            })
        })
        .collect()
}

async fn read_cluster(seeds: &[String], scrub: &Scrub) -> RedisFacts {
    let answers = join_all(seeds.iter().map(|url| ask_seed(url, scrub))).await;
    let mut c = ClusterFacts {
        seeds: seeds.len(),
        ..ClusterFacts::default()
    };
    let mut base = None;
    let mut map_text = None;
    for (url, answer) in seeds.iter().zip(answers) {
        match answer {
            Err(why) => c.seeds_down.push((addr_of(url), why)),
            Ok(Seed::NotCluster) => c.not_cluster.push(addr_of(url)),
            Ok(Seed::Cluster { state, nodes }) => {
                if c.state.is_none() {
                    c.state = Some(state);
                    map_text = Some(nodes);
                    base = Some(url.clone());
                }
            }
        }
    }
    let mut servers = Vec::new();
    if let (Some(base), Some(text)) = (base, map_text) {
        c.map = parse_cluster_nodes(&text);
        let asked: Vec<(String, String)> = c
            .map
            .iter()
            .filter(|n| !n.failing)
            .filter_map(|n| {
                let (ip, port) = split_addr(&n.addr)?;
                let host = n.hostname.clone().unwrap_or(ip);
                Some((n.addr.clone(), moved(&base, &host, port)?))
            })
            .collect();
        let answers = join_all(asked.iter().map(|(addr, url)| ask_server(url, addr, scrub))).await;
        for ((addr, _), answer) in asked.into_iter().zip(answers) {
            match answer {
                Ok(facts) => servers.push(facts),
                Err(why) => c.nodes_down.push((addr, why)),
            }
        }
    }
    let unreachable = (c.seeds_down.len() == c.seeds).then(|| {
        format!(
            "none of its {} cluster seeds answers ({})",
            c.seeds,
            with_reasons(&c.seeds_down)
        )
    });
    RedisFacts {
        url: String::new(),
        shape: Shape::Cluster(c),
        servers,
        unreachable,
    }
}

/// What one sentinel said about the primary.
struct SentinelAnswer {
    named: Option<String>,
    quorum: Option<u32>,
    replicas: Vec<String>,
    ckquorum: Result<String, String>,
}

/// `key, value, key, value…` as pairs.
fn pairs(flat: &[String]) -> BTreeMap<&str, &str> {
    flat.chunks(2)
        .filter_map(|kv| Some((kv[0].as_str(), kv.get(1)?.as_str())))
        .collect()
}

async fn ask_sentinel(url: &str, master: &str, scrub: &Scrub) -> Result<SentinelAnswer, String> {
    let ask = async {
        let mut c = connect(url, scrub).await?;
        let named: Option<Vec<String>> = ::redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(master)
            .query_async(&mut c)
            .await
            .map_err(|e| scrub.text(e))?;
        let named = named
            .filter(|v| v.len() == 2)
            .map(|v| join_host_port(&v[0], &v[1]));
        let mut answer = SentinelAnswer {
            named,
            quorum: None,
            replicas: Vec::new(),
            ckquorum: Err("not asked".to_owned()),
        };
        if answer.named.is_none() {
            return Ok(answer);
        }
        let state: ::redis::RedisResult<Vec<String>> = ::redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master)
            .query_async(&mut c)
            .await;
        if let Ok(state) = state {
            answer.quorum = pairs(&state).get("quorum").and_then(|q| q.parse().ok());
        }
        let replicas: ::redis::RedisResult<Vec<Vec<String>>> = ::redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(master)
            .query_async(&mut c)
            .await;
        for replica in replicas.unwrap_or_default() {
            let r = pairs(&replica);
            if let (Some(ip), Some(port)) = (r.get("ip"), r.get("port")) {
                answer.replicas.push(join_host_port(ip, port));
            }
        }
        answer.ckquorum = ::redis::cmd("SENTINEL")
            .arg("CKQUORUM")
            .arg(master)
            .query_async::<String>(&mut c)
            .await
            .map_err(|e| scrub.text(e));
        Ok(answer)
    };
    tokio::time::timeout(SERVER_DEADLINE, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", SERVER_DEADLINE.as_secs())))
}

/// The URL of a data server behind Sentinel, with the target's
/// credentials, TLS and database.
fn sentinel_server_url(t: &SentinelTarget, addr: &str) -> Option<String> {
    let scheme = if t.tls { "rediss" } else { "redis" };
    let mut u = url::Url::parse(&format!("{scheme}://{addr}/{}", t.db)).ok()?;
    if let Some(user) = &t.username {
        u.set_username(user).ok()?;
    }
    if let Some(password) = &t.password {
        u.set_password(Some(password)).ok()?;
    }
    Some(u.into())
}

async fn read_sentinel(t: &SentinelTarget, scrub: &Scrub) -> RedisFacts {
    let scheme = if t.tls { "rediss" } else { "redis" };
    let sentinels: Vec<String> = t
        .sentinels
        .iter()
        .map(|(host, port)| join_host_port(host, &port.to_string()))
        .collect();
    let answers = join_all(sentinels.iter().map(|addr| {
        let url = format!("{scheme}://{addr}");
        async move { ask_sentinel(&url, &t.master, scrub).await }
    }))
    .await;
    let mut s = SentinelFacts {
        master: t.master.clone(),
        sentinels: sentinels.len(),
        ..SentinelFacts::default()
    };
    let mut answered = Vec::new();
    for (addr, answer) in sentinels.iter().zip(answers) {
        match answer {
            Ok(a) => {
                s.named.push((addr.clone(), a.named.clone()));
                answered.push(a);
            }
            Err(why) => s.sentinels_down.push((addr.clone(), why)),
        }
    }
    // The primary most of them name (the first named, on a tie).
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for named in s.named.iter().filter_map(|(_, n)| n.as_deref()) {
        match counts.iter_mut().find(|(n, _)| *n == named) {
            Some((_, count)) => *count += 1,
            None => counts.push((named, 1)),
        }
    }
    let mut best: Option<(&str, usize)> = None;
    for (named, count) in counts {
        if best.is_none_or(|(_, b)| count > b) {
            best = Some((named, count));
        }
    }
    s.primary = best.map(|(named, _)| named.to_owned());
    let mut servers = Vec::new();
    let mut unreachable = None;
    match &s.primary {
        None if answered.is_empty() => {
            unreachable = Some(format!(
                "none of its {} sentinels answers ({})",
                s.sentinels,
                with_reasons(&s.sentinels_down)
            ));
        }
        None => {
            unreachable = Some(format!(
                "its sentinels know no primary named \"{}\" (the name is the URL's path; see `sentinel monitor` in sentinel.conf)",
                t.master
            ));
        }
        Some(primary) => {
            if let Some(first) = answered
                .iter()
                .find(|a| a.named.as_deref() == Some(primary.as_str()))
            {
                s.quorum = first.quorum;
                s.replicas = first.replicas.clone();
                s.ckquorum = Some(first.ckquorum.clone());
            }
            let asked: Vec<String> = std::iter::once(primary.clone())
                .chain(s.replicas.iter().cloned())
                .collect();
            let answers = join_all(asked.iter().map(|addr| async move {
                match sentinel_server_url(t, addr) {
                    Some(url) => ask_server(&url, addr, scrub).await,
                    None => Err(format!("{addr} is not an address")),
                }
            }))
            .await;
            for (i, (addr, answer)) in asked.iter().zip(answers).enumerate() {
                match answer {
                    Ok(facts) => servers.push(facts),
                    Err(why) if i == 0 => {
                        unreachable = Some(format!(
                            "the primary its sentinels name, {addr}, does not answer: {why}"
                        ));
                    }
                    Err(why) => s.replicas_down.push((addr.clone(), why)),
                }
            }
        }
    }
    RedisFacts {
        url: String::new(),
        shape: Shape::Sentinel(s),
        servers,
        unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\
        # Persistence\r\naof_enabled:0\r\n# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\n\
        # Replication\r\nrole:master\r\nconnected_slaves:0\r\n";

    fn server(addr: &str) -> ServerFacts {
        ServerFacts {
            policy: Some("noeviction".into()),
            save: Some(String::new()),
            appendfsync: Some("everysec".into()),
            round_trip: Some(Duration::from_micros(150)),
            ..ServerFacts::from_info(addr, INFO)
        }
    }

    fn single(s: ServerFacts) -> RedisFacts {
        RedisFacts {
            url: "redis://:redacted@127.0.0.1:6379".into(),
            shape: Shape::Single,
            servers: vec![s],
            unreachable: None,
        }
    }

    fn with(f: &[Finding], severity: Severity, needle: &str) -> bool {
        f.iter()
            .any(|x| x.severity == severity && x.problem.contains(needle))
    }

    fn worst(f: &[Finding]) -> Severity {
        f.iter().map(|x| x.severity).max().unwrap_or(Severity::Info)
    }

    #[test]
    fn a_healthy_server_names_its_version_and_policy_and_warns_only_of_no_persistence() {
        let f = redis_findings(&single(server("127.0.0.1:6379")));
        assert!(
            with(&f, Severity::Info, "Redis 7.0.15 at 127.0.0.1:6379"),
            "{f:#?}"
        );
        assert!(
            with(
                &f,
                Severity::Info,
                "maxmemory-policy noeviction at 127.0.0.1:6379"
            ),
            "{f:#?}"
        );
        assert!(
            with(
                &f,
                Severity::Info,
                "round trip from this machine to Redis: 0.15 ms"
            ),
            "{f:#?}"
        );
        assert!(with(&f, Severity::Info, "has no replica"), "{f:#?}");
        let w = f
            .iter()
            .find(|x| x.severity == Severity::Warning)
            .expect("a warning");
        assert!(w.problem.contains("keeps nothing on disk"), "{w:?}");
        assert!(w.problem.contains("safe"), "{w:?}");
        assert!(w.fix.contains("appendonly yes"), "{w:?}");
        assert_eq!(worst(&f), Severity::Warning);
        assert!(
            f.iter()
                .all(|x| !x.problem.contains(AT) && !x.fix.is_empty())
        );
    }

    #[test]
    fn evicting_policies_are_dangerous_and_an_unreadable_one_a_warning() {
        for policy in [
            "allkeys-lru",
            "allkeys-random",
            "volatile-lru",
            "volatile-ttl",
        ] {
            let s = ServerFacts {
                policy: Some(policy.into()),
                ..server("h:1")
            };
            let f = redis_findings(&single(s));
            let d = f
                .iter()
                .find(|x| x.severity == Severity::Danger)
                .unwrap_or_else(|| panic!("{policy}: {f:#?}"));
            assert!(d.problem.contains(policy), "{d:?}");
            assert!(d.problem.contains("logout-everywhere"), "{d:?}");
            assert!(
                d.fix.contains("CONFIG SET maxmemory-policy noeviction"),
                "{d:?}"
            );
        }
        let s = ServerFacts {
            policy: None,
            save: None,
            appendfsync: None,
            config_error: Some("ERR unknown command 'CONFIG'".into()),
            ..server("h:1")
        };
        let f = redis_findings(&single(s));
        assert_eq!(worst(&f), Severity::Warning, "{f:#?}");
        assert!(
            with(
                &f,
                Severity::Warning,
                "maxmemory-policy of the Redis at h:1 could not be read (CONFIG GET: ERR unknown command"
            ),
            "{f:#?}"
        );
        assert!(
            with(
                &f,
                Severity::Warning,
                "whether it takes snapshots could not be read"
            ),
            "{f:#?}"
        );
    }

    #[test]
    fn persistence_by_append_only_file_is_fine_and_snapshots_alone_a_warning() {
        let mut s = server("h:1");
        s.info.insert("aof_enabled".into(), "1".into());
        let f = redis_findings(&single(s));
        assert!(
            with(
                &f,
                Severity::Info,
                "append-only file: a restart keeps everyone signed in (appendfsync everysec"
            ),
            "{f:#?}"
        );
        assert_eq!(worst(&f), Severity::Info, "{f:#?}");
        let s = ServerFacts {
            save: Some("3600 1 300 100 60 10000".into()),
            ..server("h:1")
        };
        let f = redis_findings(&single(s));
        assert!(
            with(
                &f,
                Severity::Warning,
                "snapshots only (save 3600 1 300 100 60 10000"
            ),
            "{f:#?}"
        );
    }

    #[test]
    fn old_versions_slow_round_trips_and_full_memory_are_warnings() {
        let mut s = server("h:1");
        s.info.insert("redis_version".into(), "6.0.16".into());
        s.info.insert("maxmemory".into(), "1073741824".into());
        s.info.insert("used_memory".into(), "1030000000".into());
        s.round_trip = Some(Duration::from_millis(12));
        let f = redis_findings(&single(s));
        assert!(
            with(
                &f,
                Severity::Warning,
                "Redis 6.0.16 at h:1 is older than 6.2"
            ),
            "{f:#?}"
        );
        assert!(with(&f, Severity::Warning, "takes 12.0 ms"), "{f:#?}");
        assert!(
            with(&f, Severity::Warning, "uses 95% of its maxmemory"),
            "{f:#?}"
        );
        let mut s = server("h:1");
        s.info.insert("redis_version".into(), "6.2.0".into());
        s.info.insert("valkey_version".into(), "8.0.1".into());
        assert!(with(
            &redis_findings(&single(s)),
            Severity::Info,
            "Valkey 8.0.1 at h:1"
        ));
    }

    #[test]
    fn a_replica_a_cluster_node_or_a_sentinel_given_as_one_server_is_dangerous() {
        let mut s = server("h:1");
        s.info.insert("role".into(), "slave".into());
        assert!(with(
            &redis_findings(&single(s)),
            Severity::Danger,
            "is a replica"
        ));
        let mut s = server("h:1");
        s.info.insert("cluster_enabled".into(), "1".into());
        assert!(with(
            &redis_findings(&single(s)),
            Severity::Danger,
            "node of a Redis Cluster"
        ));
        let mut s = server("h:1");
        s.info.insert("redis_mode".into(), "sentinel".into());
        let f = redis_findings(&single(s));
        assert!(with(&f, Severity::Danger, "is a Redis Sentinel"), "{f:#?}");
        assert!(!with(&f, Severity::Info, "maxmemory-policy"), "{f:#?}");
    }

    #[test]
    fn an_unreachable_redis_is_dangerous_and_alone() {
        let facts = RedisFacts {
            url: "redis://:redacted@127.0.0.1:1".into(),
            shape: Shape::Single,
            servers: Vec::new(),
            unreachable: Some("Connection refused (os error 111)".into()),
        };
        let f = redis_findings(&facts);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(with(
            &f,
            Severity::Danger,
            "Redis at redis://:redacted@127.0.0.1:1 cannot be reached: Connection refused"
        ));
    }

    #[test]
    fn equal_findings_of_several_servers_are_one_naming_them_all() {
        let servers: Vec<ServerFacts> = (1..=3)
            .map(|i| ServerFacts {
                round_trip: Some(Duration::from_micros(100 * i)),
                ..server(&format!("10.0.0.{i}:7000"))
            })
            .collect();
        let nodes: Vec<ClusterNode> = servers
            .iter()
            .enumerate()
            .map(|(i, s)| ClusterNode {
                id: format!("id{i}"),
                addr: s.addr.clone(),
                hostname: None,
                primary: true,
                failing: false,
                primary_id: None,
            })
            .collect();
        let facts = RedisFacts {
            url: "redis://10.0.0.1:7000,redis://10.0.0.2:7000".into(),
            shape: Shape::Cluster(ClusterFacts {
                seeds: 2,
                state: Some("ok".into()),
                map: nodes,
                ..ClusterFacts::default()
            }),
            servers,
            unreachable: None,
        };
        let f = redis_findings(&facts);
        assert!(
            with(
                &f,
                Severity::Info,
                "Redis 7.0.15 at 10.0.0.1:7000, 10.0.0.2:7000 and 10.0.0.3:7000"
            ),
            "{f:#?}"
        );
        assert!(
            with(
                &f,
                Severity::Info,
                "3 primaries, 0 replicas; 2 of 2 seeds answer"
            ),
            "{f:#?}"
        );
        assert!(with(&f, Severity::Info, "have no replica"), "{f:#?}");
        assert!(with(&f, Severity::Info, "slowest 10.0.0.3:7000"), "{f:#?}");
        assert_eq!(
            f.iter()
                .filter(|x| x.problem.contains("maxmemory-policy"))
                .count(),
            1
        );
    }

    #[test]
    fn a_failing_cluster_and_unreachable_nodes_are_dangerous() {
        let map = parse_cluster_nodes(
            "\
a1 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 10.0.0.2:7000@17000,node-b master - 0 0 2 connected 5461-10922
c3 10.0.0.3:7000@17000 master,fail - 0 0 3 disconnected 10923-16383
d4 10.0.0.4:7000@17000 slave a1 0 0 1 connected
e5 :0@0 master,noaddr - 0 0 0 disconnected
",
        );
        assert_eq!(map.len(), 4, "{map:?}");
        assert_eq!(map[1].addr, "10.0.0.2:7000");
        assert_eq!(map[1].hostname.as_deref(), Some("node-b"));
        assert_eq!(map[0].hostname, None);
        assert!(map[2].failing && map[2].primary);
        assert_eq!(map[3].primary_id.as_deref(), Some("a1"));
        let facts = RedisFacts {
            url: "redis://10.0.0.1:7000".into(),
            shape: Shape::Cluster(ClusterFacts {
                seeds: 2,
                seeds_down: vec![("10.0.0.9:7000".into(), "refused".into())],
                state: Some("fail".into()),
                map,
                nodes_down: vec![("10.0.0.2:7000".into(), "timed out".into())],
                ..ClusterFacts::default()
            }),
            servers: vec![server("10.0.0.1:7000")],
            unreachable: None,
        };
        let f = redis_findings(&facts);
        assert!(with(&f, Severity::Danger, "cluster_state:fail"), "{f:#?}");
        assert!(
            with(&f, Severity::Danger, "10.0.0.2:7000: timed out"),
            "{f:#?}"
        );
        assert!(
            with(&f, Severity::Warning, "marks 10.0.0.3:7000 as failing"),
            "{f:#?}"
        );
        assert!(
            with(&f, Severity::Warning, "1 of the 2 cluster seeds"),
            "{f:#?}"
        );
        assert!(
            with(&f, Severity::Info, "10.0.0.2:7000 has no replica"),
            "{f:#?}"
        );
    }

    #[test]
    fn sentinel_disagreement_a_demoted_primary_and_no_quorum_are_named() {
        let mut primary = server("10.0.0.1:6379");
        primary.info.insert("role".into(), "slave".into());
        let facts = RedisFacts {
            url: "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/tessera".into(),
            shape: Shape::Sentinel(SentinelFacts {
                master: "tessera".into(),
                sentinels: 3,
                sentinels_down: vec![("10.0.0.3:26379".into(), "refused".into())],
                named: vec![
                    ("10.0.0.1:26379".into(), Some("10.0.0.1:6379".into())),
                    ("10.0.0.2:26379".into(), Some("10.0.0.2:6379".into())),
                ],
                primary: Some("10.0.0.1:6379".into()),
                quorum: Some(2),
                replicas: Vec::new(),
                ckquorum: Some(Err("NOQUORUM 1 usable Sentinels".into())),
                replicas_down: Vec::new(),
            }),
            servers: vec![primary],
            unreachable: None,
        };
        let f = redis_findings(&facts);
        assert!(with(&f, Severity::Danger, "says it is a replica"), "{f:#?}");
        assert!(
            with(&f, Severity::Warning, "10.0.0.2:26379 names 10.0.0.2:6379"),
            "{f:#?}"
        );
        assert!(
            with(&f, Severity::Warning, "1 of the 3 sentinels"),
            "{f:#?}"
        );
        assert!(with(&f, Severity::Warning, "NOQUORUM"), "{f:#?}");
        assert!(with(&f, Severity::Warning, "knows no replica"), "{f:#?}");
        // The primary a Sentinel names is not a lone server: no "no replica"
        // line of the one-server kind, and no round trip to replicas.
        assert!(!with(&f, Severity::Info, "has no replica"), "{f:#?}");
    }

    #[test]
    fn passwords_are_scrubbed_from_error_texts() {
        let t = Target::parse("redis://:p%40ss@h:1,redis://user:hunter2@h:2").unwrap();
        let s = Scrub::of(&t, None);
        assert_eq!(
            s.text("bad p@ss and hunter2 and p%40ss"),
            "bad [redacted] and [redacted] and [redacted]"
        );
        let t = Target::parse("redis+sentinel://u:sekret@h:26379/m").unwrap();
        assert_eq!(Scrub::of(&t, None).text("x sekret"), "x [redacted]");
    }

    #[test]
    fn server_urls_keep_credentials_and_move_host_and_port() {
        assert_eq!(
            moved("rediss://u:p@a:1/2", "10.0.0.5", 7001).as_deref(),
            Some("rediss://u:p@10.0.0.5:7001/2")
        );
        assert_eq!(
            moved("redis://a:1", "::1", 7001).as_deref(),
            Some("redis://[::1]:7001")
        );
        let t = SentinelTarget {
            sentinels: vec![("h".into(), 26379)],
            master: "m".into(),
            tls: true,
            username: None,
            password: Some("p@ss".into()),
            db: 3,
        };
        assert_eq!(
            sentinel_server_url(&t, "10.0.0.1:6379").as_deref(),
            Some("rediss://:p%40ss@10.0.0.1:6379/3")
        );
        assert_eq!(addr_of("redis://h"), "h:6379");
        assert_eq!(split_addr("[::1]:7000"), Some(("::1".to_owned(), 7000)));
        assert_eq!(names(&["a", "b", "c"]), "a, b and c");
    }
}
