//! Where template storage is: storage URLs and their resolution from flags and environment, the
//! way E2B's orchestrator resolves its template storage.
//!
//! Facts (e2b-dev/infra @ 54693ff, 2026-08): `packages/shared/pkg/storage/storage_url.go`
//! (`ParseStorageURL`, the URL dialect) and `packages/orchestrator/pkg/cfg/storage.go` (which
//! variable wins). The unit tests below are the vectors of `storage_url_test.go`
//! (`TestParseStorageURL`, `TestParseStorageURLDoesNotLeakCredentials`) and of
//! `pkg/cfg/storage_test.go`, same inputs and outcomes.
//!
//! The dialect, exactly as E2B accepts it:
//!
//! | URL | storage |
//! |---|---|
//! | `gs://bucket` | Google Cloud Storage |
//! | `s3://bucket[?endpoint=http(s)://host[:port]][&region=r][&s3ForcePathStyle=bool]` | S3 or S3-compatible |
//! | `azblob://container` | Azure Blob Storage (account from the environment) |
//! | `file:///abs/path`, `file://localhost/abs/path`, `file:relative/path` | local directory |
//!
//! The scheme is case-insensitive and surrounding whitespace is ignored. A trailing `/` after the
//! bucket is allowed; any other path is refused (key prefixes are not supported). Only `s3://`
//! takes query parameters, and only those three (the last value of a repeated key wins); an
//! unknown one is refused with its name and the valid ones, so a typo fails fast. Credentials are
//! refused in the URL and inside `endpoint=`; errors never echo them. Like Go's `net/url`, a
//! `#fragment` is ignored.
//!
//! Resolution order ([`resolve`]): `--storage` (a URL or a plain directory), `TMPL_STORAGE`
//! (the same), `TEMPLATE_STORAGE_URL`, then the legacy `STORAGE_PROVIDER`
//! (`GCPBucket`|`AWSBucket`|`AzureBucket`|`Local`) with `TEMPLATE_BUCKET_NAME` /
//! `LOCAL_TEMPLATE_STORAGE_BASE_PATH` (+ `S3_USE_PATH_STYLE`, Go `strconv.ParseBool`, parsed
//! strictly whenever the environment is consulted, as E2B does). One deliberate difference: when
//! none of `TEMPLATE_STORAGE_URL`, `STORAGE_PROVIDER` and `TEMPLATE_BUCKET_NAME` is set, E2B fails
//! ("set TEMPLATE_BUCKET_NAME") while tmpl uses the local default
//! (`LOCAL_TEMPLATE_STORAGE_BASE_PATH`, else `/tmp/templates`), as it always has.

use std::fmt;
use std::path::PathBuf;

use super::env::Env;
use super::error::{Error, Result};

/// E2B's default Local base path (`LOCAL_TEMPLATE_STORAGE_BASE_PATH` unset).
pub const DEFAULT_LOCAL_PATH: &str = "/tmp/templates";

/// The query parameters `s3://` accepts (E2B `parseBucketURL`).
pub const S3_QUERY_PARAMETERS: [&str; 3] = ["endpoint", "s3ForcePathStyle", "region"];

/// A resolved template storage. It never holds a credential: credentials come from each
/// provider's environment when a [`Store`](super::Store) is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory (absolute, or relative to the working directory).
    Local { path: PathBuf },
    /// An S3 bucket or an S3-compatible service.
    S3 {
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/`. E2B's URLs never set
        /// one (they are refused); it exists for callers that place builds under a prefix.
        prefix: String,
        /// `endpoint=`: an absolute http(s) URL; `None` defers to `AWS_ENDPOINT_URL_S3` /
        /// `AWS_ENDPOINT_URL`, then AWS itself.
        endpoint: Option<String>,
        /// `region=`; `None` defers to `AWS_REGION` / `AWS_DEFAULT_REGION`, then `us-east-1`.
        region: Option<String>,
        /// `s3ForcePathStyle=true`: `endpoint/bucket/key` instead of `bucket.endpoint/key`.
        path_style: bool,
    },
    /// A Google Cloud Storage bucket.
    Gcs { bucket: String, prefix: String },
    /// An Azure Blob Storage container; the account comes from the environment.
    Azure { container: String, prefix: String },
}

impl Location {
    /// `file`, `s3`, `gs` or `azblob`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Location::Local { .. } => "file",
            Location::S3 { .. } => "s3",
            Location::Gcs { .. } => "gs",
            Location::Azure { .. } => "azblob",
        }
    }

    /// True for the object stores (everything but a local directory).
    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local { .. })
    }

    /// The key prefix inside the bucket ("" for none and for local storage).
    pub fn prefix(&self) -> &str {
        match self {
            Location::Local { .. } => "",
            Location::S3 { prefix, .. } | Location::Gcs { prefix, .. } | Location::Azure { prefix, .. } => prefix,
        }
    }

    /// The same location with the key prefix `prefix` (slashes at either end are dropped; a
    /// local location gets `prefix` as a subdirectory).
    pub fn with_prefix(self, prefix: &str) -> Location {
        let p = prefix.trim_matches('/').to_string();
        match self {
            Location::Local { path } => Location::Local { path: if p.is_empty() { path } else { path.join(p) } },
            Location::S3 { bucket, endpoint, region, path_style, .. } => {
                Location::S3 { bucket, prefix: p, endpoint, region, path_style }
            }
            Location::Gcs { bucket, .. } => Location::Gcs { bucket, prefix: p },
            Location::Azure { container, .. } => Location::Azure { container, prefix: p },
        }
    }

    /// The bucket or container name (`None` for local storage).
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Location::Local { .. } => None,
            Location::S3 { bucket, .. } | Location::Gcs { bucket, .. } => Some(bucket),
            Location::Azure { container, .. } => Some(container),
        }
    }

    /// How an object of this storage is named in messages: `s3://bucket/prefix/key`,
    /// `/dir/key`.
    pub fn object_url(&self, key: &str) -> String {
        match self {
            Location::Local { path } => path.join(key).display().to_string(),
            _ => {
                let prefix = self.prefix();
                let sep = if prefix.is_empty() { "" } else { "/" };
                format!("{}://{}/{prefix}{sep}{key}", self.scheme(), self.bucket().unwrap_or(""))
            }
        }
    }
}

/// The URL form (`s3://bucket?endpoint=...&region=...&s3ForcePathStyle=true`), or the directory
/// for local storage. There is nothing secret in a `Location`; an endpoint's own query string
/// is still not shown.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local { path } => write!(f, "{}", path.display()),
            Location::S3 { bucket, prefix, endpoint, region, path_style } => {
                write!(f, "s3://{bucket}")?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}/")?;
                }
                let mut sep = '?';
                if let Some(e) = endpoint {
                    let shown = match e.split_once('?') {
                        Some((base, _)) => format!("{base}?..."),
                        None => e.clone(),
                    };
                    write!(f, "{sep}endpoint={shown}")?;
                    sep = '&';
                }
                if let Some(r) = region {
                    write!(f, "{sep}region={r}")?;
                    sep = '&';
                }
                if *path_style {
                    write!(f, "{sep}s3ForcePathStyle=true")?;
                }
                Ok(())
            }
            Location::Gcs { bucket, prefix } | Location::Azure { container: bucket, prefix } => {
                write!(f, "{}://{bucket}", self.scheme())?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}/")?;
                }
                Ok(())
            }
        }
    }
}

/// Which setting chose the storage (for reports and error messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `--storage`.
    Flag,
    /// `TMPL_STORAGE`.
    TmplStorage,
    /// `TEMPLATE_STORAGE_URL`.
    TemplateStorageUrl,
    /// `STORAGE_PROVIDER` with `TEMPLATE_BUCKET_NAME` or `LOCAL_TEMPLATE_STORAGE_BASE_PATH`.
    StorageProvider,
    /// `LOCAL_TEMPLATE_STORAGE_BASE_PATH` alone.
    LocalTemplateStorageBasePath,
    /// Nothing set: `/tmp/templates`.
    Default,
}

impl Source {
    /// The flag or variable, as an operator would type it.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Flag => "--storage",
            Source::TmplStorage => "TMPL_STORAGE",
            Source::TemplateStorageUrl => "TEMPLATE_STORAGE_URL",
            Source::StorageProvider => "STORAGE_PROVIDER",
            Source::LocalTemplateStorageBasePath => "LOCAL_TEMPLATE_STORAGE_BASE_PATH",
            Source::Default => "default (/tmp/templates)",
        }
    }
}

/// A location and the setting it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub location: Location,
    pub source: Source,
}

/// Resolve the template storage from `--storage` (`flag`) and the environment. See the module
/// documentation for the order. A flag or `TMPL_STORAGE` value is a URL when it starts with
/// `gs:`, `s3:`, `azblob:` or `file:` (any case) or contains `://`; otherwise it is a directory,
/// taken as given.
pub fn resolve(flag: Option<&str>, env: &Env) -> Result<Resolved> {
    if let Some(f) = flag.filter(|f| !f.trim().is_empty()) {
        return Ok(Resolved { location: flag_value(f)?, source: Source::Flag });
    }
    if let Some(v) = env.get("TMPL_STORAGE") {
        return Ok(Resolved { location: flag_value(v)?, source: Source::TmplStorage });
    }
    // E2B parses S3_USE_PATH_STYLE strictly whenever it reads the storage environment, even
    // when a URL makes it irrelevant (cfg/storage.go: "fails resolution loudly").
    let path_style = match env.get("S3_USE_PATH_STYLE") {
        Some(v) => go_parse_bool(v).ok_or_else(|| Error::InvalidEnv {
            var: "S3_USE_PATH_STYLE",
            value: v.to_string(),
            reason: "not a boolean (want one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)".into(),
        })?,
        None => false,
    };
    if let Some(url) = env.get("TEMPLATE_STORAGE_URL") {
        return Ok(Resolved { location: parse_storage_url(url)?, source: Source::TemplateStorageUrl });
    }
    let provider = env.get("STORAGE_PROVIDER");
    let bucket = env.get("TEMPLATE_BUCKET_NAME");
    let base_path = env.get("LOCAL_TEMPLATE_STORAGE_BASE_PATH");
    if provider.is_none() && bucket.is_none() {
        // tmpl's default (E2B would refuse: its default provider is GCPBucket).
        return Ok(match base_path {
            Some(p) => {
                Resolved { location: Location::Local { path: p.into() }, source: Source::LocalTemplateStorageBasePath }
            }
            None => Resolved { location: Location::Local { path: DEFAULT_LOCAL_PATH.into() }, source: Source::Default },
        });
    }
    let location = match provider.unwrap_or("GCPBucket") {
        "Local" => Location::Local { path: base_path.unwrap_or(DEFAULT_LOCAL_PATH).into() },
        p @ ("GCPBucket" | "AWSBucket" | "AzureBucket") => {
            let Some(bucket) = bucket else {
                return Err(Error::InvalidEnv {
                    var: "STORAGE_PROVIDER",
                    value: p.to_string(),
                    reason: "template storage bucket not configured: set TEMPLATE_BUCKET_NAME".into(),
                });
            };
            // E2B builds `gs://<bucket>` etc. and parses that, so the bucket goes through the
            // same checks as a URL's.
            let scheme = match p {
                "GCPBucket" => "gs",
                "AWSBucket" => "s3",
                _ => "azblob",
            };
            let mut location = parse_storage_url(&format!("{scheme}://{bucket}"))?;
            if let Location::S3 { path_style: ps, .. } = &mut location {
                *ps = path_style;
            }
            location
        }
        other => {
            return Err(Error::InvalidEnv {
                var: "STORAGE_PROVIDER",
                value: other.to_string(),
                reason: format!("unknown storage provider: {other} (want GCPBucket, AWSBucket, AzureBucket or Local)"),
            });
        }
    };
    Ok(Resolved { location, source: Source::StorageProvider })
}

fn flag_value(v: &str) -> Result<Location> {
    let t = v.trim();
    let lower = t.to_ascii_lowercase();
    let url_like = ["gs:", "s3:", "azblob:", "file:"].iter().any(|s| lower.starts_with(s)) || t.contains("://");
    if url_like { parse_storage_url(t) } else { Ok(Location::Local { path: v.into() }) }
}

/// Go's `strconv.ParseBool`.
pub fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The pieces of a URL as Go's `net/url.Parse` splits them (only what the dialect needs).
struct Parts<'a> {
    scheme: &'a str,
    /// The non-hierarchical form's text (`file:rel/path`), not unescaped (Go keeps `Opaque` raw).
    opaque: Option<&'a str>,
    /// Userinfo present in the authority.
    has_userinfo: bool,
    /// The host with any userinfo removed (`""` when there is no authority).
    host: String,
    /// The path, unescaped.
    path: String,
    /// Query pairs, unescaped, in order; pairs Go would drop are dropped.
    query: Vec<(String, String)>,
}

/// Parse a storage URL (the dialect in the module documentation) into a [`Location`].
pub fn parse_storage_url(raw: &str) -> Result<Location> {
    let raw = raw.trim();
    let p = split_url(raw)?;
    let shown = redacted(&p);
    let bad = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
    match p.scheme.to_ascii_lowercase().as_str() {
        s @ ("gs" | "s3" | "azblob") => {
            if p.host.is_empty() {
                return Err(bad("missing bucket name".into()));
            }
            if !p.path.is_empty() && p.path != "/" {
                return Err(bad("key prefixes are not supported (bucket only)".into()));
            }
            if p.has_userinfo {
                return Err(bad("credentials in URLs are not supported".into()));
            }
            if s != "s3" {
                if let Some((k, _)) = p.query.first() {
                    return Err(bad(format!(
                        "{} does not accept query parameters (got {k:?}; only s3:// takes {})",
                        format_args!("{}://", p.scheme),
                        S3_QUERY_PARAMETERS.join(", ")
                    )));
                }
                let bucket = p.host.clone();
                return Ok(if s == "gs" {
                    Location::Gcs { bucket, prefix: String::new() }
                } else {
                    Location::Azure { container: bucket, prefix: String::new() }
                });
            }
            let (mut endpoint, mut region, mut path_style) = (None, None, false);
            // Every key is checked; for a repeated key the last value wins, as in E2B.
            for (k, v) in &p.query {
                match k.as_str() {
                    "endpoint" => {
                        let e = split_url(v).ok().filter(|e| {
                            e.opaque.is_none() && matches!(e.scheme, "http" | "https") && !e.host.is_empty()
                        });
                        let Some(e) = e else {
                            return Err(bad("endpoint must be an absolute http(s) URL".into()));
                        };
                        if e.has_userinfo {
                            return Err(bad("credentials in URLs are not supported".into()));
                        }
                        endpoint = Some(v.clone());
                    }
                    "s3ForcePathStyle" => {
                        path_style = go_parse_bool(v).ok_or_else(|| {
                            bad(format!("invalid s3ForcePathStyle {v:?}: want true or false (Go strconv.ParseBool)"))
                        })?;
                    }
                    "region" => region = Some(v.clone()),
                    other => {
                        let hint = match suggestion(other) {
                            Some(s) => format!("; did you mean {s}?"),
                            None => String::new(),
                        };
                        return Err(bad(format!(
                            "unsupported query parameter {other:?} (want endpoint, s3ForcePathStyle, or region{hint})"
                        )));
                    }
                }
            }
            Ok(Location::S3 { bucket: p.host, prefix: String::new(), endpoint, region, path_style })
        }
        "file" => {
            if !p.query.is_empty() {
                return Err(bad("file: does not accept query parameters".into()));
            }
            if let Some(o) = p.opaque {
                return Ok(Location::Local { path: o.into() });
            }
            if !p.host.is_empty() && p.host != "localhost" || p.has_userinfo {
                return Err(bad("file:// must not have a host (use file:///abs/path)".into()));
            }
            if p.path.is_empty() {
                return Err(bad("file:// requires a path".into()));
            }
            Ok(Location::Local { path: p.path.into() })
        }
        _ => Err(bad(format!("unsupported scheme {:?} (want gs, s3, azblob, or file)", p.scheme))),
    }
}

/// A near miss of an `s3://` parameter, including gocloud.dev spellings E2B does not take.
fn suggestion(key: &str) -> Option<&'static str> {
    let k = key.to_ascii_lowercase().replace(['_', '-'], "");
    match k.as_str() {
        "s3forcepathstyle" | "usepathstyle" | "pathstyle" | "forcepathstyle" => Some("s3ForcePathStyle"),
        "endpoint" | "endpointurl" | "url" => Some("endpoint"),
        "region" | "awsregion" => Some("region"),
        _ => None,
    }
}

/// Split `raw` like Go's `url.Parse`. Errors do not echo the URL (it may hold credentials).
fn split_url(raw: &str) -> Result<Parts<'_>> {
    let invalid = |reason: &str| Error::InvalidUrl { url: "<not shown>".into(), reason: reason.to_string() };
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(invalid("invalid control character in URL"));
    }
    // A fragment is split off and ignored, as Go does.
    let raw = raw.split_once('#').map_or(raw, |(r, _)| r);
    let (scheme, rest) = match raw.split_once(':') {
        Some((s, r))
            if s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            (s, r)
        }
        Some(("", _)) => return Err(invalid("missing protocol scheme")),
        _ => ("", raw),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let query = query_pairs(query);
    if !scheme.is_empty() && !rest.starts_with('/') {
        return Ok(Parts {
            scheme,
            opaque: Some(rest).filter(|o| !o.is_empty()),
            has_userinfo: false,
            host: String::new(),
            path: String::new(),
            query,
        });
    }
    let (authority, raw_path) = match rest.strip_prefix("//") {
        Some(h) => h.split_at(h.find('/').unwrap_or(h.len())),
        None => ("", rest),
    };
    let (has_userinfo, host) = match authority.rfind('@') {
        Some(i) => (true, &authority[i + 1..]),
        None => (false, authority),
    };
    // Go refuses a port that is not all digits.
    let after_ipv6 = host.rfind(']').map_or(0, |i| i + 1);
    if let Some(i) = host[after_ipv6..].find(':')
        && !host[after_ipv6 + i + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid("invalid port after host"));
    }
    let host = unescape(host).ok_or_else(|| invalid("invalid URL escape in host"))?;
    let path = unescape(raw_path).ok_or_else(|| invalid("invalid URL escape in path"))?;
    Ok(Parts { scheme, opaque: None, has_userinfo, host, path, query })
}

/// `application/x-www-form-urlencoded` pairs; like Go's `url.Values` from `u.Query()`, a pair
/// with a bad escape or a `;` is dropped.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty() && !p.contains(';'))
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((unescape(&k.replace('+', " "))?, unescape(&v.replace('+', " "))?))
        })
        .collect()
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL for messages: userinfo removed, also from URL-valued query parameters (Go's
/// `redactedURL`); in the opaque form everything up to an `@` is removed too.
fn redacted(p: &Parts<'_>) -> String {
    let mut out = format!("{}:", p.scheme);
    match p.opaque {
        Some(o) => out.push_str(o.rsplit_once('@').map_or(o, |(_, after)| after)),
        None if p.scheme.is_empty() && p.host.is_empty() => out = p.path.clone(),
        None => {
            out.push_str("//");
            out.push_str(&p.host);
            out.push_str(&p.path);
        }
    }
    if !p.query.is_empty() {
        let pairs: Vec<String> = p
            .query
            .iter()
            .map(|(k, v)| {
                let v = match split_url(v) {
                    Ok(inner) if inner.has_userinfo => redacted(&inner),
                    Ok(inner) if inner.opaque.is_some_and(|o| o.contains('@')) => redacted(&inner),
                    Ok(_) => v.clone(),
                    Err(_) => "<invalid>".into(),
                };
                format!("{}={}", escape_query(k), escape_query(&v))
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

fn escape_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(u: &str) -> Location {
        parse_storage_url(u).unwrap_or_else(|e| panic!("{u}: {e}"))
    }

    fn bad(u: &str, needle: &str) -> String {
        let e = parse_storage_url(u).expect_err(u);
        assert_eq!(e.kind(), super::super::ErrorKind::Config);
        let m = e.to_string();
        assert!(m.contains(needle), "{u}: {m:?} lacks {needle:?}");
        m
    }

    fn gcs(b: &str) -> Location {
        Location::Gcs { bucket: b.into(), prefix: String::new() }
    }

    fn s3(b: &str, endpoint: Option<&str>, region: Option<&str>, path_style: bool) -> Location {
        Location::S3 {
            bucket: b.into(),
            prefix: String::new(),
            endpoint: endpoint.map(Into::into),
            region: region.map(Into::into),
            path_style,
        }
    }

    fn local(p: &str) -> Location {
        Location::Local { path: p.into() }
    }

    /// E2B `storage_url_test.go` `TestParseStorageURL` (e2b-dev/infra @ 21fed5f), every case.
    #[test]
    fn e2b_parse_storage_url_vectors() {
        assert_eq!(ok("gs://my-bucket"), gcs("my-bucket"));
        assert_eq!(ok("gs://my-bucket/"), gcs("my-bucket"));
        assert_eq!(ok("s3://my-bucket"), s3("my-bucket", None, None, false));
        assert_eq!(ok("s3://my-bucket?region=eu-west-1"), s3("my-bucket", None, Some("eu-west-1"), false));
        assert_eq!(
            ok("s3://templates?endpoint=http://minio:9000&s3ForcePathStyle=true"),
            s3("templates", Some("http://minio:9000"), None, true)
        );
        assert_eq!(ok("s3://my-bucket?s3ForcePathStyle=false"), s3("my-bucket", None, None, false));
        assert_eq!(
            ok("azblob://my-container"),
            Location::Azure { container: "my-container".into(), prefix: "".into() }
        );
        assert_eq!(
            ok("azblob://my-container/"),
            Location::Azure { container: "my-container".into(), prefix: "".into() }
        );
        bad("azblob://my-container?endpoint=http://azurite:10000", "azblob:// does not accept query parameters");
        assert_eq!(ok("file:///var/lib/storage"), local("/var/lib/storage"));
        assert_eq!(ok("file://localhost/var/lib/storage"), local("/var/lib/storage"));
        assert_eq!(ok("file:.local-build"), local(".local-build"));
        assert_eq!(ok("file:build/cache"), local("build/cache"));
        assert_eq!(ok("  gs://my-bucket\n"), gcs("my-bucket"));
        bad("ftp://my-bucket", "unsupported scheme");
        bad("s3://", "missing bucket name");
        bad("gs://my-bucket/some/prefix", "key prefixes are not supported");
        bad("gs://my-bucket?endpoint=http://x", "does not accept query parameters");
        bad("s3://my-bucket?s3ForcePathStyle=true&pathStyle=true", "unsupported query parameter \"pathStyle\"");
        bad("s3://my-bucket?s3ForcePathStyle=yep", "invalid s3ForcePathStyle");
        bad("s3://my-bucket?endpoint=minio:9000", "endpoint must be an absolute http(s) URL");
        bad("s3://my-bucket?endpoint=http://key:secret@minio:9000", "credentials in URLs are not supported");
        bad("s3://key:secret@my-bucket", "credentials in URLs are not supported");
        bad("file://nfs-server/export", "must not have a host");
        bad("file://", "requires a path");
        bad("file:///var/lib/storage?mode=fast", "does not accept query parameters");
        bad("file:.local-build?mode=fast", "does not accept query parameters");
    }

    /// E2B `TestParseStorageURLDoesNotLeakCredentials`, every URL, plus percent-encoded ones.
    #[test]
    fn e2b_errors_never_leak_credentials() {
        let urls = [
            "s3://AKIAKEY:supersecret@bucket",
            "azblob://AKIAKEY:supersecret@bucket",
            "ftps://AKIAKEY:supersecret@bucket",
            "s3://AKIAKEY:supersecret@bucket/prefix",
            "s3://AKIAKEY:supersecret@bucket?bogus=1",
            "gs://AKIAKEY:supersecret@bucket?x=1",
            "s3://AKIAKEY:supersecret@bucket?endpoint=x",
            "s3://AKIAKEY:supersecret@bucket?s3ForcePathStyle=y",
            "s3://AKIAKEY:supersecret@bucket\x00",
            "s3://bucket?endpoint=http://AKIAKEY:supersecret@minio:9000&bogus=1",
            "s3://bucket?endpoint=ftp://AKIAKEY:supersecret@minio:9000",
            "s3://bucket?endpoint=http://AKIAKEY:supersecret@minio:9000",
            "s3://bucket?endpoint=http://AKIAKEY:supersecret@minio:9000&s3ForcePathStyle=maybe",
            // tmpl's own: the same credentials percent-encoded in the query, and the opaque form.
            "s3://bucket?endpoint=http%3A%2F%2FAKIAKEY%3Asupersecret%40minio%3A9000&bogus=1",
            "s3:AKIAKEY:supersecret@bucket",
            "gs://bucket?endpoint=http://AKIAKEY:supersecret@x",
        ];
        for raw in urls {
            let e = parse_storage_url(raw).expect_err(raw).to_string();
            assert!(!e.contains("supersecret") && !e.contains("AKIAKEY"), "{raw}: leaks: {e}");
        }
    }

    /// E2B `pkg/cfg/storage_test.go` (every case of the template role), through `resolve`.
    #[test]
    fn e2b_resolution_vectors() {
        let r = |pairs: &[(&str, &str)]| resolve(None, &Env::from_pairs(pairs.iter().copied()));
        // TestTemplateStorage_URLOverridesLegacyEnv
        let got = r(&[
            ("STORAGE_PROVIDER", "GCPBucket"),
            ("TEMPLATE_BUCKET_NAME", "legacy-bucket"),
            ("TEMPLATE_STORAGE_URL", "s3://url-bucket?endpoint=http://minio:9000&s3ForcePathStyle=true"),
        ])
        .unwrap();
        assert_eq!(got.location, s3("url-bucket", Some("http://minio:9000"), None, true));
        assert_eq!(got.source, Source::TemplateStorageUrl);
        // TestTemplateStorage_Legacy
        let legacy = |provider: &str, bucket: &str, base: &str, ps: &str| {
            r(&[
                ("TEMPLATE_STORAGE_URL", ""),
                ("STORAGE_PROVIDER", provider),
                ("TEMPLATE_BUCKET_NAME", bucket),
                ("LOCAL_TEMPLATE_STORAGE_BASE_PATH", base),
                ("S3_USE_PATH_STYLE", ps),
            ])
        };
        assert_eq!(legacy("GCPBucket", "fc-templates", "", "").unwrap().location, gcs("fc-templates"));
        assert_eq!(legacy("", "fc-templates", "", "").unwrap().location, gcs("fc-templates"));
        assert_eq!(
            legacy("AWSBucket", "legacy-bucket", "", "").unwrap().location,
            s3("legacy-bucket", None, None, false)
        );
        assert_eq!(
            legacy("AWSBucket", "legacy-bucket", "", "True").unwrap().location,
            s3("legacy-bucket", None, None, true)
        );
        assert_eq!(
            legacy("AzureBucket", "fc-templates", "", "").unwrap().location,
            Location::Azure { container: "fc-templates".into(), prefix: "".into() }
        );
        assert_eq!(legacy("Local", "", "/tmp/some-cache", "").unwrap().location, local("/tmp/some-cache"));
        assert_eq!(legacy("Local", "", "/var/lib/e2b storage", "").unwrap().location, local("/var/lib/e2b storage"));
        assert_eq!(legacy("Local", "", ".local-build", "").unwrap().location, local(".local-build"));
        assert_eq!(legacy("Local", "", "", "").unwrap().location, local("/tmp/templates"));
        let e = legacy("FloppyDisk", "", "", "").unwrap_err().to_string();
        assert!(e.contains("unknown storage provider: FloppyDisk"), "{e}");
        let e = legacy("GCPBucket", "", "", "").unwrap_err().to_string();
        assert!(e.contains("template storage bucket not configured: set TEMPLATE_BUCKET_NAME"), "{e}");
        // TestTemplateStorage_URLIgnoresLegacyPathStyleEnv
        let got = r(&[("TEMPLATE_STORAGE_URL", "s3://url-bucket"), ("S3_USE_PATH_STYLE", "true")]).unwrap();
        assert_eq!(got.location, s3("url-bucket", None, None, false));
        // TestStorage_MalformedPathStyleEnvFailsFast
        let e = r(&[("TEMPLATE_STORAGE_URL", "s3://url-bucket"), ("S3_USE_PATH_STYLE", "yes-please")]).unwrap_err();
        assert!(e.to_string().contains("S3_USE_PATH_STYLE"), "{e}");
        // TestTemplateStorage_InvalidURL
        let e = r(&[("TEMPLATE_STORAGE_URL", "s3://bucket?bogus=1")]).unwrap_err();
        assert!(e.to_string().contains("unsupported query parameter"), "{e}");
    }

    #[test]
    fn tmpl_flag_and_defaults() {
        let env = Env::from_pairs([("TEMPLATE_STORAGE_URL", "gs://x"), ("S3_USE_PATH_STYLE", "nope")]);
        // The flag wins and the environment is not consulted at all.
        let got = resolve(Some("/srv/e2b/templates"), &env).unwrap();
        assert_eq!((got.location, got.source), (local("/srv/e2b/templates"), Source::Flag));
        let got = resolve(Some("S3://b?region=r"), &env).unwrap();
        assert_eq!(got.location, s3("b", None, Some("r"), false));
        // A directory whose name has a colon is a directory.
        assert_eq!(resolve(Some("backup:2024"), &env).unwrap().location, local("backup:2024"));
        // A typo in the scheme is not a directory.
        let e = resolve(Some("s4://bucket"), &env).unwrap_err().to_string();
        assert!(e.contains("unsupported scheme \"s4\""), "{e}");
        let got = resolve(None, &Env::from_pairs([("TMPL_STORAGE", "azblob://c")])).unwrap();
        assert_eq!(got.source, Source::TmplStorage);
        let got = resolve(None, &Env::empty()).unwrap();
        assert_eq!((got.location, got.source), (local("/tmp/templates"), Source::Default));
        let got = resolve(None, &Env::from_pairs([("LOCAL_TEMPLATE_STORAGE_BASE_PATH", "/data")])).unwrap();
        assert_eq!((got.location, got.source), (local("/data"), Source::LocalTemplateStorageBasePath));
    }

    #[test]
    fn typos_name_the_parameter_and_the_valid_ones() {
        let m = bad("s3://b?use_path_style=true", "unsupported query parameter \"use_path_style\"");
        assert!(
            m.contains("want endpoint, s3ForcePathStyle, or region") && m.contains("did you mean s3ForcePathStyle?"),
            "{m}"
        );
        let m = bad("s3://b?Region=x", "\"Region\"");
        assert!(m.contains("did you mean region?"), "{m}");
        let m = bad("gs://b?userProject=p", "gs:// does not accept query parameters");
        assert!(m.contains("\"userProject\""), "{m}");
        bad("s3://b?disable_https=true", "unsupported query parameter \"disable_https\"");
    }

    #[test]
    fn go_url_details() {
        // The last value of a repeated key wins; escapes are decoded; fragments are ignored.
        assert_eq!(ok("s3://b?region=a&region=b").to_string(), "s3://b?region=b");
        assert_eq!(ok("file:///var/lib/e2b%20storage"), local("/var/lib/e2b storage"));
        assert_eq!(ok("file:/abs/dir"), local("/abs/dir"));
        assert_eq!(ok("gs://b#frag"), gcs("b"));
        // Go keeps the opaque form raw.
        assert_eq!(ok("file:my%20dir"), local("my%20dir"));
        bad("gs://b:port", "invalid port");
        bad("gs:bucket", "missing bucket name");
        bad("my-bucket", "unsupported scheme \"\"");
        bad("gs://b\u{1}", "control character");
    }

    #[test]
    fn display_round_trips_and_names_objects() {
        for u in
            ["gs://b", "azblob://c", "s3://b?endpoint=http://127.0.0.1:9000&region=eu-west-1&s3ForcePathStyle=true"]
        {
            assert_eq!(ok(u).to_string(), u);
            assert_eq!(ok(&ok(u).to_string()), ok(u));
        }
        let l = ok("s3://b?endpoint=http://h/x?token=abc");
        assert!(!l.to_string().contains("abc"), "{l}");
        let l = ok("gs://b").with_prefix("/runs/1/");
        assert_eq!(l.object_url("build/memfile"), "gs://b/runs/1/build/memfile");
        assert_eq!(ok("azblob://c").object_url("k"), "azblob://c/k");
        assert_eq!(local("/data").object_url("b/m"), "/data/b/m");
    }
}
