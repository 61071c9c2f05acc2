//! Geometry operations: intersection and inclusion tests (on the sphere, closed sets),
//! geodesic distances and circles on a reference ellipsoid, and distance units.

use super::shape::{from_s2, LonLat, Shape};
use crate::datum::Datum;
use crate::error::{logic, Result};
use crate::eval::{fmt_g20, num, object::get_field, string};
use geographiclib_rs::{DirectGeodesic, Geodesic, InverseGeodesic};
use s2rst::s2::polyline::Polyline;
use s2rst::s2::{Point, Polygon};

/// A reference ellipsoid: equator radius `a` (meters) and flattening `f`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ellipsoid {
    pub a: f64,
    pub f: f64,
}

pub const WGS84: Ellipsoid = Ellipsoid {
    a: 6_378_137.0,
    f: 1.0 / 298.257223563,
};
const UNIT_SPHERE: Ellipsoid = Ellipsoid { a: 1.0, f: 0.0 };

impl Ellipsoid {
    pub fn poles_radius(&self) -> f64 {
        self.a * (1.0 - self.f)
    }

    fn geodesic(&self) -> Geodesic {
        Geodesic::new(self.a, self.f)
    }
}

/// The `geo_system` optarg: "WGS84", "unit_sphere" or `{a, f}`.
pub fn ellipsoid(arg: Option<Datum>) -> Result<Ellipsoid> {
    let Some(d) = arg else { return Ok(WGS84) };
    if let Datum::Object(_) = d {
        let a = num(&get_field(&d, "a")?)?;
        let f = num(&get_field(&d, "f")?)?;
        if a.is_nan() || a <= 0.0 {
            return Err(logic("The equator radius `a` must be positive."));
        }
        if !(0.0..1.0).contains(&f) {
            return Err(logic("The flattening `f` must be in the range [0, 1)."));
        }
        return Ok(Ellipsoid { a, f });
    }
    match string(&d)? {
        "WGS84" => Ok(WGS84),
        "unit_sphere" => Ok(UNIT_SPHERE),
        other => Err(logic(format!(
            "Unrecognized geo system \"{other}\" (valid options: \"WGS84\", \"unit_sphere\")."
        ))),
    }
}

/// Meters in one of the `unit` optarg's units.
pub fn unit_meters(arg: Option<Datum>) -> Result<f64> {
    let Some(d) = arg else { return Ok(1.0) };
    match string(&d)? {
        "m" => Ok(1.0),
        "km" => Ok(1000.0),
        "mi" => Ok(1609.344),
        "nm" => Ok(1852.0),
        "ft" => Ok(0.3048),
        other => Err(logic(format!("Unrecognized distance unit `{other}`."))),
    }
}

/// Converts between units as RethinkDB does (one factor, then one multiplication), so
/// results agree with it to the last bit.
pub fn convert(d: f64, from_m: f64, to_m: f64) -> f64 {
    d * (from_m / to_m)
}

/// Geodesic distance in meters (Karney's algorithm).
pub fn geodesic_distance(p: LonLat, q: LonLat, e: &Ellipsoid) -> f64 {
    e.geodesic().inverse(p.lat, p.lon, q.lat, q.lon)
}

/// The point `dist` meters from `p` along `azimuth` degrees.
fn point_at(p: LonLat, dist: f64, azimuth: f64, e: &Ellipsoid) -> LonLat {
    let (lat, lon): (f64, f64) = e.geodesic().direct(p.lat, p.lon, azimuth, dist);
    LonLat { lon, lat }
}

/// Distance from a point to a shape: to the closest point found on the sphere, measured
/// on the ellipsoid (0 inside a polygon or on a line).
pub fn distance(p: Point, to: &Shape, e: &Ellipsoid) -> f64 {
    let from = from_s2(p);
    let closest = match to {
        Shape::Point(q) => *q,
        Shape::Line(l) => l.project(p).0,
        Shape::Polygon(poly) => poly.project_point(p),
    };
    if !matches!(to, Shape::Point(_)) && closest == p {
        return 0.0;
    }
    geodesic_distance(from, from_s2(closest), e)
}

/// The vertices (closed) of a regular polygon around `center` whose vertices are
/// `radius` meters away, starting due south.
pub fn circle(center: LonLat, radius: f64, vertices: u32, e: &Ellipsoid) -> Result<Vec<LonLat>> {
    if radius.is_nan() || radius <= 0.0 {
        return Err(logic("Radius must be positive"));
    }
    let max = 0.5 * std::f64::consts::PI * e.a.min(e.poles_radius());
    if radius >= max {
        return Err(logic(format!(
            "Radius must be smaller than a quarter of the circumference along the minor axis of the reference ellipsoid.  Got {}m, but must be smaller than {}m.",
            fmt_g20(radius),
            fmt_g20(max)
        )));
    }
    let mut out = Vec::with_capacity(vertices as usize + 1);
    for i in 0..vertices {
        let azimuth = -180.0 + (360.0 / f64::from(vertices) * f64::from(i));
        out.push(point_at(center, radius, azimuth, e));
    }
    if let Some(first) = out.first().copied() {
        out.push(first);
    }
    Ok(out)
}

/// A polygon sure to contain every point within `inradius` meters (on the ellipsoid).
pub fn polygon_with_inradius_at_least(
    center: LonLat,
    inradius: f64,
    vertices: u32,
    e: &Ellipsoid,
) -> Result<Vec<LonLat>> {
    // 1% leeway for rounding; a regular polygon's exradius is inradius / cos(pi / n) in
    // the plane (an overestimate on the sphere), stretched for the ellipsoid's distortion.
    let r = inradius * 1.01;
    let distortion = e.a.max(e.poles_radius()) / e.a.min(e.poles_radius());
    let exradius = r / (std::f64::consts::PI / f64::from(vertices)).cos() * distortion;
    circle(center, exradius, vertices, e)
}

/// A polygon sure to hold no point farther than `exradius` meters away.
pub fn polygon_with_exradius_at_most(
    center: LonLat,
    exradius: f64,
    vertices: u32,
    e: &Ellipsoid,
) -> Result<Vec<LonLat>> {
    circle(center, exradius * 0.99, vertices, e)
}

fn point_on_line(p: Point, l: &Polyline) -> bool {
    // Exact: a point counts as on the line only if projecting it gives it back.
    l.project(p).0 == p
}

fn point_in_polygon(p: Point, poly: &Polygon) -> bool {
    // Unlike `contains`, projection also accepts points exactly on a corner.
    poly.num_vertices() > 0 && poly.project_point(p) == p
}

fn line_meets_polygon(l: &Polyline, poly: &mut Polygon) -> bool {
    poly.num_vertices() > 0 && !poly.intersect_with_polyline(l).is_empty()
}

/// Whether two shapes share a point (polygons and lines are closed sets).
pub fn intersects(a: &mut Shape, b: &mut Shape) -> bool {
    match (a, b) {
        (Shape::Point(p), Shape::Point(q)) => p == q,
        (Shape::Point(p), Shape::Line(l)) | (Shape::Line(l), Shape::Point(p)) => {
            point_on_line(*p, l)
        }
        (Shape::Point(p), Shape::Polygon(poly)) | (Shape::Polygon(poly), Shape::Point(p)) => {
            point_in_polygon(*p, poly)
        }
        (Shape::Line(a), Shape::Line(b)) => b.intersects(a),
        (Shape::Line(l), Shape::Polygon(poly)) | (Shape::Polygon(poly), Shape::Line(l)) => {
            line_meets_polygon(l, poly)
        }
        (Shape::Polygon(a), Shape::Polygon(b)) => {
            a.num_vertices() > 0 && b.num_vertices() > 0 && b.intersects_polygon(a)
        }
    }
}

/// Whether `poly` contains all of `g`.
pub fn includes(poly: &mut Polygon, g: &Shape) -> bool {
    match g {
        Shape::Point(p) => point_in_polygon(*p, poly),
        Shape::Line(l) => poly.subtract_from_polyline(l).is_empty(),
        Shape::Polygon(other) => poly.contains_polygon(other),
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::eval::geo::shape::{self, LonLat};
    use proptest::prelude::*;

    fn lon_lat() -> impl Strategy<Value = LonLat> {
        prop_oneof![
            // Anywhere, including the poles and the antimeridian.
            (-180.0f64..=180.0, -90.0f64..=90.0).prop_map(|(lon, lat)| LonLat { lon, lat }),
            // Small integer grids, where duplicate and collinear vertices are common.
            (-3i32..=3, -3i32..=3).prop_map(|(lon, lat)| LonLat {
                lon: f64::from(lon),
                lat: f64::from(lat)
            }),
        ]
    }

    fn geometry() -> impl Strategy<Value = Datum> {
        prop_oneof![
            lon_lat().prop_map(shape::point_datum),
            proptest::collection::vec(lon_lat(), 2..6).prop_map(|v| shape::line_datum(&v)),
            proptest::collection::vec(lon_lat(), 3..8).prop_map(|v| shape::polygon_datum(&v, &[])),
            (
                proptest::collection::vec(lon_lat(), 3..6),
                proptest::collection::vec(lon_lat(), 3..6)
            )
                .prop_map(|(s, h)| shape::polygon_datum(&s, &[h])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// User geometries of any shape are accepted or refused with an error, and every
        /// operation on the accepted ones returns: nothing panics.
        #[test]
        fn operations_on_arbitrary_geometries_never_panic(a in geometry(), b in geometry(), p in lon_lat()) {
            let (Ok(mut sa), Ok(mut sb)) = (shape::parse(&a), shape::parse(&b)) else {
                return Ok(());
            };
            let _ = intersects(&mut sa, &mut sb);
            if let Shape::Polygon(poly) = &mut sa {
                let _ = includes(poly, &sb);
            }
            let point = shape::to_s2(p).unwrap();
            let d = distance(point, &sb, &WGS84);
            prop_assert!(d.is_finite() && d >= 0.0);
            let _ = crate::eval::geo::cover::covering(&sa);
        }
    }
}
