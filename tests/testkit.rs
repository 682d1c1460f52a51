//! The test kit's fake envd behaves like Go's flag package where tests rely on it.

mod common;

#[test]
fn fake_envd_exits_2_on_unknown_flags_like_go() {
    if !common::require("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin =
        common::static_binary(dir.path(), "envd", &common::fake_envd_source("0.2.9", &["port", "version", "isnotfc"]));
    let v = std::process::Command::new(&bin).arg("-version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "0.2.9");
    let bad = std::process::Command::new(&bin).arg("-debug").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("flag provided but not defined: -debug"));
    let info = tmpl::elf::parse(&std::fs::read(&bin).unwrap()[..4096]).unwrap();
    assert!(info.is_static, "built with -static");
}
