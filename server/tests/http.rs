//! `r.http` through the official Python driver against a local HTTP server the test
//! starts: the options (methods, data, params, header, auth, result formats, timeout,
//! redirects, attempts, pagination), refusal of loopback/private/metadata addresses
//! unless the server allows them, and refusal when r.http is not enabled.

mod common;

fn run(port: u16, what: &str) -> String {
    common::run_python("http_check.py", &[&port.to_string(), what], 120)
}

#[test]
fn http_options_work_against_a_local_server() {
    let server = common::start(
        "http-on",
        &["--cores", "2", "--enable-http", "--http-allow-private"],
    );
    assert!(run(server.port, "allowed").contains("http allowed: ok"));
}

#[test]
fn private_addresses_are_refused_by_default() {
    let server = common::start("http-guard", &["--cores", "1", "--enable-http"]);
    assert!(run(server.port, "guarded").contains("http guarded: ok"));
}

#[test]
fn http_is_off_by_default() {
    let server = common::start("http-off", &["--cores", "1"]);
    assert!(run(server.port, "disabled").contains("http disabled: ok"));
}
