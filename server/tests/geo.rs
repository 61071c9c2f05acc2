//! Geospatial indexes through the official Python driver: `get_intersecting` and
//! `get_nearest` agree with brute force (filter/intersects, distance by document) on
//! point, polygon and multi indexes, after background builds, after updates, replaces
//! and deletes, and after SIGKILL and restart; `changes()` on `get_intersecting` follows
//! only the matching geometries.

mod common;

use std::process::Command;

fn run(port: u16, what: &str) -> String {
    let script = common::tests_dir().join("drivers/geo_check.py");
    let out = common::output_within(
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(what),
        300,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "geo_check.py {what} failed: {text}");
    text
}

#[test]
fn geo_indexes_agree_with_brute_force_through_writes_and_sigkill() {
    let server = common::start("geo", &["--cores", "2"]);
    let port = server.port;
    assert!(run(port, "setup").contains("setup: ok"));
    assert!(run(port, "check").contains("check: ok"));
    assert!(run(port, "mutate").contains("mutate: ok"));
    assert!(run(port, "check").contains("check: ok"));
    let dir = server.sigkill_keep_dir();
    let server = common::start_in("geo", &dir, &["--cores", "2"]);
    let out = run(server.port, "check");
    assert!(out.contains("check: ok"), "{out}");
    let out = run(server.port, "feed");
    assert!(out.contains("feed: ok"), "{out}");
}
