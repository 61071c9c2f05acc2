//! `r.js` through the official Python driver: refused unless the server enables it;
//! when enabled, timeouts and the memory limit stop runaway scripts while the other
//! queries (on every core) keep being answered, and scripts cannot reach files or the
//! network.

mod common;

fn run(port: u16, what: &str) -> String {
    common::run_python("js_check.py", &[&port.to_string(), what], 120)
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
