//! CF calendars, CF time units and the mapping of model days onto real days of the year.
//!
//! Output series are indexed by the real (proleptic Gregorian) day of the year: 365 slots, 366 in
//! leap years. [`slot_of`] says where a model day lands:
//!
//! - `standard`/`gregorian`/`proleptic_gregorian`: the date's own day of year.
//! - `noleap`/`365_day`: identity in a common year; in a leap year every day from Mar 1 on moves
//!   up one slot, so Feb 29 (0-based slot 59) stays empty.
//! - `all_leap`/`366_day`: identity in a leap year; in a common year the model's Feb 29 is dropped.
//! - `360_day`: spread over the real year like xarray's
//!   `convert_calendar(target, align_on="year")`: model day `d` (1-based) lands on real day
//!   `round_half_even(D * d / 360)` where `D` is 365 or 366, leaving 5 (or 6) real days empty.
//!
//! CF's `standard` calendar is Julian before 1582-10-15 and Gregorian from then on. Reference
//! dates before the reform are counted in the Julian calendar (as CF requires); data dates before
//! 1582-10-15 are rejected with [`DecodeError::JulianDate`](crate::DecodeError::JulianDate).

use std::fmt;

/// A CF calendar, with aliases folded (`gregorian` → [`Calendar::Standard`], `365_day` →
/// [`Calendar::NoLeap`], `366_day` → [`Calendar::AllLeap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Calendar {
    /// `standard` / `gregorian` (also the default when the attribute is absent): mixed
    /// Julian/Gregorian; only dates from 1582-10-15 on are supported.
    Standard,
    /// `proleptic_gregorian`.
    ProlepticGregorian,
    /// `noleap` / `365_day`.
    NoLeap,
    /// `all_leap` / `366_day`.
    AllLeap,
    /// `360_day`: twelve 30-day months.
    Day360,
    /// `julian`: Feb 29 every fourth year. Model days keep their day of year; in century years
    /// that are Julian but not Gregorian leap years (1900, 2100) the model's Feb 29 is dropped.
    Julian,
}

impl Calendar {
    /// Parses a CF `calendar` attribute (case-insensitive, surrounding blanks ignored).
    /// Returns `None` for calendars this crate does not support (e.g. `julian`, `none`).
    pub fn from_cf(name: &str) -> Option<Calendar> {
        match name.trim().to_ascii_lowercase().as_str() {
            "standard" | "gregorian" => Some(Calendar::Standard),
            "proleptic_gregorian" => Some(Calendar::ProlepticGregorian),
            "noleap" | "no_leap" | "365_day" => Some(Calendar::NoLeap),
            "all_leap" | "366_day" => Some(Calendar::AllLeap),
            "360_day" => Some(Calendar::Day360),
            "julian" => Some(Calendar::Julian),
            _ => None,
        }
    }

    /// The canonical CF name.
    pub fn name(self) -> &'static str {
        match self {
            Calendar::Standard => "standard",
            Calendar::ProlepticGregorian => "proleptic_gregorian",
            Calendar::NoLeap => "noleap",
            Calendar::AllLeap => "all_leap",
            Calendar::Day360 => "360_day",
            Calendar::Julian => "julian",
        }
    }

    /// Days in `year` of this calendar (the standard calendar uses Gregorian rules; years before
    /// the 1582 reform are not supported for decoding anyway).
    pub fn days_in_year(self, year: i32) -> usize {
        match self {
            Calendar::Standard | Calendar::ProlepticGregorian => real_days_in_year(year),
            Calendar::NoLeap => 365,
            Calendar::AllLeap => 366,
            Calendar::Day360 => 360,
            Calendar::Julian => {
                if year.rem_euclid(4) == 0 {
                    366
                } else {
                    365
                }
            }
        }
    }

    /// Days in `month` (1..=12) of `year`.
    fn days_in_month(self, year: i32, month: u32) -> u32 {
        match self {
            Calendar::Day360 => 30,
            Calendar::NoLeap => MONTH_DAYS[month as usize - 1],
            Calendar::AllLeap => MONTH_DAYS_LEAP[month as usize - 1],
            Calendar::Julian => {
                if year.rem_euclid(4) == 0 {
                    MONTH_DAYS_LEAP[month as usize - 1]
                } else {
                    MONTH_DAYS[month as usize - 1]
                }
            }
            Calendar::Standard | Calendar::ProlepticGregorian => {
                if is_leap_year(year) {
                    MONTH_DAYS_LEAP[month as usize - 1]
                } else {
                    MONTH_DAYS[month as usize - 1]
                }
            }
        }
    }
}

impl fmt::Display for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const MONTH_DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const MONTH_DAYS_LEAP: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// Proleptic Gregorian leap-year rule.
pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Real days in `year`: 366 in (proleptic Gregorian) leap years, else 365. This is the length of
/// every output series for that year.
pub fn real_days_in_year(year: i32) -> usize {
    if is_leap_year(year) { 366 } else { 365 }
}

/// Where day `doy0` (0-based day of year in the file's calendar) of model year `year` lands in the
/// real year's series (0-based slot), or `None` when the day has no place there (the model's Feb
/// 29 of an `all_leap` calendar in a common year).
pub fn slot_of(calendar: Calendar, year: i32, doy0: usize) -> Option<usize> {
    let leap = is_leap_year(year);
    match calendar {
        Calendar::Standard | Calendar::ProlepticGregorian => Some(doy0),
        Calendar::NoLeap => Some(if leap && doy0 >= 59 { doy0 + 1 } else { doy0 }),
        Calendar::AllLeap | Calendar::Julian => {
            let model_leap = calendar == Calendar::AllLeap || year.rem_euclid(4) == 0;
            if leap || !model_leap || doy0 < 59 {
                Some(doy0)
            } else if doy0 == 59 {
                None
            } else {
                Some(doy0 - 1)
            }
        }
        Calendar::Day360 => {
            // xarray `_interpolate_day_of_year`: np.round(D * doy / 360), doy 1-based,
            // numpy rounds halves to even.
            let days = real_days_in_year(year);
            let num = days * (doy0 + 1);
            let (q, r) = (num / 360, num % 360);
            let doy1 = if 2 * r > 360 || (2 * r == 360 && q % 2 == 1) {
                q + 1
            } else {
                q
            };
            Some(doy1 - 1)
        }
    }
}

/// A date in some calendar (no validation of its own; see [`Calendar`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year (astronomical numbering).
    pub year: i32,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of month, 1-based.
    pub day: u32,
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn gregorian_days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`gregorian_days`].
fn gregorian_date(z: i64) -> Date {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Date {
        year: y as i32,
        month: m as u32,
        day: d as u32,
    }
}

/// Days since 1970-01-01 (Gregorian) of a Julian-calendar date.
fn julian_days(y: i64, m: i64, d: i64) -> i64 {
    // Julian day number (Fliegel & Van Flandern style, valid for all years via floor division).
    let a = (14 - m).div_euclid(12);
    let yy = y + 4800 - a;
    let mm = m + 12 * a - 3;
    let jdn = d + (153 * mm + 2).div_euclid(5) + 365 * yy + yy.div_euclid(4) - 32_083;
    jdn - 2_440_588
}

/// Inverse of [`julian_days`].
fn julian_date(z: i64) -> Date {
    let jdn = z + 2_440_588;
    let c = jdn + 32_082;
    let d = (4 * c + 3).div_euclid(1461);
    let e = c - (1461 * d).div_euclid(4);
    let m = (5 * e + 2).div_euclid(153);
    let day = e - (153 * m + 2).div_euclid(5) + 1;
    let month = m + 3 - 12 * m.div_euclid(10);
    let year = d - 4800 + m.div_euclid(10);
    Date {
        year: year as i32,
        month: month as u32,
        day: day as u32,
    }
}

/// Day number of 1582-10-15 (Gregorian), the first day of the Gregorian calendar.
fn reform_day() -> i64 {
    gregorian_days(1582, 10, 15)
}

/// Cumulative days before `month` in a calendar year of fixed-length months.
fn days_before_month(table: &[u32; 12], month: u32) -> i64 {
    table[..month as usize - 1]
        .iter()
        .map(|&d| i64::from(d))
        .sum()
}

/// Day number of `date` in `calendar`. Day numbers are only comparable within one calendar.
/// For the standard calendar dates before 1582-10-15 are read as Julian dates (CF).
/// Returns `None` when the date does not exist in the calendar.
pub(crate) fn day_number(calendar: Calendar, date: Date) -> Option<i64> {
    let Date { year, month, day } = date;
    if !(1..=12).contains(&month) || day == 0 || day > calendar.days_in_month(year, month).max(29) {
        return None;
    }
    let (y, m, d) = (i64::from(year), i64::from(month), i64::from(day));
    Some(match calendar {
        Calendar::ProlepticGregorian => {
            if day > calendar.days_in_month(year, month) {
                return None;
            }
            gregorian_days(y, m, d)
        }
        Calendar::Standard => {
            if (year, month, day) < (1582, 10, 15) {
                // Julian rules: Feb 29 every 4th year.
                let julian_leap = year.rem_euclid(4) == 0;
                let max = if month == 2 {
                    if julian_leap { 29 } else { 28 }
                } else {
                    MONTH_DAYS[month as usize - 1]
                };
                if day > max {
                    return None;
                }
                julian_days(y, m, d)
            } else {
                if day > calendar.days_in_month(year, month) {
                    return None;
                }
                gregorian_days(y, m, d)
            }
        }
        Calendar::NoLeap => {
            if day > calendar.days_in_month(year, month) {
                return None;
            }
            y * 365 + days_before_month(&MONTH_DAYS, month) + d - 1
        }
        Calendar::AllLeap => {
            if day > calendar.days_in_month(year, month) {
                return None;
            }
            y * 366 + days_before_month(&MONTH_DAYS_LEAP, month) + d - 1
        }
        Calendar::Day360 => {
            if day > 30 {
                return None;
            }
            y * 360 + (m - 1) * 30 + d - 1
        }
        Calendar::Julian => {
            if day > calendar.days_in_month(year, month) {
                return None;
            }
            julian_days(y, m, d)
        }
    })
}

/// A decoded day: its date in the file's calendar and its 0-based day of year there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ModelDay {
    pub date: Date,
    pub doy0: usize,
}

/// Error of [`model_day`]: the day is a Julian date of the standard calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BeforeReform(pub Date);

/// Date and day of year of day number `n` in `calendar` (inverse of [`day_number`]).
pub(crate) fn model_day(calendar: Calendar, n: i64) -> Result<ModelDay, BeforeReform> {
    match calendar {
        Calendar::Standard | Calendar::ProlepticGregorian => {
            if calendar == Calendar::Standard && n < reform_day() {
                return Err(BeforeReform(julian_date(n)));
            }
            let date = gregorian_date(n);
            let jan1 = gregorian_days(i64::from(date.year), 1, 1);
            Ok(ModelDay {
                date,
                doy0: (n - jan1) as usize,
            })
        }
        Calendar::Julian => {
            let date = julian_date(n);
            let jan1 = julian_days(i64::from(date.year), 1, 1);
            Ok(ModelDay {
                date,
                doy0: (n - jan1) as usize,
            })
        }
        Calendar::NoLeap | Calendar::AllLeap | Calendar::Day360 => {
            let (len, table): (i64, Option<&[u32; 12]>) = match calendar {
                Calendar::NoLeap => (365, Some(&MONTH_DAYS)),
                Calendar::AllLeap => (366, Some(&MONTH_DAYS_LEAP)),
                _ => (360, None),
            };
            let year = n.div_euclid(len);
            let doy0 = n.rem_euclid(len);
            let (month, day) = match table {
                None => (doy0 / 30 + 1, doy0 % 30 + 1),
                Some(t) => {
                    let mut rest = doy0;
                    let mut month = 1;
                    for &md in t.iter() {
                        if rest < i64::from(md) {
                            break;
                        }
                        rest -= i64::from(md);
                        month += 1;
                    }
                    (month, rest + 1)
                }
            };
            Ok(ModelDay {
                date: Date {
                    year: year as i32,
                    month: month as u32,
                    day: day as u32,
                },
                doy0: doy0 as usize,
            })
        }
    }
}

/// Parsed CF time units: `<unit> since <reference date>[ <time>][ <zone>]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeUnits {
    /// Seconds per unit (86400 for days, 3600 for hours, 60 for minutes, 1 for seconds).
    pub unit_seconds: f64,
    /// Reference date (in the file's calendar).
    pub reference: Date,
    /// Seconds after midnight of the reference time, after applying any time-zone offset
    /// (may be negative or exceed a day).
    pub reference_seconds: f64,
}

impl TimeUnits {
    /// Parses CF time units such as `days since 1850-01-01`, `hours since 1900-1-1 00:00:0.0`,
    /// `days since 1-1-1 00:00:00`, `seconds since 1970-01-01T00:00:00Z`.
    ///
    /// # Errors
    /// A message saying what is wrong (the caller adds the file).
    pub fn parse(units: &str) -> Result<TimeUnits, String> {
        let lower = units.trim().to_ascii_lowercase();
        let (unit, rest) = lower
            .split_once(" since ")
            .ok_or_else(|| "expected `<days|hours|minutes|seconds> since <date>`".to_string())?;
        let unit_seconds = match unit.trim() {
            "days" | "day" | "d" => 86_400.0,
            "hours" | "hour" | "hrs" | "hr" | "h" => 3_600.0,
            "minutes" | "minute" | "mins" | "min" => 60.0,
            "seconds" | "second" | "secs" | "sec" | "s" => 1.0,
            other => {
                return Err(format!(
                    "unsupported time unit `{other}`; expected days, hours, minutes or seconds"
                ));
            }
        };
        let rest = rest.trim();
        // Split "date[ T]time[ zone]".
        let (date_part, mut time_part) = match rest.find([' ', 't']) {
            Some(i) => (&rest[..i], rest[i + 1..].trim()),
            None => (rest, ""),
        };
        let reference = parse_date(date_part)
            .ok_or_else(|| format!("cannot read reference date `{date_part}`"))?;
        let mut zone_seconds = 0.0;
        // Zone: trailing "z", "utc", "gmt", or " +hh[:mm]" / "-hh[:mm]".
        for suffix in ["utc", "gmt", "z"] {
            if let Some(stripped) = time_part.strip_suffix(suffix) {
                time_part = stripped.trim();
                break;
            }
        }
        let (clock, zone) = split_zone(time_part);
        if let Some(zone) = zone {
            zone_seconds =
                parse_zone(zone).ok_or_else(|| format!("cannot read time zone `{zone}`"))?;
        }
        let clock_seconds = if clock.is_empty() {
            0.0
        } else {
            parse_clock(clock).ok_or_else(|| format!("cannot read reference time `{clock}`"))?
        };
        Ok(TimeUnits {
            unit_seconds,
            reference,
            reference_seconds: clock_seconds - zone_seconds,
        })
    }
}

fn parse_date(s: &str) -> Option<Date> {
    let mut it = s.split('-');
    let year: i32 = it.next()?.trim().parse().ok()?;
    let month: u32 = it.next()?.trim().parse().ok()?;
    let day: u32 = match it.next() {
        Some(d) => d.trim().parse().ok()?,
        None => 1,
    };
    if it.next().is_some() {
        return None;
    }
    Some(Date { year, month, day })
}

/// Splits "hh:mm:ss +05:30" / "hh:mm:ss-05" into clock and zone.
fn split_zone(s: &str) -> (&str, Option<&str>) {
    let s = s.trim();
    if s.is_empty() {
        return (s, None);
    }
    if let Some((clock, zone)) = s.split_once(' ') {
        return (clock.trim(), Some(zone.trim()));
    }
    // A sign after the clock starts a zone ("00:00:00+00:00").
    if let Some(i) = s[1..].find(['+', '-']) {
        return (&s[..i + 1], Some(&s[i + 1..]));
    }
    (s, None)
}

fn parse_zone(z: &str) -> Option<f64> {
    let z = z.trim();
    if z.is_empty() {
        return Some(0.0);
    }
    let (sign, body) = match z.as_bytes()[0] {
        b'+' => (1.0, &z[1..]),
        b'-' => (-1.0, &z[1..]),
        _ => (1.0, z),
    };
    let (h, m) = if let Some((h, m)) = body.split_once(':') {
        (h.parse::<f64>().ok()?, m.parse::<f64>().ok()?)
    } else if body.len() == 4 {
        (
            body[..2].parse::<f64>().ok()?,
            body[2..].parse::<f64>().ok()?,
        )
    } else {
        (body.parse::<f64>().ok()?, 0.0)
    };
    Some(sign * (h * 3600.0 + m * 60.0))
}

fn parse_clock(s: &str) -> Option<f64> {
    let mut it = s.split(':');
    let h: f64 = it.next()?.trim().parse().ok()?;
    let m: f64 = it.next().map_or(Some(0.0), |v| v.trim().parse().ok())?;
    let sec: f64 = it.next().map_or(Some(0.0), |v| v.trim().parse().ok())?;
    if it.next().is_some()
        || !(0.0..24.0).contains(&h)
        || !(0.0..60.0).contains(&m)
        || !(0.0..=61.0).contains(&sec)
    {
        return None;
    }
    Some(h * 3600.0 + m * 60.0 + sec)
}

/// Day offset (floor) from the reference day of a time value, rounding to the millisecond first so
/// that values a hair below midnight (float noise) land on the intended day.
pub(crate) fn day_offset(units: &TimeUnits, value: f64) -> Option<i64> {
    if !value.is_finite() {
        return None;
    }
    let secs = ((value * units.unit_seconds) * 1000.0).round() / 1000.0 + units.reference_seconds;
    let days = (secs / 86_400.0).floor();
    if days.abs() > 1e12 {
        None
    } else {
        Some(days as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leap_rules() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(1980));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2100));
        assert!(!is_leap_year(1981));
        assert_eq!(real_days_in_year(1600), 366);
        assert_eq!(real_days_in_year(1700), 365);
    }

    #[test]
    fn calendar_names() {
        assert_eq!(Calendar::from_cf("gregorian"), Some(Calendar::Standard));
        assert_eq!(Calendar::from_cf(" Standard "), Some(Calendar::Standard));
        assert_eq!(Calendar::from_cf("365_day"), Some(Calendar::NoLeap));
        assert_eq!(Calendar::from_cf("366_day"), Some(Calendar::AllLeap));
        assert_eq!(Calendar::from_cf("360_day"), Some(Calendar::Day360));
        assert_eq!(Calendar::from_cf("julian"), Some(Calendar::Julian));
        assert_eq!(Calendar::from_cf("noleap_but_not"), None);
        assert_eq!(Calendar::from_cf("none"), None);
    }

    #[test]
    fn gregorian_day_numbers() {
        assert_eq!(gregorian_days(1970, 1, 1), 0);
        assert_eq!(gregorian_days(2000, 3, 1), 11_017);
        assert_eq!(
            gregorian_date(11_017),
            Date {
                year: 2000,
                month: 3,
                day: 1
            }
        );
        // 0001-01-01 to 1960-01-01: 1959 * 365 + 474 leap days (MANIFEST #12: 715509.5 = 1960-01-01 12:00).
        let d = gregorian_days(1960, 1, 1) - gregorian_days(1, 1, 1);
        assert_eq!(d, 715_509);
        for n in [-800_000, -1, 0, 59, 60, 10_000, 2_000_000] {
            let date = gregorian_date(n);
            assert_eq!(
                gregorian_days(
                    i64::from(date.year),
                    i64::from(date.month),
                    i64::from(date.day)
                ),
                n
            );
        }
    }

    #[test]
    fn julian_reform() {
        // Julian 1582-10-04 is followed by Gregorian 1582-10-15.
        assert_eq!(julian_days(1582, 10, 4) + 1, gregorian_days(1582, 10, 15));
        assert_eq!(
            julian_date(julian_days(1500, 2, 29)),
            Date {
                year: 1500,
                month: 2,
                day: 29
            }
        );
        let std = Calendar::Standard;
        let r = day_number(
            std,
            Date {
                year: 1582,
                month: 10,
                day: 4,
            },
        )
        .unwrap();
        assert!(model_day(std, r).is_err());
        let md = model_day(std, r + 1).unwrap();
        assert_eq!(
            md.date,
            Date {
                year: 1582,
                month: 10,
                day: 15
            }
        );
        // 1500 is a Julian leap year but not a Gregorian one.
        assert!(
            day_number(
                std,
                Date {
                    year: 1500,
                    month: 2,
                    day: 29
                }
            )
            .is_some()
        );
        assert!(
            day_number(
                Calendar::ProlepticGregorian,
                Date {
                    year: 1500,
                    month: 2,
                    day: 29
                }
            )
            .is_none()
        );
    }

    #[test]
    fn fixed_calendars_round_trip() {
        // MANIFEST #5: days since 0001-01-01, noleap; 729635 = 2000-01-01.
        let ref_day = day_number(
            Calendar::NoLeap,
            Date {
                year: 1,
                month: 1,
                day: 1,
            },
        )
        .unwrap();
        let md = model_day(Calendar::NoLeap, ref_day + 729_635).unwrap();
        assert_eq!(
            md.date,
            Date {
                year: 2000,
                month: 1,
                day: 1
            }
        );
        assert_eq!(md.doy0, 0);
        let n = day_number(
            Calendar::Day360,
            Date {
                year: 1961,
                month: 12,
                day: 30,
            },
        )
        .unwrap();
        let md = model_day(Calendar::Day360, n).unwrap();
        assert_eq!(md.doy0, 359);
        assert_eq!(
            md.date,
            Date {
                year: 1961,
                month: 12,
                day: 30
            }
        );
        assert!(
            day_number(
                Calendar::NoLeap,
                Date {
                    year: 2000,
                    month: 2,
                    day: 29
                }
            )
            .is_none()
        );
        assert!(
            day_number(
                Calendar::Day360,
                Date {
                    year: 2000,
                    month: 2,
                    day: 30
                }
            )
            .is_some()
        );
        let n = day_number(
            Calendar::AllLeap,
            Date {
                year: 2001,
                month: 3,
                day: 1,
            },
        )
        .unwrap();
        assert_eq!(model_day(Calendar::AllLeap, n).unwrap().doy0, 60);
    }

    #[test]
    fn noleap_in_leap_year_leaves_feb29_empty() {
        let slots: Vec<usize> = (0..365)
            .map(|d| slot_of(Calendar::NoLeap, 2000, d).unwrap())
            .collect();
        assert!(!slots.contains(&59));
        assert_eq!(slots[58], 58);
        assert_eq!(slots[59], 60);
        assert_eq!(slots[364], 365);
        // Common year: identity.
        assert!((0..365).all(|d| slot_of(Calendar::NoLeap, 2001, d) == Some(d)));
    }

    #[test]
    fn julian_calendar() {
        // Julian 2015-01-01 is Gregorian 2015-01-14; the model date keeps its day of year.
        let n = day_number(
            Calendar::Julian,
            Date {
                year: 2015,
                month: 1,
                day: 1,
            },
        )
        .unwrap();
        assert_eq!(n, gregorian_days(2015, 1, 14));
        assert_eq!(model_day(Calendar::Julian, n).unwrap().doy0, 0);
        assert_eq!(Calendar::Julian.days_in_year(2100), 366);
        // 2100: Julian leap year, Gregorian common year → model Feb 29 dropped.
        assert_eq!(slot_of(Calendar::Julian, 2100, 59), None);
        assert_eq!(slot_of(Calendar::Julian, 2100, 60), Some(59));
        assert!((0..366).all(|d| slot_of(Calendar::Julian, 2000, d) == Some(d)));
        assert!((0..365).all(|d| slot_of(Calendar::Julian, 2015, d) == Some(d)));
    }

    #[test]
    fn all_leap_in_common_year_drops_feb29() {
        assert_eq!(slot_of(Calendar::AllLeap, 2001, 58), Some(58));
        assert_eq!(slot_of(Calendar::AllLeap, 2001, 59), None);
        assert_eq!(slot_of(Calendar::AllLeap, 2001, 60), Some(59));
        assert_eq!(slot_of(Calendar::AllLeap, 2001, 365), Some(364));
        assert!((0..366).all(|d| slot_of(Calendar::AllLeap, 2004, d) == Some(d)));
    }

    /// The real days (1-based) that no 360-day model day maps to. Derived by hand from xarray's
    /// `np.round(D * doy / 360)` with numpy's half-to-even rounding; the halves fall on doy 36,
    /// 108, 180, 252, 324 (D = 365: 36.5→36, 109.5→110, 182.5→182, 255.5→256, 328.5→328) and on
    /// doy 30, 90, 150, 210, 270, 330 (D = 366: 30.5→30, 91.5→92, 152.5→152, 213.5→214,
    /// 274.5→274, 335.5→336). They agree with the dates listed in xarray's `convert_calendar`
    /// docs (Feb 6, Apr 19, Jul 2, Sep 12, Nov 25; and Jan 31, Mar 31, Jun 1, Jul 31, Oct 1,
    /// Nov 30 in a leap year).
    #[test]
    fn day360_spread_matches_xarray() {
        for (year, days, empty) in [
            (1961, 365, vec![37, 109, 183, 255, 329]),
            (2000, 366, vec![31, 91, 153, 213, 275, 335]),
        ] {
            let slots: Vec<usize> = (0..360)
                .map(|d| slot_of(Calendar::Day360, year, d).unwrap())
                .collect();
            assert!(slots.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
            assert_eq!(slots[0], 0);
            assert_eq!(slots[359], days - 1);
            let missing: Vec<usize> = (0..days)
                .filter(|s| !slots.contains(s))
                .map(|s| s + 1)
                .collect();
            assert_eq!(missing, empty, "year {year}");
        }
        // Spot values: model doy 36 (1-based) → real doy 36; 37 → 38; 108 → 110 (365-day year).
        assert_eq!(slot_of(Calendar::Day360, 1961, 35), Some(35));
        assert_eq!(slot_of(Calendar::Day360, 1961, 36), Some(37));
        assert_eq!(slot_of(Calendar::Day360, 1961, 107), Some(109));
        // Leap year: doy 30 → 30 (30.5 rounds to even), doy 90 → 92.
        assert_eq!(slot_of(Calendar::Day360, 2000, 29), Some(29));
        assert_eq!(slot_of(Calendar::Day360, 2000, 89), Some(91));
    }

    #[test]
    fn time_units_parse() {
        let u = TimeUnits::parse("days since 1850-01-01").unwrap();
        assert_eq!(u.unit_seconds, 86_400.0);
        assert_eq!(
            u.reference,
            Date {
                year: 1850,
                month: 1,
                day: 1
            }
        );
        assert_eq!(u.reference_seconds, 0.0);
        let u = TimeUnits::parse("days since 1-1-1 00:00:00").unwrap();
        assert_eq!(
            u.reference,
            Date {
                year: 1,
                month: 1,
                day: 1
            }
        );
        let u = TimeUnits::parse("hours since 1900-1-1 06:30:0.0").unwrap();
        assert_eq!(u.unit_seconds, 3600.0);
        assert_eq!(u.reference_seconds, 6.0 * 3600.0 + 1800.0);
        let u = TimeUnits::parse("seconds since 1970-01-01T00:00:00Z").unwrap();
        assert_eq!(u.unit_seconds, 1.0);
        assert_eq!(
            u.reference,
            Date {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        let u = TimeUnits::parse("minutes since 2000-01-01 12:00:00 +02:00").unwrap();
        assert_eq!(u.reference_seconds, 10.0 * 3600.0);
        let u = TimeUnits::parse("Days since 0001-01-01 00:00:00 UTC").unwrap();
        assert_eq!(
            u.reference,
            Date {
                year: 1,
                month: 1,
                day: 1
            }
        );
        assert!(TimeUnits::parse("days after 1850-01-01").is_err());
        assert!(TimeUnits::parse("fortnights since 1850-01-01").is_err());
        assert!(TimeUnits::parse("days since yesterday").is_err());
        assert!(TimeUnits::parse("days since 1850-01-01 25:00").is_err());
    }

    #[test]
    fn time_values_floor_to_their_date() {
        let u = TimeUnits::parse("days since 1850-01-01").unwrap();
        assert_eq!(day_offset(&u, 0.5), Some(0));
        assert_eq!(day_offset(&u, 0.999_999_999_99), Some(1)); // float noise below midnight
        assert_eq!(day_offset(&u, 47_481.5), Some(47_481));
        assert_eq!(day_offset(&u, -0.5), Some(-1));
        let h = TimeUnits::parse("hours since 1850-01-01 12:00").unwrap();
        assert_eq!(day_offset(&h, 11.0), Some(0));
        assert_eq!(day_offset(&h, 12.0), Some(1));
        assert_eq!(day_offset(&u, f64::NAN), None);
        // MANIFEST #3: days since 1850-1-1, 47786.375 = 1980-11-01 09:00.
        let n = day_number(Calendar::Standard, u.reference).unwrap()
            + day_offset(&u, 47_786.375).unwrap();
        assert_eq!(
            model_day(Calendar::Standard, n).unwrap().date,
            Date {
                year: 1980,
                month: 11,
                day: 1
            }
        );
    }
}
