//! The test envd (demo/envd.c) behaves like envd on the wire and on its command
//! line: compiled static by build.rs and embedded in tmpl, run on the host as a real process on a free port, probed over a
//! real TCP socket.

mod guest_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use guest_support::{KillOnDrop, build_test_envd, free_port, http};

const T: Duration = Duration::from_secs(10);

fn envd() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_test_envd(dir.path());
    Some((dir, bin))
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Start it; wait for its "listening" line.
fn start(bin: &Path, args: &[&str]) -> (KillOnDrop, String) {
    let mut child =
        KillOnDrop(Command::new(bin).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(T).expect("test envd prints a line when it listens");
    (child, line)
}

#[test]
fn answers_health_and_init_with_204_on_a_real_socket() {
    let Some((_dir, bin)) = envd() else { return };
    let port = free_port();
    let (mut child, line) = start(&bin, &["-isnotfc", "-port", &port.to_string()]);
    assert_eq!(
        line,
        format!("test-envd: listening on 0.0.0.0:{port} (version 0.0.0-tmpl-test, pid {})\n", child.0.id())
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    assert_eq!(http(addr, "GET", "/health", b"", T).unwrap(), 204);
    assert_eq!(http(addr, "HEAD", "/health", b"", T).unwrap(), 204);
    assert_eq!(http(addr, "GET", "/health?probe=1", b"", T).unwrap(), 204);
    // The orchestrator's POST /init carries a JSON body (env vars, access token, CA bundle): read
    // and answered, also when it is large.
    let body = format!("{{\"envVars\":{{\"A\":\"{}\"}}}}", "x".repeat(200_000));
    assert_eq!(http(addr, "POST", "/init", body.as_bytes(), T).unwrap(), 204);
    assert_eq!(http(addr, "POST", "/init", b"{}", T).unwrap(), 204);
    // Anything else is not found; wrong methods too.
    assert_eq!(http(addr, "GET", "/init", b"", T).unwrap(), 404);
    assert_eq!(http(addr, "POST", "/health", b"{}", T).unwrap(), 404);
    assert_eq!(http(addr, "GET", "/files", b"", T).unwrap(), 404);
    // Still serving after all that.
    assert_eq!(http(addr, "GET", "/health", b"", T).unwrap(), 204);
    assert!(child.0.try_wait().unwrap().is_none(), "envd keeps running");
}

#[test]
fn removed_and_unknown_flags_exit_2_with_go_usage() {
    let Some((_dir, bin)) = envd() else { return };
    // -debug and -cmd were removed from envd (2025-07-02, 2026-05-14): a current envd rejects them
    // like any unknown flag, which as PID 1 panics the kernel with exitcode=0x00000200.
    for (args, flag) in [
        (&["-debug"][..], "debug"),
        (&["--debug"], "debug"),
        (&["-cmd", "/bin/app"], "cmd"),
        (&["-isnotfc", "-nope=1"], "nope"),
    ] {
        let o = run(&bin, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        let mut lines = err.lines();
        assert_eq!(lines.next(), Some(format!("flag provided but not defined: -{flag}").as_str()), "{err}");
        assert_eq!(lines.next(), Some(format!("Usage of {}:", bin.display()).as_str()), "{err}");
        assert!(err.contains("\n  -port int\n    \ta port on which the daemon should run (default 49983)\n"), "{err}");
        assert!(err.contains("\n  -cgroup-root string\n"), "{err}");
        let usage = err.split_once('\n').map(|(_, u)| u).unwrap_or_default();
        assert!(!usage.contains("-debug") && !usage.contains("-cmd"), "removed flags are not in the usage: {err}");
    }
}

#[test]
fn parses_flags_the_way_go_does() {
    let Some((_dir, bin)) = envd() else { return };
    let code = |args: &[&str]| run(&bin, args).status.code();
    let stderr_first = |args: &[&str]| {
        let o = run(&bin, args);
        (o.status.code(), String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or_default().to_string())
    };

    // -version (and -commit) print and exit 0, whatever flag syntax came before.
    for args in [
        &["-version"][..],
        &["--version"],
        &["-version=true"],
        &["-port=1", "--isnotfc", "-version"],
        &["-port", "0x_10", "-no-cgroups=T", "-cgroup-root", "/x", "-verbose", "-version"],
    ] {
        let o = run(&bin, args);
        assert_eq!(
            (o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()),
            (Some(0), "0.0.0-tmpl-test\n"),
            "{args:?}"
        );
    }
    assert_eq!(String::from_utf8_lossy(&run(&bin, &["-commit"]).stdout), "tmpl-test\n");
    // -h / -help: the usage, exit 0.
    for h in ["-h", "--help"] {
        let o = run(&bin, &[h]);
        assert_eq!(o.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&o.stderr).starts_with("Usage of "));
    }
    // Values: missing, not an integer (strconv.ParseInt base 0), not a bool (strconv.ParseBool).
    assert_eq!(stderr_first(&["-port"]), (Some(2), "flag needs an argument: -port".into()));
    assert_eq!(stderr_first(&["-port", "abc"]), (Some(2), "invalid value \"abc\" for flag -port: parse error".into()));
    for bad in ["0b2", "1__0", "0x", "1_000", "99999999999999999999"] {
        assert_eq!(code(&["-port", bad]), Some(2), "{bad}");
    }
    assert_eq!(
        stderr_first(&["-isnotfc=maybe"]),
        (Some(2), "invalid boolean value \"maybe\" for -isnotfc: parse error".into())
    );
    assert_eq!(stderr_first(&["---port=1"]), (Some(2), "bad flag syntax: ---port=1".into()));
    // A boolean takes no separate value: "false" is the first non-flag argument and parsing stops
    // there, so the -debug after it is never seen. Port -1 makes the run end right after parsing
    // (listen fails, exit 1) instead of serving.
    for args in
        [&["-port=-1", "-isnotfc", "false", "-debug"][..], &["-port=-1", "--", "-debug"], &["-port=-1", "-", "-debug"]]
    {
        let o = run(&bin, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("port -1 out of range"), "{args:?}");
    }
}
