//! The bench job's input files: takes the [`BenchConfig`] (grid, work dir), hands on
//! [`Files`] — the three variables' files, generated once by the fixture generator and reused
//! after, and the grid's data cells (for `cells` as GeoJSON points, [`points_geojson`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use fixtures::GridSpec;

use super::{BenchConfig, BenchGrid, DATASET, Progress, VARIABLES};

/// The bench job's files.
#[derive(Debug, Clone)]
pub struct Files {
    /// Variable → file.
    pub paths: BTreeMap<String, PathBuf>,
    /// Whether any was generated now (the rest were cached).
    pub generated: bool,
    /// The grid's shape, `[days, lat, lon]`.
    pub shape: [usize; 3],
    /// The data cells' `(lat, lon)`, from the generator's own mask.
    pub data_cells: Vec<(f64, f64)>,
}

/// Bytes free for an unprivileged user in the file system holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// A generous size of one generated file: the whole grid's floats at a fifth (data cells
/// only, deflated; the full grid's files are ~195 MB).
fn expected_file_bytes(spec: &GridSpec) -> u64 {
    let [t, y, x] = spec.shape();
    (t * y * x * 4 / 5) as u64
}

/// The job's files in `<work dir>/nexingest-bench/<grid>/`, generated when missing (each
/// under a private name, renamed into place).
///
/// # Errors
/// The directory cannot be created, too little disk space, the generator fails.
pub async fn generate(cfg: &BenchConfig, progress: &dyn Progress) -> anyhow::Result<Files> {
    let model = DATASET.models()[0];
    let specs: Vec<GridSpec> = VARIABLES.iter().map(|v| cfg.grid.spec(v, model)).collect();
    let shape = specs[0].shape();
    let dir = cfg.pipeline.work_dir.join("nexingest-bench").join(format!(
        "{}-{}x{}x{}",
        match cfg.grid {
            BenchGrid::Full => "full",
            BenchGrid::Test => "test",
        },
        shape[0],
        shape[1],
        shape[2]
    ));
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create {} for the generated files: set --work-dir / NEXINGEST_WORK_DIR to \
             a writable directory with ~{} MB free",
            dir.display(),
            specs.iter().map(expected_file_bytes).sum::<u64>() / 1_000_000
        )
    })?;
    let mut paths = BTreeMap::new();
    let mut generated = false;
    let n = specs.len();
    for (k, spec) in specs.into_iter().enumerate() {
        let path = dir.join(spec.file_name());
        if path.is_file() {
            paths.insert(spec.var.name.clone(), path);
            continue;
        }
        let need = expected_file_bytes(&spec);
        let free = free_bytes(&dir).with_context(|| format!("free space of {}", dir.display()))?;
        if free < need {
            bail!(
                "not enough disk space in {}: {} MB free, generating {} needs ~{} MB (the \
                 three files ~{} MB, kept for later runs): free some space or set --work-dir / \
                 NEXINGEST_WORK_DIR to a larger volume",
                dir.display(),
                free / 1_000_000,
                spec.file_name(),
                need / 1_000_000,
                need * n as u64 / 1_000_000
            );
        }
        let tmp = dir.join(format!(
            ".{}.{}.{}.partial",
            spec.file_name(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        progress.generating(&spec.var.name, k, n, need);
        tracing::info!(file = %path.display(), "generating (once)");
        let var = spec.var.name.clone();
        let tmp2 = tmp.clone();
        let work = tokio::task::spawn_blocking(move || fixtures::write_grid(&tmp2, &spec));
        let poll = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(m) = std::fs::metadata(&tmp) {
                    progress.written(m.len());
                }
            }
        };
        let r = tokio::select! {
            r = work => r,
            () = poll => unreachable!("the progress loop never ends"),
        };
        progress.generated();
        let written = r.context("the generator panicked").and_then(|r| {
            r.map_err(|e| {
                let full = free_bytes(&dir).is_ok_and(|f| f < 16 << 20);
                anyhow!(
                    "generating {}: {e}{}",
                    path.display(),
                    if full {
                        ": the disk is full; free some space or set --work-dir / \
                         NEXINGEST_WORK_DIR to a larger volume"
                    } else {
                        ""
                    }
                )
            })
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        generated = true;
        paths.insert(var, path);
    }
    // Data cells from the generator's own mask (for `cells` as points).
    let spec = cfg.grid.spec(VARIABLES[0], model);
    let mut data_cells = Vec::new();
    for (i, &la) in spec.lat.iter().enumerate() {
        for (j, &lo) in spec.lon.iter().enumerate() {
            if !spec.is_masked(i, j) {
                data_cells.push((la, lo));
            }
        }
    }
    Ok(Files {
        paths,
        generated,
        shape,
        data_cells,
    })
}

/// A GeoJSON FeatureCollection of `n` data cells' centres spread evenly over `cells`.
pub fn points_geojson(cells: &[(f64, f64)], n: usize) -> String {
    let mut s = String::from(r#"{"type":"FeatureCollection","features":["#);
    for k in 0..n {
        let (la, lo) = cells[k * cells.len() / n];
        let lo = if lo > 180.0 { lo - 360.0 } else { lo };
        if k > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"type":"Feature","properties":{{"id":"bench-{k}","name":"bench cell {k}"}},"geometry":{{"type":"Point","coordinates":[{lo},{la}]}}}}"#
        );
    }
    s.push_str("]}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_spread_over_the_data_cells_and_in_range() {
        let cells: Vec<(f64, f64)> = (0..10)
            .map(|k| (k as f64, 170.0 + k as f64 * 2.0))
            .collect();
        let g: serde_json::Value = serde_json::from_str(&points_geojson(&cells, 5)).unwrap();
        let f = g["features"].as_array().unwrap();
        assert_eq!(f.len(), 5);
        let c: Vec<(f64, f64)> = f
            .iter()
            .map(|x| {
                let p = &x["geometry"]["coordinates"];
                (p[1].as_f64().unwrap(), p[0].as_f64().unwrap())
            })
            .collect();
        assert_eq!(
            c,
            [
                (0.0, 170.0),
                (2.0, 174.0),
                (4.0, 178.0),
                (6.0, -178.0),
                (8.0, -174.0)
            ]
        );
    }
}
