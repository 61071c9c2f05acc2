//! The official Python and JavaScript drivers against a real rdb: queries, parallel
//! queries on one connection, noreply, batched cursors, auth failures and bad frames.
//!
//! Needs `pip install rethinkdb==2.4.10.post1` and `npm install` in tests/drivers
//! (`.ci/run` does both).

mod common;

use std::process::Command;

fn run_script(program: &str, script: &str, port: u16, password: &str) {
    let path = common::tests_dir().join("drivers").join(script);
    let out = Command::new(program)
        .arg(&path)
        .arg(port.to_string())
        .arg(password)
        .current_dir(common::tests_dir().join("drivers"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
}

#[test]
fn python_driver_with_empty_admin_password() {
    let s = common::start("py", &[]);
    run_script("python3", "python_driver.py", s.port, "");
}

#[test]
fn python_driver_with_initial_password() {
    let s = common::start("pypw", &["--initial-password", "s3cret"]);
    run_script("python3", "python_driver.py", s.port, "s3cret");
}

#[test]
fn js_driver() {
    let s = common::start("js", &[]);
    run_script("node", "js_driver.js", s.port, "");
}

#[test]
fn python_point_reads_match_the_evaluator() {
    // Two cores: some documents live on the other core's shard.
    let s = common::start("pget", &["--cores", "2"]);
    run_script("python3", "point_get.py", s.port, "");
}

#[test]
fn python_inserts_over_stored_rows_see_them() {
    // Two cores: rows live on both shards.
    let s = common::start("pins", &["--cores", "2"]);
    run_script("python3", "insert_rows.py", s.port, "");
}
