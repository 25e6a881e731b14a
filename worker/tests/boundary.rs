//! Boundary jobs across the longitude seam, against the real PostgreSQL: a polygon over lon 0
//! on a 0..360 global grid loads the cells on both sides of 0/360 and nothing else.

mod common;

use std::collections::BTreeSet;

use common::{World, env};
use fixtures::{Calendar, GridSpec, Mask, Storage, set::VARIABLES};
use nexdecode::{CellSelection, DecodeOptions, GridFile};

const SCENARIO: &str = "ssp245";
const MODEL: &str = "CanESM5";
const MEMBER: &str = "r1i1p1f1";
const YEAR: i32 = 2016;

/// Lon 0, 2, …, 358 (a global 0..360 axis; cell borders on odd degrees).
fn lons() -> Vec<f64> {
    (0..180).map(|k| 2.0 * k as f64).collect()
}

/// Lat 44, 46, …, 56.
fn lats() -> Vec<f64> {
    (0..7).map(|k| 44.0 + 2.0 * k as f64).collect()
}

/// The NEX-GDDP-CMIP6 file of `var` (real name, 365_day) on the coarse global grid, every
/// cell with data.
fn spec(var: &str) -> GridSpec {
    let mut s = GridSpec::nex_gddp_cmip6(
        var,
        SCENARIO,
        MODEL,
        MEMBER,
        YEAR,
        Calendar::Day365,
        (44.0, 56.0),
        (0.0, 360.0),
    );
    s.lat = lats();
    s.lon = lons();
    s.storage = Storage::cmip6(s.lat.len(), s.lon.len());
    s.mask = Mask::None;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boundary_over_lon_0_loads_the_cells_on_both_sides_of_the_seam() {
    let Some(env) = env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for var in VARIABLES {
        let s = spec(var);
        fixtures::write_grid(data.join(s.file_name()), &s).unwrap();
    }
    // Lon -4..4, lat 49.5..52.5: the columns centred on 356, 358, 0, 2 and 4 (borders at
    // -5, -3, …, 5) and the rows centred on 50 and 52.
    let boundary = dir.path().join("seam.geojson");
    std::fs::write(
        &boundary,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"seam"},
            "geometry":{"type":"Polygon","coordinates":[[[-4,49.5],[4,49.5],[4,52.5],[-4,52.5],[-4,49.5]]]}}]}"#,
    )
    .unwrap();
    let expected: BTreeSet<(i64, i64)> = [50, 52]
        .into_iter()
        .flat_map(|lat| [356, 358, 0, 2, 4].map(|lon| (lat, lon)))
        .collect();

    let w = World::new(env, "boundary", 3, 60).await;
    let out = common::nexingest()
        .args([
            "--schema",
            &w.schema,
            "ingest",
            "--dataset",
            "NEX-GDDP-CMIP6",
        ])
        .args(["--scenario", SCENARIO, "--model", MODEL])
        .args(["--year", &YEAR.to_string(), "--no-progress"])
        .arg(format!("--locations=boundary:{}", boundary.display()))
        .arg(&data)
        .env("NEXINGEST_DATABASE_URL", &w.env.db_url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("10 rows"), "{stdout}");

    let rows =
        w.pg.query(
            "SELECT c.lat, c.lon, y.tasmin, y.tasmax, y.pr
             FROM climate_data_year y JOIN map_cell c ON c.id = y.map_cell_id",
            &[],
        )
        .await
        .unwrap();
    let got: BTreeSet<(i64, i64)> = rows
        .iter()
        .map(|r| {
            let (lat, lon): (f64, f64) = (r.get(0), r.get(1));
            assert_eq!((lat.fract(), lon.fract()), (0.0, 0.0), "{lat},{lon}");
            (lat as i64, lon as i64)
        })
        .collect();
    assert_eq!(rows.len(), got.len(), "one row per cell");
    assert_eq!(got, expected, "map_cell (lat, lon) of the loaded rows");

    // The seam cells hold their own values: each row's arrays are what the decoder reads for
    // that cell.
    let opts = DecodeOptions {
        single_year_file: true,
        ..DecodeOptions::default()
    };
    for (v, var) in VARIABLES.iter().enumerate() {
        let f = GridFile::open(data.join(spec(var).file_name())).unwrap();
        let block = f.decode_year(YEAR, &CellSelection::AllData, &opts).unwrap();
        for r in &rows {
            let (lat, lon): (f64, f64) = (r.get(0), r.get(1));
            let i = block
                .cells
                .iter()
                .position(|&c| f.grid().coords(c) == (lat, lon))
                .unwrap();
            let want: Vec<Option<u32>> = block
                .series(i)
                .iter()
                .map(|x| (!x.is_nan()).then_some(x.to_bits()))
                .collect();
            let got: Vec<Option<f32>> = r.get(2 + v);
            let got: Vec<Option<u32>> = got.iter().map(|x| x.map(f32::to_bits)).collect();
            assert_eq!(got, want, "{var} at {lat},{lon}");
        }
    }
    w.cleanup().await;
}
