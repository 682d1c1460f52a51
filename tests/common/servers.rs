//! Real object-storage servers for tests, started once per test binary on free loopback ports:
//! moto (S3), fake-gcs-server (GCS) and azurite (Azure Blob). Also a fault-injecting HTTP proxy
//! in front of them, and the few raw HTTP calls the client library has no API for (creating a
//! bucket or container, seeding GCS objects).
//!
//! Tools are found through `MOTO_SERVER`, `FAKE_GCS_SERVER` and `AZURITE_BLOB` (paths; .ci/run
//! sets them to its pinned installs), else on PATH as `moto_server`, `fake-gcs-server` and
//! `azurite-blob`. Missing tools skip locally and fail with `TMPL_TEST_REQUIRE_TOOLS=1`.
//!
//! Each server runs under a small `sh` watchdog that kills it when the test binary exits (Rust
//! never drops statics, and a signal-on-parent-death hook would need `unsafe` in `pre_exec`).
//!
//! Facts used here come from the research notes of issue 15 and the servers' own documentation:
//! fake-gcs-server serves the XML API (what object_store reads through) only for requests whose
//! Host matches `-public-host`, which without a port matches any port (so it also answers through
//! the proxy); it accepts uploads only through its JSON API; azurite needs the account in the
//! endpoint path and checks SharedKey signatures; moto checks signatures only with
//! `INITIAL_NO_AUTH_ACTION_COUNT=0`.
#![expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and fixture data of known, small sizes"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tmpl::remote::{AZURITE_ACCOUNT, AZURITE_KEY};

/// The servers the tests can start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulator {
    /// moto_server: S3, signatures not checked.
    Moto,
    /// A second moto with `INITIAL_NO_AUTH_ACTION_COUNT=0`: every request is authenticated, so
    /// unknown keys get a real 403.
    MotoAuth,
    /// fake-gcs-server over plain HTTP, in memory.
    FakeGcs,
    /// fake-gcs-server over HTTPS with its self-signed certificate.
    FakeGcsTls,
    /// azurite's blob service, in memory.
    Azurite,
}

impl Emulator {
    fn tool(self) -> (&'static str, &'static str) {
        match self {
            Emulator::Moto | Emulator::MotoAuth => ("MOTO_SERVER", "moto_server"),
            Emulator::FakeGcs | Emulator::FakeGcsTls => ("FAKE_GCS_SERVER", "fake-gcs-server"),
            Emulator::Azurite => ("AZURITE_BLOB", "azurite-blob"),
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub emulator: Emulator,
    pub port: u16,
    /// Spawn to first HTTP answer.
    pub startup: Duration,
    child: Mutex<Child>,
}

impl Server {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The server, started on first use; `None` (test skips) when its tool is missing locally.
pub fn server(e: Emulator) -> Option<&'static Server> {
    static SLOTS: [OnceLock<Option<Server>>; 5] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = match e {
        Emulator::Moto => 0,
        Emulator::MotoAuth => 1,
        Emulator::FakeGcs => 2,
        Emulator::FakeGcsTls => 3,
        Emulator::Azurite => 4,
    };
    SLOTS[i].get_or_init(|| find_tool(e).map(|p| start(e, p))).as_ref()
}

fn find_tool(e: Emulator) -> Option<PathBuf> {
    let (var, name) = e.tool();
    if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from) {
        assert!(p.is_file(), "{var}={} does not exist", p.display());
        return Some(p);
    }
    if super::require(name) { tmpl::tools::find(name, "").ok() } else { None }
}

/// A port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(e: Emulator, program: PathBuf) -> Server {
    let port = closed_port();
    let p = port.to_string();
    let url = format!("http://127.0.0.1:{port}");
    let (args, envs): (Vec<String>, Vec<(&str, &str)>) = match e {
        Emulator::Moto => (vec!["-H".into(), "127.0.0.1".into(), "-p".into(), p], vec![]),
        Emulator::MotoAuth => {
            (vec!["-H".into(), "127.0.0.1".into(), "-p".into(), p], vec![("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
        }
        Emulator::FakeGcs | Emulator::FakeGcsTls => {
            let scheme = if e == Emulator::FakeGcs { "http" } else { "https" };
            let args = [
                "-scheme",
                scheme,
                "-host",
                "127.0.0.1",
                "-port",
                &p,
                "-backend",
                "memory",
                "-public-host",
                "127.0.0.1",
                "-external-url",
                &url,
                "-log-level",
                "error",
            ];
            (args.iter().map(|s| s.to_string()).collect(), vec![])
        }
        Emulator::Azurite => {
            let args = [
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &p,
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ];
            (args.iter().map(|s| s.to_string()).collect(), vec![])
        }
    };
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{e:?}-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).unwrap();
    // Kill the server when this test process is gone (polls every 0.2 s).
    let watchdog = r#"parent=$1; shift; "$@" & s=$!
while kill -0 "$parent" 2>/dev/null && kill -0 "$s" 2>/dev/null; do sleep 0.2; done
kill "$s" 2>/dev/null; wait "$s""#;
    let t0 = Instant::now();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(watchdog)
        .arg("tmpl-test-watchdog")
        .arg(std::process::id().to_string())
        .arg(&program)
        .args(&args)
        .envs(envs)
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    let mut child = cmd.spawn().unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()));
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("{e:?} exited early ({st}); log: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        if answers_http(port) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "{e:?} not ready in 90 s; log in {}", log.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let startup = t0.elapsed();
    eprintln!("started {e:?} on port {port} in {startup:?}");
    Server { emulator: e, port, startup, child: Mutex::new(child) }
}

fn answers_http(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.")
}

/// A fresh bucket/container name, unique in this process.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("t{}-{tag}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP for setup.

/// One HTTP/1.1 request; returns (status, body). The body is not de-chunked (setup calls only
/// look at the status, or at small JSON).
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let status = std::str::from_utf8(&resp[9..12]).unwrap().parse().unwrap();
    let body_at = find(&resp, b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
    (status, resp[body_at..].to_vec())
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// moto creates buckets from unsigned requests.
pub fn s3_create_bucket(port: u16, bucket: &str) {
    let (st, body) = http(port, "PUT", &format!("/{bucket}"), &[], b"");
    assert_eq!(st, 200, "create bucket {bucket}: {}", String::from_utf8_lossy(&body));
}

/// fake-gcs-server: JSON API, no auth.
pub fn gcs_create_bucket(port: u16, bucket: &str) {
    let (st, body) = http(
        port,
        "POST",
        "/storage/v1/b?project=test",
        &[("Content-Type", "application/json".into())],
        format!("{{\"name\":\"{bucket}\"}}").as_bytes(),
    );
    assert_eq!(st, 200, "create bucket {bucket}: {}", String::from_utf8_lossy(&body));
}

/// Upload an object through fake-gcs-server's JSON multipart upload, with custom metadata (it
/// comes back as `x-goog-meta-*` on the XML API). object_store's own GCS uploads use the XML
/// API, which fake-gcs-server does not accept.
pub fn gcs_seed(port: u16, bucket: &str, name: &str, data: &[u8], meta: &[(&str, &str)]) {
    let md: Vec<String> = meta.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
    let json = format!("{{\"name\":\"{name}\",\"metadata\":{{{}}}}}", md.join(","));
    let boundary = "tmpl-test-boundary-51f3";
    let mut body = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (st, resp) = http(
        port,
        "POST",
        &format!("/upload/storage/v1/b/{bucket}/o?uploadType=multipart"),
        &[("Content-Type", format!("multipart/related; boundary={boundary}"))],
        &body,
    );
    assert_eq!(st, 200, "seed {name}: {}", String::from_utf8_lossy(&resp));
}

/// Create a container on azurite: a Create Container request signed with the well-known key
/// (Authorize with Shared Key; path-style emulator URL, so the account appears twice in the
/// canonical resource).
pub fn azure_create_container(port: u16, container: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let date = http_date(std::time::SystemTime::now());
    let version = "2023-11-03";
    let path = format!("/{AZURITE_ACCOUNT}/{container}");
    // VERB, Content-Encoding, -Language, -Length (empty for 0), -MD5, -Type, Date,
    // If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range, then the x-ms-
    // headers and the resource.
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}{path}\nrestype:container"
    );
    let sig = b64.encode(hmac_sha256(&b64.decode(AZURITE_KEY).unwrap(), to_sign.as_bytes()));
    let (st, body) = http(
        port,
        "PUT",
        &format!("{path}?restype=container"),
        &[
            ("x-ms-date", date),
            ("x-ms-version", version.into()),
            ("Authorization", format!("SharedKey {AZURITE_ACCOUNT}:{sig}")),
        ],
        b"",
    );
    assert_eq!(st, 201, "create container {container}: {}", String::from_utf8_lossy(&body));
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |x: u8| k.iter().map(|b| b ^ x).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// RFC 1123 date in GMT.
pub fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Gregorian date from the day count (days since 0000-03-01 in 400-year eras).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][(month - 1) as usize];
    format!("{weekday}, {day:02} {name} {year} {h:02}:{m:02}:{s:02} GMT")
}

// ---------------------------------------------------------------------------------------------
// Fault injection.

/// What the proxy does with a matching request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer itself, without contacting the server.
    Respond { status: u16, body: String },
    /// Wait, then forward (a slow server).
    Delay(Duration),
    /// Forward, but close the connection after `body_bytes` bytes of the response body.
    Truncate { body_bytes: usize },
    /// Close the connection without answering.
    Close,
    /// Let fake-gcs-server take a GCS XML API upload (`PUT /bucket/object` with `x-goog-meta-*`
    /// headers), which real GCS accepts and fake-gcs-server serves only for signed URLs: the
    /// request goes on with `X-Goog-Algorithm` added to its query (fake-gcs-server then routes it
    /// to its XML PUT handler, `signedUpload`, which checks no signature and keeps the body and
    /// the `x-goog-meta-*` headers), and the answer gets the `ETag` and `x-goog-generation`
    /// headers GCS sends (fake-gcs-server puts them in a JSON body only). Method, path, headers
    /// and body are otherwise what tmpl sent. XML multipart uploads (`POST ?uploads`) are left
    /// alone: fake-gcs-server has no XML multipart at all.
    GcsXmlPut,
    /// Forward, let the server act, and hold its answer back this long (an answer lost in the
    /// network after the server did the work).
    Hold(Duration),
}

/// A rule: requests with this method (any if `None`) whose path contains `path_contains` get
/// `action`, `times` times (`usize::MAX` for always).
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub path_contains: String,
    pub times: usize,
    pub action: Action,
}

#[derive(Debug, Default)]
struct ProxyState {
    rules: Vec<Rule>,
    /// (method, path, what was done)
    seen: Vec<(String, String, &'static str)>,
    /// Connections being handled now, and the most at any time.
    active: usize,
    max_active: usize,
}

/// Counts a connection as active while it lives.
struct Active<'a>(&'a Mutex<ProxyState>);

impl<'a> Active<'a> {
    fn new(st: &'a Mutex<ProxyState>) -> Self {
        let mut s = st.lock().unwrap();
        s.active += 1;
        s.max_active = s.max_active.max(s.active);
        Active(st)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().active -= 1;
    }
}

/// An HTTP/1.1 proxy on a loopback port in front of one server. Every request is forwarded with
/// `Connection: close`, so each arrives on its own connection and meets the rules (signatures do
/// not cover that header).
#[derive(Clone, Debug)]
pub struct FaultProxy {
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, &st);
                });
            }
        });
        FaultProxy { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn push(&self, method: Option<&'static str>, path_contains: &str, times: usize, action: Action) {
        let rule = Rule { method, path_contains: path_contains.to_string(), times, action };
        self.state.lock().unwrap().rules.push(rule);
    }

    pub fn clear(&self) {
        let mut s = self.state.lock().unwrap();
        s.rules.clear();
        s.seen.clear();
    }

    pub fn seen(&self) -> Vec<(String, String, &'static str)> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The most connections handled at the same time so far.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_active
    }
}

fn handle(mut client: TcpStream, upstream: u16, st: &Mutex<ProxyState>) -> std::io::Result<()> {
    let (head, early) = read_head(&mut client)?;
    // In flight: from the request head until the server's response head (a connection the client
    // is done with may stay open here a little longer while the server closes its side).
    let active = Active::new(st);
    let line_end = find(&head, b"\r\n").unwrap_or(head.len());
    let first = String::from_utf8_lossy(&head[..line_end]).to_string();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let action = {
        let mut s = st.lock().unwrap();
        let hit = s
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method.is_none_or(|m| m == method) && path.contains(r.path_contains.as_str()));
        let action = hit.map(|r| {
            r.times = r.times.saturating_sub(1);
            r.action.clone()
        });
        let tag = match &action {
            None => "pass",
            Some(Action::Respond { .. }) => "respond",
            Some(Action::Delay(_)) => "delay",
            Some(Action::Truncate { .. }) => "truncate",
            Some(Action::Close) => "close",
            Some(Action::GcsXmlPut) => "gcs-xml-put",
            Some(Action::Hold(_)) => "hold",
        };
        s.seen.push((method.clone(), path.clone(), tag));
        action
    };
    match &action {
        Some(Action::Respond { status, body }) => {
            let resp = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(resp.as_bytes())?;
            return client.shutdown(std::net::Shutdown::Both);
        }
        Some(Action::Close) => return client.shutdown(std::net::Shutdown::Both),
        Some(Action::Delay(d)) => std::thread::sleep(*d),
        _ => {}
    }
    let gcs_put = matches!(action, Some(Action::GcsXmlPut))
        && method == "PUT"
        && !path.contains("uploadId=")
        && !path.contains("X-Goog-Algorithm=");
    let head = if gcs_put { with_signed_url_marker(&head) } else { head };
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&force_close(&head))?;
    up.write_all(&early)?;
    // The rest of a request body, client -> server.
    let (mut c_in, mut up_out) = (client.try_clone()?, up.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut up_out);
    });
    match action {
        Some(Action::Truncate { body_bytes }) => {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 16 * 1024];
            loop {
                let n = up.read(&mut tmp)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
                if let Some(i) = find(&buf, b"\r\n\r\n")
                    && buf.len() >= i + 4 + body_bytes
                {
                    buf.truncate(i + 4 + body_bytes);
                    break;
                }
            }
            client.write_all(&buf)?;
        }
        Some(Action::GcsXmlPut) if gcs_put => {
            let mut resp = Vec::new();
            up.read_to_end(&mut resp)?;
            drop(active);
            client.write_all(&with_gcs_put_headers(resp))?;
        }
        _ => {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 16 * 1024];
            loop {
                let n = up.read(&mut tmp)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
                if find(&buf, b"\r\n\r\n").is_some() {
                    break;
                }
            }
            if let Some(Action::Hold(d)) = action {
                std::thread::sleep(d);
            }
            drop(active);
            client.write_all(&buf)?;
            std::io::copy(&mut up, &mut client)?;
        }
    }
    let _ = up.shutdown(std::net::Shutdown::Both);
    client.shutdown(std::net::Shutdown::Both)
}

fn read_head(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((buf, rest));
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("request head over 64 KiB"));
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// The request head with `X-Goog-Algorithm=GOOG4-RSA-SHA256` added to the query of its request
/// line (see [`Action::GcsXmlPut`]).
fn with_signed_url_marker(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let (line, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
    let mut parts: Vec<String> = line.split(' ').map(str::to_string).collect();
    if let Some(target) = parts.get_mut(1) {
        let sep = if target.contains('?') { '&' } else { '?' };
        target.push_str(&format!("{sep}X-Goog-Algorithm=GOOG4-RSA-SHA256"));
    }
    format!("{}\r\n{rest}", parts.join(" ")).into_bytes()
}

/// A successful fake-gcs-server upload answer with the `ETag` and `x-goog-generation` headers of
/// the object it describes in its JSON body (see [`Action::GcsXmlPut`]); anything else unchanged.
fn with_gcs_put_headers(resp: Vec<u8>) -> Vec<u8> {
    let Some(i) = find(&resp, b"\r\n\r\n") else { return resp };
    let (head, body) = resp.split_at(i + 2);
    let head_text = String::from_utf8_lossy(head).to_string();
    if !head_text.starts_with("HTTP/1.1 200") || head_text.to_ascii_lowercase().contains("\r\netag:") {
        return resp;
    }
    let body_text = String::from_utf8_lossy(body);
    let field = |name: &str| -> Option<String> {
        let at = body_text.find(&format!("\"{name}\":"))? + name.len() + 3;
        let v = body_text[at..].trim_start().trim_start_matches('"');
        let end = v.find(['"', ',', '}'])?;
        Some(v[..end].to_string())
    };
    let mut out = head_text;
    if let Some(etag) = field("etag") {
        out.push_str(&format!("ETag: \"{etag}\"\r\n"));
    }
    if let Some(generation) = field("generation") {
        out.push_str(&format!("x-goog-generation: {generation}\r\n"));
    }
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The request head with any `Connection` header replaced by `Connection: close`.
fn force_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}
