//! Document writes: every insert, update, replace and delete is a per-row replacement
//! (old document -> new document) applied with a conditional write, retried if another
//! writer changed the row in between, and counted the way RethinkDB counts.

use super::object;
use super::table::TableRef;
use crate::datum::{Datum, Object};
use crate::error::{logic, Result};
use crate::json::pretty;
use crate::store::{decode_doc, encode_doc, CasOp, CasOutcome, Cond, Store};
use std::collections::BTreeMap;

/// `return_changes`: false, true, or "always" (also unchanged rows and errors).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReturnChanges {
    No,
    Yes,
    Always,
}

impl ReturnChanges {
    pub fn parse(d: Option<Datum>) -> Result<ReturnChanges> {
        match d {
            None | Some(Datum::Bool(false)) => Ok(ReturnChanges::No),
            Some(Datum::Bool(true)) => Ok(ReturnChanges::Yes),
            Some(Datum::Str(ref s)) if &**s == "always" => Ok(ReturnChanges::Always),
            Some(other) => Err(logic(format!(
                "Invalid return_changes value `{}` (options are `true`, `false`, and `'always'`)",
                crate::json::to_json(&other)
            ))),
        }
    }
}

/// The counters and extras of a write result.
#[derive(Default)]
pub struct WriteStats {
    pub counts: BTreeMap<String, f64>,
    pub first_error: Option<String>,
    pub changes: Vec<Datum>,
    pub return_changes: bool,
    pub generated_keys: Vec<Datum>,
    pub warnings: Vec<String>,
    /// Other arrays of merged results (`config_changes` of catalog terms), concatenated.
    pub arrays: BTreeMap<String, Vec<Datum>>,
}

pub const COUNTERS: [&str; 6] = [
    "deleted",
    "errors",
    "inserted",
    "replaced",
    "skipped",
    "unchanged",
];

impl WriteStats {
    pub fn new(rc: ReturnChanges) -> WriteStats {
        WriteStats {
            counts: COUNTERS.iter().map(|c| (c.to_string(), 0.0)).collect(),
            return_changes: rc != ReturnChanges::No,
            ..WriteStats::default()
        }
    }
    pub fn bump(&mut self, counter: &'static str) {
        *self.counts.entry(counter.to_string()).or_insert(0.0) += 1.0;
    }
    pub fn error(&mut self, msg: String) {
        self.bump("errors");
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }
    pub fn to_datum(&self) -> Datum {
        let mut o = Object::new();
        for (k, v) in &self.counts {
            o.insert(k.clone(), Datum::Num(*v));
        }
        if let Some(e) = &self.first_error {
            o.insert("first_error".into(), Datum::str(e.as_str()));
        }
        if self.return_changes {
            o.insert("changes".into(), Datum::array(self.changes.clone()));
        }
        if !self.generated_keys.is_empty() {
            o.insert(
                "generated_keys".into(),
                Datum::array(self.generated_keys.clone()),
            );
        }
        for (k, v) in &self.arrays {
            o.insert(k.clone(), Datum::array(v.clone()));
        }
        if !self.warnings.is_empty() {
            o.insert(
                "warnings".into(),
                Datum::array(
                    self.warnings
                        .iter()
                        .map(|w| Datum::str(w.as_str()))
                        .collect(),
                ),
            );
        }
        Datum::object(o)
    }

    /// Folds another write result (a datum, as `for_each` bodies return) into this one.
    pub fn merge_datum(&mut self, d: &Datum) -> Result<()> {
        let Datum::Object(o) = d else {
            return Err(logic("FOR_EACH expects one or more basic write queries."));
        };
        for (k, v) in o.iter() {
            match (k.as_str(), v) {
                ("first_error", Datum::Str(s)) if self.first_error.is_none() => {
                    self.first_error = Some(s.to_string());
                }
                ("first_error", _) => {}
                ("changes", Datum::Array(a)) => {
                    self.return_changes = true;
                    self.changes.extend(a.iter().cloned());
                }
                ("generated_keys", Datum::Array(a)) => {
                    self.generated_keys.extend(a.iter().cloned())
                }
                (k, Datum::Array(a)) if k != "warnings" => self
                    .arrays
                    .entry(k.to_string())
                    .or_default()
                    .extend(a.iter().cloned()),
                ("warnings", Datum::Array(a)) => {
                    for w in a.iter() {
                        if let Datum::Str(s) = w {
                            if !self.warnings.iter().any(|x| **x == **s) {
                                self.warnings.push(s.to_string());
                            }
                        }
                    }
                }
                (k, Datum::Num(n)) => {
                    *self.counts.entry(k.to_string()).or_insert(0.0) += n;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One row to replace: its primary key and, when known, what is stored under it.
pub struct RowJob {
    pub pk: Datum,
    pub known: Known,
}

/// What the caller knows of a row's stored value.
pub enum Known {
    /// The stored bytes (`None`: absent), as the caller read them.
    Read(Option<Vec<u8>>),
    /// Probably absent (an inserted row): computed as absent and written only if still
    /// absent, which saves a read per row; any other outcome (the row exists, or the
    /// computation fails or changes nothing) reads the row and computes it again.
    LikelyAbsent,
}

enum RowResult {
    Changed(Datum, Datum),
    Same(Datum),
    /// The row as it was, and why it could not be written.
    Failed(Datum, String),
}

fn has_extrema(d: &Datum) -> bool {
    deep!(has_extrema(d));
    match d {
        Datum::MinVal | Datum::MaxVal => true,
        Datum::Array(a) => a.iter().any(has_extrema),
        Datum::Object(o) => o.values().any(has_extrema),
        _ => false,
    }
}

/// Longest array a stored document may hold (RethinkDB's on-disk limit).
const STORED_ARRAY_MAX: usize = 100_000;

fn has_huge_array(d: &Datum) -> bool {
    deep!(has_huge_array(d));
    match d {
        Datum::Array(a) => a.len() > STORED_ARRAY_MAX || a.iter().any(has_huge_array),
        Datum::Object(o) => o.values().any(has_huge_array),
        _ => false,
    }
}

/// RethinkDB's checks on a replacement row.
fn check_replacement(pkey: &str, pk: &Datum, old: &Datum, new: &Datum) -> Result<()> {
    match new {
        Datum::Null => Ok(()),
        Datum::Object(o) if !new.is_ptype() => {
            let Some(new_pk) = o.get(pkey) else {
                return Err(logic(format!(
                    "Inserted object must have primary key `{pkey}`:\n{}",
                    pretty(new)
                )));
            };
            if let Datum::Object(old_o) = old {
                if old_o.get(pkey) != Some(new_pk) {
                    return Err(logic(format!(
                        "Primary key `{pkey}` cannot be changed (`{}` -> `{}`).",
                        pretty(old),
                        pretty(new)
                    )));
                }
            }
            if new_pk != pk {
                return Err(logic(match old {
                    Datum::Null => format!(
                        "Primary key `{pkey}` cannot be changed (null -> {})",
                        pretty(new)
                    ),
                    _ => format!(
                        "Primary key `{pkey}` cannot be changed ({} -> {})",
                        pretty(old),
                        pretty(new)
                    ),
                }));
            }
            if has_huge_array(new) {
                return Err(logic(
                    "Array too large for disk writes (limit 100,000 elements).",
                ));
            }
            if has_extrema(new) {
                return Err(logic(
                    "`r.minval` and `r.maxval` cannot be written to disk.",
                ));
            }
            Ok(())
        }
        other => Err(logic(format!(
            "Inserted value must be an OBJECT (got {}):\n{}",
            other.type_name(),
            pretty(other)
        ))),
    }
}

/// Replaces each row with `f(index, old)` (old is `null` for a missing row); row errors
/// are counted, not raised, as RethinkDB does.
pub fn replace_rows(
    t: &TableRef,
    jobs: Vec<RowJob>,
    f: &mut dyn FnMut(usize, &Datum) -> Result<Datum>,
    hard: bool,
    rc: ReturnChanges,
    stats: &mut WriteStats,
) -> Result<()> {
    let pkey = t.info.primary_key.clone();
    let n = jobs.len();
    let mut keys = Vec::with_capacity(n);
    let mut stored: Vec<Option<Option<Vec<u8>>>> = Vec::with_capacity(n);
    // Rows whose `stored` is a guess (absent), not a read.
    let mut guessed: Vec<bool> = Vec::with_capacity(n);
    let mut results: Vec<Option<RowResult>> = (0..n).map(|_| None).collect();
    let mut pks = Vec::with_capacity(n);
    for j in jobs {
        match Store::doc_key(&t.info, &j.pk) {
            Ok(k) => keys.push(Some(k)),
            Err(e) => {
                // RethinkDB rejects bad keys before the write reaches storage, so their
                // message wins `first_error` over conflicts found in storage.
                if stats.first_error.is_none() {
                    stats.first_error = Some(e.msg.clone());
                }
                results[keys.len()] = Some(RowResult::Failed(Datum::Null, e.msg));
                keys.push(None);
            }
        }
        let (known, guess) = match j.known {
            Known::Read(b) => (Some(b), false),
            Known::LikelyAbsent => (Some(None), true),
        };
        stored.push(known);
        guessed.push(guess);
        pks.push(j.pk);
    }
    let mut todo: Vec<usize> = (0..n).filter(|&i| results[i].is_none()).collect();
    let mut rounds = 0u32;
    while !todo.is_empty() {
        rounds += 1;
        assert!(rounds < 10_000, "a row write kept losing its race");
        for &i in &todo {
            if stored[i].is_none() {
                let key = keys[i].clone().expect("rows without a key are done");
                let shard = t.store.shard_of(&key);
                stored[i] = Some(t.store.get_raw(shard, key)?);
            }
        }
        let mut ops = Vec::new();
        let mut waiting = Vec::new();
        let mut next = Vec::new();
        for &i in &todo {
            let bytes = stored[i].as_ref().expect("read above");
            let old = match bytes {
                Some(b) => decode_doc(b)?,
                None => Datum::Null,
            };
            // The row's new document and its encoding, or `None` when it stays the same.
            let step = f(i, &old).and_then(|new| {
                check_replacement(&pkey, &pks[i], &old, &new)?;
                if new == old {
                    return Ok(None);
                }
                let value = match &new {
                    Datum::Null => None,
                    d => Some(encode_doc(d)?),
                };
                Ok(Some((new, value)))
            });
            if guessed[i] && !matches!(step, Ok(Some(_))) {
                // Only a write that finds the row absent confirms the guess: computed
                // from the row as it really is, the outcome may differ.
                guessed[i] = false;
                stored[i] = None;
                next.push(i);
                continue;
            }
            let (new, value) = match step {
                Ok(Some(w)) => w,
                Ok(None) => {
                    results[i] = Some(RowResult::Same(old));
                    continue;
                }
                Err(e) => {
                    results[i] = Some(RowResult::Failed(old, e.msg));
                    continue;
                }
            };
            let cond = match bytes {
                Some(b) => Cond::Equals(b.clone()),
                None => Cond::Absent,
            };
            ops.push(CasOp {
                key: keys[i].clone().expect("rows without a key are done"),
                cond,
                new: value,
            });
            waiting.push((i, old, new));
        }
        let outcomes = if ops.is_empty() {
            Vec::new()
        } else {
            t.store.write_raw(ops, hard)?
        };
        for ((i, old, new), outcome) in waiting.into_iter().zip(outcomes) {
            match outcome {
                CasOutcome::Applied { .. } => results[i] = Some(RowResult::Changed(old, new)),
                CasOutcome::Refused { current } => {
                    stored[i] = Some(current);
                    guessed[i] = false;
                    next.push(i);
                }
            }
        }
        todo = next;
    }
    for r in results {
        record(stats, r.expect("every row has a result"), rc);
    }
    Ok(())
}

fn pair(old: Datum, new: Datum) -> Datum {
    let mut o = Object::new();
    o.insert("old_val".into(), old);
    o.insert("new_val".into(), new);
    Datum::object(o)
}

fn record(stats: &mut WriteStats, r: RowResult, rc: ReturnChanges) {
    match r {
        RowResult::Changed(old, new) => {
            let counter = match (&old, &new) {
                (Datum::Null, _) => "inserted",
                (_, Datum::Null) => "deleted",
                _ => "replaced",
            };
            stats.bump(counter);
            if rc != ReturnChanges::No {
                stats.changes.push(pair(old, new));
            }
        }
        RowResult::Same(old) => {
            stats.bump(if old == Datum::Null {
                "skipped"
            } else {
                "unchanged"
            });
            if rc == ReturnChanges::Always {
                stats.changes.push(pair(old.clone(), old));
            }
        }
        RowResult::Failed(old, msg) => {
            if rc == ReturnChanges::Always {
                let mut o = Object::new();
                o.insert("old_val".into(), old.clone());
                o.insert("new_val".into(), old.clone());
                o.insert("error".into(), Datum::str(msg.as_str()));
                stats.changes.push(Datum::object(o));
            }
            stats.error(msg);
        }
    }
}

/// `update`'s replacement: the old row merged with what `f` returns (`null` keeps it).
pub fn update_row(old: &Datum, patch: Datum) -> Result<Datum> {
    if *old == Datum::Null {
        return Ok(Datum::Null);
    }
    if patch == Datum::Null {
        return Ok(old.clone());
    }
    Ok(object::merge(old, &patch))
}
