//! Files read by ranges ([`GridFile::open_remote`]) decode bit for bit like the same files opened
//! from disk, over every committed fixture and every file in `../shared/realdata` (skipped, with
//! a line saying so, when that directory is absent); only the chunks a decode needs are fetched.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nexdecode::{CellSelection, DecodeError, DecodeOptions, GridFile, ReadPath, RemoteFile};

/// A file on disk served by ranges, counting what is asked.
struct Ranges {
    file: File,
    size: u64,
    /// Bytes served to `read` (metadata) and to `take` (chunks).
    read_bytes: AtomicU64,
    taken_bytes: AtomicU64,
    read_calls: AtomicUsize,
    /// Announced ranges not taken yet (start → remaining takes).
    announced: Mutex<HashMap<Range<u64>, usize>>,
}

impl Ranges {
    fn open(path: &Path) -> Arc<Ranges> {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        Arc::new(Ranges {
            file,
            size,
            read_bytes: AtomicU64::new(0),
            taken_bytes: AtomicU64::new(0),
            read_calls: AtomicUsize::new(0),
            announced: Mutex::new(HashMap::new()),
        })
    }

    fn bytes(&self, r: &Range<u64>) -> io::Result<Vec<u8>> {
        assert!(
            r.start <= r.end && r.end <= self.size,
            "range {r:?} past the end ({})",
            self.size
        );
        let mut buf = vec![0; (r.end - r.start) as usize];
        self.file.read_exact_at(&mut buf, r.start)?;
        Ok(buf)
    }
}

impl RemoteFile for Ranges {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        self.read_calls.fetch_add(1, Ordering::Relaxed);
        let out: Vec<Vec<u8>> = ranges
            .iter()
            .map(|r| self.bytes(r))
            .collect::<io::Result<_>>()?;
        let n: usize = out.iter().map(Vec::len).sum();
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(out)
    }

    fn prefetch(&self, ranges: &[Range<u64>]) {
        let mut a = self.announced.lock().unwrap();
        for r in ranges {
            *a.entry(r.clone()).or_default() += 1;
        }
    }

    fn take(&self, range: Range<u64>) -> io::Result<Vec<u8>> {
        {
            let mut a = self.announced.lock().unwrap();
            let left = a
                .get_mut(&range)
                .unwrap_or_else(|| panic!("{range:?} taken unannounced"));
            *left -= 1;
            if *left == 0 {
                a.remove(&range);
            }
        }
        let b = self.bytes(&range)?;
        self.taken_bytes
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }
}

fn opts(read_path: ReadPath) -> DecodeOptions {
    DecodeOptions {
        read_path,
        allow_incomplete_year: true,
        ..DecodeOptions::default()
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Whether the disk file's variable is decoded by the chunked fast path.
fn chunked_on_disk(disk: &GridFile, year: i32) -> bool {
    match disk.decode_year(
        year,
        &CellSelection::Cells(vec![]),
        &opts(ReadPath::Chunked),
    ) {
        Ok(_) => true,
        Err(DecodeError::UnsupportedStorage { .. }) => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn remote_files_decode_like_files_on_disk() {
    let (mut streamed, mut refused) = (0, 0);
    for path in fixtures::readable_files() {
        let disk = GridFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let var = disk.variable().name.clone();
        let years = disk.years();
        let src = Ranges::open(&path);
        let remote = match GridFile::open_remote(src.clone(), &path, &var) {
            Ok(r) => r,
            Err(DecodeError::UnsupportedStorage { detail, .. }) => {
                // Refused exactly where the disk file is not on the chunked path either.
                assert!(
                    !chunked_on_disk(&disk, years[0]),
                    "{}: refused ({detail}) but chunked on disk",
                    path.display()
                );
                println!("{}: read whole ({detail})", path.display());
                refused += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(remote.is_remote());
        assert_eq!(remote.variable(), disk.variable(), "{}", path.display());
        assert_eq!(remote.grid(), disk.grid());
        assert_eq!(remote.years(), years);
        let meta = src.read_bytes.load(Ordering::Relaxed);
        assert_eq!(
            src.taken_bytes.load(Ordering::Relaxed),
            0,
            "opening takes no chunk"
        );

        let grid = disk.grid().clone();
        let some_cells: Vec<_> = (0..grid.len())
            .step_by((grid.len() / 7).max(1))
            .map(|f| grid.cell(f))
            .collect();
        let (lat0, lon0) = grid.coords(some_cells[some_cells.len() / 2]);
        let points = [(lat0, lon0), (lat0 + 0.3, lon0 - 0.2)];
        for &year in &years {
            for sel in [
                CellSelection::AllData,
                CellSelection::Cells(some_cells.clone()),
            ] {
                let a = disk.decode_year(year, &sel, &opts(ReadPath::Auto));
                let b = remote.decode_year(year, &sel, &opts(ReadPath::Auto));
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.cells, b.cells, "{} {year}", path.display());
                        assert!(
                            same_bits(a.values.as_slice().unwrap(), b.values.as_slice().unwrap()),
                            "{} {year}: values differ",
                            path.display()
                        );
                    }
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("{}: disk {a:?}, remote {b:?}", path.display()),
                }
            }
            let a = disk.locate_decode(year, &points, &opts(ReadPath::Auto));
            let b = remote.locate_decode(year, &points, &opts(ReadPath::Auto));
            match (a, b) {
                (Ok((ma, ba)), Ok((mb, bb))) => {
                    assert_eq!(ma, mb);
                    assert_eq!(ba.cells, bb.cells);
                    assert!(same_bits(
                        ba.values.as_slice().unwrap(),
                        bb.values.as_slice().unwrap()
                    ));
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("{}: disk {a:?}, remote {b:?}", path.display()),
            }
        }
        assert!(
            src.announced.lock().unwrap().is_empty(),
            "every announced chunk was taken"
        );
        // No second copy of the file (a file of tiny chunks, 1 × 1 × 2 say, costs about its
        // size in index nodes: such a layout gains nothing by ranges).
        assert!(
            meta < 2 * src.size,
            "{}: {meta} bytes of metadata",
            path.display()
        );
        println!(
            "{}: streamed, metadata {meta} of {} bytes in {} reads",
            path.display(),
            src.size,
            src.read_calls.load(Ordering::Relaxed)
        );
        streamed += 1;
    }
    println!("{streamed} files streamed, {refused} read whole");
    assert!(
        streamed >= 10,
        "the committed fixtures alone have more than 10 streamable files"
    );
}

#[test]
fn a_few_cells_of_a_tiled_file_fetch_only_their_chunks() {
    // A 40 × 60 NEX-GDDP window in 1 × 10 × 10 tiles: 24 tiles a day, a file of a few MB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiled.nc");
    let mut spec = fixtures::GridSpec::nex_gddp(
        "tasmax",
        "rcp45",
        "ACCESS1-0",
        2015,
        (30.0, 40.0),
        (250.0, 265.0),
    );
    spec.storage = fixtures::Storage::Chunked {
        chunks: [1, 10, 10],
        shuffle: true,
        deflate: Some(5),
        classic_model: true,
    };
    spec.dither = true;
    fixtures::write_grid(&path, &spec).unwrap();
    let disk = GridFile::open(&path).unwrap();
    assert_eq!(disk.grid().len(), 40 * 60);
    let src = Ranges::open(&path);
    let remote = GridFile::open_remote(src.clone(), &path, "tasmax").unwrap();
    let sel = CellSelection::Cells(vec![disk.grid().cell(0)]);
    let a = disk.decode_year(2015, &sel, &opts(ReadPath::Auto)).unwrap();
    let b = remote
        .decode_year(2015, &sel, &opts(ReadPath::Auto))
        .unwrap();
    assert!(same_bits(
        a.values.as_slice().unwrap(),
        b.values.as_slice().unwrap()
    ));
    let one_cell = src.taken_bytes.swap(0, Ordering::Relaxed);
    remote
        .decode_year(2015, &CellSelection::AllData, &opts(ReadPath::Auto))
        .unwrap();
    let all = src.taken_bytes.load(Ordering::Relaxed);
    // One tile of 24 (tiles differ in size: the bound leaves room).
    assert!(
        one_cell > 0 && one_cell * 12 < all,
        "one cell took {one_cell} of {all} bytes"
    );
}

#[test]
fn a_remote_file_refuses_the_netcdf_path() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/data/nex-gddp-cmip6/tasmax_day_CanESM5_ssp245_r1i1p1f1_gn_2016.nc");
    let remote = GridFile::open_remote(Ranges::open(&path), &path, "tasmax").unwrap();
    let err = remote
        .decode_year(2016, &CellSelection::AllData, &opts(ReadPath::Netcdf))
        .unwrap_err();
    assert!(
        matches!(err, DecodeError::UnsupportedStorage { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("open_variable"), "{err}");
}

#[test]
fn a_failing_source_names_what_it_was_fetching() {
    struct Failing(Arc<Ranges>, AtomicUsize);
    impl RemoteFile for Failing {
        fn size(&self) -> u64 {
            self.0.size
        }
        fn read(&self, r: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
            self.0.read(r)
        }
        fn prefetch(&self, r: &[Range<u64>]) {
            self.0.prefetch(r)
        }
        fn take(&self, r: Range<u64>) -> io::Result<Vec<u8>> {
            if self.1.fetch_add(1, Ordering::Relaxed) == 2 {
                return Err(io::Error::other("connection reset"));
            }
            self.0.take(r)
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/data/nex-gddp-cmip6/tasmax_day_CanESM5_ssp245_r1i1p1f1_gn_2016.nc");
    let src = Arc::new(Failing(Ranges::open(&path), AtomicUsize::new(0)));
    let remote = GridFile::open_remote(src, "s3://bucket/tasmax.nc", "tasmax").unwrap();
    let err = remote
        .decode_year(2016, &CellSelection::AllData, &opts(ReadPath::Auto))
        .unwrap_err();
    assert!(matches!(err, DecodeError::Fetch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("s3://bucket/tasmax.nc") && msg.contains("a chunk of `tasmax`"),
        "{msg}"
    );
    assert!(msg.contains("connection reset"), "{msg}");
}
