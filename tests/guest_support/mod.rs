//! Helpers shared by the guest tests (tests/test_envd.rs, tests/guest_kernel.rs, tests/kconfig.rs):
//! tool and kernel gates with the same semantics as tests/common's `require` (a missing tool or
//! kernel fails the test when `TMPL_TEST_REQUIRE_TOOLS=1`, as in CI, and skips it otherwise), the
//! test envd (demo/envd.c, compiled and embedded by build.rs), and a minimal HTTP/1.1 client over a real
//! TCP socket.
#![allow(dead_code, reason = "shared by several test crates, each using a part; `expect` would be unfulfilled in some")]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

/// Does CI require every tool (TMPL_TEST_REQUIRE_TOOLS=1)?
pub fn required() -> bool {
    std::env::var("TMPL_TEST_REQUIRE_TOOLS").as_deref() == Ok("1")
}

/// Skip (or, in CI, fail) with a reason.
fn missing(what: &str) -> bool {
    if required() {
        panic!("{what} (TMPL_TEST_REQUIRE_TOOLS=1)");
    }
    eprintln!("SKIP: {what}");
    false
}

/// Is `tool` on PATH (or in /usr/sbin, /sbin)?
pub fn have_tool(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(tool).is_file());
    found || missing(&format!("{tool} is not installed"))
}

/// A kernel named by an environment variable (set by .ci/run), when it exists.
pub fn kernel_from_env(var: &str, how: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        Some(p) => {
            missing(&format!("{var}={} does not exist; {how}", p.display()));
            None
        }
        None => {
            missing(&format!("{var} is not set; {how}"));
            None
        }
    }
}

/// The tmpl test guest kernel (scripts/build-test-kernel.sh).
pub fn guest_kernel() -> Option<PathBuf> {
    kernel_from_env("TMPL_TEST_GUEST_KERNEL", "export TMPL_TEST_GUEST_KERNEL=$(scripts/build-test-kernel.sh)")
}

/// The Debian cloud kernel (scripts/fetch-test-kernel.sh).
pub fn debian_kernel() -> Option<PathBuf> {
    kernel_from_env("TMPL_TEST_KERNEL", "export TMPL_TEST_KERNEL=$(scripts/fetch-test-kernel.sh)")
}

/// The test envd in `dir/envd`: the demo envd (demo/envd.c), which build.rs compiled static and
/// tmpl embeds, the same binary `tmpl demo` puts in its images.
pub fn build_test_envd(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = tmpl::demo::envd_binary().unwrap_or_else(|why| panic!("no test envd: {why}"));
    let out = dir.join("envd");
    std::fs::write(&out, bin).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    out
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request; the response's status code.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8], timeout: Duration) -> io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tmpl-test\r\n");
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.take(64 * 1024).read_to_end(&mut resp)?;
    let head = String::from_utf8_lossy(&resp);
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    match (head.starts_with("HTTP/1.1 "), status) {
        (true, Some(code)) => Ok(code),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP response: {head:?}"))),
    }
}

/// Kills and reaps a child process when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
