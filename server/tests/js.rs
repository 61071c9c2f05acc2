//! `r.js` through the official Python driver: refused unless the server enables it;
//! when enabled, timeouts and the memory limit stop runaway scripts while the other
//! queries (on every core) keep being answered, and scripts cannot reach files or the
//! network.

mod common;

use std::process::Command;

fn run(port: u16, what: &str) -> String {
    let script = common::tests_dir().join("drivers/js_check.py");
    let out = common::output_within(
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(what),
        120,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "js_check.py {what} failed: {text}");
    text
}

#[test]
fn runaway_scripts_are_stopped_without_harming_other_queries() {
    let server = common::start(
        "js-on",
        &["--cores", "2", "--enable-js", "--js-memory-mb", "32"],
    );
    let out = run(server.port, "enabled");
    assert!(out.contains("js enabled: ok"), "{out}");
}

#[test]
fn js_is_off_by_default() {
    let server = common::start("js-off", &["--cores", "1"]);
    let out = run(server.port, "disabled");
    assert!(out.contains("js disabled: ok"), "{out}");
}
