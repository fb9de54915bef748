//! A fleet of gateways sharing one real Redis (`redis-server` on a loopback port, no
//! persistence): revocations reach every replica, a late replica replays them, a Redis
//! outage caps cached results and is caught up afterwards, and a gap in the feed flushes
//! the cache.

mod common;
#[path = "common/fleet.rs"]
mod fleet_harness;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fapi_enforcement::introspection::unix_now;
use fleet_harness::*;
use serde_json::json;

const RECEIVED_CONSENT: &str = "fapi_gateway_cluster_revocations_received_total{kind=\"consent\"}";
const RECEIVED_TOKEN: &str = "fapi_gateway_cluster_revocations_received_total{kind=\"token\"}";
const PUBLISHED: &str = "fapi_gateway_cluster_revocations_published_total{result=\"ok\"}";
const DEGRADED: &str = "fapi_gateway_cluster_feed_degraded";
const FLUSHES: &str = "fapi_gateway_cluster_cache_flushes_total";
const RECEIVED_SUBJECT: &str = "fapi_gateway_cluster_revocations_received_total{kind=\"subject\"}";
const SETS_ACCEPTED: &str = "fapi_gateway_signals_total{result=\"accepted\"}";
const OB_REVOKED: &str = "urn:uk:org:openbanking:events:consent-authorization-revoked";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const INVALID_CONSENT_STATUS: &str = "UK.OBIE.Resource.InvalidConsentStatus";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_at_one_replica_is_refused_at_every_replica_and_replayed_by_a_late_one() {
    let test = async {
        let redis = Redis::start().await;
        let mut fleet = Fleet::start(&redis, 30.0, "", 2).await;
        let (consent, token) = fleet.w.go_bank_token().await;
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &token).await, 200, "replica {i}");
        }
        // Each replica holds the answer now: without the feed, 30 s more of 200s.
        let calls = fleet.w.introspections();
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &token).await, 200);
        }
        assert_eq!(fleet.w.introspections(), calls, "every replica answers from its cache");

        // The customer revokes; the authorization server tells replica 0 (admin JSON).
        assert!(fleet.w.fixtures.authorization_server.revoke_consent(&consent).await);
        // The others first: a request at replica 0 would introspect, find the consent
        // revoked and announce it itself, standing in for the admin endpoint's announcement.
        for i in 1..fleet.count() {
            let took = fleet.wait_status(i, &token, 403, Duration::from_secs(5)).await;
            assert!(took.is_some(), "replica {i} still lets the revoked consent through\n{}", fleet.logs(i));
            assert_eq!(fleet.wait_metric(i, RECEIVED_CONSENT, 1.0, Duration::from_secs(5)).await, 1.0);
        }
        assert_eq!(fleet.status(0, &token).await, 403);
        assert_eq!(fleet.metric(0, PUBLISHED).await, 1.0);
        assert_eq!(fleet.metric(0, RECEIVED_CONSENT).await, 0.0, "a replica does not apply its own entries twice");

        // A token revoked at replica 1 (its key travels, not the token) is dropped everywhere.
        let (_, other) = fleet.w.go_bank_token().await;
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &other).await, 200);
        }
        fleet.revoke(1, json!({"token": other})).await;
        for i in [0, 2] {
            assert_eq!(fleet.wait_metric(i, RECEIVED_TOKEN, 1.0, Duration::from_secs(5)).await, 1.0, "replica {i}");
        }
        let calls = fleet.w.introspections();
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &other).await, 200, "still active at the authorization server");
        }
        assert_eq!(fleet.w.introspections(), calls + 3, "each replica asked again");

        // A replica started after the revocations replays them.
        fleet.add_replica().await;
        let late = fleet.count() - 1;
        assert_eq!(fleet.wait_metric(late, RECEIVED_CONSENT, 1.0, Duration::from_secs(5)).await, 1.0);
        assert_eq!(fleet.wait_metric(late, RECEIVED_TOKEN, 1.0, Duration::from_secs(5)).await, 1.0);
        assert_eq!(fleet.status(late, &token).await, 403);
        assert!(!fleet.logs(late).contains(&token), "a token reached the logs");
    };
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("test took over 120 s");
}

/// The signed-SET variant: Security Event Tokens signed by the mock authorization server's
/// key, pushed to one replica's receiver (RFC 8935), are refused at every replica, and a
/// replica started afterwards replays them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_set_at_one_replica_is_refused_at_every_replica_and_replayed_by_a_late_one() {
    let test = async {
        let redis = Redis::start().await;
        let mut fleet = Fleet::start_with_signals(&redis, 2).await;
        let (consent, token) = fleet.w.go_bank_token().await;
        let bob_consent = fleet.w.consent(&fleet.w.tpp, "gobank", &GO_BANK_PERMISSIONS, "bob", &["GB-2001"]).await;
        let bob = fleet.w.token(&fleet.w.tpp, Some(&bob_consent), "openid accounts", None).await;
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &token).await, 200, "replica {i}");
            assert_eq!(fleet.status(i, &bob).await, 200, "replica {i}");
        }
        let calls = fleet.w.introspections();
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &token).await, 200);
            assert_eq!(fleet.status(i, &bob).await, 200);
        }
        assert_eq!(fleet.w.introspections(), calls, "every replica answers from its cache");

        // The consent is revoked at the authorization server, which tells nobody: every
        // replica still serves it from its cache until a signal says otherwise.
        assert!(fleet.w.fixtures.authorization_server.revoke_consent_quietly(&consent));
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &token).await, 200, "replica {i}: cached");
        }
        // The Open Banking consent-authorization-revoked SET, pushed to replica 1 only.
        let ob = json!({"iss": fleet.issuer(), "aud": SIGNALS_AUDIENCE, "iat": unix_now(), "jti": "ob-1",
            "events": {OB_REVOKED: {"subject": {
                "subject_type": "http://openbanking.org.uk/rid_http://openbanking.org.uk/rty",
                "http://openbanking.org.uk/rid": consent,
                "http://openbanking.org.uk/rty": "account-access-consent"}}}});
        let ob = fleet.signed(&ob);
        let (status, body) = fleet.push_set(1, &ob).await;
        assert_eq!(status, 202, "{body}");
        // The others first: a request at replica 1 would introspect, find the consent
        // revoked and announce it itself, standing in for the SET's own announcement.
        for i in [0, 2] {
            let took = fleet.wait_status(i, &token, 403, Duration::from_secs(5)).await;
            assert!(took.is_some(), "replica {i} still lets the consent revoked by a SET through");
            assert_eq!(fleet.refusal(i, &token).await, (403, INVALID_CONSENT_STATUS.into()), "replica {i}");
            let received = fleet.wait_metric(i, RECEIVED_CONSENT, 1.0, Duration::from_secs(5)).await;
            assert_eq!(received, 1.0, "replica {i} heard it from the feed");
            assert_eq!(fleet.metric(i, SETS_ACCEPTED).await, 0.0, "replica {i} was sent no SET");
        }
        assert_eq!(fleet.refusal(1, &token).await, (403, INVALID_CONSENT_STATUS.into()));
        assert_eq!(fleet.metric(1, SETS_ACCEPTED).await, 1.0);
        assert_eq!(fleet.wait_metric(1, PUBLISHED, 1.0, Duration::from_secs(5)).await, 1.0);

        // A CAEP session-revoked by subject, pushed to replica 2: bob's token goes everywhere.
        assert_eq!(fleet.w.fixtures.authorization_server.revoke_subject_quietly("bob"), 1);
        assert_eq!(fleet.status(0, &bob).await, 200, "cached");
        let caep = json!({"iss": fleet.issuer(), "aud": SIGNALS_AUDIENCE, "iat": unix_now(), "jti": "caep-1",
            "events": {SESSION_REVOKED: {
                "subject": {"format": "iss_sub", "iss": fleet.issuer(), "sub": "bob"},
                "event_timestamp": unix_now(), "initiating_entity": "user"}}});
        let (status, body) = fleet.push_set(2, &fleet.signed(&caep)).await;
        assert_eq!(status, 202, "{body}");
        for i in [0, 1] {
            let took = fleet.wait_status(i, &bob, 403, Duration::from_secs(5)).await;
            assert!(took.is_some(), "replica {i} still lets the subject revoked by a SET through");
            assert_eq!(fleet.refusal(i, &bob).await, (403, INVALID_CONSENT_STATUS.into()), "replica {i}");
            assert_eq!(fleet.wait_metric(i, RECEIVED_SUBJECT, 1.0, Duration::from_secs(5)).await, 1.0, "replica {i}");
        }
        assert_eq!(fleet.refusal(2, &bob).await, (403, INVALID_CONSENT_STATUS.into()));

        // jti replay is remembered per replica: the same SET again at replica 1 is refused,
        // at replica 2 (a transmitter retrying elsewhere) it is applied once more, harmlessly.
        let (status, body) = fleet.push_set(1, &ob).await;
        assert_eq!((status, body["err"].as_str().unwrap_or("")), (400, "invalid_request"), "{body}");
        let (status, body) = fleet.push_set(2, &ob).await;
        assert_eq!(status, 202, "{body}");
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &token).await, 403, "replica {i}");
        }

        // A replica started after the SETs replays what they revoked from the stream.
        fleet.add_replica().await;
        let late = fleet.count() - 1;
        assert!(
            fleet.wait_metric(late, RECEIVED_CONSENT, 1.0, Duration::from_secs(5)).await >= 1.0,
            "no consent replayed"
        );
        assert!(
            fleet.wait_metric(late, RECEIVED_SUBJECT, 1.0, Duration::from_secs(5)).await >= 1.0,
            "no subject replayed"
        );
        assert_eq!(fleet.metric(late, SETS_ACCEPTED).await, 0.0);
        assert_eq!(fleet.refusal(late, &token).await, (403, INVALID_CONSENT_STATUS.into()));
        assert_eq!(fleet.status(late, &bob).await, 403);
        for i in 1..fleet.count() {
            let logs = fleet.logs(i);
            assert!(!logs.contains(&token) && !logs.contains(&bob), "a token reached replica {i}'s logs");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("test took over 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_results_live_at_most_the_cap_and_missed_revocations_follow_when_it_is_back() {
    let test = async {
        let mut redis = Redis::start().await;
        let fleet = Fleet::start(&redis, 30.0, "degraded_max_ttl_seconds = 1", 2).await;
        let (consent, token) = fleet.w.go_bank_token().await;
        let (_, other) = fleet.w.go_bank_token().await;
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &token).await, 200);
            assert_eq!(fleet.status(i, &other).await, 200);
            assert_eq!(fleet.metric(i, DEGRADED).await, 0.0);
        }

        redis.kill();
        for i in 0..fleet.count() {
            assert_eq!(fleet.wait_metric(i, DEGRADED, 1.0, Duration::from_secs(5)).await, 1.0, "replica {i}");
        }
        // Still serving (the authorization server still answers).
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &token).await, 200, "replica {i} stopped serving without Redis");
        }
        // A revocation reaches replica 0 only; the others refuse within the cap (1 s), not 30 s.
        assert!(fleet.w.fixtures.authorization_server.revoke_consent(&consent).await);
        assert_eq!(fleet.status(0, &token).await, 403);
        for i in 1..fleet.count() {
            let took = fleet.wait_status(i, &token, 403, Duration::from_secs(5)).await;
            let took = took.unwrap_or_else(|| panic!("replica {i} still serves a revoked consent in degraded mode"));
            assert!(took < Duration::from_secs(5));
        }
        // A token revocation during the outage waits at replica 0 for Redis.
        fleet.revoke(0, json!({"token": other})).await;
        assert_eq!(fleet.metric(1, RECEIVED_TOKEN).await, 0.0);

        redis.spawn().await;
        for i in 1..fleet.count() {
            assert_eq!(
                fleet.wait_metric(i, RECEIVED_TOKEN, 1.0, Duration::from_secs(10)).await,
                1.0,
                "replica {i} never got the revocation made during the outage\n{}",
                fleet.logs(i)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..fleet.count() {
            while fleet.metric(i, DEGRADED).await != 0.0 {
                assert!(Instant::now() < deadline, "replica {i} still degraded with Redis back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert!(fleet.logs(1).contains("degraded mode over"), "{}", fleet.logs(1));
        assert_eq!(fleet.logs(1).matches("cannot be read: degraded mode").count(), 1, "logged once per outage");
    };
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("test took over 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_trimmed_entries_drops_its_whole_cache() {
    let test = async {
        let redis = Redis::start().await;
        let fleet = Fleet::start(&redis, 30.0, "stream_maxlen = 3", 1).await;
        let (_, token) = fleet.w.go_bank_token().await;
        assert_eq!(fleet.status(1, &token).await, 200);
        // Replica 1 has read one entry...
        fleet.revoke(0, json!({"consent_id": "warm-up"})).await;
        assert_eq!(fleet.wait_metric(1, RECEIVED_CONSENT, 1.0, Duration::from_secs(5)).await, 1.0);
        assert_eq!(fleet.status(1, &token).await, 200);
        let calls = fleet.w.introspections();
        // ...then sleeps while the stream moves on past what it keeps.
        let pid = fleet.replicas[0].child.id().to_string();
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        for n in 0..20 {
            fleet.revoke(0, json!({"consent_id": format!("other-{n}")})).await;
        }
        assert_eq!(fleet.wait_metric(0, PUBLISHED, 21.0, Duration::from_secs(5)).await, 21.0);
        assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
        assert_eq!(
            fleet.wait_metric(1, FLUSHES, 1.0, Duration::from_secs(10)).await,
            1.0,
            "no flush after a gap\n{}",
            fleet.logs(1)
        );
        // The token's answer went with the rest: asked again.
        assert_eq!(fleet.status(1, &token).await, 200);
        assert_eq!(fleet.w.introspections(), calls + 1);
        assert_eq!(fleet.metric(0, FLUSHES).await, 0.0, "a replica that kept up keeps its cache");
    };
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("test took over 120 s");
}

/// One Redis command over a plain connection (RESP); the raw reply.
async fn redis_command(redis: &Redis, args: &[&[u8]]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", redis.port)).await.unwrap();
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).as_bytes());
        out.extend(*a);
        out.extend(b"\r\n");
    }
    s.write_all(&out).await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.unwrap().unwrap();
        reply.extend(&buf[..n]);
        if n == 0 || complete(&reply) {
            return reply;
        }
    }
}

/// Whether `reply` is a whole simple, error, integer or bulk-string reply.
fn complete(reply: &[u8]) -> bool {
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else { return false };
    if reply[0] != b'$' {
        return true;
    }
    let len: i64 = std::str::from_utf8(&reply[1..end]).unwrap().parse().unwrap();
    len < 0 || reply.len() >= end + 2 + len as usize + 2
}

/// The value of a bulk-string reply (`None` for nil).
fn bulk(reply: &[u8]) -> Option<Vec<u8>> {
    let end = reply.windows(2).position(|w| w == b"\r\n").unwrap();
    let len: i64 = std::str::from_utf8(&reply[1..end]).unwrap().parse().unwrap();
    (len >= 0).then(|| reply[end + 2..end + 2 + len as usize].to_vec())
}

const SHARED_HIT: &str = "fapi_gateway_cluster_shared_cache_total{result=\"hit\"}";
const SHARED_REJECTED: &str = "fapi_gateway_cluster_shared_cache_total{result=\"rejected\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_cache_asks_once_per_token_and_believes_nothing_it_did_not_seal() {
    let test = async {
        let mut redis = Redis::start().await;
        let secrets = tempfile::tempdir().unwrap();
        let key_file = secrets.path().join("cluster.key");
        let cluster_key = "0123456789abcdef0123456789abcdef-fleet-test";
        std::fs::write(&key_file, cluster_key).unwrap();
        let extra = format!("shared_cache = true\ncluster_key_file = \"{}\"", key_file.display());
        let fleet = Fleet::start(&redis, 30.0, &extra, 2).await;
        let n = fleet.count();

        // Round-robin over the replicas: one introspection per token, not one per replica.
        let mut tokens = Vec::new();
        for _ in 0..6 {
            tokens.push(fleet.w.go_bank_token().await);
        }
        let before = fleet.w.introspections();
        for round in 0..n {
            for (j, (_, token)) in tokens.iter().enumerate() {
                assert_eq!(fleet.status((j + round) % n, token).await, 200);
            }
        }
        assert_eq!(fleet.w.introspections(), before + tokens.len() as u64, "one introspection per token");
        let mut hits = 0.0;
        for i in 0..n {
            hits += fleet.metric(i, SHARED_HIT).await;
        }
        assert_eq!(hits, (tokens.len() * (n - 1)) as f64);
        // Nothing in Redis names a token.
        let keys = redis_command(&redis, &[b"KEYS", b"*"]).await;
        for (_, token) in &tokens {
            assert!(!String::from_utf8_lossy(&keys).contains(token.as_str()));
        }

        // A revoked consent is not served from the shared cache either.
        let (consent, token) = &tokens[0];
        assert!(fleet.w.fixtures.authorization_server.revoke_consent(consent).await);
        for i in 0..n {
            assert!(fleet.wait_status(i, token, 403, Duration::from_secs(5)).await.is_some(), "replica {i}");
        }

        // A value moved from another token's key, altered, or forged does not open: a
        // miss, and the authorization server decides.
        let key_of = |token: &str| {
            fapi_gateway_server::cluster::shared::redis_key(
                cluster_key.as_bytes(),
                "fapi-gateway:introspection:",
                "default",
                token,
            )
        };
        let sealed = bulk(&redis_command(&redis, &[b"GET", key_of(&tokens[1].1).as_bytes()]).await).unwrap();
        let unknown = "not-a-token-the-server-issued";
        redis_command(&redis, &[b"SET", key_of(unknown).as_bytes(), &sealed]).await;
        let mut altered = sealed.clone();
        let at = altered.len() / 2;
        altered[at] ^= 0x20;
        let (_, fresh) = fleet.w.go_bank_token().await;
        redis_command(&redis, &[b"SET", key_of(&fresh).as_bytes(), &altered]).await;
        let forged = br#"{"active":true,"scope":"openid accounts","client_id":"financroo"}"#;
        redis_command(&redis, &[b"SET", key_of("forged-token").as_bytes(), forged]).await;
        let rejected = fleet.metric(1, SHARED_REJECTED).await;
        let calls = fleet.w.introspections();
        assert_eq!(fleet.status(1, unknown).await, 401, "a moved value let an unknown token through");
        assert_eq!(fleet.status(1, "forged-token").await, 401, "a forged value let a token through");
        assert_eq!(fleet.status(1, &fresh).await, 200);
        assert_eq!(fleet.w.introspections(), calls + 3, "each was a miss: the authorization server was asked");
        assert_eq!(fleet.metric(1, SHARED_REJECTED).await, rejected + 3.0);

        // Redis stopped (slow: no answer at all) and then gone: the local path answers.
        let pid = redis.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        let (_, slow) = fleet.w.go_bank_token().await;
        for i in 0..n {
            assert_eq!(fleet.status(i, &slow).await, 200, "replica {i} with Redis not answering");
        }
        assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
        redis.kill();
        let (_, down) = fleet.w.go_bank_token().await;
        for i in 0..n {
            assert_eq!(fleet.status(i, &down).await, 200, "replica {i} with Redis down");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("test took over 120 s");
}

#[test]
fn the_compose_fleet_config_is_the_demo_config_with_a_cluster_section() {
    let demo = std::fs::read_to_string(repo_path("gateway.toml")).unwrap();
    let fleet = std::fs::read_to_string(repo_path("docker/gateway-fleet.toml")).unwrap();
    let (head, cluster) = fleet.split_at(fleet.find("\n# The compose stack is a fleet").expect("the fleet's section"));
    assert_eq!(head.trim_end(), demo.trim_end(), "docker/gateway-fleet.toml drifted from gateway.toml");
    assert!(cluster.contains("[cluster]\nredis_url = \"redis://127.0.0.1:6379\""));
    // Both replicas take SETs from the demo's authorization server ([signals] is the demo's),
    // which pushes them to the first replica's receiver; the feed carries them on.
    assert!(head.contains("\n[signals]") && head.contains("path = \"/signals/events\""), "no [signals]");
    assert!(head.contains("[admin]\naddress = \"127.0.0.1:9100\""));
    let compose = std::fs::read_to_string(repo_path("docker/docker-compose.yml")).unwrap();
    assert!(
        compose.contains("--signal-receiver\n      - http://127.0.0.1:9100/signals/events"),
        "the compose authorization server does not push SETs to the first replica"
    );
}

/// `fapi-gateway demo --replicas 2` (fixed demo ports): both replicas serve, and a consent
/// the customer revokes (the authorization server pushes its signed SET to the first
/// replica) is refused by the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_demo_runs_two_replicas_that_share_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args(["demo", "--replicas", "2"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Killed<'a>(&'a mut Child);
    impl Drop for Killed<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Killed(&mut child);
    let test = async {
        for port in [8443, 8444, 9443] {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            if let Err(e) = fapi_gateway_server::server::wait_for_listener(addr).await {
                panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        }
        let pki = fapi_devkit::pki::DevPki::at(&dir.path().join(".fapi-gateway-demo/certs"));
        let tpp = client(&pki.ca(), Some((&pki.tpp_cert(), &pki.tpp_key())), false);
        let created: serde_json::Value = tpp
            .post("https://127.0.0.1:9443/consents")
            .json(&json!({"bank": "gobank", "type": "account-access-consent", "permissions": GO_BANK_PERMISSIONS}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let consent = created["ConsentId"].as_str().unwrap().to_string();
        let authorise = format!("https://127.0.0.1:9443/consents/{consent}/authorise");
        let r = tpp.post(authorise).json(&json!({"subject": "alice", "accounts": ["GB-1001"]})).send().await.unwrap();
        assert!(r.status().is_success());
        let form = [("grant_type", "client_credentials"), ("scope", "openid accounts"), ("consent_id", &consent)];
        let body: serde_json::Value =
            tpp.post("https://127.0.0.1:9443/token").form(&form).send().await.unwrap().json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_string();
        let status = |port: u16| {
            let (tpp, token) = (tpp.clone(), token.clone());
            async move {
                let url = format!("https://127.0.0.1:{port}/gobank/accounts");
                tpp.get(url).bearer_auth(token).send().await.unwrap().status().as_u16()
            }
        };
        assert_eq!(status(8443).await, 200);
        assert_eq!(status(8444).await, 200);
        let r = tpp.delete(format!("https://127.0.0.1:9443/consents/{consent}")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        // The second replica first: a request at the first would introspect, find the
        // consent revoked and announce it itself, standing in for the SET's announcement.
        let deadline = Instant::now() + Duration::from_secs(5);
        while status(8444).await != 403 {
            assert!(Instant::now() < deadline, "the second replica still serves the revoked consent");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status(8443).await, 403);
        // The way it went: a signed SET pushed to the first replica's receiver (not the JSON
        // endpoint), then the Redis Stream to the second, which was sent no SET.
        let secret = std::fs::read_to_string(pki.dir.join("admin-secret")).unwrap();
        let metric = |port: u16, sample: &'static str| {
            let secret = secret.trim_end().to_string();
            async move {
                let r = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/metrics")).bearer_auth(secret);
                metric_value(&r.send().await.unwrap().text().await.unwrap(), sample)
            }
        };
        assert_eq!(metric(9100, SETS_ACCEPTED).await, 1.0, "the first replica was sent no SET");
        assert_eq!(metric(9100, "fapi_gateway_revocations_total{kind=\"consent\"}").await, 1.0);
        assert_eq!(metric(9101, RECEIVED_CONSENT).await, 1.0, "the second replica did not hear it from the feed");
        assert_eq!(metric(9101, SETS_ACCEPTED).await, 0.0);
        let banner = std::fs::read_to_string(&log).unwrap();
        assert!(banner.contains("a fleet of 2 gateways") && banner.contains("https://127.0.0.1:8444"), "{banner}");
    };
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("test took over 120 s");
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_an_introspection_finds_revoked_is_announced_to_the_fleet() {
    let test = async {
        let redis = Redis::start().await;
        // Nobody tells the gateways: only an introspection can find out.
        let fleet = Fleet::start_with(&redis, 30.0, "", 2, false).await;
        let consent = fleet.w.consent(&fleet.w.tpp, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001"]).await;
        let first = fleet.w.token(&fleet.w.tpp, Some(&consent), "openid accounts", None).await;
        let second = fleet.w.token(&fleet.w.tpp, Some(&consent), "openid accounts", None).await;
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &first).await, 200);
        }
        assert!(fleet.w.fixtures.authorization_server.revoke_consent(&consent).await);
        // The first token is still cached as active everywhere...
        assert_eq!(fleet.status(0, &first).await, 200);
        // ...until replica 1 introspects the consent's other token and finds it revoked.
        assert_eq!(fleet.status(1, &second).await, 403);
        assert_eq!(fleet.status(1, &first).await, 403, "the consent's other tokens go at once here");
        for i in [0, 2] {
            let took = fleet.wait_status(i, &first, 403, Duration::from_secs(5)).await;
            assert!(took.is_some(), "replica {i} did not hear of the consent revoked by introspection");
        }
        assert_eq!(fleet.metric(1, PUBLISHED).await, 1.0);
        // Refusing the same consent again announces nothing more (no echo between replicas).
        for i in 0..fleet.count() {
            assert_eq!(fleet.status(i, &second).await, 403);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut published = 0.0;
        for i in 0..fleet.count() {
            published += fleet.metric(i, PUBLISHED).await;
        }
        assert_eq!(published, 1.0, "the consent was announced more than once");
    };
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("test took over 120 s");
}
