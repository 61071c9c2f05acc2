//! Geospatial index keys: S2 cell coverings of geometries, and the cell ranges a query
//! must read to find every indexed geometry that may intersect it.
//!
//! A geometry is indexed under each cell of a covering of at most `COVER_CELLS` cells
//! (a point under its leaf cell). An indexed cell can meet a query cell only if one
//! contains the other, so a query reads, for each of its cells, the cell's whole id
//! range (the cell and its descendants) and each of its ancestors exactly. Candidates
//! are then checked with an exact intersection test.

use super::shape::Shape;
use crate::datum::Datum;
use s2rst::s2::region_coverer::RegionCoverer;
use s2rst::s2::{CellId, Region};

/// Cells in a covering, for index entries and for queries (RethinkDB uses 8 for both).
pub const COVER_CELLS: usize = 8;

/// The cells covering a shape.
pub fn covering(shape: &Shape) -> Vec<CellId> {
    let region: &dyn Region = match shape {
        Shape::Point(p) => return vec![CellId::from_point(p)],
        Shape::Line(l) => l,
        Shape::Polygon(p) => &**p,
    };
    let coverer = RegionCoverer::new().max_cells(COVER_CELLS);
    coverer.covering(region).cell_ids().to_vec()
}

/// The index value standing for a cell: its id in fixed-width hex, so string order is
/// id order.
pub fn cell_value(c: CellId) -> Datum {
    Datum::str(format!("{:016x}", c.id()))
}

/// Inclusive id ranges of the index cells that may meet the query's cells, sorted and
/// merged.
pub fn query_ranges(cells: &[CellId]) -> Vec<(CellId, CellId)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &c in cells {
        ranges.push((c.range_min().id(), c.range_max().id()));
        let mut a = c;
        while !a.is_face() {
            a = a.parent();
            ranges.push((a.id(), a.id()));
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
        .into_iter()
        .map(|(lo, hi)| (CellId(lo), CellId(hi)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use s2rst::s2::{LatLng, Level};

    #[test]
    fn ranges_hold_the_cell_its_descendants_and_its_ancestors() {
        let p = LatLng::from_degrees(10.0, 20.0).to_point();
        let leaf = CellId::from_point(&p);
        let query = leaf.parent_at_level(Level::new(10));
        let ranges = query_ranges(&[query]);
        let inside = |c: CellId| ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
        assert!(inside(leaf), "a descendant");
        assert!(inside(query), "the cell itself");
        assert!(inside(query.parent_at_level(Level::new(3))), "an ancestor");
        let elsewhere = CellId::from_point(&LatLng::from_degrees(-40.0, 100.0).to_point());
        assert!(!inside(elsewhere));
    }

    #[test]
    fn cell_values_sort_like_ids() {
        let a = CellId::from_point(&LatLng::from_degrees(1.0, 1.0).to_point());
        let b = CellId::from_point(&LatLng::from_degrees(-50.0, 170.0).to_point());
        let (x, y) = (cell_value(a), cell_value(b));
        assert_eq!(a.id().cmp(&b.id()), x.as_str().cmp(&y.as_str()));
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::eval::geo::ops::{circle, WGS84};
    use crate::eval::geo::shape::{self, LonLat};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever lies inside a query polygon is found by the ranges its covering
        /// reads: the index can miss nothing.
        #[test]
        fn query_ranges_find_every_point_inside(
            lon in -179.0f64..179.0,
            lat in -80.0f64..80.0,
            radius in 1.0f64..2_000_000.0,
            bearing in 0.0f64..1.0,
            reach in 0.0f64..0.95,
        ) {
            let center = LonLat { lon, lat };
            let ring = circle(center, radius, 16, &WGS84).unwrap();
            let polygon = shape::parse(&shape::polygon_datum(&ring, &[])).unwrap();
            // A point somewhere between the center and the rim.
            let towards = ring[((bearing * 16.0) as usize).min(15)];
            let p = LonLat {
                lon: lon + (towards.lon - lon) * reach,
                lat: lat + (towards.lat - lat) * reach,
            };
            let mut point = shape::Shape::Point(shape::to_s2(p).unwrap());
            let mut polygon = polygon;
            // (Interpolating degrees can leave the polygon near the poles.)
            prop_assume!(crate::eval::geo::ops::intersects(&mut polygon, &mut point));
            let leaf = covering(&point)[0];
            let ranges = query_ranges(&covering(&polygon));
            prop_assert!(ranges.iter().any(|(lo, hi)| *lo <= leaf && leaf <= *hi));
            // And the other way round: a point's ranges meet the polygon's cells.
            let cells = covering(&polygon);
            let back = query_ranges(&[leaf]);
            prop_assert!(cells.iter().any(|c| back.iter().any(|(lo, hi)| lo <= c && c <= hi)));
        }

        /// Any datum at all: reading it as a geometry gives a value or an error.
        #[test]
        fn parse_never_panics(d in crate::testgen::arb_datum()) {
            let _ = shape::parse(&d);
            if let Datum::Object(o) = &d {
                let _ = shape::sanitize(o);
            }
        }
    }
}
