//! Times: the TIME pseudo-type (`epoch_time` seconds, rounded to milliseconds, plus a
//! fixed `+HH:MM` offset), its constructors, accessors, ISO 8601 text and arithmetic.
//! Calendar math comes from chrono.

use super::{arg_datum, num, string, Ctx, Optargs, Val};
use crate::datum::{Datum, Object, REQL_TYPE};
use crate::error::{logic, Result};
use crate::term_type as tt;
use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike,
};
use std::rc::Rc;

/// Years RethinkDB's calendar handles (Boost's range).
const YEAR_MIN: i32 = 1400;
const YEAR_MAX: i32 = 10000;

pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &[Val], opt: &Optargs) -> Result<Option<Val>> {
    let d = |i| arg_datum(ctx, args, i);
    let v = match ty {
        tt::EPOCH_TIME => make(num(&d(0)?)?, 0)?,
        tt::TIME => {
            let n = args.len();
            if n != 4 && n != 7 {
                return Err(logic(format!(
                    "Got {n} arguments to TIME (expected 4 or 7)."
                )));
            }
            let tz = d(n - 1)?;
            let off = parse_tz(string(&tz)?)?;
            let int = |i: usize| -> Result<i64> { super::int(&d(i)?) };
            let (y, mo, da) = (int(0)?, int(1)?, int(2)?);
            let (h, mi, s) = if n == 7 {
                (int(3)?, int(4)?, num(&d(5)?)?)
            } else {
                (0, 0, 0.0)
            };
            let date = NaiveDate::from_ymd_opt(y as i32, mo as u32, da as u32)
                .ok_or_else(|| logic("Error in time logic: Day of month is not valid for year."))?;
            let whole = s.floor();
            let time = NaiveTime::from_hms_opt(h as u32, mi as u32, 0)
                .ok_or_else(|| logic("Error in time logic: Hours or minutes out of range."))?;
            let local = NaiveDateTime::new(date, time);
            let epoch =
                local.and_utc().timestamp() as f64 - off as f64 * 60.0 + whole + (s - whole);
            make(epoch, off)?
        }
        tt::NOW => make(ctx.now_epoch_secs, 0)?,
        tt::ISO8601 => {
            let s = d(0)?;
            let default_tz = match opt.datum("default_timezone")? {
                Some(t) => Some(parse_tz(string(&t)?)?),
                None => None,
            };
            parse_iso8601(string(&s)?, default_tz)?
        }
        tt::TO_ISO8601 => Datum::str(to_iso8601(&d(0)?)?),
        tt::TO_EPOCH_TIME => Datum::Num(parts(&d(0)?)?.0),
        tt::IN_TIMEZONE => {
            let t = d(0)?;
            let (epoch, _) = parts(&t)?;
            let tz = d(1)?;
            make_exact(epoch, parse_tz(string(&tz)?)?)
        }
        tt::TIMEZONE => Datum::str(tz_string(parts(&d(0)?)?.1)),
        tt::DATE => {
            let t = d(0)?;
            let (_, off) = parts(&t)?;
            let l = local(&t)?;
            let midnight = l.date().and_hms_opt(0, 0, 0).expect("midnight exists");
            make_exact(
                midnight.and_utc().timestamp() as f64 - off as f64 * 60.0,
                off,
            )
        }
        tt::TIME_OF_DAY => {
            let t = d(0)?;
            let l = local(&t)?;
            Datum::Num(l.num_seconds_from_midnight() as f64 + frac_ms(&t)?)
        }
        tt::YEAR
        | tt::MONTH
        | tt::DAY
        | tt::DAY_OF_WEEK
        | tt::DAY_OF_YEAR
        | tt::HOURS
        | tt::MINUTES => {
            let l = local(&d(0)?)?;
            Datum::Num(match ty {
                tt::YEAR => l.year() as f64,
                tt::MONTH => l.month() as f64,
                tt::DAY => l.day() as f64,
                tt::DAY_OF_WEEK => l.weekday().number_from_monday() as f64,
                tt::DAY_OF_YEAR => l.ordinal() as f64,
                tt::HOURS => l.hour() as f64,
                _ => l.minute() as f64,
            })
        }
        tt::SECONDS => {
            let t = d(0)?;
            Datum::Num(local(&t)?.second() as f64 + frac_ms(&t)?)
        }
        tt::DURING => {
            let t = parts(&d(0)?)?.0;
            let lo = parts(&d(1)?)?.0;
            let hi = parts(&d(2)?)?.0;
            let left_ok = if opt.open_bound("left_bound", false)? {
                t > lo
            } else {
                t >= lo
            };
            let right_ok = if opt.open_bound("right_bound", true)? {
                t < hi
            } else {
                t <= hi
            };
            Datum::Bool(left_ok && right_ok)
        }
        tt::MONDAY
        | tt::TUESDAY
        | tt::WEDNESDAY
        | tt::THURSDAY
        | tt::FRIDAY
        | tt::SATURDAY
        | tt::SUNDAY => Datum::Num((ty - tt::MONDAY + 1) as f64),
        tt::JANUARY..=tt::DECEMBER => Datum::Num((ty - tt::JANUARY + 1) as f64),
        _ => return Ok(None),
    };
    Ok(Some(Val::Datum(v)))
}

/// A time at `epoch` seconds (rounded to milliseconds, as RethinkDB stores them).
pub fn make(epoch: f64, offset_minutes: i32) -> Result<Datum> {
    if !epoch.is_finite() {
        return Err(logic("Non-finite number in time."));
    }
    Ok(make_exact(
        (epoch * 1000.0).round() / 1000.0,
        offset_minutes,
    ))
}

fn make_exact(epoch: f64, offset_minutes: i32) -> Datum {
    let mut o = Object::new();
    o.insert(REQL_TYPE.into(), Datum::str("TIME"));
    o.insert("epoch_time".into(), Datum::Num(epoch));
    o.insert("timezone".into(), Datum::str(tz_string(offset_minutes)));
    Datum::object(o)
}

pub fn is_time(d: &Datum) -> bool {
    d.reql_type() == Some("TIME")
}

/// `time ± seconds` and `time - time` (seconds).
pub fn add(t: &Datum, secs: f64) -> Result<Datum> {
    let (epoch, off) = parts(t)?;
    make(epoch + secs, off)
}

pub fn tz_string(off: i32) -> String {
    let sign = if off < 0 { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", off.abs() / 60, off.abs() % 60)
}

/// (epoch seconds, offset minutes) of a TIME datum.
pub fn parts(d: &Datum) -> Result<(f64, i32)> {
    if !is_time(d) {
        return Err(super::type_err_null_aware("PTYPE<TIME>", d));
    }
    let epoch = d
        .get_field("epoch_time")
        .and_then(Datum::as_num)
        .ok_or_else(|| logic("Invalid time object: no field `epoch_time`."))?;
    let off = match d.get_field("timezone") {
        Some(Datum::Str(s)) => parse_tz(s)?,
        _ => 0,
    };
    Ok((epoch, off))
}

/// Milliseconds of the second, as a fraction.
fn frac_ms(t: &Datum) -> Result<f64> {
    let (epoch, _) = parts(t)?;
    let ms = (epoch * 1000.0).round() as i64;
    Ok(ms.rem_euclid(1000) as f64 / 1000.0)
}

/// The local wall-clock time of a TIME, within the calendar's year range.
fn local(t: &Datum) -> Result<NaiveDateTime> {
    let (epoch, off) = parts(t)?;
    let ms = (epoch * 1000.0).round() as i64;
    let utc = DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| logic("Error in time logic: Year is out of valid range: 1400..10000."))?;
    let tz = FixedOffset::east_opt(off * 60).ok_or_else(|| logic("Invalid time zone offset."))?;
    let l = tz.from_utc_datetime(&utc.naive_utc()).naive_local();
    if l.year() < YEAR_MIN || l.year() > YEAR_MAX {
        return Err(logic(
            "Error in time logic: Year is out of valid range: 1400..10000.",
        ));
    }
    Ok(l)
}

fn to_iso8601(t: &Datum) -> Result<String> {
    let (epoch, off) = parts(t)?;
    let l = local(t)?;
    if l.year() > 9999 {
        return Err(logic(format!(
            "Year `{}` out of valid ISO 8601 range [0, 9999].",
            l.year()
        )));
    }
    let ms = (epoch * 1000.0).round() as i64;
    let frac = ms.rem_euclid(1000);
    let mut s = l.format("%Y-%m-%dT%H:%M:%S").to_string();
    if frac != 0 {
        s.push_str(&format!(".{frac:03}"));
    }
    s.push_str(&tz_string(off));
    Ok(s)
}

/// Parses `Z`, `±HH`, `±HHMM` or `±HH:MM` into minutes east of UTC.
pub fn parse_tz(s: &str) -> Result<i32> {
    if s == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => {
            return Err(logic(format!(
                "Timezone `{s}` does not start with `-` or `+`."
            )))
        }
    };
    if s == "-00" || s == "-00:00" {
        return Err(logic(format!("`{s}` is not a valid time offset.")));
    }
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    let colon_ok = match rest.find(':') {
        None => true,
        Some(i) => i == 2 && rest.len() == 5,
    };
    if !colon_ok
        || !digits.chars().all(|c| c.is_ascii_digit())
        || !(digits.len() == 2 || digits.len() == 4)
    {
        return Err(logic(format!("Invalid time zone string `{s}`. Valid time zones look like `+HH:MM`, `-HHMM`, `+HH` or `Z`.")));
    }
    let h: i32 = digits[..2].parse().unwrap_or(99);
    let m: i32 = if digits.len() == 4 {
        digits[2..].parse().unwrap_or(99)
    } else {
        0
    };
    if h > 23 {
        return Err(logic(format!("Hours out of range in `{s}`.")));
    }
    if m > 59 {
        return Err(logic(format!("Minutes out of range in `{s}`.")));
    }
    Ok(sign * (h * 60 + m))
}

/// ISO 8601: `YYYY-MM-DD` or `YYYYMMDD`, optionally `T` and `HH[:MM[:SS[.fff]]]`, then a
/// time zone (or the default one).
fn parse_iso8601(s: &str, default_tz: Option<i32>) -> Result<Datum> {
    let fail = || logic(format!("Failed to parse `{s}` as ISO 8601 time."));
    let (date_s, rest) = match s.find('T') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let date_digits: String = date_s.chars().filter(|c| *c != '-').collect();
    let hyphens = date_s.matches('-').count();
    if !(hyphens == 0 || hyphens == 2) {
        return Err(logic(format!(
            "Date string `{date_s}` must have 0 or 2 hyphens."
        )));
    }
    if date_digits.len() != 8 || !date_digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(fail());
    }
    let date = NaiveDate::from_ymd_opt(
        date_digits[..4].parse().map_err(|_| fail())?,
        date_digits[4..6].parse().map_err(|_| fail())?,
        date_digits[6..].parse().map_err(|_| fail())?,
    )
    .ok_or_else(fail)?;
    let (mut secs, mut tz) = (0.0f64, None);
    if let Some(rest) = rest {
        let split = rest.find(['+', '-', 'Z']).unwrap_or(rest.len());
        let (time_s, tz_s) = rest.split_at(split);
        if !tz_s.is_empty() {
            tz = Some(parse_tz(tz_s)?);
        }
        let (hms, frac) = match time_s.find('.') {
            Some(i) => (&time_s[..i], &time_s[i..]),
            None => (time_s, ""),
        };
        let colons = hms.matches(':').count();
        let digits: String = hms.chars().filter(|c| *c != ':').collect();
        if colons > 2
            || !digits.chars().all(|c| c.is_ascii_digit())
            || !matches!(digits.len(), 2 | 4 | 6)
        {
            return Err(fail());
        }
        let h: f64 = digits[..2].parse().map_err(|_| fail())?;
        let m: f64 = if digits.len() >= 4 {
            digits[2..4].parse().map_err(|_| fail())?
        } else {
            0.0
        };
        let sec: f64 = if digits.len() == 6 {
            digits[4..6].parse().map_err(|_| fail())?
        } else {
            0.0
        };
        if h > 23.0 || m > 59.0 || sec > 60.0 {
            return Err(fail());
        }
        let f: f64 = if frac.is_empty() {
            0.0
        } else {
            format!("0{frac}").parse().map_err(|_| fail())?
        };
        secs = h * 3600.0 + m * 60.0 + sec + f;
    } else if default_tz.is_none() {
        tz = None;
    }
    let off = match tz.or(default_tz) {
        Some(o) => o,
        None => {
            return Err(logic(
                "ISO 8601 string has no time zone, and no default time zone was provided.",
            ))
        }
    };
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .ok_or_else(fail)?
        .and_utc()
        .timestamp() as f64;
    make(midnight + secs - off as f64 * 60.0, off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones() {
        assert_eq!(parse_tz("Z").unwrap(), 0);
        assert_eq!(parse_tz("-07:00").unwrap(), -420);
        assert_eq!(parse_tz("+0530").unwrap(), 330);
        assert_eq!(parse_tz("+05").unwrap(), 300);
        for bad in ["07:00", "-00", "+24:00", "+05:60", "+5", "+05:0", "+ab"] {
            assert!(parse_tz(bad).is_err(), "{bad}");
        }
        assert_eq!(tz_string(-90), "-01:30");
    }

    #[test]
    fn iso8601_round_trip() {
        let t = parse_iso8601("2013-07-30T20:56:05.125-07:00", None).unwrap();
        assert_eq!(parts(&t).unwrap(), (1375242965.125, -420));
        assert_eq!(to_iso8601(&t).unwrap(), "2013-07-30T20:56:05.125-07:00");
        let d = parse_iso8601("20130730", Some(0)).unwrap();
        assert_eq!(to_iso8601(&d).unwrap(), "2013-07-30T00:00:00+00:00");
        assert!(parse_iso8601("2013-07-30T20:56:05", None).is_err());
        assert!(parse_iso8601("2013-0730", Some(0)).is_err());
        assert!(parse_iso8601("2013-02-30", Some(0)).is_err());
    }

    #[test]
    fn epoch_is_rounded_to_milliseconds() {
        let t = make(1.4444445, 0).unwrap();
        assert_eq!(parts(&t).unwrap().0, 1.444);
        assert_eq!(to_iso8601(&t).unwrap(), "1970-01-01T00:00:01.444+00:00");
    }
}
