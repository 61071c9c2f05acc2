//! Hostile queries through the Python driver and raw protocol: deep data, memory bombs, a
//! runaway query beside light ones, and STOP of a running query; the server must survive.
//!
//! Needs `pip install rethinkdb==2.4.10.post1` (`.ci/run` does it).

mod common;

#[test]
fn hostile_queries_leave_the_server_serving() {
    // Two cores: the runaway query must share its core with light queries, not own it.
    let mut server = common::start("hostile", &["--cores", "2"]);
    let port = server.port.to_string();
    // The script reads the server's CPU time from /proc to see that a closed client's
    // query stops running.
    let pid = server.child.id().to_string();
    common::run_python("hostile_queries.py", &[&port, &pid], 240);
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "rdb exited during the hostile queries"
    );
}
