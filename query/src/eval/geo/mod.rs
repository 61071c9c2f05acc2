//! Geospatial ReQL: the GEOMETRY constructors (point, line, polygon, circle, geojson,
//! fill, polygon_sub), to_geojson, distance, intersects and includes. Index reads
//! (get_intersecting, get_nearest) are in `read`.

pub mod cover;
pub mod ops;
pub mod read;
pub mod shape;

use super::seq::{finish, SeqIn};
use super::{arg_datum, boolean, int, num, Ctx, Optargs, Val};
use crate::datum::{Datum, Object, REQL_TYPE};
use crate::error::{logic, Result};
use crate::term_type as tt;
use shape::{
    expect_geometry, line_datum, parse, point_arg, point_datum, polygon_datum, validate, Shape,
};
use std::rc::Rc;

/// Geometry terms that need no table; `None` for every other term.
pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &mut [Val], opt: &Optargs) -> Result<Option<Val>> {
    let d = |args: &[Val], i: usize| arg_datum(ctx, args, i);
    let out = match ty {
        tt::GEOJSON => geojson(d(args, 0)?)?,
        tt::TO_GEOJSON => {
            let g = d(args, 0)?;
            let Datum::Object(o) = expect_geometry(&g)? else {
                unreachable!("a geometry is an object")
            };
            let mut m = (**o).clone();
            m.remove(REQL_TYPE);
            Datum::object(m)
        }
        tt::POINT => {
            let p = shape::LonLat {
                lon: num(&d(args, 0)?)?,
                lat: num(&d(args, 1)?)?,
            };
            checked(point_datum(p))?
        }
        tt::LINE => checked(line_datum(&points(ctx, args)?))?,
        tt::POLYGON => checked(polygon_datum(&points(ctx, args)?, &[]))?,
        tt::FILL => checked(polygon_datum(&shape::line_positions(&d(args, 0)?)?, &[]))?,
        tt::CIRCLE => circle(ctx, args, opt)?,
        tt::DISTANCE => {
            let (a, b) = (d(args, 0)?, d(args, 1)?);
            let e = ops::ellipsoid(opt.datum("geo_system")?)?;
            let unit = ops::unit_meters(opt.datum("unit")?)?;
            expect_geometry(&a)?;
            expect_geometry(&b)?;
            // One of the two must be a point; the other may be any shape.
            let (p, other) = if shape::type_name(&a)? == "Point" {
                (a, b)
            } else {
                (b, a)
            };
            let Shape::Point(p) = point_shape(&p)? else {
                unreachable!("point_shape gives points")
            };
            let meters = ops::distance(p, &parse(&other)?, &e);
            Datum::Num(ops::convert(meters, 1.0, unit))
        }
        tt::INTERSECTS | tt::INCLUDES => return test(ctx, ty, args).map(Some),
        tt::POLYGON_SUB => polygon_sub(d(args, 0)?, d(args, 1)?)?,
        _ => return Ok(None),
    };
    Ok(Some(Val::Datum(out)))
}

/// A constructor's result, after the checks every geometry gets.
fn checked(g: Datum) -> Result<Datum> {
    validate(&g)?;
    Ok(g)
}

fn points(ctx: &Ctx, args: &[Val]) -> Result<Vec<shape::LonLat>> {
    (0..args.len())
        .map(|i| point_arg(&arg_datum(ctx, args, i)?))
        .collect()
}

fn point_shape(g: &Datum) -> Result<Shape> {
    let ty = shape::type_name(g)?;
    if ty != "Point" {
        return Err(logic(format!(
            "Expected geometry of type `Point` but found `{ty}`."
        )));
    }
    parse(g)
}

fn polygon_shape(g: &Datum) -> Result<s2rst::s2::Polygon> {
    let ty = shape::type_name(g)?;
    if ty != "Polygon" {
        return Err(logic(format!(
            "Expected geometry of type `Polygon` but found `{ty}`."
        )));
    }
    match parse(g)? {
        Shape::Polygon(p) => Ok(*p),
        _ => unreachable!("a Polygon parses to a polygon"),
    }
}

fn geojson(d: Datum) -> Result<Datum> {
    let o = super::object(&d)?;
    validate(&d)?;
    if o.contains_key(REQL_TYPE) {
        return Err(logic("GeoJSON object already had a $reql_type$ field."));
    }
    let mut m: Object = (**o).clone();
    m.insert(REQL_TYPE.into(), Datum::str("GEOMETRY"));
    // RethinkDB has no use for a bounding box and drops it.
    m.remove("bbox");
    crate::json::finish_object(m)
}

fn circle(ctx: &Ctx, args: &[Val], opt: &Optargs) -> Result<Datum> {
    let fill = match opt.datum("fill")? {
        None => true,
        Some(f) => boolean(&f)?,
    };
    let vertices = match opt.datum("num_vertices")? {
        None => 32,
        Some(n) => {
            let n = int(&n)?;
            if n <= 0 {
                return Err(logic("num_vertices must be positive."));
            }
            u32::try_from(n).map_err(|_| logic("num_vertices is too large."))?
        }
    };
    let e = ops::ellipsoid(opt.datum("geo_system")?)?;
    let unit = ops::unit_meters(opt.datum("unit")?)?;
    let center = point_arg(&arg_datum(ctx, args, 0)?)?;
    let radius = ops::convert(num(&arg_datum(ctx, args, 1)?)?, unit, 1.0);
    let ring = ops::circle(center, radius, vertices, &e)?;
    checked(if fill {
        polygon_datum(&ring, &[])
    } else {
        line_datum(&ring)
    })
}

/// `intersects`/`includes`: on a geometry a boolean; on a sequence, its elements that
/// pass the test.
fn test(ctx: &Rc<Ctx>, ty: u32, args: &mut [Val]) -> Result<Val> {
    let other = arg_datum(ctx, args, 1)?;
    expect_geometry(&other)?;
    let on_seq = !matches!(&args[0], Val::Datum(Datum::Object(_)));
    if !on_seq {
        let g = arg_datum(ctx, args, 0)?;
        return Ok(Val::Datum(Datum::Bool(test_one(ty, &g, &other)?)));
    }
    let first = std::mem::replace(&mut args[0], Val::Datum(Datum::Null));
    let seq = SeqIn::from_val(ctx, first)?;
    let is_array = seq.is_array();
    let mut other_shape = parse(&other)?;
    let s = seq.into_stream().filter_map(move |g| {
        expect_geometry(&g)?;
        let keep = match ty {
            tt::INTERSECTS => ops::intersects(&mut parse(&g)?, &mut other_shape),
            _ => ops::includes(&mut polygon_shape(&g)?, &other_shape),
        };
        Ok(keep.then_some(g))
    });
    finish(ctx, s, is_array)
}

fn test_one(ty: u32, g: &Datum, other: &Datum) -> Result<bool> {
    expect_geometry(g)?;
    Ok(match ty {
        tt::INTERSECTS => ops::intersects(&mut parse(g)?, &mut parse(other)?),
        _ => ops::includes(&mut polygon_shape(g)?, &parse(other)?),
    })
}

fn polygon_sub(lhs: Datum, rhs: Datum) -> Result<Datum> {
    let shell_only = |g: &Datum| -> Result<Datum> {
        expect_geometry(g)?;
        let ty = shape::type_name(g)?;
        if ty != "Polygon" {
            return Err(logic(format!("Expected a Polygon but found a {ty}.")));
        }
        let coords = super::object::get_field(g, "coordinates")?;
        if super::array(&coords)?.len() > 1 {
            return Err(logic(
                "Expected a Polygon with only an outer shell.  This one has holes.",
            ));
        }
        Ok(coords)
    };
    let lhs_coords = shell_only(&lhs)?;
    let rhs_coords = shell_only(&rhs)?;
    if !ops::includes(&mut polygon_shape(&lhs)?, &parse(&rhs)?) {
        return Err(logic(
            "The second argument to `polygon_sub` is not contained in the first one.",
        ));
    }
    let mut rings: Vec<Datum> = super::array(&lhs_coords)?.to_vec();
    rings.extend(super::array(&rhs_coords)?.first().cloned());
    checked(shape::geometry("Polygon", Datum::array(rings)))
}
