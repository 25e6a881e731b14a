//! libnetcdf used from threads other than the one that initialised it must not print HDF5
//! error stacks to stderr (Debian's HDF5 keeps its error-printing switch per thread).
//!
//! This file holds a single test so that nothing else writes to this process's stderr while
//! file descriptor 2 is redirected.

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;

use nexdecode::{CellSelection, DecodeOptions, GridFile, ReadPath};

#[test]
fn opening_and_decoding_on_fresh_threads_prints_nothing_to_stderr() {
    let dir = fixtures::data_dir().join("nex-gddp-cmip6");
    let files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "nc"))
        .collect();
    assert!(files.len() >= 3, "fixtures missing in {}", dir.display());

    let capture = tempfile::tempfile().unwrap();
    // SAFETY: plain fd duplication; restored below before any assertion can panic.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    unsafe { libc::dup2(capture.as_raw_fd(), 2) };

    let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .flat_map(|f| [ReadPath::Netcdf, ReadPath::Auto].map(|p| (f, p)))
            .map(|(f, read_path)| {
                s.spawn(move || {
                    let file = GridFile::open(f).map_err(|e| e.to_string())?;
                    let year = file.years()[0];
                    let opts = DecodeOptions {
                        read_path,
                        ..DecodeOptions::default()
                    };
                    let block = file
                        .decode_year(year, &CellSelection::AllData, &opts)
                        .map_err(|e| e.to_string())?;
                    Ok(block.len())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut printed = String::new();
    let mut capture = capture;
    std::io::Seek::rewind(&mut capture).unwrap();
    capture.read_to_string(&mut printed).unwrap();

    for r in &results {
        assert!(matches!(r, Ok(n) if *n > 0), "decode failed: {r:?}");
    }
    assert!(
        printed.is_empty(),
        "stderr was written while decoding:\n{printed}"
    );
}
