//! Time steps → day slots of a year, and the decoded [`YearBlock`].

use std::path::Path;

use ndarray::{Array2, ArrayView1};

use crate::block::StepSlot;
use crate::calendar::{self, Calendar, Date, ModelDay, TimeUnits};
use crate::error::DecodeError;
use crate::grid::CellIndex;

/// The decoded time axis of a file: one model day per step, strictly increasing.
#[derive(Debug, Clone)]
pub(crate) struct TimeAxis {
    pub calendar: Calendar,
    days: Vec<ModelDay>,
}

impl TimeAxis {
    /// Decodes raw time values.
    ///
    /// # Errors
    /// Bad units, a reference date that does not exist in the calendar, a non-finite time value,
    /// a pre-1582 standard-calendar date, or steps that are not strictly increasing by day.
    pub fn new(
        path: &Path,
        calendar: Calendar,
        units_attr: &str,
        values: &[f64],
    ) -> Result<TimeAxis, DecodeError> {
        let bad_units = |detail: String| DecodeError::BadTimeUnits {
            path: path.to_path_buf(),
            units: units_attr.to_string(),
            detail,
        };
        let units = TimeUnits::parse(units_attr).map_err(bad_units)?;
        let ref_day = calendar::day_number(calendar, units.reference).ok_or_else(|| {
            bad_units(format!(
                "reference date {} does not exist in the {calendar} calendar",
                units.reference
            ))
        })?;
        let mut days = Vec::with_capacity(values.len());
        let mut prev: Option<i64> = None;
        for (i, &v) in values.iter().enumerate() {
            let off = calendar::day_offset(&units, v).ok_or_else(|| {
                bad_units(format!(
                    "time value {v} at step {i} cannot be converted to a date"
                ))
            })?;
            let n = ref_day + off;
            let md = calendar::model_day(calendar, n).map_err(|calendar::BeforeReform(date)| {
                DecodeError::JulianDate {
                    path: path.to_path_buf(),
                    date: date.to_string(),
                    calendar: calendar.name().to_string(),
                }
            })?;
            if let Some(p) = prev
                && n <= p
            {
                return Err(DecodeError::UnorderedTime {
                    path: path.to_path_buf(),
                    index: i,
                    date: md.date.to_string(),
                    previous: days
                        .last()
                        .map(|d: &ModelDay| d.date.to_string())
                        .unwrap_or_default(),
                });
            }
            prev = Some(n);
            days.push(md);
        }
        Ok(TimeAxis { calendar, days })
    }

    /// Number of time steps.
    pub fn len(&self) -> usize {
        self.days.len()
    }

    /// Date of a step in the file's calendar.
    pub fn date(&self, index: usize) -> Date {
        self.days[index].date
    }

    /// Years with at least one step, ascending.
    pub fn years(&self) -> Vec<i32> {
        let mut years: Vec<i32> = self.days.iter().map(|d| d.date.year).collect();
        years.dedup();
        years
    }

    /// The steps of `year` and the real-year slots they land in (see [`calendar::slot_of`]).
    ///
    /// # Errors
    /// [`DecodeError::IncompleteYear`] when any day of the year (in the file's calendar) is
    /// absent (unless `allow_incomplete` and at least one is present);
    /// [`DecodeError::DaysOutsideYear`] when `single_year` and the file holds other days.
    pub fn plan_year(
        &self,
        path: &Path,
        year: i32,
        single_year: bool,
        allow_incomplete: bool,
    ) -> Result<Vec<StepSlot>, DecodeError> {
        let start = self.days.partition_point(|d| d.date.year < year);
        let end = self.days.partition_point(|d| d.date.year <= year);
        let expected = self.calendar.days_in_year(year);
        let found = end - start;
        if found != expected && !(allow_incomplete && found > 0) {
            let detail = if found == 0 {
                match (self.days.first(), self.days.last()) {
                    (Some(a), Some(b)) => format!("; the file covers {} .. {}", a.date, b.date),
                    _ => "; the file has no time steps".to_string(),
                }
            } else {
                // Steps are strictly increasing within the year, so the gap is at the first
                // day whose day of year differs from its position.
                let first_gap = (start..end)
                    .find(|&i| self.days[i].doy0 != i - start)
                    .map_or_else(
                        || format!("; missing from day {} of the year on", found + 1),
                        |i| format!("; first missing day is day {} of the year", i - start + 1),
                    );
                format!(
                    "{first_gap} (steps {} .. {})",
                    self.days[start].date,
                    self.days[end - 1].date
                )
            };
            return Err(DecodeError::IncompleteYear {
                path: path.to_path_buf(),
                year,
                found,
                expected,
                calendar: self.calendar.name().to_string(),
                detail,
            });
        }
        if single_year && (start > 0 || end < self.days.len()) {
            let first = if start > 0 {
                self.days[0].date
            } else {
                self.days[end].date
            };
            return Err(DecodeError::DaysOutsideYear {
                path: path.to_path_buf(),
                year,
                count: self.days.len() - found,
                first: first.to_string(),
            });
        }
        Ok((start..end)
            .filter_map(|i| {
                calendar::slot_of(self.calendar, year, self.days[i].doy0).map(|slot| StepSlot {
                    time_index: i,
                    slot,
                })
            })
            .collect())
    }
}

/// One variable-year of decoded series: `cells × days`, cell-major.
///
/// Validity is represented by NaN: `_FillValue`, `missing_value` and NaN in the file all decode
/// to NaN, and so do day slots no time step lands in (Feb 29 of a 365-day calendar in a leap
/// year, the 5–6 days a 360-day year is spread over). Every non-NaN value is valid.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct YearBlock {
    /// Variable name.
    pub variable: String,
    /// The variable's `units` attribute, if any (values stay in these units).
    pub units: Option<String>,
    /// The year (real, proleptic Gregorian; the day axis has 365 or 366 slots).
    pub year: i32,
    /// The file's calendar.
    pub calendar: Calendar,
    /// The cells, one per row of `values`, in ascending storage order (lat-major), no duplicates.
    pub cells: Vec<CellIndex>,
    /// Values, `cells.len() × days()`, missing = NaN.
    pub values: Array2<f32>,
}

impl Default for YearBlock {
    /// An empty block (no variable, year 0, no cells, `0 × 0` values) to decode into with
    /// [`GridFile::decode_year_into`](crate::GridFile::decode_year_into).
    fn default() -> Self {
        YearBlock {
            variable: String::new(),
            units: None,
            year: 0,
            calendar: Calendar::Standard,
            cells: Vec::new(),
            values: Array2::default((0, 0)),
        }
    }
}

impl YearBlock {
    /// Number of day slots: 366 in leap years, else 365.
    pub fn days(&self) -> usize {
        self.values.ncols()
    }

    /// Number of cells (rows).
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// True when the block has no cells.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The series of row `i` (one value per day slot, NaN = missing).
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn series(&self, i: usize) -> ArrayView1<'_, f32> {
        self.values.row(i)
    }

    /// The row of `cell`, if the block holds it.
    pub fn row_of(&self, cell: CellIndex) -> Option<usize> {
        self.cells.binary_search(&cell).ok()
    }

    /// True when the value of row `i` on day slot `day` is valid (not missing).
    ///
    /// # Panics
    /// When `i` or `day` is out of range.
    pub fn is_valid(&self, i: usize, day: usize) -> bool {
        !self.values[[i, day]].is_nan()
    }

    /// Validity of row `i`, one flag per day slot.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn validity(&self, i: usize) -> impl Iterator<Item = bool> + '_ {
        self.values.row(i).into_iter().map(|v| !v.is_nan())
    }

    /// Number of valid values in the block.
    pub fn valid_count(&self) -> usize {
        self.values.iter().filter(|v| !v.is_nan()).count()
    }

    /// Number of valid values in row `i`.
    ///
    /// # Panics
    /// When `i >= self.len()`.
    pub fn valid_count_row(&self, i: usize) -> usize {
        self.values.row(i).iter().filter(|v| !v.is_nan()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn p() -> PathBuf {
        PathBuf::from("/data/x.nc")
    }

    fn daily(start: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| start + i as f64).collect()
    }

    #[test]
    fn proleptic_leap_year_has_366_slots() {
        // MANIFEST #1: days since 1850-01-01, 47481.5 .. 47846.5 = 1980 (366 steps).
        let t = TimeAxis::new(
            &p(),
            Calendar::ProlepticGregorian,
            "days since 1850-01-01",
            &daily(47_481.5, 366),
        )
        .unwrap();
        assert_eq!(t.years(), vec![1980]);
        let plan = t.plan_year(&p(), 1980, true, false).unwrap();
        assert_eq!(plan.len(), 366);
        assert!(
            plan.iter()
                .enumerate()
                .all(|(i, s)| s.time_index == i && s.slot == i)
        );
    }

    #[test]
    fn noleap_multi_year_extraction() {
        // MANIFEST #5: days since 0001-01-01 00:00:00, noleap, 729635.0 = 2000-01-01, 3650 steps.
        let t = TimeAxis::new(
            &p(),
            Calendar::NoLeap,
            "days since 0001-01-01 00:00:00",
            &daily(729_635.0, 3650),
        )
        .unwrap();
        assert_eq!(t.years(), (2000..=2009).collect::<Vec<_>>());
        let plan = t.plan_year(&p(), 2000, false, false).unwrap();
        assert_eq!(plan.len(), 365);
        assert_eq!(
            plan[0],
            StepSlot {
                time_index: 0,
                slot: 0
            }
        );
        assert_eq!(plan[58].slot, 58);
        assert_eq!(plan[59].slot, 60); // Mar 1 → slot 60, slot 59 (Feb 29) empty
        let plan = t.plan_year(&p(), 2001, false, false).unwrap();
        assert_eq!(
            plan[0],
            StepSlot {
                time_index: 365,
                slot: 0
            }
        );
        assert_eq!(
            plan[364],
            StepSlot {
                time_index: 729,
                slot: 364
            }
        );
        assert!(matches!(
            t.plan_year(&p(), 2000, true, false),
            Err(DecodeError::DaysOutsideYear { count: 3285, .. })
        ));
        assert!(matches!(
            t.plan_year(&p(), 2010, false, false),
            Err(DecodeError::IncompleteYear { found: 0, .. })
        ));
    }

    #[test]
    fn day360_year() {
        // MANIFEST #4: days since 1850-01-01, 360_day, 39960.5 .. 40319.5 = 1961.
        let t = TimeAxis::new(
            &p(),
            Calendar::Day360,
            "days since 1850-01-01",
            &daily(39_960.5, 360),
        )
        .unwrap();
        assert_eq!(t.years(), vec![1961]);
        let plan = t.plan_year(&p(), 1961, true, false).unwrap();
        assert_eq!(plan.len(), 360);
        assert_eq!(plan.last().unwrap().slot, 364);
    }

    #[test]
    fn incomplete_and_partial_years() {
        // MANIFEST #3: starts 1980-11-01: 1980 is incomplete, 1981 complete.
        let t = TimeAxis::new(
            &p(),
            Calendar::Standard,
            "days since 1850-1-1 00:00:00",
            &daily(47_786.375, 3713),
        )
        .unwrap();
        assert_eq!(t.years().first(), Some(&1980));
        assert_eq!(t.years().last(), Some(&1990));
        let err = t.plan_year(&p(), 1980, false, false).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::IncompleteYear {
                    found: 61,
                    expected: 366,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/data/x.nc"));
        assert_eq!(t.plan_year(&p(), 1984, false, false).unwrap().len(), 366);
        // A gap in the middle of a year.
        let mut v = daily(0.5, 365);
        v.remove(100);
        let t = TimeAxis::new(
            &p(),
            Calendar::ProlepticGregorian,
            "days since 1981-01-01",
            &v,
        )
        .unwrap();
        let err = t.plan_year(&p(), 1981, false, false).unwrap_err();
        assert!(
            err.to_string().contains("first missing day is day 101"),
            "{err}"
        );
        // Allowed incomplete: the 364 present days keep their slots, day 101 stays empty.
        let plan = t.plan_year(&p(), 1981, false, true).unwrap();
        assert_eq!(plan.len(), 364);
        assert_eq!(
            plan[100],
            StepSlot {
                time_index: 100,
                slot: 101
            }
        );
    }

    #[test]
    fn duplicate_and_unordered_steps_rejected() {
        let err = TimeAxis::new(
            &p(),
            Calendar::NoLeap,
            "days since 2000-01-01",
            &[0.0, 1.0, 1.5],
        )
        .unwrap_err();
        assert!(
            matches!(err, DecodeError::UnorderedTime { index: 2, .. }),
            "{err}"
        );
        let err = TimeAxis::new(
            &p(),
            Calendar::NoLeap,
            "days since 2000-01-01",
            &[0.0, 2.0, 1.0],
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::UnorderedTime { index: 2, .. }));
    }

    #[test]
    fn standard_before_reform_rejected() {
        let err =
            TimeAxis::new(&p(), Calendar::Standard, "days since 1500-01-01", &[0.0]).unwrap_err();
        assert!(matches!(err, DecodeError::JulianDate { .. }), "{err}");
        // A Julian reference date with data after the reform is fine: 0001-01-01 (Julian) +
        // 577,737 days = 1582-10-15 (Julian day numbers 1,721,424 and 2,299,161).
        let t = TimeAxis::new(
            &p(),
            Calendar::Standard,
            "days since 0001-01-01",
            &[577_737.0],
        )
        .unwrap();
        assert_eq!(
            t.date(0),
            Date {
                year: 1582,
                month: 10,
                day: 15
            }
        );
        let err = TimeAxis::new(
            &p(),
            Calendar::Standard,
            "days since 0001-01-01",
            &[577_736.0],
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::JulianDate { .. }));
    }

    #[test]
    fn bad_units_and_reference() {
        let err =
            TimeAxis::new(&p(), Calendar::NoLeap, "days since 2000-02-29", &[0.0]).unwrap_err();
        assert!(matches!(err, DecodeError::BadTimeUnits { .. }), "{err}");
        let err =
            TimeAxis::new(&p(), Calendar::NoLeap, "months since 2000-01-01", &[0.0]).unwrap_err();
        assert!(err.to_string().contains("months since 2000-01-01"), "{err}");
    }

    #[test]
    fn all_leap_in_common_year() {
        let t = TimeAxis::new(
            &p(),
            Calendar::AllLeap,
            "days since 2001-01-01",
            &daily(0.0, 366),
        )
        .unwrap();
        let plan = t.plan_year(&p(), 2001, true, false).unwrap();
        assert_eq!(plan.len(), 365);
        assert_eq!(
            plan[59],
            StepSlot {
                time_index: 60,
                slot: 59
            }
        );
    }
}
