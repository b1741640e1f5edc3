//! An S3-compatible object store with Object Lock (AWS S3, Ceph RGW, MinIO).
//!
//! Objects live at `PREFIX/config`, `PREFIX/packs/ID`, `PREFIX/snapshots/ID`
//! and `PREFIX/identities/ID` in a bucket created with Object Lock. The
//! vault writes them with a COMPLIANCE retention, so storage itself refuses
//! to delete a locked version early, whoever asks, the vault host included.
//!
//! # Versions, not keys
//!
//! On a lock bucket a plain DELETE only adds a delete marker, and a PUT over
//! an existing key adds a new current version. Someone holding the bucket's
//! credentials can therefore hide or shadow an object, but not destroy a
//! locked version. So this backend reasons about versions:
//!
//! * `get` checks the current version against the content id; if it is
//!   missing (a delete marker) or does not match, every older version is
//!   tried, newest first, and the first that matches is used (and the
//!   shadowing is reported on stderr).
//! * `list` lists versions: a key whose newest entry is a delete marker is
//!   still listed while a real version stays.
//! * Range reads and sizes use a resolved version: the only real one, or,
//!   where there are several, the one a full verified read picked.
//! * Deletion (the vault's alone, see [`ObjectStore`]) deletes every
//!   version by version id, which fails while a version is locked.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ObjectLockEnabled, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
};

use crate::{Backend, Deletion, Kind, ObjectStore, Result, StoreError, check_content, check_name};

/// One version of a key.
#[derive(Clone, Debug)]
struct Version {
    id: String,
    size: u64,
    marker: bool,
    modified_ns: i64,
    latest: bool,
}

/// Where and as whom to reach S3.
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: zeroize::Zeroizing<String>,
    pub session_token: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// The usual AWS variables: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`
    /// (none: AWS itself), `AWS_REGION` or `AWS_DEFAULT_REGION` (default
    /// us-east-1), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<S3Settings> {
        let (Some(ak), Some(sk)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) else {
            return Err(StoreError::Refused(
                "S3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".into(),
            ));
        };
        Ok(S3Settings {
            endpoint: env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            access_key: ak,
            secret_key: zeroize::Zeroizing::new(sk),
            session_token: env("AWS_SESSION_TOKEN").map(zeroize::Zeroizing::new),
        })
    }
}

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    rt: Option<tokio::runtime::Runtime>,
    /// Key → the version id a verified read or a listing settled on.
    resolved: Mutex<HashMap<String, Version>>,
}

fn ns_of(t: &DateTime) -> i64 {
    t.secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(t.subsec_nanos() as i64)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Maps an SDK error to the store's: 404 → NotFound, 403 → Refused,
/// network trouble and 5xx → Transient.
fn map_err<E: ProvideErrorMetadata + std::error::Error + 'static, R>(
    e: SdkError<E, R>,
    kind: Kind,
    name: &str,
) -> StoreError
where
    R: HasStatus + std::fmt::Debug,
{
    let status = e.raw_response().map(|r| r.status_code()).unwrap_or(0);
    let code = e.code().unwrap_or("").to_string();
    if status == 404 || matches!(code.as_str(), "NoSuchKey" | "NotFound" | "NoSuchVersion") {
        return StoreError::NotFound {
            kind,
            name: name.to_string(),
        };
    }
    let msg = e.message().unwrap_or("").to_string();
    match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::Transient(format!("S3 {kind} {name}: {}", describe(&e)))
        }
        _ if status >= 500 => {
            StoreError::Transient(format!("S3 {kind} {name}: {status} {code} {msg}"))
        }
        _ if status == 403 || code == "AccessDenied" => {
            StoreError::Refused(format!("S3 refused {kind} {name}: {code} {msg}"))
        }
        _ => StoreError::Refused(format!("S3 {kind} {name}: {status} {code} {msg}")),
    }
}

fn describe<E: std::error::Error + 'static, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    let mut s = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

pub trait HasStatus {
    fn status_code(&self) -> u16;
}
impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl S3Store {
    /// Opens `s3://BUCKET/PREFIX`. The endpoint comes from
    /// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (default: AWS), the
    /// region from `AWS_REGION` or `AWS_DEFAULT_REGION` (default
    /// us-east-1), credentials from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`. With `create`, a
    /// missing bucket is created with Object Lock enabled. A bucket without
    /// Object Lock is refused either way.
    pub fn open(url: &str, create: bool) -> Result<S3Store> {
        Self::open_with(url, create, &S3Settings::from_env()?)
    }

    /// Opens with explicit settings (tests, or callers with their own).
    pub fn open_with(url: &str, create: bool, s: &S3Settings) -> Result<S3Store> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StoreError::Refused(format!("{url}: not an s3:// address")))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
            None => (rest.to_string(), String::new()),
        };
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(StoreError::Refused(format!(
                "{url}: not a valid bucket name"
            )));
        }
        let creds = Credentials::new(
            s.access_key.clone(),
            s.secret_key.as_str(),
            s.session_token.as_ref().map(|t| t.to_string()),
            None,
            "holdfast",
        );
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut conf = aws_sdk_s3::Config::builder()
            .http_client(http)
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .credentials_provider(creds)
            // Plain checksums only: S3-compatible servers do not all take
            // the newer streaming-trailer checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &s.endpoint {
            conf = conf.endpoint_url(ep).force_path_style(true);
        }
        let client = Client::from_conf(conf.build());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("holdfast-s3")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Transient(format!("cannot start the S3 runtime: {e}")))?;
        let s = S3Store {
            client,
            bucket,
            prefix,
            rt: Some(rt),
            resolved: Mutex::new(HashMap::new()),
        };
        s.check_bucket(create)?;
        Ok(s)
    }

    /// Runs a future on this store's own runtime and waits for it, from
    /// any thread (inside another runtime's blocking pool included).
    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self
            .rt
            .as_ref()
            .expect("runtime lives as long as the store");
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(StoreError::Transient("S3 runtime stopped".into())))
    }

    /// What a request about one object needs, owned (for `run`): client,
    /// bucket, key, and the name for messages.
    fn at(&self, kind: Kind, name: &str) -> (Client, String, String, String) {
        (
            self.client.clone(),
            self.bucket.clone(),
            self.key(kind, name),
            name.to_string(),
        )
    }

    fn key(&self, kind: Kind, name: &str) -> String {
        let rel = match kind {
            Kind::Config => "config".to_string(),
            k => format!("{}/{name}", k.dir()),
        };
        if self.prefix.is_empty() {
            rel
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    fn check_bucket(&self, create: bool) -> Result<()> {
        let (c, b) = (self.client.clone(), self.bucket.clone());
        self.run(async move {
            let head = c.head_bucket().bucket(&b).send().await;
            if let Err(e) = head {
                let missing = e.raw_response().map(|r| r.status().as_u16()) == Some(404);
                if !(missing && create) {
                    return Err(map_err(e, Kind::Config, &format!("bucket {b}")));
                }
                c.create_bucket()
                    .bucket(&b)
                    .object_lock_enabled_for_bucket(true)
                    .send()
                    .await
                    .map_err(|e| map_err(e, Kind::Config, &format!("bucket {b}")))?;
            }
            let lock = c
                .get_object_lock_configuration()
                .bucket(&b)
                .send()
                .await
                .ok()
                .and_then(|o| o.object_lock_configuration)
                .and_then(|l| l.object_lock_enabled);
            if lock != Some(ObjectLockEnabled::Enabled) {
                return Err(StoreError::Refused(format!(
                    "bucket {b} has no Object Lock: holdfast needs a bucket created with Object Lock enabled"
                )));
            }
            Ok(())
        })
    }

    /// Every version of one key, newest first.
    fn versions(&self, kind: Kind, name: &str) -> Result<Vec<Version>> {
        let key = self.key(kind, name);
        let mut all = self.list_versions(&key, kind)?;
        Ok(all.remove(&key).unwrap_or_default())
    }

    /// Versions of every key under `prefix`, each list newest first.
    fn list_versions(&self, prefix: &str, kind: Kind) -> Result<BTreeMap<String, Vec<Version>>> {
        let (c, b, p) = (self.client.clone(), self.bucket.clone(), prefix.to_string());
        self.run(async move {
            let mut out: BTreeMap<String, Vec<Version>> = BTreeMap::new();
            let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
            loop {
                let r = c
                    .list_object_versions()
                    .bucket(&b)
                    .prefix(&p)
                    .set_key_marker(km.clone())
                    .set_version_id_marker(vm.clone())
                    .send()
                    .await
                    .map_err(|e| map_err(e, kind, &p))?;
                for v in r.versions() {
                    let (Some(k), Some(id)) = (v.key(), v.version_id()) else {
                        continue;
                    };
                    out.entry(k.to_string()).or_default().push(Version {
                        id: id.to_string(),
                        size: v.size().unwrap_or(0).max(0) as u64,
                        marker: false,
                        modified_ns: v.last_modified().map(ns_of).unwrap_or(0),
                        latest: v.is_latest().unwrap_or(false),
                    });
                }
                for d in r.delete_markers() {
                    let (Some(k), Some(id)) = (d.key(), d.version_id()) else {
                        continue;
                    };
                    out.entry(k.to_string()).or_default().push(Version {
                        id: id.to_string(),
                        size: 0,
                        marker: true,
                        modified_ns: d.last_modified().map(ns_of).unwrap_or(0),
                        latest: d.is_latest().unwrap_or(false),
                    });
                }
                if r.is_truncated() != Some(true) {
                    break;
                }
                km = r.next_key_marker().map(str::to_string);
                vm = r.next_version_id_marker().map(str::to_string);
                if km.is_none() {
                    break;
                }
            }
            for vs in out.values_mut() {
                vs.sort_by(|a, b| {
                    b.latest
                        .cmp(&a.latest)
                        .then(b.modified_ns.cmp(&a.modified_ns))
                });
            }
            Ok(out)
        })
    }

    /// Reads one version (or the current one) whole.
    fn get_version(
        &self,
        kind: Kind,
        name: &str,
        version: Option<&str>,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let (c, b, k) = (
            self.client.clone(),
            self.bucket.clone(),
            self.key(kind, name),
        );
        let (v, n) = (version.map(str::to_string), name.to_string());
        self.run(async move {
            let r = c
                .get_object()
                .bucket(&b)
                .key(&k)
                .set_version_id(v)
                .send()
                .await
                .map_err(|e| map_err(e, kind, &n))?;
            let vid = r.version_id().map(str::to_string);
            let body = r
                .body
                .collect()
                .await
                .map_err(|e| StoreError::Transient(format!("S3 {kind} {n}: {e}")))?;
            Ok((Vec::from(body.into_bytes()), vid))
        })
    }

    /// Finds the version whose bytes match `want` (a content check), newest
    /// first, skipping `tried`. Remembers it for range reads.
    fn search_versions(
        &self,
        kind: Kind,
        name: &str,
        tried: Option<&str>,
        want: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>> {
        let versions = self.versions(kind, name)?;
        let real: Vec<&Version> = versions.iter().filter(|v| !v.marker).collect();
        if real.is_empty() {
            return Err(StoreError::NotFound {
                kind,
                name: name.to_string(),
            });
        }
        for v in real {
            if Some(v.id.as_str()) == tried {
                continue;
            }
            let (bytes, _) = self.get_version(kind, name, Some(&v.id))?;
            if want(&bytes) {
                eprintln!(
                    "holdfast: warning: S3 {kind} {name}: the current version is missing or wrong \
                     (tampering?); using an earlier version that matches"
                );
                self.remember(kind, name, v.clone());
                return Ok(bytes);
            }
        }
        Err(StoreError::Corrupt {
            kind,
            name: name.to_string(),
            why: "no stored version matches its id".into(),
        })
    }

    fn remember(&self, kind: Kind, name: &str, v: Version) {
        let key = self.key(kind, name);
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, v);
    }

    /// The version range reads and sizes use: the remembered one, else the
    /// only real version, else the one a verified full read picks.
    fn resolve(&self, kind: Kind, name: &str) -> Result<Version> {
        let key = self.key(kind, name);
        if let Some(v) = self
            .resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(v.clone());
        }
        let versions = self.versions(kind, name)?;
        let real: Vec<&Version> = versions.iter().filter(|v| !v.marker).collect();
        match real.len() {
            0 => Err(StoreError::NotFound {
                kind,
                name: name.to_string(),
            }),
            1 if versions[0].id == real[0].id => {
                let v = real[0].clone();
                self.remember(kind, name, v.clone());
                Ok(v)
            }
            _ => {
                self.get(kind, name)?;
                let map = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
                map.get(&key).cloned().ok_or_else(|| StoreError::Corrupt {
                    kind,
                    name: name.to_string(),
                    why: "no stored version matches its id".into(),
                })
            }
        }
    }

    /// Reads the config version whose id is `want` (the one a key pins),
    /// whatever was put over it since.
    pub fn get_config_matching(&self, want: &holdfast_core::ObjectId) -> Result<Vec<u8>> {
        let ok = |b: &[u8]| holdfast_core::ObjectId::of(b) == *want;
        match self.get_version(Kind::Config, "config", None) {
            Ok((b, _)) if ok(&b) => Ok(b),
            Ok((_, vid)) => self.search_versions(Kind::Config, "config", vid.as_deref(), &ok),
            Err(e) if e.is_not_found() => self.search_versions(Kind::Config, "config", None, &ok),
            Err(e) => Err(e),
        }
    }

    fn put_inner(&self, kind: Kind, name: &str, data: &[u8], until_ns: Option<i64>) -> Result<()> {
        check_name(kind, name)?;
        check_content(kind, name, data)?;
        let md5 = content_md5(data);
        self.put_body(
            kind,
            name,
            PutBody::Bytes(data.to_vec()),
            data.len() as u64,
            md5,
            until_ns,
        )
    }

    /// The write of [`Self::put_inner`], from bytes or a (spool) file whose
    /// content id the caller checked.
    fn put_body(
        &self,
        kind: Kind,
        name: &str,
        body: PutBody,
        len: u64,
        md5: String,
        until_ns: Option<i64>,
    ) -> Result<()> {
        // Never overwrite: an existing object with the same bytes (by id)
        // is left alone. Anything else under the key is not ours and a new
        // version is added over it (older versions stay).
        if kind != Kind::Config {
            if let Ok(v) = self.resolve(kind, name)
                && v.size == len
            {
                if let Some(until) = until_ns {
                    self.retain(kind, name, until)?;
                }
                return Ok(());
            }
        } else if self.size(kind, name).is_ok() {
            // The contract: an existing name is never overwritten.
            return Ok(());
        }
        let (c, b, k, n) = self.at(kind, name);
        let vid = self.run(async move {
            let body = match body {
                PutBody::Bytes(v) => ByteStream::from(v),
                // Streamed from the file: the body is never whole in memory.
                PutBody::File(p) => ByteStream::from_path(&p)
                    .await
                    .map_err(|e| StoreError::Transient(format!("spool file: {e}")))?,
            };
            let mut req = c
                .put_object()
                .bucket(&b)
                .key(&k)
                .content_length(len as i64)
                .content_md5(md5)
                .body(body);
            if let Some(u) = until_ns {
                req = req
                    .object_lock_mode(ObjectLockMode::Compliance)
                    .object_lock_retain_until_date(date_of(u));
            }
            let r = req.send().await.map_err(|e| map_err(e, kind, &n))?;
            Ok(r.version_id().map(str::to_string))
        })?;
        if let Some(id) = vid {
            self.remember(
                kind,
                name,
                Version {
                    id,
                    size: len,
                    marker: false,
                    modified_ns: 0,
                    latest: true,
                },
            );
        }
        Ok(())
    }

    /// The COMPLIANCE retain-until of an object's resolved version, if any.
    pub fn retention_ns(&self, kind: Kind, name: &str) -> Result<Option<i64>> {
        let v = self.resolve(kind, name)?;
        let (c, b, k, n) = self.at(kind, name);
        self.run(async move {
            match c
                .get_object_retention()
                .bucket(&b)
                .key(&k)
                .version_id(v.id)
                .send()
                .await
            {
                Ok(r) => Ok(r.retention().and_then(|r| r.retain_until_date()).map(ns_of)),
                Err(e) => {
                    let code = e.code().unwrap_or("");
                    if code.contains("NoSuchObjectLockConfiguration") || code == "InvalidRequest" {
                        Ok(None)
                    } else {
                        Err(map_err(e, kind, &n))
                    }
                }
            }
        })
    }

    /// Sets or extends the COMPLIANCE retention of one version.
    fn put_retention(&self, kind: Kind, name: &str, version: &str, until_ns: i64) -> Result<()> {
        let ((c, b, k, n), v) = (self.at(kind, name), version.to_string());
        self.run(async move {
            c.put_object_retention()
                .bucket(&b)
                .key(&k)
                .version_id(v)
                .retention(
                    ObjectLockRetention::builder()
                        .mode(ObjectLockRetentionMode::Compliance)
                        .retain_until_date(date_of(until_ns))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| map_err(e, kind, &n))?;
            Ok(())
        })
    }

    /// Deletes one version by id (what an attacker holding the bucket's
    /// credentials would try too). Public for tests and drills.
    pub fn delete_version(&self, kind: Kind, name: &str, version: &str) -> Result<()> {
        let ((c, b, k, n), v) = (self.at(kind, name), version.to_string());
        self.run(async move {
            c.delete_object()
                .bucket(&b)
                .key(&k)
                .version_id(v)
                .send()
                .await
                .map_err(|e| map_err(e, kind, &n))?;
            Ok(())
        })
    }

    /// Version ids of one key, newest first, with whether each is a delete
    /// marker. For tests and drills.
    pub fn version_ids(&self, kind: Kind, name: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .versions(kind, name)?
            .into_iter()
            .map(|v| (v.id, v.marker))
            .collect())
    }

    /// A plain DELETE by key (adds a delete marker on a lock bucket).
    pub fn delete_key(&self, kind: Kind, name: &str) -> Result<()> {
        let (c, b, k, n) = self.at(kind, name);
        self.run(async move {
            c.delete_object()
                .bucket(&b)
                .key(&k)
                .send()
                .await
                .map_err(|e| map_err(e, kind, &n))?;
            Ok(())
        })
    }

    /// Puts raw bytes under a key with no checks (a new version): what an
    /// attacker would do. For tests and drills.
    pub fn put_raw(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let (c, b, k, n) = self.at(kind, name);
        let (body, md5) = (data.to_vec(), content_md5(data));
        self.run(async move {
            c.put_object()
                .bucket(&b)
                .key(&k)
                .content_md5(md5)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| map_err(e, kind, &n))?;
            Ok(())
        })
    }

    /// Tries to set a version's retention (shortening included): for tests.
    pub fn set_retention_raw(
        &self,
        kind: Kind,
        name: &str,
        version: &str,
        until_ns: i64,
    ) -> Result<()> {
        self.put_retention(kind, name, version, until_ns)
    }
}

fn date_of(ns: i64) -> DateTime {
    // Whole seconds, rounded up: S3 keeps retain-until to the second.
    DateTime::from_secs(ns.div_euclid(1_000_000_000) + i64::from(ns.rem_euclid(1_000_000_000) != 0))
}

/// What a PUT sends.
enum PutBody {
    Bytes(Vec<u8>),
    File(std::path::PathBuf),
}

/// Content-MD5, which S3 demands on writes that carry Object Lock headers.
/// MD5 here is a transport checksum required by the protocol, nothing more.
fn content_md5(data: &[u8]) -> String {
    use md5::Digest;
    let d = md5::Md5::digest(data);
    base64_encode(&d)
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // A runtime must not be dropped inside another; let it go quietly.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for S3Store {
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.put_inner(kind, name, data, None)
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        let want = |b: &[u8]| check_content(kind, name, b).is_ok();
        // The remembered good version first, when there is one.
        let known = {
            let key = self.key(kind, name);
            self.resolved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
        };
        let (bytes, vid) = match self.get_version(kind, name, known.as_ref().map(|v| v.id.as_str()))
        {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return self.search_versions(kind, name, None, &want),
            Err(e) => return Err(e),
        };
        if want(&bytes) {
            return Ok(bytes);
        }
        self.search_versions(kind, name, vid.as_deref(), &want)
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let v = self.resolve(kind, name)?;
        if offset.saturating_add(len) > v.size {
            return Err(StoreError::Corrupt {
                kind,
                name: name.to_string(),
                why: format!("range {offset}+{len} beyond its size {}", v.size),
            });
        }
        let (c, b, k, n) = self.at(kind, name);
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let data = self.run(async move {
            let r = c
                .get_object()
                .bucket(&b)
                .key(&k)
                .version_id(v.id)
                .range(range)
                .send()
                .await
                .map_err(|e| map_err(e, kind, &n))?;
            let body = r
                .body
                .collect()
                .await
                .map_err(|e| StoreError::Transient(format!("S3 {kind} {n}: {e}")))?;
            Ok(Vec::from(body.into_bytes()))
        })?;
        if data.len() as u64 != len {
            return Err(StoreError::Corrupt {
                kind,
                name: name.to_string(),
                why: format!("short range read: {} of {len} bytes", data.len()),
            });
        }
        Ok(data)
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        check_name(kind, name)?;
        Ok(self.resolve(kind, name)?.size)
    }

    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>> {
        let dir = self.key(kind, "");
        let all = self.list_versions(&dir, kind)?;
        let mut out = Vec::new();
        for (key, versions) in all {
            let Some(name) = key.strip_prefix(&dir) else {
                continue;
            };
            if check_name(kind, name).is_err() {
                continue;
            }
            if let Some(v) = versions.iter().find(|v| !v.marker) {
                out.push((name.to_string(), v.size));
            }
        }
        Ok(out)
    }

    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn prefers_whole_objects(&self) -> bool {
        true
    }

    fn get_pinned(&self, kind: Kind, name: &str, id: &holdfast_core::ObjectId) -> Result<Vec<u8>> {
        if kind == Kind::Config {
            return self.get_config_matching(id);
        }
        self.get(kind, name)
    }
}

impl ObjectStore for S3Store {
    fn put_retained(&self, kind: Kind, name: &str, data: &[u8], until_ns: i64) -> Result<()> {
        self.put_inner(kind, name, data, Some(until_ns))
    }

    fn retain(&self, kind: Kind, name: &str, until_ns: i64) -> Result<()> {
        let v = self.resolve(kind, name)?;
        match self.put_retention(kind, name, &v.id, until_ns) {
            Ok(()) => Ok(()),
            // Shortening is refused: fine if it is already long enough.
            Err(e) => match self.retention_ns(kind, name) {
                Ok(Some(cur)) if cur >= until_ns - 1_000_000_000 => Ok(()),
                _ => Err(e),
            },
        }
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<Deletion> {
        let versions = self.versions(kind, name)?;
        let mut locked = false;
        // Real versions first: a refused one must keep its delete markers
        // away from a key that still holds it.
        for v in versions.iter().filter(|v| !v.marker) {
            match self.delete_version(kind, name, &v.id) {
                Ok(()) => {}
                Err(StoreError::Refused(_)) => locked = true,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        if locked {
            return Ok(Deletion::Locked);
        }
        for v in versions.iter().filter(|v| v.marker) {
            let _ = self.delete_version(kind, name, &v.id);
        }
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key(kind, name));
        Ok(Deletion::Done)
    }

    fn stored_at_ns(&self, kind: Kind, name: &str) -> Result<i64> {
        let versions = self.versions(kind, name)?;
        versions
            .iter()
            .find(|v| !v.marker)
            .map(|v| v.modified_ns)
            .ok_or_else(|| StoreError::NotFound {
                kind,
                name: name.to_string(),
            })
    }

    fn locked_until_ns(&self, kind: Kind, name: &str) -> Result<Option<i64>> {
        self.retention_ns(kind, name)
    }

    fn locks_enforced(&self) -> bool {
        true
    }

    /// Spooled to a file in `spool` (the vault's state directory), MD5
    /// computed as the bytes arrive; the commit PUTs from that file. Not a
    /// streamed PUT: the object would be visible under its name before its
    /// hash was checked, and Object Lock demands the Content-MD5 up front.
    fn stage(&self, kind: Kind, spool: &std::path::Path) -> Result<crate::Staged> {
        crate::Staged::in_file(kind, spool, true)
    }

    fn commit_staged(&self, mut staged: crate::Staged, name: &str, until_ns: i64) -> Result<()> {
        staged.check_name(name)?;
        let (kind, len) = (staged.kind, staged.len());
        let Some(m) = staged.md5.take() else {
            let data = staged.into_bytes()?;
            return self.put_inner(kind, name, &data, Some(until_ns));
        };
        let md5 = base64_encode(&md5::Digest::finalize(m));
        let Some((_, path, _)) = staged.file() else {
            let data = staged.into_bytes()?;
            return self.put_inner(kind, name, &data, Some(until_ns));
        };
        let path = path.to_path_buf();
        // The spool file stays until the PUT returns (dropped after).
        self.put_body(kind, name, PutBody::File(path), len, md5, Some(until_ns))
    }
}
