//! The Firecracker backend, for orchestrator nodes: the node's own `firecracker` binary and guest
//! kernel, chosen from the build's metadata (`FIRECRACKER_VERSIONS_DIR/<firecracker_version>/
//! [<arch>/]firecracker`, `HOST_KERNELS_DIR/<kernel_version>/[<arch>/]vmlinux.bin`,
//! e2b-formats.md §4), configured through its API socket: `PUT /boot-source`, `PUT
//! /drives/rootfs`, `PUT /machine-config`, `PUT /actions {InstanceStart}`. The guest's serial
//! console is Firecracker's stdout, captured to the console file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::console::{self, Console, WatchConfig, Watched};
use super::http::UnixHttp;
use super::kernel::ARCH_DIRS;
use crate::error::{Error, Result};
use crate::tools::ToolError;

/// Default `FIRECRACKER_VERSIONS_DIR` of an orchestrator node.
pub const DEFAULT_VERSIONS_DIR: &str = "/fc-versions";

/// `<dir>/<ver>/firecracker`, then `<dir>/<ver>/<arch>/firecracker`.
pub fn binary_candidates(dir: &Path, version: &str) -> Vec<PathBuf> {
    let mut v = vec![dir.join(version).join("firecracker")];
    v.extend(ARCH_DIRS.iter().map(|a| dir.join(version).join(a).join("firecracker")));
    v
}

/// The first candidate that is a file, or the list of what was tried.
pub fn first_existing(candidates: &[PathBuf]) -> std::result::Result<PathBuf, Vec<String>> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| candidates.iter().map(|p| format!("{}: does not exist", p.display())).collect())
}

/// What the VM is configured with.
#[derive(Debug, Clone, Serialize)]
pub struct FcConfig {
    pub kernel: PathBuf,
    pub boot_args: String,
    pub rootfs: PathBuf,
    pub read_only: bool,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Attach `eth0` on the namespace's `tap0` with the orchestrator's guest MAC (`fc/client.go`).
    pub network: bool,
}

/// One API call and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiCall {
    pub method: &'static str,
    pub path: &'static str,
    pub body: String,
    pub status: u16,
}

/// The requests that configure and start a VM, in order.
pub fn requests(cfg: &FcConfig) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("PUT", "/boot-source", json!({"kernel_image_path": cfg.kernel, "boot_args": cfg.boot_args}).to_string()),
        (
            "PUT",
            "/drives/rootfs",
            json!({
                "drive_id": "rootfs",
                "path_on_host": cfg.rootfs,
                "is_root_device": true,
                "is_read_only": cfg.read_only,
            })
            .to_string(),
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": cfg.vcpus, "mem_size_mib": cfg.memory_mib, "smt": false}).to_string(),
        ),
    ]
    .into_iter()
    .chain(cfg.network.then(|| {
        (
            "PUT",
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": super::net::TAP_NAME, "guest_mac": "02:FC:00:00:00:05"})
                .to_string(),
        )
    }))
    .chain(std::iter::once(("PUT", "/actions", json!({"action_type": "InstanceStart"}).to_string())))
    .collect()
}

/// Send the configuration through the API; a non-2xx answer stops with Firecracker's
/// `fault_message`.
pub fn configure(api: &UnixHttp, cfg: &FcConfig) -> Result<Vec<ApiCall>> {
    let mut calls = Vec::new();
    for (method, path, body) in requests(cfg) {
        let resp = api.request(method, path, Some(&body)).map_err(|source| ToolError::Io {
            tool: "firecracker",
            what: format!("{method} {path} over {}", api.socket.display()),
            source,
        })?;
        calls.push(ApiCall { method, path, body, status: resp.status });
        if !(200..300).contains(&resp.status) {
            let fault = serde_json::from_str::<serde_json::Value>(&resp.body)
                .ok()
                .and_then(|v| v.get("fault_message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| resp.body.trim().to_string());
            return Err(
                ToolError::failed("firecracker", format!("{method} {path} answered {}: {fault}", resp.status)).into()
            );
        }
    }
    Ok(calls)
}

/// Wait until the API socket accepts connections (Firecracker creates it right after start).
fn wait_for_socket(child: &mut Child, sock: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(
                ToolError::failed("firecracker", format!("exited before its API socket was ready ({st})")).into()
            );
        }
        if start.elapsed() >= limit {
            return Err(ToolError::failed(
                "firecracker",
                format!("API socket {} not ready after {} s", sock.display(), limit.as_secs()),
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `firecracker`, configure it, and watch the console.
pub fn run(
    prefix: &[std::ffi::OsString],
    binary: &Path,
    cfg: &FcConfig,
    work: &Path,
    console_path: &Path,
    watch: &WatchConfig,
) -> Result<(Watched, Console, Vec<ApiCall>)> {
    let sock = work.join("firecracker.sock");
    let out = std::fs::File::create(console_path).map_err(|e| Error::write(console_path, e))?;
    let err = out.try_clone().map_err(|e| Error::write(console_path, e))?;
    // `prefix` (`ip netns exec NAME`) runs Firecracker inside the sandbox's namespace; it execs the
    // binary, so the child is Firecracker itself.
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let child = command
        .arg("--api-sock")
        .arg(&sock)
        .args(["--id", "tmpl-boot-test"])
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|source| ToolError::Start { tool: "firecracker", program: Some(binary.to_path_buf()), source })?;
    let mut guard = Guard(child);
    wait_for_socket(&mut guard.0, &sock, Duration::from_secs(5))?;
    let calls = configure(&UnixHttp::new(&sock), cfg)?;
    let mut console = Console::new(console_path);
    let watched = console::watch(&mut guard.0, &mut console, watch).map_err(|e| Error::read(console_path, e))?;
    drop(guard);
    Ok((watched, console, calls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone)]
    struct Recorded {
        method: String,
        path: String,
        headers: Vec<String>,
        body: String,
    }

    /// A unix-socket server that answers like Firecracker's API: 204 with no body, or 400 with a
    /// `fault_message` for the path named in `fail`.
    fn fake_api(sock: &Path, fail: Option<(&'static str, &'static str)>) -> Arc<Mutex<Vec<Recorded>>> {
        let listener = UnixListener::bind(sock).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
                let mut headers = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end().to_string();
                    if h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("Content-Length: ") {
                        len = v.parse().unwrap();
                    }
                    headers.push(h);
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                log2.lock().unwrap().push(Recorded { method, path: path.clone(), headers, body });
                let resp = match fail {
                    Some((p, msg)) if p == path => {
                        let b = format!("{{\"fault_message\":\"{msg}\"}}");
                        format!(
                            "HTTP/1.1 400 \r\nServer: Firecracker API\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                            b.len()
                        )
                    }
                    _ => "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n".to_string(),
                };
                conn.write_all(resp.as_bytes()).unwrap();
            }
        });
        log
    }

    fn cfg() -> FcConfig {
        FcConfig {
            kernel: "/fc-kernels/vmlinux-6.1.158/vmlinux.bin".into(),
            boot_args: "console=ttyS0 reboot=k panic=-1 root=/dev/vda rw init=/sbin/init".into(),
            rootfs: "/tmp/work/rootfs.ext4".into(),
            read_only: false,
            vcpus: 1,
            memory_mib: 256,
            network: false,
        }
    }

    #[test]
    fn the_network_interface_is_the_orchestrators_and_comes_before_the_start() {
        let r = requests(&FcConfig { network: true, ..cfg() });
        let paths: Vec<&str> = r.iter().map(|(_, p, _)| *p).collect();
        assert_eq!(
            paths,
            ["/boot-source", "/drives/rootfs", "/machine-config", "/network-interfaces/eth0", "/actions"]
        );
        let body: serde_json::Value = serde_json::from_str(&r[3].2).unwrap();
        assert_eq!(body, json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:FC:00:00:00:05"}));
        assert!(!requests(&cfg()).iter().any(|(_, p, _)| p.starts_with("/network")));
    }

    #[test]
    fn configures_boot_source_drive_machine_then_starts() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let log = fake_api(&sock, None);
        let calls = configure(&UnixHttp::new(&sock), &cfg()).unwrap();
        assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), vec![204; 4]);
        let rec = log.lock().unwrap().clone();
        let order: Vec<(&str, &str)> = rec.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
        assert_eq!(
            order,
            vec![("PUT", "/boot-source"), ("PUT", "/drives/rootfs"), ("PUT", "/machine-config"), ("PUT", "/actions")]
        );
        let v: Vec<serde_json::Value> = rec.iter().map(|r| serde_json::from_str(&r.body).unwrap()).collect();
        assert_eq!(v[0]["kernel_image_path"], "/fc-kernels/vmlinux-6.1.158/vmlinux.bin");
        assert!(v[0]["boot_args"].as_str().unwrap().contains("root=/dev/vda"));
        assert_eq!(v[1]["drive_id"], "rootfs");
        assert_eq!(v[1]["is_root_device"], true);
        assert_eq!(v[1]["is_read_only"], false);
        assert_eq!(v[1]["path_on_host"], "/tmp/work/rootfs.ext4");
        assert_eq!((v[2]["vcpu_count"].as_u64(), v[2]["mem_size_mib"].as_u64()), (Some(1), Some(256)));
        assert_eq!(v[3]["action_type"], "InstanceStart");
        for r in &rec {
            assert!(r.headers.iter().any(|h| h == "Content-Type: application/json"), "{:?}", r.headers);
        }
    }

    #[test]
    fn a_400_stops_the_conversation_with_the_fault_message() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let log = fake_api(
            &sock,
            Some(("/drives/rootfs", "Unable to create the block device: No such file or directory (os error 2)")),
        );
        let err = configure(&UnixHttp::new(&sock), &cfg()).unwrap_err().to_string();
        assert!(err.contains("PUT /drives/rootfs answered 400"), "{err}");
        assert!(err.contains("Unable to create the block device"), "{err}");
        let paths: Vec<String> = log.lock().unwrap().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, vec!["/boot-source", "/drives/rootfs"], "nothing is sent after a fault");
    }

    #[test]
    fn binary_candidates_follow_the_node_layout() {
        let dir = tempfile::tempdir().unwrap();
        let c = binary_candidates(dir.path(), "v1.12.1_210cbac");
        assert_eq!(c[0], dir.path().join("v1.12.1_210cbac/firecracker"));
        let tried = first_existing(&c).unwrap_err();
        assert_eq!(tried.len(), c.len());
        std::fs::create_dir_all(dir.path().join("v1.12.1_210cbac/amd64")).unwrap();
        std::fs::write(dir.path().join("v1.12.1_210cbac/amd64/firecracker"), b"").unwrap();
        assert_eq!(first_existing(&c).unwrap(), dir.path().join("v1.12.1_210cbac/amd64/firecracker"));
    }
}
