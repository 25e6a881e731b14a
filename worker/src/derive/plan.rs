//! What to derive: datasets, periods, and for each period its data sources, models, variables,
//! cells and input streams. Everything is checked here, before anything is written.

use std::collections::BTreeSet;

use anyhow::bail;
use pgcopy::{ColumnType, Columns};
use tokio_postgres::GenericClient;

use super::periods::{self, Period};
use super::{DeriveConfig, stats};
use crate::catalog::VARIABLES;

/// Which cells to derive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cells {
    /// Every cell with historical data.
    All,
    /// The cells of the `location` table's locations ("cities"), of every import source or one.
    Cities(Option<String>),
}

impl Cells {
    /// Parses `all`, `cities` or `cities:SOURCE`.
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(s: &str) -> Result<Cells, String> {
        match s.trim().split_once(':') {
            None if s.trim().eq_ignore_ascii_case("all") => Ok(Cells::All),
            None if s.trim().eq_ignore_ascii_case("cities") => Ok(Cells::Cities(None)),
            Some((k, src)) if k.eq_ignore_ascii_case("cities") && !src.is_empty() => {
                Ok(Cells::Cities(Some(src.to_owned())))
            }
            _ => Err(format!("{s:?}: expected all, cities or cities:SOURCE")),
        }
    }
}

impl std::fmt::Display for Cells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cells::All => f.write_str("all"),
            Cells::Cities(None) => f.write_str("cities"),
            Cells::Cities(Some(s)) => write!(f, "cities:{s}"),
        }
    }
}

/// One data source of a period: a model's year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// `data_source.id`.
    pub id: i64,
    /// Index into [`PeriodPlan::models`].
    pub model: usize,
    /// Year.
    pub year: i32,
}

/// One (dataset, period) to derive.
#[derive(Debug, Clone)]
pub struct PeriodPlan {
    /// The period.
    pub period: Period,
    /// Its data sources (done, historical, within the period), by model then year.
    pub sources: Vec<Source>,
    /// Models with data in the period: `(climate_model.id, name)`, by id.
    pub models: Vec<(i32, String)>,
    /// Variable columns derived (those any data source of the period loaded), catalog order.
    pub variables: Vec<&'static str>,
    /// Input rows expected (sum of the data sources' `rows_written`; a progress estimate).
    pub rows_expected: u64,
    /// Cell-id ranges `[lo, hi)` of the input streams.
    pub ranges: Vec<(i64, i64)>,
    /// For `--cells cities`: the selected cells (sorted).
    pub cities: Option<Vec<i64>>,
}

impl PeriodPlan {
    /// The columns of an input tuple: `map_cell_id`, the source's index, one array per variable.
    pub fn input_columns(&self) -> Columns {
        let mut c = vec![("map_cell_id", ColumnType::Int8), ("src", ColumnType::Int4)];
        c.extend(self.variables.iter().map(|v| (*v, ColumnType::Float4Array)));
        Columns::new(c)
    }

    /// The computation's shape.
    pub fn shape(&self) -> stats::Shape {
        stats::Shape {
            vars: self.variables.len(),
            positive_only: self.variables.iter().map(|v| *v == "pr").collect(),
            models: self.models.len(),
            years: self.period.years(),
            percentiles: stats::PERCENTILES.to_vec(),
        }
    }
}

/// One dataset and its periods.
#[derive(Debug, Clone)]
pub struct DatasetPlan {
    /// `dataset.id`.
    pub id: i32,
    /// Name.
    pub name: String,
    /// Historical years with a done data source.
    pub loaded: BTreeSet<i32>,
    /// Periods to derive.
    pub periods: Vec<PeriodPlan>,
}

/// Plans the run.
///
/// # Errors
/// Unknown dataset, no historical data, no full period, a requested period not fully loaded,
/// no cities; database errors.
pub async fn plan(
    client: &impl GenericClient,
    cfg: &DeriveConfig,
) -> anyhow::Result<Vec<DatasetPlan>> {
    let Some(hist) = client
        .query_opt("SELECT id FROM scenario WHERE name = 'historical'", &[])
        .await?
    else {
        bail!("the scenario `historical` is not in the catalog");
    };
    let hist: i32 = hist.get(0);
    let known: Vec<(i32, String)> = client
        .query("SELECT id, name FROM dataset ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let datasets: Vec<(i32, String)> = match &cfg.dataset {
        Some(name) => match known.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)) {
            Some(d) => vec![d.clone()],
            None => bail!(
                "unknown dataset {name:?} (known: {})",
                known
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        None => known,
    };
    let mut out = Vec::new();
    for (id, name) in datasets {
        let loaded: BTreeSet<i32> = client
            .query(
                "SELECT DISTINCT year FROM data_source
                 WHERE dataset_id = $1 AND scenario_id = $2 AND state = 'done'",
                &[&id, &hist],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if loaded.is_empty() {
            if cfg.dataset.is_some() {
                bail!(
                    "no historical data loaded for {name} (no done data source of the \
                     `historical` scenario); load it first (`nexingest enqueue --scenario historical`)"
                );
            }
            continue;
        }
        let wanted = match &cfg.periods {
            Some(ps) => {
                for p in ps {
                    let missing = periods::missing(*p, &loaded);
                    if !missing.is_empty() {
                        bail!(
                            "period {p} is not fully loaded for {name}: no historical data for {} \
                             (loaded: {})",
                            periods::compact(missing),
                            periods::compact(loaded.iter().copied())
                        );
                    }
                }
                ps.clone()
            }
            None => {
                let ps = periods::standard(&loaded);
                if ps.is_empty() {
                    bail!(
                        "no 30-year period (starting 1951, 1961, …) is fully loaded for {name} \
                         (historical years loaded: {})",
                        periods::compact(loaded.iter().copied())
                    );
                }
                ps
            }
        };
        let mut plans = Vec::new();
        for period in wanted {
            plans.push(period_plan(client, cfg, id, &name, hist, period).await?);
        }
        out.push(DatasetPlan {
            id,
            name,
            loaded,
            periods: plans,
        });
    }
    if out.is_empty() {
        bail!(
            "no historical data loaded for any dataset (no done data source of the `historical` \
             scenario)"
        );
    }
    Ok(out)
}

async fn period_plan(
    client: &impl GenericClient,
    cfg: &DeriveConfig,
    dataset: i32,
    name: &str,
    hist: i32,
    period: Period,
) -> anyhow::Result<PeriodPlan> {
    let rows = client
        .query(
            "SELECT ds.id, ds.model_id, m.name, ds.year, ds.variables, ds.rows_written
             FROM data_source ds JOIN climate_model m ON m.id = ds.model_id
             WHERE ds.dataset_id = $1 AND ds.scenario_id = $2 AND ds.state = 'done'
               AND ds.year BETWEEN $3 AND $4
             ORDER BY ds.model_id, ds.year",
            &[&dataset, &hist, &period.start, &period.end],
        )
        .await?;
    let mut models: Vec<(i32, String)> = Vec::new();
    let mut sources = Vec::with_capacity(rows.len());
    let mut loaded_vars = BTreeSet::new();
    let mut rows_expected = 0u64;
    for r in &rows {
        let model_id: i32 = r.get(1);
        if models.last().is_none_or(|(m, _)| *m != model_id) {
            models.push((model_id, r.get(2)));
        }
        sources.push(Source {
            id: r.get(0),
            model: models.len() - 1,
            year: r.get(3),
        });
        let vars: Vec<String> = r.get(4);
        loaded_vars.extend(vars);
        rows_expected += r.get::<_, i64>(5).max(0) as u64;
    }
    let variables: Vec<&'static str> = VARIABLES
        .iter()
        .filter(|(v, _)| loaded_vars.contains(*v))
        .map(|(_, c)| *c)
        .collect();
    if variables.is_empty() {
        bail!("{name} {period}: the data sources hold no known variable");
    }
    let (ranges, cities) = match &cfg.cells {
        Cells::All => (all_ranges(client, dataset, cfg.streams).await?, None),
        Cells::Cities(source) => {
            let ids: Vec<i64> = client
                .query(
                    "SELECT DISTINCT lc.map_cell_id FROM location_cell lc
                     JOIN location l ON l.id = lc.location_id
                     WHERE lc.dataset_id = $1 AND lc.map_cell_id IS NOT NULL
                       AND ($2::text IS NULL OR l.source = $2)
                     ORDER BY 1",
                    &[&dataset, source],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if ids.is_empty() {
                bail!(
                    "no {} location has a cell of {name} (import locations and load them first)",
                    cfg.cells
                );
            }
            rows_expected = ids.len() as u64 * sources.len() as u64;
            (split_list(&ids, cfg.streams), Some(ids))
        }
    };
    Ok(PeriodPlan {
        period,
        sources,
        models,
        variables,
        rows_expected,
        ranges,
        cities,
    })
}

/// `streams` cell-id ranges of about equal numbers of the dataset's cells.
async fn all_ranges(
    client: &impl GenericClient,
    dataset: i32,
    streams: usize,
) -> anyhow::Result<Vec<(i64, i64)>> {
    if streams <= 1 {
        return Ok(vec![(i64::MIN, i64::MAX)]);
    }
    let fractions: Vec<f64> = (1..streams).map(|k| k as f64 / streams as f64).collect();
    let cuts: Option<Vec<Option<i64>>> = client
        .query_one(
            "SELECT percentile_disc($2::float8[]) WITHIN GROUP (ORDER BY id)
             FROM map_cell WHERE dataset_id = $1",
            &[&dataset, &fractions],
        )
        .await?
        .get(0);
    let mut cuts: Vec<i64> = cuts.unwrap_or_default().into_iter().flatten().collect();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut lo = i64::MIN;
    for c in cuts {
        out.push((lo, c));
        lo = c;
    }
    out.push((lo, i64::MAX));
    Ok(out)
}

/// Splits a sorted id list into `streams` ranges of about equal counts.
fn split_list(ids: &[i64], streams: usize) -> Vec<(i64, i64)> {
    let n = streams.clamp(1, ids.len().max(1));
    let mut out = Vec::with_capacity(n);
    let mut lo = i64::MIN;
    for k in 1..n {
        let c = ids[k * ids.len() / n];
        if c > lo {
            out.push((lo, c));
            lo = c;
        }
    }
    out.push((lo, i64::MAX));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_parse() {
        assert_eq!(Cells::parse("all"), Ok(Cells::All));
        assert_eq!(Cells::parse("Cities"), Ok(Cells::Cities(None)));
        assert_eq!(
            Cells::parse("cities:us-metros"),
            Ok(Cells::Cities(Some("us-metros".into())))
        );
        assert!(Cells::parse("cities:").is_err());
        assert!(Cells::parse("geojson:x").is_err());
    }

    #[test]
    fn lists_split_into_ranges() {
        let ids: Vec<i64> = (10..110).collect();
        let r = split_list(&ids, 4);
        assert_eq!(r, [(i64::MIN, 35), (35, 60), (60, 85), (85, i64::MAX)]);
        assert_eq!(split_list(&[5], 4), [(i64::MIN, i64::MAX)]);
        for (k, &id) in ids.iter().enumerate() {
            assert_eq!(
                r.iter().filter(|(lo, hi)| *lo <= id && id < *hi).count(),
                1,
                "{k}"
            );
        }
    }
}
