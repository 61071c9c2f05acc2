//! Geospatial indexes through the official Python driver: `get_intersecting` and
//! `get_nearest` agree with brute force (filter/intersects, distance by document) on
//! point, polygon and multi indexes, after background builds, after updates, replaces
//! and deletes, and after SIGKILL and restart; `changes()` on `get_intersecting` follows
//! only the matching geometries.

mod common;

fn run(port: u16, what: &str) -> String {
    common::run_python("geo_check.py", &[&port.to_string(), what], 300)
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
