//! Reads through geospatial indexes: `get_intersecting` (documents whose indexed
//! geometry meets a query geometry) and `get_nearest` (documents by distance from a
//! point, searched in growing rings as RethinkDB does).

use super::cover::{cell_value, covering, query_ranges};
use super::ops::{self, Ellipsoid};
use super::shape::{self, parse, LonLat, Shape};
use crate::datum::{Datum, Object};
use crate::error::{logic, resource, Result};
use crate::eval::index::IndexProbe;
use crate::eval::seq::{Selection, Stream};
use crate::eval::table::{expect_table, index_scan, op_failed, TableRef};
use crate::eval::{arg_datum, int, num, string, Ctx, Optargs, Val};
use crate::store::index::IndexInfo;
use s2rst::s2::CellId;
use std::collections::HashSet;
use std::ops::Bound;
use std::rc::Rc;

/// What a `get_intersecting` selection follows in `changes()`.
pub struct GeoSpec {
    pub index: IndexInfo,
    pub query: Datum,
}

/// Bytes of an encoded cell value at the start of each entry's sort key.
fn cell_code_bytes() -> usize {
    crate::keycode::encode(&cell_value(CellId(0))).len()
}

/// The geospatial index a `get_intersecting`/`get_nearest` names, checked in
/// RethinkDB's order.
fn geo_index(t: &TableRef, opt: &Optargs, term: &str) -> Result<IndexInfo> {
    let Some(name) = opt.datum("index")? else {
        return Err(logic(format!("{term} requires an index argument.")));
    };
    let name = string(&name)?;
    if name == t.info.primary_key {
        return Err(logic(format!("{term} cannot use the primary index.")));
    }
    if t.system.is_some() {
        return Err(op_failed(format!(
            "Index `{name}` was not found on table `{}`.",
            t.display()
        )));
    }
    let ix = crate::eval::index::resolve_any(&t.info, name)?;
    if !ix.geo {
        return Err(logic(format!(
            "Index `{name}` is not a geospatial index.  {term} can only be used with a geospatial index."
        )));
    }
    Ok(ix)
}

/// A document found through the index, with the indexed geometry that led to it.
struct Candidate {
    /// Primary key and multi-index position: what makes a result distinct.
    id: Vec<u8>,
    doc: Datum,
    geometry: Datum,
}

/// Documents (once per primary key and multi-index position) whose indexed cells may
/// meet `query`'s, leaving out those already `emitted`.
fn candidates(
    t: &Rc<TableRef>,
    ix: &IndexInfo,
    probe: &IndexProbe,
    query: &Shape,
    emitted: &HashSet<Vec<u8>>,
) -> Result<Vec<Candidate>> {
    let code_bytes = cell_code_bytes();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (lo, hi) in query_ranges(&covering(query)) {
        let lo = crate::keycode::encode(&cell_value(lo));
        let hi = crate::keycode::encode(&cell_value(hi));
        let scan = index_scan(t, ix, Bound::Included(lo), Bound::Included(hi), false);
        for row in scan {
            let (sort_key, doc) = row?;
            if sort_key.len() <= code_bytes {
                return Err(crate::error::internal(
                    "Corrupt geospatial index entry in storage.",
                ));
            }
            let id = sort_key[code_bytes..].to_vec();
            if emitted.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let doc = crate::store::decode_doc(&doc)?;
            let Some(value) = probe.value(&doc) else {
                continue;
            };
            // A multi index keeps each element under its position (the key's last
            // four bytes).
            let geometry = match value {
                Datum::Array(ref items) if ix.multi => {
                    let at = id.len().checked_sub(4).map(|i| &id[i..]);
                    let Some(tag) = at.map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else {
                        continue;
                    };
                    match items.get(tag as usize) {
                        Some(g) => g.clone(),
                        None => continue,
                    }
                }
                v => v,
            };
            if !shape::is_geometry(&geometry) {
                continue;
            }
            out.push(Candidate { id, doc, geometry });
        }
    }
    Ok(out)
}

pub fn get_intersecting(ctx: &Rc<Ctx>, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let t = expect_table(&args[0], 0)?;
    let g = arg_datum(ctx, args, 1)?;
    let ix = geo_index(&t, opt, "get_intersecting")?;
    shape::expect_geometry(&g)?;
    let mut query = parse(&g)?;
    let probe = IndexProbe::new(ix.clone())?;
    let mut docs = Vec::new();
    for c in candidates(&t, &ix, &probe, &query, &HashSet::new())? {
        let Ok(mut found) = parse(&c.geometry) else {
            continue;
        };
        if ops::intersects(&mut query, &mut found) {
            docs.push(c.doc);
            check_limit(ctx, docs.len())?;
        }
    }
    let mut s = Stream::from_vec(docs);
    s.sel = Some(Selection {
        geo: Some(Rc::new(GeoSpec {
            index: ix,
            query: g,
        })),
        ..Selection::new(t, "SELECTION<STREAM>")
    });
    Ok(Val::Stream(s))
}

/// Where a nearest search starts: 10 m on the Earth, scaled with the ellipsoid.
const NEAREST_START_FRACTION: f64 = 10.0 / 6_378_137.0;
/// The most a ring's inner radius grows from one batch to the next.
const NEAREST_GROWTH_MAX: f64 = 2.0;
/// Results a ring aims to hold, estimated from the density found so far.
const NEAREST_BATCH_GOAL: f64 = 100.0;
/// Vertices of the polygons approximating the rings' circles.
const NEAREST_VERTICES: u32 = 8;

pub fn get_nearest(ctx: &Rc<Ctx>, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let t = expect_table(&args[0], 0)?;
    let center_arg = arg_datum(ctx, args, 1)?;
    let ix = geo_index(&t, opt, "get_nearest")?;
    let center = shape::point_arg(&center_arg)?;
    let e = ops::ellipsoid(opt.datum("geo_system")?)?;
    let unit = ops::unit_meters(opt.datum("unit")?)?;
    let max_dist = match opt.datum("max_dist")? {
        None => 100_000.0,
        Some(d) => {
            let m = ops::convert(num(&d)?, unit, 1.0);
            if m.is_nan() || m <= 0.0 {
                return Err(logic("max_dist must be positive."));
            }
            m
        }
    };
    let max_results = match opt.datum("max_results")? {
        None => 100,
        Some(d) => {
            let n = int(&d)?;
            if n <= 0 {
                return Err(logic("max_results must be positive."));
            }
            n as usize
        }
    };
    let center_s2 = shape::to_s2(center)?;
    let probe = IndexProbe::new(ix.clone())?;
    let mut emitted = HashSet::new();
    let mut found: Vec<(f64, Datum)> = Vec::new();
    let mut processed = 0.0f64;
    let mut current = max_dist.min(NEAREST_START_FRACTION * e.a);
    loop {
        let mut ring = ring(center, processed, current, &e)?;
        let before = found.len();
        let mut batch = Vec::new();
        for c in candidates(&t, &ix, &probe, &ring, &emitted)? {
            let Ok(mut g) = parse(&c.geometry) else {
                continue;
            };
            // Both tests must pass; the distance is the cheaper one, so it goes first.
            let dist = ops::distance(center_s2, &g, &e);
            if dist > current {
                continue;
            }
            if !ops::intersects(&mut ring, &mut g) {
                // Not in this ring: a later ring may hold it.
                continue;
            }
            {
                emitted.insert(c.id);
                check_limit(ctx, emitted.len())?;
                batch.push((dist, c.doc));
            }
        }
        batch.sort_by(|a, b| a.0.total_cmp(&b.0));
        found.extend(batch);
        let area = std::f64::consts::PI * (current * current - processed * processed);
        let density = (found.len() - before) as f64 / area;
        processed = current;
        current = if density != 0.0 {
            (NEAREST_BATCH_GOAL / std::f64::consts::PI / density + processed * processed).sqrt()
        } else {
            processed * NEAREST_GROWTH_MAX
        };
        current = current.min((current * NEAREST_GROWTH_MAX).min(max_dist));
        if processed >= max_dist || found.len() >= max_results {
            break;
        }
    }
    found.truncate(max_results);
    let out = found
        .into_iter()
        .map(|(dist, doc)| {
            let mut o = Object::new();
            o.insert("dist".into(), Datum::Num(ops::convert(dist, 1.0, unit)));
            o.insert("doc".into(), doc);
            Datum::object(o)
        })
        .collect();
    Ok(Val::Datum(Datum::array(out)))
}

fn check_limit(ctx: &Ctx, n: usize) -> Result<()> {
    if n > ctx.array_limit {
        return Err(resource(
            "Array size limit exceeded during geospatial index traversal.",
        ));
    }
    Ok(())
}

/// The region between the circle already searched and one of radius `outer`.
fn ring(center: LonLat, inner: f64, outer: f64, e: &Ellipsoid) -> Result<Shape> {
    let too_far = |err: crate::error::ReqlError| {
        logic(format!(
            "The distance has become too large for continuing the indexed nearest traversal.  Consider specifying a smaller `max_dist` parameter.  ({})",
            err.msg
        ))
    };
    let mut holes = Vec::new();
    if inner > 0.0 {
        holes.push(
            ops::polygon_with_exradius_at_most(center, inner, NEAREST_VERTICES, e)
                .map_err(too_far)?,
        );
    }
    let shell =
        ops::polygon_with_inradius_at_least(center, outer, NEAREST_VERTICES, e).map_err(too_far)?;
    // Regular polygons around one center, the hole well inside the shell: valid by
    // construction, so the checks a user's polygon gets are skipped.
    shape::polygon_unchecked(&shell, &holes)
}
