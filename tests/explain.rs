//! `tmpl explain` as operators use it: one pasted line, a whole console log on stdin, a finding
//! id, and text it does not know.

mod common;

use common::tmpl;
use serde_json::Value;

fn json(args: &[&str], stdin: Option<&str>) -> (Value, i32) {
    let mut cmd = tmpl();
    cmd.arg("--json").arg("explain").args(args);
    if let Some(s) = stdin {
        cmd.write_stdin(s);
    }
    let out = cmd.output().unwrap();
    (serde_json::from_slice(&out.stdout).unwrap(), out.status.code().unwrap())
}

#[test]
fn a_pasted_panic_is_decoded_with_findings_and_command() {
    let (v, code) = json(&["Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200"], None);
    assert_eq!(code, 0);
    assert_eq!(v["command"], "explain");
    let e = &v["explanations"][0];
    assert_eq!(e["rule"], "panic.init-exit-2");
    assert!(e["meaning"].as_str().unwrap().contains("status 2"));
    assert!(e["findings"].as_array().unwrap().iter().any(|f| f == "wrapper.envd-flag"));
    assert!(e["commands"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().starts_with("tmpl verify")));
    let human = tmpl().args(["explain", "CRC64 validation failed: 14172926256603030733"]).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("0xc4b05956c8a164cd") && text.contains("snapfile.crc-mismatch"), "{text}");
}

#[test]
fn a_console_log_on_stdin_relates_cause_and_panic() {
    let log = "[    2.97] Run /sbin/init as init process\n\
               /sbin/init: 4: exec: /usr/bin/envd: not found\n\
               [    3.10] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00\n";
    let (v, code) = json(&["-"], Some(log));
    assert_eq!(code, 0);
    assert_eq!(v["input_lines"], 3);
    let rules: Vec<&str> = v["explanations"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["guest.not-found", "panic.init-exit-127"]);
    assert!(v["notes"][0].as_str().unwrap().contains("line 2"));
}

#[test]
fn finding_ids_and_unknown_text() {
    let (v, code) = json(&["snapfile.crc-mismatch"], None);
    assert_eq!(code, 0);
    assert_eq!(v["finding"]["id"], "snapfile.crc-mismatch");
    assert!(v["finding"]["explains"].as_array().unwrap().iter().any(|r| r == "snapfile.crc"));
    let (v, code) = json(&["everything is fine"], None);
    assert_eq!(code, 1);
    assert_eq!(v["recognised"], false);
}
