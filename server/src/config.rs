//! Server options: command-line flags over a RethinkDB-style config file
//! (`key=value` lines, `#` comments), over built-in defaults.

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "rdb",
    version,
    about = "A realtime document database speaking RethinkDB's protocol"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
}

#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// Data directory.
    #[arg(short = 'd', long)]
    pub directory: Option<PathBuf>,
    /// Address to listen on: an IP, `localhost`, or `all` (repeatable).
    #[arg(long)]
    pub bind: Vec<String>,
    /// Port for client drivers.
    #[arg(long)]
    pub driver_port: Option<u16>,
    /// Number of cores (executors) to run; defaults to the CPUs available.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Password for the `admin` user (empty by default).
    #[arg(long)]
    pub initial_password: Option<String>,
    /// Write logs to this file instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Read options from a file; flags given on the command line win.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Name reported to clients (defaults to the host name).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Size of each write-ahead log segment, in MiB (the unit logs are deleted in).
    #[arg(long)]
    pub wal_segment_mb: Option<u64>,
    /// Memtable size that triggers a flush to an SSTable, in MiB.
    #[arg(long)]
    pub memtable_mb: Option<u64>,
    /// Client connections open at once (by default what the file descriptor limit
    /// leaves after storage's share); more are closed as they arrive.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Client connections open at once from one address (1024 by default).
    #[arg(long)]
    pub max_connections_per_peer: Option<usize>,
    /// Memory one query may hold, in MiB; past it the query fails with a
    /// ReqlResourceLimitError (1024 by default).
    #[arg(long)]
    pub query_memory_mb: Option<u64>,
    /// Memory all queries of one core may hold together, in MiB; past it the query that
    /// asks for more fails (half the machine's memory over the cores by default).
    #[arg(long)]
    pub queries_memory_mb: Option<u64>,
    /// Allow `r.js` (JavaScript in sandboxed QuickJS runtimes); off by default, as
    /// scripts are arbitrary code.
    #[arg(long)]
    pub enable_js: bool,
    /// Heap limit of each JavaScript runtime, in MiB.
    #[arg(long)]
    pub js_memory_mb: Option<u64>,
    /// Allow `r.http` (requests from the server); off by default.
    #[arg(long)]
    pub enable_http: bool,
    /// Let `r.http` reach loopback, private, link-local and cloud metadata addresses
    /// (refused by default, against server-side request forgery).
    #[arg(long)]
    pub http_allow_private: bool,
}

/// The resolved options the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub directory: PathBuf,
    pub bind: Vec<String>,
    pub driver_port: u16,
    pub cores: usize,
    pub initial_password: String,
    pub log_file: Option<PathBuf>,
    pub server_name: String,
    pub wal_segment_mb: u64,
    pub memtable_mb: u64,
    pub max_connections: Option<usize>,
    pub max_connections_per_peer: usize,
    pub query_memory_mb: u64,
    /// `None`: half the machine's memory over the cores.
    pub queries_memory_mb: Option<u64>,
    pub enable_js: bool,
    pub js_memory_mb: u64,
    pub enable_http: bool,
    pub http_allow_private: bool,
}

pub const DRIVER_PORT_DEFAULT: u16 = 28015;

fn check_mb(flag: &str, mb: u64) -> Result<u64, String> {
    if (1..=4096).contains(&mb) {
        Ok(mb)
    } else {
        Err(format!("{flag} must be between 1 and 4096 (got {mb})"))
    }
}

fn check_memory_mb(flag: &str, mb: u64) -> Result<u64, String> {
    if (16..=1 << 20).contains(&mb) {
        Ok(mb)
    } else {
        Err(format!("{flag} must be between 16 and 1048576 (got {mb})"))
    }
}

impl Config {
    pub fn resolve(args: &ServeArgs) -> Result<Config, String> {
        let file = match &args.config_file {
            Some(p) => parse_file(p)?,
            None => ServeArgs::default(),
        };
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cores = args.cores.or(file.cores).unwrap_or(cpus);
        if cores == 0 || cores > 256 {
            return Err(format!("--cores must be between 1 and 256 (got {cores})"));
        }
        let bind = if !args.bind.is_empty() {
            args.bind.clone()
        } else {
            file.bind.clone()
        };
        Ok(Config {
            directory: args
                .directory
                .clone()
                .or(file.directory)
                .unwrap_or_else(|| PathBuf::from("rdb_data")),
            bind: if bind.is_empty() {
                vec!["127.0.0.1".into()]
            } else {
                bind
            },
            driver_port: args
                .driver_port
                .or(file.driver_port)
                .unwrap_or(DRIVER_PORT_DEFAULT),
            cores,
            initial_password: pick(&args.initial_password, &file.initial_password)
                .unwrap_or_default(),
            log_file: args.log_file.clone().or(file.log_file),
            server_name: pick(&args.server_name, &file.server_name).unwrap_or_else(host_name),
            wal_segment_mb: check_mb(
                "--wal-segment-mb",
                args.wal_segment_mb.or(file.wal_segment_mb).unwrap_or(64),
            )?,
            memtable_mb: check_mb(
                "--memtable-mb",
                args.memtable_mb.or(file.memtable_mb).unwrap_or(32),
            )?,
            max_connections: match args.max_connections.or(file.max_connections) {
                Some(0) => return Err("--max-connections must be at least 1".into()),
                n => n,
            },
            max_connections_per_peer: match args
                .max_connections_per_peer
                .or(file.max_connections_per_peer)
            {
                Some(0) => return Err("--max-connections-per-peer must be at least 1".into()),
                n => n.unwrap_or(1024),
            },
            query_memory_mb: check_memory_mb(
                "--query-memory-mb",
                args.query_memory_mb
                    .or(file.query_memory_mb)
                    .unwrap_or(1024),
            )?,
            queries_memory_mb: args
                .queries_memory_mb
                .or(file.queries_memory_mb)
                .map(|mb| check_memory_mb("--queries-memory-mb", mb))
                .transpose()?,
            enable_js: args.enable_js || file.enable_js,
            js_memory_mb: check_mb(
                "--js-memory-mb",
                args.js_memory_mb.or(file.js_memory_mb).unwrap_or(64),
            )?,
            enable_http: args.enable_http || file.enable_http,
            http_allow_private: args.http_allow_private || file.http_allow_private,
        })
    }

    /// Socket addresses to listen on.
    pub fn listen_addrs(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        let mut out = Vec::new();
        for b in &self.bind {
            let ip: std::net::IpAddr = match b.as_str() {
                "all" => std::net::Ipv4Addr::UNSPECIFIED.into(),
                "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
                other => other
                    .parse()
                    .map_err(|_| format!("invalid --bind address `{other}`"))?,
            };
            out.push(std::net::SocketAddr::new(ip, self.driver_port));
        }
        Ok(out)
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| {
            s.trim()
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rdb".into())
}

/// Parses a RethinkDB-style config file.
pub fn parse_file(path: &Path) -> Result<ServeArgs, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    parse_text(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_text(text: &str) -> Result<ServeArgs, String> {
    let mut a = ServeArgs::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `key=value`", n + 1))?;
        let (k, v) = (k.trim(), v.trim().to_string());
        let bad = |what: &str| format!("line {}: invalid {what} `{v}`", n + 1);
        match k {
            "directory" => a.directory = Some(v.into()),
            "bind" => a.bind.push(v),
            "driver-port" => a.driver_port = Some(v.parse().map_err(|_| bad("port"))?),
            "cores" => a.cores = Some(v.parse().map_err(|_| bad("core count"))?),
            "initial-password" => a.initial_password = Some(v),
            "log-file" => a.log_file = Some(v.into()),
            "server-name" => a.server_name = Some(v),
            "wal-segment-mb" => a.wal_segment_mb = Some(v.parse().map_err(|_| bad("size in MiB"))?),
            "memtable-mb" => a.memtable_mb = Some(v.parse().map_err(|_| bad("size in MiB"))?),
            "enable-js" => a.enable_js = v.parse().map_err(|_| bad("boolean"))?,
            "max-connections" => a.max_connections = Some(v.parse().map_err(|_| bad("number"))?),
            "max-connections-per-peer" => {
                a.max_connections_per_peer = Some(v.parse().map_err(|_| bad("number"))?)
            }
            "query-memory-mb" => {
                a.query_memory_mb = Some(v.parse().map_err(|_| bad("size in MiB"))?)
            }
            "queries-memory-mb" => {
                a.queries_memory_mb = Some(v.parse().map_err(|_| bad("size in MiB"))?)
            }
            "js-memory-mb" => a.js_memory_mb = Some(v.parse().map_err(|_| bad("size in MiB"))?),
            "enable-http" => a.enable_http = v.parse().map_err(|_| bad("boolean"))?,
            "http-allow-private" => a.http_allow_private = v.parse().map_err(|_| bad("boolean"))?,
            other => return Err(format!("line {}: unknown option `{other}`", n + 1)),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("rdb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("rdb.conf");
        std::fs::write(
            &f,
            "# comment\ndriver-port=29000\ncores=1\ndirectory=/tmp/x\n",
        )
        .unwrap();
        let args = ServeArgs {
            config_file: Some(f),
            driver_port: Some(30000),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.driver_port, 30000);
        assert_eq!(c.cores, 1);
        assert_eq!(c.directory, PathBuf::from("/tmp/x"));
        assert_eq!(c.bind, vec!["127.0.0.1".to_string()]);
    }

    #[test]
    fn bad_lines_are_reported() {
        assert!(parse_text("nonsense").is_err());
        assert!(parse_text("driver-port=abc").is_err());
        assert!(parse_text("colour=blue").is_err());
    }
}
