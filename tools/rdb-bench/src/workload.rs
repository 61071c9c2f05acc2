//! Workloads: the query each operation sends. Table workloads address documents
//! `{id: <int>, v: <int 0..1000>, f0..f<K-1>: <int 0..keys>, pad: <string>}` in
//! `--db`.`--table` (K = `--fields`); keys are drawn uniformly or from a zipfian
//! distribution over `--keys`. `--indexes N` creates indexes on f0..f<N-1> (each named after its field).
//! `--geo` adds `loc: r.point(lon, lat)` (uniform over the sphere) and a geospatial index on it.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::{json, Value};

// ql2 term numbers used here.
const MAKE_ARRAY: u32 = 2;
const VAR: u32 = 10;
const DB: u32 = 14;
const TABLE: u32 = 15;
const GET: u32 = 16;
const LT: u32 = 19;
const FILTER: u32 = 39;
const COUNT: u32 = 43;
const UPDATE: u32 = 53;
const INSERT: u32 = 56;
const FUNC: u32 = 69;
const BRACKET: u32 = 170;
const GET_ALL: u32 = 78;
const BETWEEN: u32 = 182;
const ORDER_BY: u32 = 41;
const LIMIT: u32 = 71;
const MAXVAL: u32 = 181;
const INDEX_CREATE: u32 = 75;
const INDEX_WAIT: u32 = 140;
const POINT: u32 = 159;
const CIRCLE: u32 = 165;
const GET_INTERSECTING: u32 = 166;
const GET_NEAREST: u32 = 168;

pub const NAMES: &str = "expr, load, insert, get, update, ycsb-a, ycsb-b, ycsb-c, scan (filter+count), get-all (by index f0), order-limit (between(k, maxval, index f0).order_by(index f0).limit(100)), changefeed (write-to-feed latency), get-nearest (10 nearest by index loc), get-intersecting (documents in a 50 km circle by index loc)";

/// Radius of the circles `get-intersecting` asks for, in meters.
pub const INTERSECTING_RADIUS_M: f64 = 50_000.0;
/// Results `get-nearest` asks for.
pub const NEAREST_RESULTS: u64 = 10;

/// Rows `order-limit` reads per query.
pub const ORDER_LIMIT_ROWS: u64 = 100;

/// What a workload needs from the command line.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub db: String,
    pub table: String,
    pub keys: u64,
    pub batch: usize,
    pub doc_bytes: usize,
    pub durability: String,
    pub zipfian: bool,
    /// Integer fields f0..f<fields-1> in every document.
    pub fields: usize,
    /// Secondary indexes on f0..f<indexes-1>, created by `--setup`.
    pub indexes: usize,
    /// A `loc` point in every document and, with `--setup`, a geospatial index on it.
    pub geo: bool,
}

/// Makes one connection's queries.
pub struct Generator {
    spec: Spec,
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
    /// Next key for `load` and `insert` (each connection owns a disjoint range).
    next_key: u64,
    key_end: u64,
    pad: String,
}

fn table(spec: &Spec) -> Value {
    json!([TABLE, [[DB, [spec.db]], spec.table]])
}

fn query(term: Value) -> Vec<u8> {
    json!([1, term, {}]).to_string().into_bytes()
}

impl Generator {
    /// `conn` of `conns`: connections split the key space for loads and inserts.
    pub fn new(spec: &Spec, conn: usize, conns: usize) -> Result<Generator, String> {
        let zipf = if spec.zipfian {
            Some(Zipf::new(spec.keys.max(1), 0.99).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let per = spec.keys.div_ceil(conns as u64);
        let (next_key, key_end) = if spec.name == "insert" {
            // Fresh keys above the loaded range, disjoint per connection and per run: a
            // run slot of 2^24 keys from the clock's seconds, so runs started a second or
            // more apart never collide within 18 hours (random slots did, once in a few
            // thousand runs).
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let run_slot = (secs % (1 << 16)) << 24;
            let base = spec.keys + (conn as u64) * (1 << 40) + run_slot;
            (base, base + (1 << 40))
        } else {
            let start = per * conn as u64;
            (start, (start + per).min(spec.keys))
        };
        Ok(Generator {
            spec: spec.clone(),
            rng: SmallRng::seed_from_u64(0x5eed ^ conn as u64),
            zipf,
            next_key,
            key_end,
            pad: "x".repeat(spec.doc_bytes),
        })
    }

    fn key(&mut self) -> u64 {
        match &self.zipf {
            Some(z) => (z.sample(&mut self.rng) as u64).saturating_sub(1),
            None => self.rng.gen_range(0..self.spec.keys.max(1)),
        }
    }

    fn doc(&mut self, id: u64) -> Value {
        let mut d = json!({"id": id, "v": self.rng.gen_range(0..1000), "pad": self.pad});
        for f in 0..self.spec.fields {
            let v = self.rng.gen_range(0..self.spec.keys.max(1));
            d[format!("f{f}")] = json!(v);
        }
        if self.spec.geo {
            let (lon, lat) = self.lon_lat();
            d["loc"] = json!([POINT, [lon, lat]]);
        }
        d
    }

    /// A position drawn uniformly over the sphere.
    fn lon_lat(&mut self) -> (f64, f64) {
        let lon = self.rng.gen_range(-180.0..180.0);
        let lat = (self.rng.gen_range(-1.0f64..1.0)).asin().to_degrees();
        (lon, lat)
    }

    fn insert(&mut self) -> Option<Vec<u8>> {
        let n = (self.key_end - self.next_key).min(self.spec.batch as u64);
        if n == 0 {
            return None;
        }
        let docs: Vec<Value> = (0..n)
            .map(|i| {
                let id = self.next_key + i;
                self.doc(id)
            })
            .collect();
        self.next_key += n;
        let arg = if docs.len() == 1 {
            docs.into_iter().next().expect("one document")
        } else {
            json!([MAKE_ARRAY, docs])
        };
        Some(query(json!([
            INSERT,
            [table(&self.spec), arg],
            {"durability": self.spec.durability}
        ])))
    }

    fn get(&mut self) -> Vec<u8> {
        let k = self.key();
        query(json!([GET, [table(&self.spec), k]]))
    }

    fn update(&mut self) -> Vec<u8> {
        let k = self.key();
        let v: u32 = self.rng.gen_range(0..1000);
        query(json!([
            UPDATE,
            [[GET, [table(&self.spec), k]], {"v": v}],
            {"durability": self.spec.durability}
        ]))
    }

    /// The next query, or `None` when a bounded workload (`load`) is done.
    pub fn next_query(&mut self) -> Option<Vec<u8>> {
        match self.spec.name.as_str() {
            "expr" => Some(b"[1,1,{}]".to_vec()),
            "load" | "insert" => self.insert(),
            "get" | "ycsb-c" => Some(self.get()),
            "update" => Some(self.update()),
            "ycsb-a" | "ycsb-b" => {
                let update_share = if self.spec.name == "ycsb-a" {
                    0.5
                } else {
                    0.05
                };
                if self.rng.gen_bool(update_share) {
                    Some(self.update())
                } else {
                    Some(self.get())
                }
            }
            "get-all" => {
                let k = self.key();
                Some(query(
                    json!([GET_ALL, [table(&self.spec), k], {"index": "f0"}]),
                ))
            }
            "order-limit" => {
                let k = self.key();
                let slice = json!([BETWEEN, [table(&self.spec), k, [MAXVAL, []]], {"index": "f0"}]);
                let ordered = json!([ORDER_BY, [slice], {"index": "f0"}]);
                Some(query(json!([LIMIT, [ordered, ORDER_LIMIT_ROWS]])))
            }
            "get-nearest" => {
                let (lon, lat) = self.lon_lat();
                Some(query(json!([
                    GET_NEAREST,
                    [table(&self.spec), [POINT, [lon, lat]]],
                    {"index": "loc", "max_results": NEAREST_RESULTS}
                ])))
            }
            "get-intersecting" => {
                let (lon, lat) = self.lon_lat();
                let area = json!([CIRCLE, [[POINT, [lon, lat]], INTERSECTING_RADIUS_M]]);
                Some(query(json!([
                    GET_INTERSECTING,
                    [table(&self.spec), area],
                    {"index": "loc"}
                ])))
            }
            "scan" => Some(query(json!([
                COUNT,
                [[
                    FILTER,
                    [
                        table(&self.spec),
                        [
                            FUNC,
                            [[MAKE_ARRAY, [1]], [LT, [[BRACKET, [[VAR, [1]], "v"]], 500]]]
                        ]
                    ]
                ]]
            ]))),
            _ => None,
        }
    }

    /// Documents one operation touches (for docs/s of batched inserts and scans).
    pub fn docs_per_op(&self) -> u64 {
        match self.spec.name.as_str() {
            "load" | "insert" => self.spec.batch as u64,
            "scan" => self.spec.keys,
            "order-limit" => ORDER_LIMIT_ROWS,
            _ => 1,
        }
    }
}

pub fn check(name: &str) -> Result<(), String> {
    match name {
        "expr" | "load" | "insert" | "get" | "update" | "ycsb-a" | "ycsb-b" | "ycsb-c" | "scan"
        | "get-all" | "order-limit" | "changefeed" | "get-nearest" | "get-intersecting" => Ok(()),
        other => Err(format!("unknown workload `{other}` (available: {NAMES})")),
    }
}

/// Queries that create the database, the table and its indexes, then wait for the
/// indexes (errors for existing ones are fine).
pub fn setup_queries(spec: &Spec) -> Vec<Vec<u8>> {
    let mut q = vec![
        query(json!([57, [spec.db]])),
        query(json!([60, [[DB, [spec.db]], spec.table]])),
    ];
    for i in 0..spec.indexes {
        q.push(query(json!([INDEX_CREATE, [table(spec), format!("f{i}")]])));
    }
    if spec.geo {
        q.push(query(
            json!([INDEX_CREATE, [table(spec), "loc"], {"geo": true}]),
        ));
    }
    if spec.indexes > 0 || spec.geo {
        q.push(query(json!([INDEX_WAIT, [table(spec)]])));
    }
    q
}
