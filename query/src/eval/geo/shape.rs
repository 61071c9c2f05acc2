//! GEOMETRY values: reading GeoJSON datums into S2 shapes (with RethinkDB's checks and
//! messages) and building the datums of points, lines and polygons.
//!
//! A GEOMETRY datum is a GeoJSON object (`type`, `coordinates`, optionally a null
//! `crs`) plus `$reql_type$`. Shapes live on the unit sphere: edges are great-circle
//! arcs, as in RethinkDB (which also used S2).

use crate::datum::{Datum, Object, REQL_TYPE};
use crate::error::{logic, non_existence, Result};
use crate::eval::{array, fmt_g20, num, object::get_field, string};
use s2rst::s2::polyline::Polyline;
use s2rst::s2::{LatLng, Loop, Point, Polygon};

/// A longitude/latitude pair in degrees, as users write it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LonLat {
    pub lon: f64,
    pub lat: f64,
}

/// A geometry read into S2.
pub enum Shape {
    Point(Point),
    Line(Polyline),
    Polygon(Box<Polygon>),
}

pub fn is_geometry(d: &Datum) -> bool {
    d.reql_type() == Some("GEOMETRY")
}

/// The geometry's `type` field.
pub fn type_name(g: &Datum) -> Result<String> {
    Ok(string(&get_field(g, "type")?)?.to_string())
}

/// The `GEOMETRY` datum itself, or the type error RethinkDB gives for anything else.
pub fn expect_geometry(d: &Datum) -> Result<&Datum> {
    if is_geometry(d) {
        Ok(d)
    } else {
        Err(crate::eval::type_err_null_aware("PTYPE<GEOMETRY>", d))
    }
}

/// A GeoJSON position: `[lon, lat]`.
pub fn position(d: &Datum) -> Result<LonLat> {
    let a = array(d)?;
    if a.len() < 2 {
        return Err(logic(
            "Too few coordinates.  Need at least longitude and latitude.",
        ));
    }
    if a.len() > 3 {
        return Err(logic(format!(
            "Too many coordinates.  GeoJSON position should have no more than three coordinates, but got {}.",
            a.len()
        )));
    }
    if a.len() == 3 {
        return Err(logic(
            "A third altitude coordinate in GeoJSON positions was found, but is not supported.",
        ));
    }
    Ok(LonLat {
        lon: num(&a[0])?,
        lat: num(&a[1])?,
    })
}

/// The S2 point of a position, range-checked (180° east is the same meridian as 180°
/// west; S2 wants the latter).
pub fn to_s2(p: LonLat) -> Result<Point> {
    if !(-180.0..=180.0).contains(&p.lon) {
        return Err(logic(format!(
            "Longitude must be between -180 and 180.  Got {}.",
            fmt_g20(p.lon)
        )));
    }
    if !(-90.0..=90.0).contains(&p.lat) {
        return Err(logic(format!(
            "Latitude must be between -90 and 90.  Got {}.",
            fmt_g20(p.lat)
        )));
    }
    let lon = if p.lon == 180.0 { -180.0 } else { p.lon };
    Ok(LatLng::from_degrees(p.lat, lon).to_point())
}

/// Longitude and latitude of an S2 point, in degrees.
pub fn from_s2(p: Point) -> LonLat {
    LonLat {
        lon: LatLng::longitude(p).degrees(),
        lat: LatLng::latitude(p).degrees(),
    }
}

fn positions(coords: &Datum) -> Result<Vec<Point>> {
    array(coords)?
        .iter()
        .map(|p| position(p).and_then(to_s2))
        .collect()
}

fn line(coords: &Datum) -> Result<Polyline> {
    if array(coords)?.len() < 2 {
        return Err(logic(
            "GeoJSON LineString must have at least two positions.",
        ));
    }
    let line = Polyline::new(positions(coords)?);
    if line.find_validation_error().is_some() {
        return Err(logic(
            "Invalid LineString.  Are there antipodal or duplicate vertices?",
        ));
    }
    Ok(line)
}

fn ring(coords: &Datum) -> Result<Loop> {
    if array(coords)?.len() < 4 {
        return Err(logic(
            "GeoJSON LinearRing must have at least four positions.",
        ));
    }
    let mut points = positions(coords)?;
    if points.first() != points.last() {
        return Err(logic(
            "First and last vertex of GeoJSON LinearRing must be identical.",
        ));
    }
    // S2 closes loops implicitly.
    points.pop();
    let mut distinct = std::collections::HashSet::with_capacity(points.len());
    let repeats = !points
        .iter()
        .all(|p| distinct.insert([p.0.x.to_bits(), p.0.y.to_bits(), p.0.z.to_bits()]));
    let mut l = Loop::new(points);
    if repeats
        || l.validate().is_err()
        || s2rst::s2::shape_util::find_self_intersection(l.shape_index()).is_some()
    {
        return Err(logic(
            "Invalid LinearRing.  Are there antipodal or duplicate vertices? Is it self-intersecting?",
        ));
    }
    // A ring names the smaller of the two regions it separates.
    l.normalize();
    Ok(l)
}

fn polygon(coords: &Datum) -> Result<Polygon> {
    let rings = array(coords)?;
    let mut loops = Vec::with_capacity(rings.len());
    for r in rings.iter() {
        loops.push(ring(r)?);
    }
    // The first ring is the shell, the others are holes in it.
    let shell = loops.first().cloned();
    let p = Polygon::from_loops(loops);
    let holes_inside = match &shell {
        Some(shell) => {
            p.loops().iter().skip(1).all(|h| h.depth() == 1)
                && p.loops().first().is_some_and(|l| l.equal(shell))
        }
        None => true,
    };
    if !holes_inside || p.find_validation_error().is_some() {
        return Err(logic(
            "Some edges in GeoJSON polygon could not be used.  Are they intersecting?",
        ));
    }
    Ok(p)
}

/// A polygon from rings known to be valid (closed or not), without the checks `parse`
/// makes: for shapes the server builds itself.
pub fn polygon_unchecked(shell: &[LonLat], holes: &[Vec<LonLat>]) -> Result<Shape> {
    let ring = |points: &[LonLat]| -> Result<Loop> {
        let mut pts = points
            .iter()
            .map(|p| to_s2(*p))
            .collect::<Result<Vec<Point>>>()?;
        if pts.len() > 1 && pts.first() == pts.last() {
            pts.pop();
        }
        let mut l = Loop::new(pts);
        l.normalize();
        Ok(l)
    };
    let mut loops = vec![ring(shell)?];
    for h in holes {
        loops.push(ring(h)?);
    }
    Ok(Shape::Polygon(Box::new(Polygon::from_loops(loops))))
}

/// Reads a GEOMETRY datum into S2, checking it as RethinkDB does.
pub fn parse(g: &Datum) -> Result<Shape> {
    let ty = type_name(g)?;
    let coords = get_field(g, "coordinates")?;
    match ty.as_str() {
        "Point" => Ok(Shape::Point(to_s2(position(&coords)?)?)),
        "LineString" => Ok(Shape::Line(line(&coords)?)),
        "Polygon" => Ok(Shape::Polygon(Box::new(polygon(&coords)?))),
        "MultiPoint" | "MultiLineString" | "MultiPolygon" | "GeometryCollection" | "Feature"
        | "FeatureCollection" => Err(logic(format!("GeoJSON type `{ty}` is not supported."))),
        _ => Err(logic(format!("Unrecognized GeoJSON type `{ty}`."))),
    }
}

/// `parse` plus the `crs` rule: what every constructor runs on its result.
pub fn validate(g: &Datum) -> Result<()> {
    if let Some(crs) = g.get_field("crs") {
        if !matches!(crs, Datum::Null) {
            return Err(logic(
                "Non-default coordinate reference systems are not supported in GeoJSON objects.  Make sure the `crs` field of the geometry is null or non-existent.",
            ));
        }
    }
    parse(g).map(|_| ())
}

/// The syntactic check of a literal GEOMETRY object (fields and their types).
pub fn sanitize(m: &Object) -> Result<()> {
    let mut has_type = false;
    let mut has_coordinates = false;
    for (k, v) in m.iter() {
        match k.as_ref() {
            "coordinates" => {
                array(v)?;
                has_coordinates = true;
            }
            "type" => {
                string(v)?;
                has_type = true;
            }
            "crs" | REQL_TYPE => {}
            other => {
                return Err(logic(format!(
                    "Unrecognized field `{other}` found in geometry object."
                )))
            }
        }
    }
    if !has_type {
        return Err(non_existence("Field `type` not found in geometry object."));
    }
    if !has_coordinates {
        return Err(non_existence(
            "Field `coordinates` not found in geometry object.",
        ));
    }
    Ok(())
}

fn pair(p: LonLat) -> Datum {
    Datum::array(vec![Datum::Num(p.lon), Datum::Num(p.lat)])
}

/// A GEOMETRY datum of this GeoJSON type and coordinates.
pub fn geometry(ty: &str, coordinates: Datum) -> Datum {
    let mut o = Object::new();
    o.insert(REQL_TYPE.into(), Datum::str("GEOMETRY"));
    o.insert("type".into(), Datum::str(ty));
    o.insert("coordinates".into(), coordinates);
    Datum::object(o)
}

pub fn point_datum(p: LonLat) -> Datum {
    geometry("Point", pair(p))
}

pub fn line_datum(points: &[LonLat]) -> Datum {
    geometry(
        "LineString",
        Datum::array(points.iter().copied().map(pair).collect()),
    )
}

/// A ring's coordinates, closed (the first position repeated at the end) if it is not.
pub fn ring_datum(points: &[LonLat]) -> Datum {
    let mut out: Vec<Datum> = points.iter().copied().map(pair).collect();
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        if first != last {
            out.push(pair(*first));
        }
    }
    Datum::array(out)
}

pub fn polygon_datum(shell: &[LonLat], holes: &[Vec<LonLat>]) -> Datum {
    let mut rings = vec![ring_datum(shell)];
    rings.extend(holes.iter().map(|h| ring_datum(h)));
    geometry("Polygon", Datum::array(rings))
}

/// The positions of a LineString datum (`fill` turns them into a polygon).
pub fn line_positions(g: &Datum) -> Result<Vec<LonLat>> {
    let ty = type_name(g)?;
    if ty != "LineString" {
        return Err(logic(format!(
            "Expected geometry of type `LineString` but found `{ty}`."
        )));
    }
    array(&get_field(g, "coordinates")?)?
        .iter()
        .map(position)
        .collect()
}

/// A point argument: a Point geometry or a `[lon, lat]` pair.
pub fn point_arg(d: &Datum) -> Result<LonLat> {
    if is_geometry(d) {
        let ty = type_name(d)?;
        if ty != "Point" {
            return Err(logic(format!(
                "Expected geometry of type `Point` but found `{ty}`."
            )));
        }
        return position(&get_field(d, "coordinates")?);
    }
    let a = array(d)?;
    if a.len() != 2 {
        return Err(logic(format!(
            "Expected point coordinate pair.  Got {} element array instead of a 2 element one.",
            a.len()
        )));
    }
    Ok(LonLat {
        lon: num(&a[0])?,
        lat: num(&a[1])?,
    })
}
