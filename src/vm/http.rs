//! A minimal HTTP/1.1 client over a unix socket, enough for Firecracker's API: one request per
//! connection, `Content-Length` bodies, bounded reads, timeouts.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest response accepted (Firecracker's answers are a few hundred bytes).
const MAX_RESPONSE: usize = 1 << 20;

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// A client for one unix socket.
#[derive(Debug, Clone)]
pub struct UnixHttp {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl UnixHttp {
    pub fn new(socket: &Path) -> Self {
        UnixHttp { socket: socket.to_path_buf(), timeout: Duration::from_secs(10) }
    }

    /// Send `method path` with an optional JSON body and read the response.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> io::Result<Response> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let body = body.unwrap_or("");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes())?;
        read_response(&mut s)
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Read one response: status line, headers, then `Content-Length` bytes (or to EOF without one).
pub fn read_response(r: &mut dyn Read) -> io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_RESPONSE {
            return Err(bad("response headers too large"));
        }
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("connection closed before the response headers ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad(format!("not an HTTP response: {status_line:?}")));
    }
    let status: u16 =
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut length: Option<usize> = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = Some(v.trim().parse().map_err(|_| bad(format!("bad Content-Length {v:?}")))?);
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    match (length, no_body) {
        (_, true) => body.clear(),
        (Some(n), _) => {
            if n > MAX_RESPONSE {
                return Err(bad("response body too large"));
            }
            while body.len() < n {
                let k = r.read(&mut chunk)?;
                if k == 0 {
                    return Err(bad(format!("connection closed after {} of {n} body bytes", body.len())));
                }
                body.extend_from_slice(&chunk[..k]);
            }
            body.truncate(n);
        }
        (None, false) => {
            r.take(MAX_RESPONSE as u64).read_to_end(&mut body)?;
        }
    }
    Ok(Response { status, body: String::from_utf8_lossy(&body).into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses_with_and_without_bodies() {
        let mut r: &[u8] = b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(read_response(&mut r).unwrap(), Response { status: 204, body: String::new() });
        let mut r: &[u8] = b"HTTP/1.1 400 \r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n{\"fault_message\":\"x\"}\nEXTRA";
        let resp = read_response(&mut r).unwrap();
        assert_eq!((resp.status, resp.body.as_str()), (400, "{\"fault_message\":\"x\"}\n"));
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        assert!(read_response(&mut r).unwrap_err().to_string().contains("5 of 10"));
        let mut r: &[u8] = b"SSH-2.0-OpenSSH\r\n\r\n";
        assert!(read_response(&mut r).is_err());
    }
}
