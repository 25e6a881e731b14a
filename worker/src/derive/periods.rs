//! Which periods to derive: the standard 30-year windows over the loaded historical years, or
//! the ones asked for (`--periods 1971-2000,1981-2010`), each checked to be fully loaded.

use std::collections::BTreeSet;
use std::fmt;

/// Years in a standard window.
pub const WINDOW_YEARS: i32 = 30;

/// A range of years, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// First year.
    pub start: i32,
    /// Last year (inclusive).
    pub end: i32,
}

impl Period {
    /// Number of years.
    pub fn years(&self) -> usize {
        (self.end - self.start + 1) as usize
    }

    /// The period's years in order.
    pub fn iter(&self) -> impl Iterator<Item = i32> {
        self.start..=self.end
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Parses `1971-2000,1981-2010` (spaces allowed, duplicates dropped, sorted).
///
/// # Errors
/// A malformed item, an end before its start, or a year outside 1800–2300.
pub fn parse(s: &str) -> Result<Vec<Period>, String> {
    let mut out = BTreeSet::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (a, b) = item
            .split_once('-')
            .ok_or_else(|| format!("period {item:?}: expected START-END, e.g. 1971-2000"))?;
        let year = |y: &str| {
            y.trim()
                .parse::<i32>()
                .ok()
                .filter(|y| (1800..=2300).contains(y))
                .ok_or_else(|| format!("period {item:?}: {y:?} is not a year (1800-2300)"))
        };
        let p = Period {
            start: year(a)?,
            end: year(b)?,
        };
        if p.end < p.start {
            return Err(format!("period {item:?}: ends before it starts"));
        }
        out.insert(p);
    }
    if out.is_empty() {
        return Err("no period given".into());
    }
    Ok(out.into_iter().collect())
}

/// The standard periods over `loaded` years: 30-year windows starting at a year ≡ 1 (mod 10)
/// whose 30 years are all loaded, including a window that ends exactly on the last loaded
/// year (which the old `generate_historic` dropped).
pub fn standard(loaded: &BTreeSet<i32>) -> Vec<Period> {
    let (Some(&first), Some(&last)) = (loaded.first(), loaded.last()) else {
        return Vec::new();
    };
    // The first start ≥ first with start ≡ 1 (mod 10).
    let mut start = first + (1 - first).rem_euclid(10);
    let mut out = Vec::new();
    while start + WINDOW_YEARS - 1 <= last {
        let p = Period {
            start,
            end: start + WINDOW_YEARS - 1,
        };
        if missing(p, loaded).is_empty() {
            out.push(p);
        }
        start += 10;
    }
    out
}

/// The years of `p` that are not in `loaded`.
pub fn missing(p: Period, loaded: &BTreeSet<i32>) -> Vec<i32> {
    p.iter().filter(|y| !loaded.contains(y)).collect()
}

/// `1950-1965, 1970, 1975-1980`: a compact list of years.
pub fn compact(years: impl IntoIterator<Item = i32>) -> String {
    let mut out = String::new();
    let mut run: Option<(i32, i32)> = None;
    let flush = |out: &mut String, (a, b): (i32, i32)| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        if a == b {
            out.push_str(&a.to_string());
        } else {
            out.push_str(&format!("{a}-{b}"));
        }
    };
    for y in years {
        run = match run {
            Some((a, b)) if y == b + 1 => Some((a, y)),
            Some(r) => {
                flush(&mut out, r);
                Some((y, y))
            }
            None => Some((y, y)),
        };
    }
    if let Some(r) = run {
        flush(&mut out, r);
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn years(a: i32, b: i32) -> BTreeSet<i32> {
        (a..=b).collect()
    }

    fn p(start: i32, end: i32) -> Period {
        Period { start, end }
    }

    #[test]
    fn standard_windows_include_the_one_ending_on_the_last_year() {
        // NEX-GDDP historical: 1950-2005.
        assert_eq!(
            standard(&years(1950, 2005)),
            [p(1951, 1980), p(1961, 1990), p(1971, 2000)]
        );
        // CMIP6 historical 1950-2014: 1981-2010 too.
        assert_eq!(standard(&years(1950, 2014)).last(), Some(&p(1981, 2010)));
        // Exactly 1951-1980 loaded: the old range(first_end, last_year, 10) dropped it.
        assert_eq!(standard(&years(1951, 1980)), [p(1951, 1980)]);
        assert_eq!(standard(&years(1950, 1980)), [p(1951, 1980)]);
        assert_eq!(standard(&years(1952, 1990)), [p(1961, 1990)]);
        assert!(standard(&years(1951, 1979)).is_empty());
        assert!(standard(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_gap_removes_the_windows_over_it() {
        let mut y = years(1950, 2005);
        y.remove(&1965);
        assert_eq!(standard(&y), [p(1971, 2000)]);
        assert_eq!(missing(p(1961, 1990), &y), [1965]);
    }

    #[test]
    fn parse_periods() {
        assert_eq!(
            parse("1981-2010, 1971-2000,1971-2000").unwrap(),
            [p(1971, 2000), p(1981, 2010)]
        );
        assert_eq!(parse("2000-2000").unwrap(), [p(2000, 2000)]);
        for bad in ["", "1971", "2000-1971", "1971-20x0", "71-2000", ","] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compact_lists() {
        assert_eq!(
            compact([1950, 1951, 1952, 1960, 1962, 1963]),
            "1950-1952, 1960, 1962-1963"
        );
        assert_eq!(compact([]), "none");
    }
}
