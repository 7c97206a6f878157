//! The command line as a user meets it: `sinkd check` and start-up errors.

use std::process::{Command, Output};

fn sinkd(args: &[&str], config: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sinkd"))
        .args(args)
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    (out, path.display().to_string())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_prints_what_the_shipped_config_sets_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_sinkd"))
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0.0.0.0:53"), "{text}");
    assert!(text.contains("tls://9.9.9.9:853#dns.quad9.net"), "{text}");
    assert!(
        text.contains("6 list files"),
        "lists found from any directory: {text}"
    );
}

#[test]
fn config_errors_name_file_line_column_and_key() {
    let cases = [
        (
            "[server]\nlisten = [\"127.0.0.1:53\"]\nlisen = 1\n",
            ":3:1: unknown field `lisen`",
        ),
        (
            "[upstream]\ntimeout_ms = \"fast\"\n",
            ":2:14: invalid type: string \"fast\"",
        ),
        (
            "[upstream]\ntimeout_ms = 0\n",
            ":2:14: must be greater than 0",
        ),
        (
            "[upstream]\nservers = []\n",
            ":2:11: needs at least one entry",
        ),
        (
            "[server]\nallow = [\"10.0.0.0/33\"]\n",
            ":2:10: invalid IP address syntax",
        ),
        ("[cache]\nsize = -1\n", ":2:8: invalid value: integer `-1`"),
        ("[srever]\n", ":1:2: unknown field `srever`"),
        ("[server\n", ":1:8:"),
    ];
    for (config, expected) in cases {
        let (out, path) = sinkd(&["check"], config);
        assert_eq!(out.status.code(), Some(1), "{config}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("{path}{expected}")),
            "for {config:?}\n expected {path}{expected}\n got {err}"
        );
    }
}

#[test]
fn serve_refuses_a_broken_config_the_same_way() {
    let (out, path) = sinkd(&["serve"], "[cache]\nmin_ttl = 600\nmax_ttl = 60\n");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with(&path), "{err}");
    assert!(
        err.contains("min_ttl (600) is larger than max_ttl (60)"),
        "{err}"
    );
}

#[test]
fn a_taken_port_is_explained() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let (out, _) = sinkd(
        &["serve"],
        &format!(
            "[server]\nlisten = [\"{addr}\"]\n[upstream]\nservers = [\"udp://127.0.0.1:9\"]\n"
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("systemd-resolved"), "{err}");
}
