//! The per-cell computation, pure and allocation-free in its loops: a cell's rows (one per data
//! source of the period: model × year) go into a reused [`CellWork`], which yields the
//! date-aligned average year and the per-model-mean percentile baselines.
//!
//! - **Average year**: 366 slots on a leap-year axis; day `i` (0-based) of a 365-day year is
//!   slot `i` before March (`i < 59`) and slot `i + 1` from March 1 on, so Feb 29 (slot 59)
//!   averages leap years only. Each slot is the mean (in `f64`) of every non-null value of its
//!   date over every model and year.
//! - **Percentiles**: per model, of all its non-null daily values over the period (for `pr`
//!   only values `> 0`), with linear interpolation between the order statistics around
//!   `p·(n−1)` — PostgreSQL's `percentile_cont`, numpy's default — found by selection
//!   ([`slice::select_nth_unstable_by`]) on the collected values, not by sorting; then the mean
//!   over the models that have every year of the period for the cell (others are left out and
//!   reported) and have at least one value.

/// Slots of the average year.
pub const SLOTS: usize = 366;

/// Index of Feb 29 on the leap-year axis (0-based).
pub const FEB29: usize = 59;

/// Whether `year` is a leap year (proleptic Gregorian).
#[inline]
pub fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// The average-year slot of 0-based day `day` of a year.
#[inline]
pub fn slot(day: usize, leap: bool) -> usize {
    if leap || day < FEB29 { day } else { day + 1 }
}

/// The percentiles of each variable's baselines, ascending.
pub const PERCENTILES: [i32; 4] = [1, 5, 95, 99];

/// `percentile_cont(p / 100)` of `values` for each `p` of `pcts` (ascending), into `out`.
/// `values` is permuted (partially ordered) in place; it must hold no NaN. Selection only: one
/// `select_nth_unstable` per percentile, each on the part of the slice left between the order
/// statistics already fixed, and a minimum scan for the upper neighbour of each.
///
/// # Panics
/// If `values` is empty or `out` is shorter than `pcts`.
pub fn percentiles(values: &mut [f32], pcts: &[i32], out: &mut [f64]) {
    let n = values.len();
    assert!(n > 0, "percentiles of nothing");
    // Ranks (floor of p·(n−1)) and fractions, as PostgreSQL computes them in float8.
    let mut ranks = [0usize; 8];
    let mut fracs = [0f64; 8];
    let k = pcts.len().min(8);
    for i in 0..k {
        let h = f64::from(pcts[i]) / 100.0 * (n - 1) as f64;
        let lo = h.floor();
        ranks[i] = lo as usize;
        fracs[i] = h - lo;
    }
    // Fix the ranks middle-out (e.g. 5, 95, 1, 99): the big selections first shrink the
    // segments the small ones work in.
    let mut fixed = [usize::MAX; 8];
    let mut nfixed = 0;
    let mut order = [0usize, 1, 2, 3, 4, 5, 6, 7];
    order[..k].sort_unstable_by_key(|&i| (2 * i as isize - (k as isize - 1)).abs());
    for &i in &order[..k] {
        let r = ranks[i];
        if fixed[..nfixed].contains(&r) {
            continue;
        }
        // The segment between the fixed ranks around r.
        let lo = fixed[..nfixed]
            .iter()
            .filter(|&&f| f < r)
            .max()
            .map_or(0, |&f| f + 1);
        let hi = fixed[..nfixed]
            .iter()
            .filter(|&&f| f > r)
            .min()
            .copied()
            .unwrap_or(n);
        values[lo..hi].select_nth_unstable_by(r - lo, f32::total_cmp);
        fixed[nfixed] = r;
        nfixed += 1;
    }
    for i in 0..k {
        let r = ranks[i];
        let x = f64::from(values[r]);
        out[i] = if fracs[i] == 0.0 || r + 1 >= n {
            x
        } else {
            // Everything after r up to the next fixed rank (inclusive) is ≥ values[r], and the
            // next fixed rank is ≤ everything after it: the minimum there is order statistic r+1.
            let end = fixed[..nfixed]
                .iter()
                .filter(|&&f| f > r)
                .min()
                .map_or(n, |&f| f + 1);
            let next = values[r + 1..end]
                .iter()
                .copied()
                .min_by(f32::total_cmp)
                .unwrap_or(values[r]);
            x + (f64::from(next) - x) * fracs[i]
        };
    }
}

/// What a cell's computation needs to know about the period and the rows.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Number of variables derived.
    pub vars: usize,
    /// Which variables count only values `> 0` for percentiles (`pr`).
    pub positive_only: Vec<bool>,
    /// Number of models of the period.
    pub models: usize,
    /// Years of the period.
    pub years: usize,
    /// Percentiles, ascending.
    pub percentiles: Vec<i32>,
}

impl Shape {
    /// Length of a cell's average-year output (`vars × 366`).
    pub fn avg_len(&self) -> usize {
        self.vars * SLOTS
    }

    /// Length of a cell's baseline output (`percentiles × vars`).
    pub fn base_len(&self) -> usize {
        self.percentiles.len() * self.vars
    }
}

/// A day-count mismatch: a row's array does not have its year's days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLength {
    /// Index of the variable.
    pub var: usize,
    /// Days in the array.
    pub got: usize,
    /// Days of the year.
    pub expected: usize,
}

/// The reusable working memory of one cell: sums and counts per (variable, slot), collected
/// values per (model, variable), rows per (model, variable). Reset per cell, never shrunk.
#[derive(Debug)]
pub struct CellWork {
    shape: Shape,
    sums: Vec<f64>,
    counts: Vec<u32>,
    values: Vec<Vec<f32>>,
    rows: Vec<u32>,
    pct: Vec<f64>,
}

impl CellWork {
    /// Working memory for `shape`, with room for every value of the period.
    pub fn new(shape: &Shape) -> Self {
        let per = shape.years * SLOTS;
        CellWork {
            shape: shape.clone(),
            sums: vec![0.0; shape.avg_len()],
            counts: vec![0; shape.avg_len()],
            values: (0..shape.models * shape.vars)
                .map(|_| Vec::with_capacity(per))
                .collect(),
            rows: vec![0; shape.models * shape.vars],
            pct: vec![0.0; shape.percentiles.len()],
        }
    }

    /// Starts a new cell.
    pub fn reset(&mut self) {
        self.sums.fill(0.0);
        self.counts.fill(0);
        self.rows.fill(0);
        for v in &mut self.values {
            v.clear();
        }
    }

    /// Adds one row's array of variable `var` for model `model` and a year with `leap`.
    ///
    /// # Errors
    /// When the array does not have the year's 365 or 366 days.
    #[inline]
    pub fn add(
        &mut self,
        model: usize,
        var: usize,
        leap: bool,
        days: impl ExactSizeIterator<Item = Option<f32>>,
    ) -> Result<(), BadLength> {
        let expected = 365 + usize::from(leap);
        if days.len() != expected {
            return Err(BadLength {
                var,
                got: days.len(),
                expected,
            });
        }
        let mv = model * self.shape.vars + var;
        self.rows[mv] += 1;
        let positive_only = self.shape.positive_only[var];
        let sums = &mut self.sums[var * SLOTS..(var + 1) * SLOTS];
        let counts = &mut self.counts[var * SLOTS..(var + 1) * SLOTS];
        let values = &mut self.values[mv];
        for (day, x) in days.enumerate() {
            let Some(x) = x else { continue };
            if x.is_nan() {
                continue;
            }
            let s = slot(day, leap);
            sums[s] += f64::from(x);
            counts[s] += 1;
            if !positive_only || x > 0.0 {
                values.push(x);
            }
        }
        Ok(())
    }

    /// Rows added for (model, variable).
    pub fn rows(&self, model: usize, var: usize) -> u32 {
        self.rows[model * self.shape.vars + var]
    }

    /// Whether model `model` has a row with variable `var` for every year of the period.
    pub fn complete(&self, model: usize, var: usize) -> bool {
        self.rows(model, var) as usize == self.shape.years
    }

    /// Writes the cell's results: `avg` (`vars × 366`, NaN where no value) and `base`
    /// (`percentiles × vars`, NaN where no model has a value). Returns whether any variable has
    /// any average value. Permutes the collected values.
    ///
    /// # Panics
    /// If `avg` or `base` is shorter than the shape says.
    pub fn finish(&mut self, avg: &mut [f32], base: &mut [f32]) -> bool {
        let shape = &self.shape;
        let mut any = false;
        for ((a, &s), &c) in avg[..shape.avg_len()]
            .iter_mut()
            .zip(&self.sums)
            .zip(&self.counts)
        {
            *a = if c == 0 {
                f32::NAN
            } else {
                any = true;
                (s / f64::from(c)) as f32
            };
        }
        let np = shape.percentiles.len();
        for v in 0..shape.vars {
            let mut sum = [0f64; 8];
            let mut used = 0u32;
            for m in 0..shape.models {
                if self.rows[m * shape.vars + v] as usize != shape.years {
                    continue;
                }
                let vals = &mut self.values[m * shape.vars + v];
                if vals.is_empty() {
                    continue;
                }
                percentiles(vals, &shape.percentiles, &mut self.pct);
                for (s, p) in sum.iter_mut().zip(&self.pct) {
                    *s += p;
                }
                used += 1;
            }
            for p in 0..np {
                base[p * shape.vars + v] = if used == 0 {
                    f32::NAN
                } else {
                    (sum[p] / f64::from(used)) as f32
                };
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition: sort, then interpolate at p·(n−1).
    fn reference(values: &[f32], p: i32) -> f64 {
        let mut v: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
        v.sort_by(f64::total_cmp);
        let h = f64::from(p) / 100.0 * (v.len() - 1) as f64;
        let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (h - h.floor())
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed >> 33
    }

    #[test]
    fn selection_equals_sorting() {
        let mut seed = 7;
        for n in [1usize, 2, 3, 4, 5, 10, 99, 100, 101, 365, 1000, 10_957] {
            for dup in [false, true] {
                let vals: Vec<f32> = (0..n)
                    .map(|_| {
                        let r = lcg(&mut seed);
                        if dup {
                            (r % 7) as f32
                        } else {
                            (r % 100_000) as f32 / 128.0 - 300.0
                        }
                    })
                    .collect();
                for pcts in [&PERCENTILES[..], &[50], &[0, 100], &[1, 2, 3, 97, 98, 99]] {
                    let mut work = vals.clone();
                    let mut out = vec![0.0; pcts.len()];
                    percentiles(&mut work, pcts, &mut out);
                    for (p, got) in pcts.iter().zip(&out) {
                        assert_eq!(*got, reference(&vals, *p), "n {n} p {p} dup {dup}");
                    }
                }
            }
        }
    }

    #[test]
    fn slots_align_dates() {
        // Feb 28 is day 58 in both; Mar 1 is day 59 of a common year and 60 of a leap year.
        assert_eq!(slot(58, false), 58);
        assert_eq!(slot(59, false), 60);
        assert_eq!(slot(59, true), 59);
        assert_eq!(slot(364, false), 365);
        assert_eq!(slot(365, true), 365);
        assert!(is_leap(2000) && is_leap(1952) && !is_leap(1900) && !is_leap(1951));
    }

    #[test]
    fn a_cell_by_hand() {
        let shape = Shape {
            vars: 2,
            positive_only: vec![false, true],
            models: 2,
            years: 2,
            percentiles: vec![50],
        };
        let mut w = CellWork::new(&shape);
        // Model 0: 1951 (common), 1952 (leap); model 1: 1951 only (left out of percentiles).
        let year = |leap: bool, v: f32| {
            (0..365 + usize::from(leap)).map(
                move |d| {
                    if d == 10 { None } else { Some(v + d as f32) }
                },
            )
        };
        w.add(0, 0, false, year(false, 0.0)).unwrap();
        w.add(0, 0, true, year(true, 1000.0)).unwrap();
        w.add(1, 0, false, year(false, 2000.0)).unwrap();
        let pr = |leap: bool| (0..365 + usize::from(leap)).map(|d| Some((d % 2) as f32));
        w.add(0, 1, false, pr(false)).unwrap();
        w.add(0, 1, true, pr(true)).unwrap();
        assert_eq!(
            w.add(1, 1, true, pr(false)),
            Err(BadLength {
                var: 1,
                got: 365,
                expected: 366
            })
        );
        assert!(w.complete(0, 0) && !w.complete(1, 0));
        let mut avg = vec![0.0; shape.avg_len()];
        let mut base = vec![0.0; shape.base_len()];
        assert!(w.finish(&mut avg, &mut base));
        // Jan 1: (0 + 1000 + 2000) / 3; day 10 NULL everywhere; Feb 29 = the leap year's day 59;
        // Mar 1 = (59 + 1060 + 2059) / 3.
        assert_eq!(avg[0], 1000.0);
        assert!(avg[10].is_nan());
        assert_eq!(avg[59], 1059.0);
        assert_eq!(avg[60], (59.0 + 1060.0 + 2059.0) / 3.0);
        assert_eq!(avg[365], (364.0 + 1365.0 + 2364.0) / 3.0);
        // pr: only ones count for percentiles; Feb 29 of pr = day 59 of the leap year = 1.
        assert_eq!(avg[SLOTS + 59], 1.0);
        assert_eq!(base[1], 1.0);
        // tasmin-like var 0: model 0 only (model 1 lacks 1952): median of its 729 values.
        let mut m0: Vec<f32> = year(false, 0.0)
            .chain(year(true, 1000.0))
            .flatten()
            .collect();
        m0.sort_by(f32::total_cmp);
        assert_eq!(f64::from(base[0]), reference(&m0, 50) as f32 as f64);

        // Reset gives the same results again.
        w.reset();
        w.add(0, 0, false, year(false, 5.0)).unwrap();
        let mut avg2 = vec![0.0; shape.avg_len()];
        w.finish(&mut avg2, &mut base);
        assert_eq!(avg2[0], 5.0);
        assert!(base[0].is_nan(), "one year of two: no model complete");
    }
}
