//! Random hostile queries (deep data and terms, big ranges, growth in folds, raised
//! array limits, malformed raw frames) for a bounded time: the server answers each,
//! stays responsive, and never dies.

mod common;

#[test]
fn random_hostile_queries_never_kill_the_server() {
    let mut server = common::start("query-fuzz", &["--cores", "2"]);
    let seconds = std::env::var("RDB_QUERY_FUZZ_SECONDS").unwrap_or_else(|_| "30".into());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
        .to_string();
    let out = common::run_python(
        "query_fuzz.py",
        &[&server.port.to_string(), &seconds, &seed],
        seconds.parse::<u64>().unwrap_or(30) + 120,
    );
    eprintln!("{out}");
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "rdb died during the hostile queries (seed {seed}):\n{out}"
    );
}
