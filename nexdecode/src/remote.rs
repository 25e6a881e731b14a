//! Files that are not on disk: their bytes are read by range (S3 ranged GETs, say).
//!
//! [`GridFile::open_remote`](crate::GridFile::open_remote) reads the HDF5 chunk index of the
//! data variable through [`RemoteFile::read`] (the superblock, the object headers on the way
//! to the variable and its chunk B-tree, a few round trips), then every other byte of the file
//! (metadata and coordinate variables: everything but the variable's chunks) into a sparse
//! in-memory image that libnetcdf opens. A decode then announces the chunks it needs, in the
//! order it will use them ([`RemoteFile::prefetch`]), and inflates each batch of chunks as soon
//! as its bytes have arrived ([`RemoteFile::take`]) while later ones are still in flight.

use std::io;
use std::ops::Range;

/// A file read by byte ranges. Implementations fetch concurrently; every method blocks the
/// calling (decoding) thread only until the bytes it returns are there.
pub trait RemoteFile: Send + Sync {
    /// The file's size in bytes.
    fn size(&self) -> u64;

    /// Reads these ranges now and returns their bytes in the same order (metadata and the chunk
    /// index: a few small reads at a time, fetched concurrently).
    ///
    /// # Errors
    /// Any failure to get the bytes (the implementation's error, wrapped in [`io::Error`]).
    fn read(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>>;

    /// The decoder will [`take`](RemoteFile::take) these ranges (a variable's chunks), each once,
    /// in this order: start fetching them (coalescing neighbours, several requests in flight,
    /// a bounded number of bytes ahead of the decoder). Called once per decode, before its
    /// first `take`.
    fn prefetch(&self, ranges: &[Range<u64>]);

    /// Files up to this size are read whole with their metadata, the chunks included (one
    /// more round trip would cost more than the bytes a decode could leave out); default 0:
    /// never.
    fn read_whole_below(&self) -> u64 {
        0
    }

    /// The bytes of one range announced by [`prefetch`](RemoteFile::prefetch), blocking until
    /// they have arrived; the implementation may drop them afterwards.
    ///
    /// # Errors
    /// A failed fetch of the range (after the implementation's own retries).
    fn take(&self, range: Range<u64>) -> io::Result<Vec<u8>>;
}
