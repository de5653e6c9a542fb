//! etcd v3 through its JSON gateway (`/v3/...`, etcd ≥ 3.4), over the plain-HTTP client warden
//! already carries: what reload slots need (leases, a create-if-absent transaction, a prefix
//! read, a delete) and no more. A gRPC client would bring an HTTP/2 stack and protobuf code for
//! these six calls. Each call tries the endpoints in turn, so a member down changes nothing.
//!
//! Keys and values are bytes, base64 in the gateway's JSON; numbers (revisions, lease ids,
//! TTLs) are decimal strings there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::http::{self, Endpoint, FetchError, HealthUrl, LineStream, Tls, Via};

/// The most of an answer read: a prefix of slots and waiters is a few KiB.
const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EtcdError {
    /// No endpoint answered (each one's error, in order).
    #[error("no etcd endpoint answered: {0}")]
    Unreachable(String),
    /// An endpoint answered with an error or with something that is not the API's.
    #[error("etcd answered {status}: {detail}")]
    Refused { status: u16, detail: String },
}

/// A lease: its id and the TTL etcd granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl_seconds: i64,
}

/// A key and its value, with the lease it is held under (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// An etcd cluster through the endpoints its members serve clients on.
#[derive(Debug, Clone)]
pub struct Etcd {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    tls: Option<Tls>,
    /// etcd's user and password: each call carries the token they authenticate to.
    credentials: Option<Arc<Credentials>>,
    /// The member that answered last: tried first, so a member down costs one failed connect
    /// once, not on every call. Shared by the clones (the lease keeper's among them).
    preferred: Arc<AtomicUsize>,
}

/// An etcd user's name and password, and the token they were last given.
pub struct Credentials {
    pub user: String,
    pub password: String,
    token: std::sync::Mutex<Option<String>>,
}

impl Credentials {
    pub fn new(user: String, password: String) -> Credentials {
        Credentials {
            user,
            password,
            token: std::sync::Mutex::new(None),
        }
    }

    fn token(&self) -> Option<String> {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_token(&self, t: Option<String>) {
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = t;
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "Credentials({})", self.user)
    }
}

/// A create-if-absent: whether it took the key, and the cluster's revision when it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub created: bool,
    pub revision: i64,
}

fn num(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

/// A watch, open as long as it is held: each change of a key under its prefix is a message.
pub struct Watch {
    stream: LineStream,
}

impl Watch {
    /// Waits up to `wait` for a change: whether one came. `Err` when the watch ended (the
    /// member went away, or cancelled it): open another.
    pub fn changed(&mut self, wait: Duration) -> Result<bool, EtcdError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .stream
                .next_line(left)
                .map_err(|e| EtcdError::Unreachable(e.to_string()))?;
            let Some(line) = line else {
                return Ok(false);
            };
            let v: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
            if v["result"]["canceled"] == true || v.get("error").is_some() {
                return Err(EtcdError::Refused {
                    status: 200,
                    detail: format!("the watch ended: {}", String::from_utf8_lossy(&line)),
                });
            }
            if v["result"]["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                return Ok(true);
            }
        }
    }
}

/// A call's failure before etcd's answer: the connection's, or the authentication's.
enum FetchOr {
    Fetch(FetchError),
    Refused(EtcdError),
}

/// etcd refused the token (it expired, or the member restarted): gRPC's `Unauthenticated`.
fn token_refused(a: &http::Answer) -> bool {
    a.status == 401
        || serde_json::from_slice::<Value>(&a.body).is_ok_and(|v| {
            v["code"] == 16
                || v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("invalid auth token"))
        })
}

/// The keys and values of a range's answer.
fn kvs(v: &Value) -> Vec<Kv> {
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| Kv {
                    key: bytes(&kv["key"]),
                    value: bytes(&kv["value"]),
                    lease: num(&kv["lease"]).unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The key just after every key starting with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the keyspace.
    vec![0]
}

impl Etcd {
    /// `endpoints`: `http://host:port` of the members; `timeout` per call and endpoint.
    pub fn new(endpoints: Vec<HealthUrl>, timeout: Duration) -> Etcd {
        Etcd::secure(
            endpoints.into_iter().map(Endpoint::from).collect(),
            timeout,
            None,
            None,
        )
    }

    /// The members' endpoints (`https://` ones over `tls`, else the system's CA bundle), as
    /// `credentials`' user when etcd's authentication is on.
    pub fn secure(
        endpoints: Vec<Endpoint>,
        timeout: Duration,
        tls: Option<Tls>,
        credentials: Option<Credentials>,
    ) -> Etcd {
        Etcd {
            endpoints,
            timeout,
            tls,
            credentials: credentials.map(Arc::new),
            preferred: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn via<'a>(&'a self, token: Option<&'a str>) -> Via<'a> {
        Via {
            tls: self.tls.as_ref(),
            authorization: token,
        }
    }

    /// A token for `ep`'s cluster, asked for when there is none.
    fn token(&self, ep: &Endpoint) -> Result<Option<String>, FetchOr> {
        let Some(c) = &self.credentials else {
            return Ok(None);
        };
        if let Some(t) = c.token() {
            return Ok(Some(t));
        }
        let body = json!({"name": c.user, "password": c.password}).to_string();
        let a = http::post_json_via(
            ep,
            "/v3/auth/authenticate",
            self.via(None),
            body.as_bytes(),
            self.timeout,
            MAX_ANSWER,
        )
        .map_err(FetchOr::Fetch)?;
        if !(200..300).contains(&a.status) {
            return Err(FetchOr::Refused(EtcdError::Refused {
                status: a.status,
                detail: format!(
                    "authenticating as {}: {}",
                    c.user,
                    String::from_utf8_lossy(&a.body[..a.body.len().min(512)])
                ),
            }));
        }
        let token = serde_json::from_slice::<Value>(&a.body)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
            .ok_or_else(|| {
                FetchOr::Refused(EtcdError::Refused {
                    status: a.status,
                    detail: "no token in the authentication's answer".into(),
                })
            })?;
        c.set_token(Some(token.clone()));
        Ok(Some(token))
    }

    /// The endpoints, the one that answered last first.
    fn in_turn(&self) -> impl Iterator<Item = (usize, &Endpoint)> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| {
            let at = (first + i) % n;
            (at, &self.endpoints[at])
        })
    }

    fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let body = body.to_string();
        let mut errors = Vec::new();
        for (at, ep) in self.in_turn() {
            // A token that expired is asked for again, once.
            let mut answer = None;
            for _ in 0..2 {
                let token = match self.token(ep) {
                    Ok(t) => t,
                    Err(e) => {
                        answer = Some(Err(e));
                        break;
                    }
                };
                let a = http::post_json_via(
                    ep,
                    path,
                    self.via(token.as_deref()),
                    body.as_bytes(),
                    self.timeout,
                    MAX_ANSWER,
                );
                let expired = matches!(&a, Ok(a) if token.is_some() && token_refused(a));
                answer = Some(a.map_err(FetchOr::Fetch));
                if !expired {
                    break;
                }
                if let Some(c) = &self.credentials {
                    c.set_token(None);
                }
            }
            match answer.expect("tried at least once") {
                Ok(a) if (200..300).contains(&a.status) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return serde_json::from_slice(&a.body).map_err(|e| EtcdError::Refused {
                        status: a.status,
                        detail: format!("not JSON: {e}"),
                    });
                }
                // The cluster's answer, not an endpoint's failure: another member would say
                // the same (a 503 while a member has no leader is worth the next one).
                Ok(a) if a.status != 503 => {
                    return Err(EtcdError::Refused {
                        status: a.status,
                        detail: String::from_utf8_lossy(&a.body[..a.body.len().min(512)])
                            .into_owned(),
                    });
                }
                Ok(a) => errors.push(format!("{ep}: {}", a.status)),
                Err(FetchOr::Refused(e)) => return Err(e),
                Err(FetchOr::Fetch(FetchError::TimedOut(t))) => {
                    errors.push(format!("{ep}: no answer in {t:?}"))
                }
                Err(FetchOr::Fetch(FetchError::Failed(e))) => errors.push(format!("{ep}: {e}")),
            }
        }
        Err(EtcdError::Unreachable(errors.join("; ")))
    }

    /// A lease of `ttl_seconds`.
    pub fn grant(&self, ttl_seconds: i64) -> Result<Lease, EtcdError> {
        let v = self.call("/v3/lease/grant", &json!({ "TTL": ttl_seconds }))?;
        match (num(&v["ID"]), num(&v["TTL"])) {
            (Some(id), Some(ttl_seconds)) => Ok(Lease { id, ttl_seconds }),
            _ => Err(EtcdError::Refused {
                status: 200,
                detail: format!("no lease in {v}"),
            }),
        }
    }

    /// Renews a lease; its TTL now (0 or less: it had expired).
    pub fn keep_alive(&self, lease: i64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))?;
        Ok(num(&v["result"]["TTL"]).unwrap_or(0))
    }

    /// Ends a lease: every key under it goes.
    pub fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
            .map(|_| ())
    }

    /// Puts `key` = `value` under `lease` only if the key does not exist.
    pub fn create(&self, key: &[u8], value: &[u8], lease: i64) -> Result<Created, EtcdError> {
        self.create_deleting(key, value, lease, None)
    }

    /// [`Etcd::create`], deleting `delete` in the same transaction when it puts `key` (a
    /// waiter's place in line, given up as the slot is taken: one write, not two).
    pub fn create_deleting(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        delete: Option<&[u8]>,
    ) -> Result<Created, EtcdError> {
        let k = B64.encode(key);
        let mut success = vec![
            json!({"requestPut": {"key": k, "value": B64.encode(value), "lease": lease.to_string()}}),
        ];
        if let Some(d) = delete {
            success.push(json!({"requestDeleteRange": {"key": B64.encode(d)}}));
        }
        let v = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": success,
            }),
        )?;
        Ok(Created {
            created: v["succeeded"] == true,
            revision: num(&v["header"]["revision"]).unwrap_or(0),
        })
    }

    /// `key`'s value and lease, if it exists.
    pub fn get(&self, key: &[u8]) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("/v3/kv/range", &json!({"key": B64.encode(key)}))?;
        Ok(kvs(&v).into_iter().next())
    }

    /// Watches every key starting with `prefix` from now on, on the member that answered
    /// last, within `timeout` for its creation.
    pub fn watch(&self, prefix: &[u8], timeout: Duration) -> Result<Watch, EtcdError> {
        let unreachable =
            |ep: &Endpoint, e: FetchError| EtcdError::Unreachable(format!("{ep}: {e}"));
        let Some((_, ep)) = self.in_turn().next() else {
            return Err(EtcdError::Unreachable("no endpoint".into()));
        };
        let token = match self.token(ep) {
            Ok(t) => t,
            Err(FetchOr::Fetch(e)) => return Err(unreachable(ep, e)),
            Err(FetchOr::Refused(e)) => return Err(e),
        };
        let body = json!({"create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
        }})
        .to_string();
        let mut stream = LineStream::open(
            ep,
            "/v3/watch",
            self.via(token.as_deref()),
            body.as_bytes(),
            timeout,
            MAX_ANSWER,
        )
        .map_err(|e| unreachable(ep, e))?;
        // The first message says whether the watch was created.
        let first = stream
            .next_line(timeout)
            .map_err(|e| unreachable(ep, e))?
            .ok_or_else(|| unreachable(ep, FetchError::TimedOut(timeout)))?;
        let v: Value = serde_json::from_slice(&first).unwrap_or(Value::Null);
        if v["result"]["created"] != true {
            return Err(EtcdError::Refused {
                status: 200,
                detail: format!(
                    "the watch was not created: {}",
                    String::from_utf8_lossy(&first)
                ),
            });
        }
        Ok(Watch { stream })
    }

    /// Every key starting with `prefix`, in key order.
    pub fn list(&self, prefix: &[u8]) -> Result<Vec<Kv>, EtcdError> {
        let v = self.call(
            "/v3/kv/range",
            &json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))}),
        )?;
        Ok(kvs(&v))
    }

    /// Puts `key` = `value` under `lease`, whatever was there.
    pub fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<(), EtcdError> {
        self.call(
            "/v3/kv/put",
            &json!({"key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()}),
        )
        .map(|_| ())
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool, EtcdError> {
        let v = self.call("/v3/kv/deleterange", &json!({"key": B64.encode(key)}))?;
        Ok(num(&v["deleted"]).unwrap_or(0) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_just_after_its_keys() {
        assert_eq!(prefix_end(b"warden/a/"), b"warden/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn unreachable_endpoints_are_each_named() {
        let dead = |port| HealthUrl {
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
        };
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            })
            .collect();
        let e = Etcd::new(
            ports.iter().map(|&p| dead(p)).collect(),
            Duration::from_millis(200),
        );
        match e.grant(5) {
            Err(EtcdError::Unreachable(why)) => {
                for p in &ports {
                    assert!(why.contains(&p.to_string()), "{why}");
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
