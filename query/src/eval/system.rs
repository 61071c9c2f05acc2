//! The `rethinkdb` system database: the names of its tables. Reading them comes with
//! the system-table work; until then `r.db('rethinkdb').table(...)` reports that the
//! table is not available rather than inventing contents.

/// System tables RethinkDB 2.4 exposes, in `table_list` order.
pub const TABLES: &[&str] = &[
    "cluster_config",
    "current_issues",
    "db_config",
    "jobs",
    "logs",
    "permissions",
    "server_config",
    "server_status",
    "stats",
    "table_config",
    "table_status",
    "users",
];
