//! A reader of the few HDF5 structures that locate one dataset's chunks, from byte ranges
//! (no libhdf5): superblock, root group, the dataset's object header (dataspace, datatype,
//! filter pipeline, layout) and its chunk index. Like h5coro, it reads by levels so that a
//! B-tree of thousands of chunks costs a few round trips.
//!
//! Handled: superblock versions 0 to 3 (4- or 8-byte offsets, no user block); the root
//! group's links in a symbol table (group B-tree, symbol table nodes, local heap), in Link
//! messages, or in dense storage (fractal heap with a direct or indirect root block, name
//! index of at most one internal level); object headers versions 1 and 2 with continuation
//! blocks; dataspace, datatype, filter pipeline and data layout messages (version 3: v1
//! B-tree; version 4: single chunk). Anything else (shared messages, other chunk indexes,
//! contiguous or compact data, ...) is [`IndexError::Unsupported`]. Checksums are not verified.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io;
use std::ops::Range;

/// Reads ranges of the file, in the given order (see [`crate::RemoteFile::read`]).
pub(crate) type ReadFn<'a> = dyn Fn(&[Range<u64>]) -> io::Result<Vec<Vec<u8>>> + 'a;

/// Why a dataset's chunks could not be located.
#[derive(Debug)]
pub(crate) enum IndexError {
    /// Reading the bytes failed.
    Io(io::Error),
    /// The file uses something this reader does not handle (not HDF5, dense link storage, a
    /// chunk index type other than the v1 B-tree, ...), or is not what it claims: the message
    /// says what, for one log line.
    Unsupported(String),
}

/// The datatype class of a dataset's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ElemType {
    /// IEEE float of `size` bytes.
    Float { size: u32, big_endian: bool },
    /// Anything else (class number of the HDF5 datatype message, element size).
    Other { class: u8, size: u32 },
}

/// One stored chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkEntry {
    /// Element coordinates of the chunk's first element (one per dataset dimension).
    pub offset: Vec<u64>,
    /// File address of the stored bytes.
    pub addr: u64,
    /// Stored (filtered) size in bytes.
    pub size: u64,
    /// Filter mask (bit i set = filter i of the pipeline was skipped for this chunk).
    pub mask: u32,
}

/// What the reader found about one chunked dataset.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedVar {
    /// Current dataspace dimensions.
    pub shape: Vec<u64>,
    /// Chunk dimensions (one per dataset dimension; without the element-size dimension).
    pub chunk: Vec<u64>,
    pub elem: ElemType,
    /// Filter ids in pipeline order (1 = deflate, 2 = shuffle, ...).
    pub filters: Vec<u16>,
    /// Every stored chunk, in file-address order.
    pub chunks: Vec<ChunkEntry>,
    /// File ranges of the structures read to find all this (superblock, headers, heaps,
    /// B-tree nodes), for callers that want to know what was fetched.
    pub read: Vec<Range<u64>>,
    /// Levels of the chunk index that were read: the B-tree's depth + 1 (1 for a single-chunk
    /// index, 0 when no chunk has storage).
    pub index_levels: usize,
}

/// Locates the chunks of the dataset `name` in the root group of the HDF5 file of `size` bytes.
///
/// Round trips: the head of the file (superblock, and usually the root group and the
/// dataset's object header), then only what the head does not hold: the root group's
/// structures, the object header and its continuation blocks, one `read` per chunk B-tree
/// level.
pub(crate) fn read_chunked_var(
    read: &ReadFn<'_>,
    size: u64,
    name: &str,
) -> Result<ChunkedVar, IndexError> {
    read_with_head(read, size, name, HEAD_LEN)
}

/// [`read_chunked_var`], reading `head` bytes first.
fn read_with_head(
    read: &ReadFn<'_>,
    size: u64,
    name: &str,
    head: u64,
) -> Result<ChunkedVar, IndexError> {
    if size < SIGNATURE.len() as u64 {
        return Err(unsupported("not an HDF5 file"));
    }
    let mut f = Fetcher::new(read, size);
    f.fetch(&[(0, head)])?;
    let sb = parse_superblock(f.avail(0)?)?;
    let header = find_link(&mut f, &sb, name)?;
    let msgs = read_object_header(&mut f, sb.sizes, header)?;
    let ds = parse_dataset(&msgs, sb.sizes, name)?;
    let (chunks, index_levels) = match ds.index {
        ChunkIndex::BTree { addr: None } | ChunkIndex::Single { addr: None, .. } => (Vec::new(), 0),
        ChunkIndex::BTree { addr: Some(root) } => {
            read_chunk_btree(&mut f, &sb, root, ds.shape.len(), ds.chunk_bytes.len())?
        }
        ChunkIndex::Single {
            addr: Some(addr),
            size: stored,
            mask,
        } => {
            let stored = match stored {
                Some(n) => n,
                None => ds
                    .chunk_bytes
                    .iter()
                    .try_fold(1_u64, |acc, &d| acc.checked_mul(d))
                    .ok_or_else(|| unsupported("chunk size overflows"))?,
            };
            let chunk = ChunkEntry {
                offset: vec![0; ds.shape.len()],
                addr,
                size: stored,
                mask,
            };
            (vec![chunk], 1)
        }
    };
    for c in &chunks {
        if c.addr.checked_add(c.size).is_none_or(|end| end > size) {
            return Err(unsupported(format!(
                "chunk at {:#x} ({} bytes) past the end of the file",
                c.addr, c.size
            )));
        }
    }
    let mut chunks = chunks;
    chunks.sort_by_key(|c| c.addr);
    let mut chunk = ds.chunk_bytes;
    chunk.pop();
    Ok(ChunkedVar {
        shape: ds.shape,
        chunk,
        elem: ds.elem,
        filters: ds.filters,
        chunks,
        read: f.log,
        index_levels,
    })
}

/// The format signature at the start of every HDF5 file (without a user block).
const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// Bytes read from the start of the file in the first round trip.
const HEAD_LEN: u64 = 64 * 1024;
/// First read of an object header that is not already held.
const OHDR_LEN: u64 = 4096;
/// Least number of bytes fetched at an address.
const MIN_READ: u64 = 4096;
/// Largest structure read (a corrupt length must not fetch gigabytes).
const MAX_STRUCT: u64 = 16 << 20;
/// Default "group leaf node K" (symbol table node capacity is 2K).
const DEFAULT_GROUP_LEAF_K: u16 = 4;
/// Default "group internal node K" of the group B-trees.
const DEFAULT_GROUP_INTERNAL_K: u16 = 16;
/// Default "indexed storage internal node K" of the chunk B-trees.
const DEFAULT_CHUNK_K: u16 = 32;

/// Header message types used here.
const MSG_NIL: u16 = 0x00;
const MSG_DATASPACE: u16 = 0x01;
const MSG_LINK_INFO: u16 = 0x02;
const MSG_DATATYPE: u16 = 0x03;
const MSG_LINK: u16 = 0x06;
const MSG_LAYOUT: u16 = 0x08;
const MSG_FILTERS: u16 = 0x0B;
const MSG_CONTINUATION: u16 = 0x10;
const MSG_SYMBOL_TABLE: u16 = 0x11;

/// Message flag: the message is shared (stored elsewhere).
const MSG_FLAG_SHARED: u8 = 0x02;

fn unsupported(what: impl Into<String>) -> IndexError {
    IndexError::Unsupported(what.into())
}

/// Checked little-endian reads over a byte slice: reading past its end is an
/// [`IndexError::Unsupported`] naming the structure (`what`), never a panic.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, pos: 0, what }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn truncated(&self) -> IndexError {
        unsupported(format!("truncated {}", self.what))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, n: usize) -> Result<(), IndexError> {
        self.bytes(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, IndexError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, IndexError> {
        Ok(self.uint(2)? as u16)
    }

    fn u32(&mut self) -> Result<u32, IndexError> {
        Ok(self.uint(4)? as u32)
    }

    fn u64(&mut self) -> Result<u64, IndexError> {
        self.uint(8)
    }

    /// An unsigned little-endian integer of `n` (1 to 8) bytes.
    fn uint(&mut self, n: usize) -> Result<u64, IndexError> {
        if !(1..=8).contains(&n) {
            return Err(unsupported(format!("{n}-byte integer in {}", self.what)));
        }
        let b = self.bytes(n)?;
        Ok(b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// A file address (`None` for the undefined address, all bits set).
    fn addr(&mut self, s: Sizes) -> Result<Option<u64>, IndexError> {
        let v = self.uint(s.offsets)?;
        Ok((v != s.undef()).then_some(v))
    }

    /// A "length" field.
    fn length(&mut self, s: Sizes) -> Result<u64, IndexError> {
        self.uint(s.lengths)
    }

    /// Checks a signature.
    fn expect(&mut self, sig: &[u8]) -> Result<(), IndexError> {
        if self.bytes(sig.len())? != sig {
            return Err(unsupported(format!("bad signature of {}", self.what)));
        }
        Ok(())
    }
}

/// Size of offsets (addresses) and of lengths in the file, in bytes.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    offsets: usize,
    lengths: usize,
}

impl Sizes {
    fn new(offsets: u8, lengths: u8) -> Result<Self, IndexError> {
        let ok = |n: u8| matches!(n, 2 | 4 | 8);
        if !ok(offsets) || !ok(lengths) {
            return Err(unsupported(format!(
                "size of offsets {offsets} / lengths {lengths}"
            )));
        }
        Ok(Sizes {
            offsets: offsets.into(),
            lengths: lengths.into(),
        })
    }

    /// The undefined address.
    fn undef(self) -> u64 {
        if self.offsets >= 8 {
            u64::MAX
        } else {
            (1_u64 << (8 * self.offsets)) - 1
        }
    }

    fn o(self) -> u64 {
        self.offsets as u64
    }

    fn l(self) -> u64 {
        self.lengths as u64
    }
}

/// The bytes fetched so far, and the fetching: every [`Fetcher::fetch`] with something
/// missing is one `read` call.
struct Fetcher<'r> {
    read: &'r ReadFn<'r>,
    size: u64,
    /// Fetched ranges (start, bytes).
    segs: Vec<(u64, Vec<u8>)>,
    /// Every range read, in order.
    log: Vec<Range<u64>>,
}

impl<'r> Fetcher<'r> {
    fn new(read: &'r ReadFn<'r>, size: u64) -> Self {
        Fetcher {
            read,
            size,
            segs: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Whether `len` bytes at `addr` (clamped to the end of the file) are held.
    fn held(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len).min(self.size);
        self.segs
            .iter()
            .any(|(s, b)| *s <= addr && end <= s.saturating_add(b.len() as u64))
    }

    /// Reads the `(addr, len)` ranges not already held, in one `read` call (none if all are
    /// held); lengths are clamped to the end of the file, an address past it is an error.
    fn fetch(&mut self, wants: &[(u64, u64)]) -> Result<(), IndexError> {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for &(addr, len) in wants {
            if addr >= self.size {
                return Err(unsupported(format!(
                    "address {addr:#x} past the end of the file ({} bytes)",
                    self.size
                )));
            }
            if len > MAX_STRUCT {
                return Err(unsupported(format!(
                    "a structure of {len} bytes at {addr:#x}"
                )));
            }
            let end = addr.saturating_add(len.max(1)).min(self.size);
            if self.held(addr, end - addr) || ranges.iter().any(|r| r.start <= addr && end <= r.end)
            {
                continue;
            }
            // A little more than asked costs nothing in time and often holds the next
            // structure (continuation blocks, heaps and nodes written close together).
            let end = end.max(addr.saturating_add(MIN_READ).min(self.size));
            ranges.push(addr..end);
        }
        if ranges.is_empty() {
            return Ok(());
        }
        let bufs = (self.read)(&ranges).map_err(IndexError::Io)?;
        if bufs.len() != ranges.len() {
            return Err(IndexError::Io(io::Error::other(format!(
                "{} ranges read, {} asked",
                bufs.len(),
                ranges.len()
            ))));
        }
        for (r, b) in ranges.into_iter().zip(bufs) {
            if b.len() as u64 != r.end - r.start {
                return Err(IndexError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "short read at {:#x}: {} of {} bytes",
                        r.start,
                        b.len(),
                        r.end - r.start
                    ),
                )));
            }
            self.segs.push((r.start, b));
            self.log.push(r);
        }
        Ok(())
    }

    /// Every held byte from `addr` on (from the fetched range that holds the most).
    fn avail(&self, addr: u64) -> Result<&[u8], IndexError> {
        self.segs
            .iter()
            .filter(|(s, b)| *s <= addr && addr < s.saturating_add(b.len() as u64))
            .filter_map(|(s, b)| usize::try_from(addr - s).ok().and_then(|i| b.get(i..)))
            .max_by_key(|b| b.len())
            .ok_or_else(|| unsupported(format!("bytes at {addr:#x} were not read")))
    }

    /// Makes sure the structures at `addrs` are held whole: reads those whose start is not
    /// held (`guess` bytes, plus `extra` ranges, in one call), then, in a second call only if
    /// needed, the rest of those longer than what is held (`need` gives a structure's length
    /// from its held start).
    fn fetch_sized(
        &mut self,
        addrs: &[u64],
        guess: u64,
        extra: &[(u64, u64)],
        need: impl Fn(&[u8]) -> Result<u64, IndexError>,
    ) -> Result<(), IndexError> {
        let mut wants = extra.to_vec();
        for &a in addrs {
            match self.avail(a).and_then(&need) {
                Ok(n) if self.held(a, n) => {}
                Ok(n) => wants.push((a, n.max(guess))),
                Err(_) => wants.push((a, guess)),
            }
        }
        self.fetch(&wants)?;
        let mut more = Vec::new();
        for &a in addrs {
            let n = need(self.avail(a)?)?;
            if !self.held(a, n) {
                more.push((a, n));
            }
        }
        self.fetch(&more)
    }
}

/// Where the root group's links are.
#[derive(Debug, Clone, Copy)]
enum RootGroup {
    /// Symbol table (old-style group) from the superblock's cached root entry.
    SymbolTable { btree: u64, heap: u64 },
    /// The root group's object header.
    Header(u64),
}

/// What the superblock says.
#[derive(Debug, Clone, Copy)]
struct Superblock {
    sizes: Sizes,
    group_leaf_k: u16,
    group_internal_k: u16,
    chunk_k: u16,
    root: RootGroup,
}

/// Parses the superblock (versions 0 to 3) at the start of `head`.
fn parse_superblock(head: &[u8]) -> Result<Superblock, IndexError> {
    if head.get(..SIGNATURE.len()) != Some(SIGNATURE.as_slice()) {
        return Err(unsupported("not an HDF5 file"));
    }
    let mut c = Cursor::new(head, "superblock");
    c.skip(SIGNATURE.len())?;
    let version = c.u8()?;
    match version {
        0 | 1 => {
            // Free-space, root group symbol table entry, reserved, shared header versions.
            c.skip(4)?;
            let sizes = Sizes::new(c.u8()?, c.u8()?)?;
            c.skip(1)?;
            let group_leaf_k = c.u16()?;
            let group_internal_k = c.u16()?;
            c.skip(4)?; // file consistency flags
            let chunk_k = if version == 1 {
                let k = c.u16()?;
                c.skip(2)?;
                k
            } else {
                DEFAULT_CHUNK_K
            };
            let base = c.uint(sizes.offsets)?;
            if base != 0 {
                return Err(unsupported(format!("base address {base:#x}")));
            }
            // Free-space info, end of file and driver info addresses.
            c.skip(3 * sizes.offsets)?;
            // Root group symbol table entry.
            c.skip(sizes.offsets)?; // link name offset
            let header = c.addr(sizes)?;
            let cache_type = c.u32()?;
            c.skip(4)?;
            let btree = c.addr(sizes)?;
            let heap = c.addr(sizes)?;
            let root = match (cache_type, btree, heap, header) {
                (1, Some(btree), Some(heap), _) => RootGroup::SymbolTable { btree, heap },
                (_, _, _, Some(h)) => RootGroup::Header(h),
                _ => return Err(unsupported("undefined root group address")),
            };
            if group_leaf_k == 0 || group_internal_k == 0 || chunk_k == 0 {
                return Err(unsupported("B-tree K of 0 in the superblock"));
            }
            Ok(Superblock {
                sizes,
                group_leaf_k,
                group_internal_k,
                chunk_k,
                root,
            })
        }
        2 | 3 => {
            let sizes = Sizes::new(c.u8()?, c.u8()?)?;
            c.skip(1)?; // file consistency flags
            let base = c.uint(sizes.offsets)?;
            if base != 0 {
                return Err(unsupported(format!("base address {base:#x}")));
            }
            // Superblock extension and end of file addresses.
            c.skip(2 * sizes.offsets)?;
            let root = c
                .addr(sizes)?
                .ok_or_else(|| unsupported("undefined root group address"))?;
            Ok(Superblock {
                sizes,
                group_leaf_k: DEFAULT_GROUP_LEAF_K,
                group_internal_k: DEFAULT_GROUP_INTERNAL_K,
                chunk_k: DEFAULT_CHUNK_K,
                root: RootGroup::Header(root),
            })
        }
        v => Err(unsupported(format!("superblock version {v}"))),
    }
}

/// Finds the object header address of the root group's hard link `name`.
fn find_link(f: &mut Fetcher<'_>, sb: &Superblock, name: &str) -> Result<u64, IndexError> {
    let s = sb.sizes;
    let (btree, heap) = match sb.root {
        RootGroup::SymbolTable { btree, heap } => (btree, heap),
        RootGroup::Header(addr) => {
            let msgs = read_object_header(f, s, addr)?;
            match msgs.iter().find(|m| m.ty == MSG_SYMBOL_TABLE) {
                Some(m) => {
                    let mut c = Cursor::new(&m.data, "symbol table message");
                    let btree = c.addr(s)?;
                    let heap = c.addr(s)?;
                    match (btree, heap) {
                        (Some(b), Some(h)) => (b, h),
                        _ => return Err(unsupported("undefined symbol table address")),
                    }
                }
                None => return find_compact_link(f, &msgs, s, name),
            }
        }
    };
    find_symbol_table_link(f, sb, btree, heap, name)
}

/// Looks `name` up among the Link messages of a new-style group's header, or in its dense
/// link storage.
fn find_compact_link(
    f: &mut Fetcher<'_>,
    msgs: &[Msg],
    s: Sizes,
    name: &str,
) -> Result<u64, IndexError> {
    for m in msgs.iter().filter(|m| m.ty == MSG_LINK) {
        if m.flags & MSG_FLAG_SHARED != 0 {
            return Err(unsupported("shared link message"));
        }
        let (link_name, target) = parse_link(&m.data, s)?;
        if link_name == name.as_bytes() {
            return target.ok_or_else(|| unsupported(format!("{name} is not a hard link")));
        }
    }
    for m in msgs.iter().filter(|m| m.ty == MSG_LINK_INFO) {
        let mut c = Cursor::new(&m.data, "link info message");
        let version = c.u8()?;
        if version != 0 {
            return Err(unsupported(format!("link info message version {version}")));
        }
        if c.u8()? & 1 != 0 {
            c.skip(8)?; // maximum creation index
        }
        let heap = c.addr(s)?;
        let names = c.addr(s)?;
        if let (Some(heap), Some(names)) = (heap, names) {
            return find_dense_link(f, s, heap, names, name);
        }
    }
    Err(unsupported(format!("no variable {name} in the root group")))
}

/// Looks `name` up in a group's dense link storage: the name index (a version 2 B-tree of
/// type 5, at most one level of internal nodes) gives the heap IDs of the Link messages,
/// stored as managed objects of a fractal heap (root direct block, or a root indirect block
/// of direct blocks).
fn find_dense_link(
    f: &mut Fetcher<'_>,
    s: Sizes,
    heap: u64,
    names: u64,
    name: &str,
) -> Result<u64, IndexError> {
    let heap_len = 150 + 12 * (s.o() + s.l());
    let bt_len = 32 + s.o() + s.l();
    f.fetch(&[(heap, heap_len), (names, bt_len)])?;
    let fh = parse_fractal_heap(f.avail(heap)?, s)?;
    let bt = parse_btree_v2_header(f.avail(names)?, s)?;
    // The root of each: the index's root node and the heap's root block.
    let root_block_len = match fh.root_rows {
        0 => fh.start_block,
        rows => fh.indirect_len(s, rows),
    };
    let mut wants = vec![(fh.root, root_block_len)];
    if let Some(root) = bt.root {
        wants.push((root, u64::from(bt.node_size)));
    }
    f.fetch(&wants)?;
    let Some(root) = bt.root else {
        return Err(unsupported(format!("no variable {name} in the root group")));
    };
    let mut ids = Vec::new();
    let children =
        parse_btree_v2_node(f.avail(root)?, s, &bt, bt.depth, bt.root_records, &mut ids)?;
    if !children.is_empty() {
        let wants: Vec<_> = children
            .iter()
            .map(|&(a, _)| (a, u64::from(bt.node_size)))
            .collect();
        f.fetch(&wants)?;
        for (a, n) in children {
            parse_btree_v2_node(f.avail(a)?, s, &bt, 0, n, &mut ids)?;
        }
    }
    // The blocks holding the objects, then the objects.
    let mut places = Vec::new();
    for id in &ids {
        places.push(fh.locate(f, s, id)?);
    }
    let blocks: Vec<_> = places.iter().map(|p| (p.block, p.block_len)).collect();
    f.fetch(&blocks)?;
    for p in places {
        let obj = f
            .avail(p.block)?
            .get(p.start..)
            .and_then(|b| b.get(..p.len))
            .ok_or_else(|| unsupported("fractal heap object past its block"))?;
        let (link_name, target) = parse_link(obj, s)?;
        if link_name == name.as_bytes() {
            return target.ok_or_else(|| unsupported(format!("{name} is not a hard link")));
        }
    }
    Err(unsupported(format!("no variable {name} in the root group")))
}

/// A fractal heap header (the fields needed to find managed objects).
#[derive(Debug)]
struct FractalHeap {
    width: u64,
    start_block: u64,
    max_direct: u64,
    /// Bytes of a heap offset (in heap IDs and block headers).
    offset_bytes: usize,
    /// Bytes of an object length in heap IDs.
    length_bytes: usize,
    root: u64,
    root_rows: u64,
    /// Whether direct blocks end their header with a checksum.
    checksummed: bool,
}

/// Where one managed object is: its direct block and its place in the block.
#[derive(Debug)]
struct HeapObject {
    block: u64,
    block_len: u64,
    start: usize,
    len: usize,
}

/// Bytes to encode values up to `v` (HDF5's `H5VM_limit_enc_size`).
fn enc_size(v: u64) -> usize {
    (v.max(1).ilog2() / 8 + 1) as usize
}

/// Parses a fractal heap header ("FRHP", version 0, no I/O filters).
fn parse_fractal_heap(b: &[u8], s: Sizes) -> Result<FractalHeap, IndexError> {
    let mut c = Cursor::new(b, "fractal heap header");
    c.expect(b"FRHP")?;
    let version = c.u8()?;
    if version != 0 {
        return Err(unsupported(format!("fractal heap version {version}")));
    }
    let heap_id_len = usize::from(c.u16()?);
    if c.u16()? != 0 {
        return Err(unsupported("filtered fractal heap"));
    }
    let flags = c.u8()?;
    let max_managed = c.u32()?;
    c.skip(s.lengths)?; // next huge object id
    c.skip(s.offsets)?; // huge object B-tree
    c.skip(s.lengths)?; // free space in managed blocks
    c.skip(s.offsets)?; // free space manager
    c.skip(8 * s.lengths)?; // managed space, allocated, iterator, object counts and sizes
    let width = u64::from(c.u16()?);
    let start_block = c.length(s)?;
    let max_direct = c.length(s)?;
    let max_heap_bits = c.u16()?;
    c.skip(2)?; // starting rows of the root indirect block
    let root = c
        .addr(s)?
        .ok_or_else(|| unsupported("empty fractal heap"))?;
    let root_rows = u64::from(c.u16()?);
    let pow2 = |v: u64| v.is_power_of_two();
    if width == 0 || !pow2(start_block) || !pow2(max_direct) || max_direct < start_block {
        return Err(unsupported("malformed fractal heap header"));
    }
    let offset_bytes = usize::from(max_heap_bits).div_ceil(8);
    let length_bytes = (max_direct.ilog2() as usize)
        .div_ceil(8)
        .min(enc_size(u64::from(max_managed)));
    if !(1..=8).contains(&offset_bytes) || 1 + offset_bytes + length_bytes > heap_id_len {
        return Err(unsupported("malformed fractal heap header"));
    }
    Ok(FractalHeap {
        width,
        start_block,
        max_direct,
        offset_bytes,
        length_bytes,
        root,
        root_rows,
        checksummed: flags & 0x02 != 0,
    })
}

impl FractalHeap {
    /// Rows of direct blocks an indirect block can have.
    fn max_direct_rows(&self) -> u64 {
        u64::from(self.max_direct.ilog2() - self.start_block.ilog2()) + 2
    }

    /// Size of the direct blocks of `row`.
    fn row_block(&self, row: u64) -> u64 {
        let shift = row.saturating_sub(1).min(63) as u32;
        self.start_block.checked_shl(shift).unwrap_or(u64::MAX)
    }

    /// Length of an indirect block of `rows` rows.
    fn indirect_len(&self, s: Sizes, rows: u64) -> u64 {
        let entries = rows.saturating_mul(self.width);
        (5 + s.o() + self.offset_bytes as u64 + 4).saturating_add(entries.saturating_mul(s.o()))
    }

    /// Finds the managed object of heap ID `id` (the root block must be held).
    fn locate(&self, f: &Fetcher<'_>, s: Sizes, id: &[u8]) -> Result<HeapObject, IndexError> {
        let mut c = Cursor::new(id, "fractal heap ID");
        let kind = c.u8()?;
        if kind & 0xc0 != 0 || kind & 0x30 != 0 {
            return Err(unsupported(format!("fractal heap ID kind {kind:#x}")));
        }
        let offset = c.uint(self.offset_bytes)?;
        let len = c.uint(self.length_bytes)?;
        let (block, block_off, block_len) = if self.root_rows == 0 {
            (self.root, 0, self.start_block)
        } else {
            let mut r = Cursor::new(f.avail(self.root)?, "fractal heap indirect block");
            r.expect(b"FHIB")?;
            r.skip(1 + s.offsets + self.offset_bytes)?;
            let direct = self.root_rows.min(self.max_direct_rows()) * self.width;
            let mut at = 0_u64;
            let mut found = None;
            for k in 0..direct {
                let addr = r.addr(s)?;
                let size = self.row_block(k / self.width);
                if (at..at.saturating_add(size)).contains(&offset) {
                    found = Some((addr, at, size));
                    break;
                }
                at = at.saturating_add(size);
            }
            let (addr, at, size) =
                found.ok_or_else(|| unsupported("fractal heap object in an indirect child"))?;
            let addr = addr.ok_or_else(|| unsupported("fractal heap object in no block"))?;
            (addr, at, size)
        };
        let header = 5 + s.o() + self.offset_bytes as u64 + if self.checksummed { 4 } else { 0 };
        let start = offset - block_off;
        if start < header || start.saturating_add(len) > block_len {
            return Err(unsupported("fractal heap object past its block"));
        }
        Ok(HeapObject {
            block,
            block_len,
            start: start as usize,
            len: len as usize,
        })
    }
}

/// A version 2 B-tree header (name index of a group).
#[derive(Debug)]
struct BTreeV2 {
    node_size: u32,
    record_size: usize,
    depth: u16,
    root: Option<u64>,
    root_records: u64,
}

/// Parses a version 2 B-tree header ("BTHD") of type 5 (link name index).
fn parse_btree_v2_header(b: &[u8], s: Sizes) -> Result<BTreeV2, IndexError> {
    let mut c = Cursor::new(b, "v2 B-tree header");
    c.expect(b"BTHD")?;
    let version = c.u8()?;
    let ty = c.u8()?;
    if version != 0 || ty != 5 {
        return Err(unsupported(format!(
            "v2 B-tree version {version} type {ty}"
        )));
    }
    let node_size = c.u32()?;
    let record_size = usize::from(c.u16()?);
    let depth = c.u16()?;
    c.skip(2)?; // split and merge percents
    let root = c.addr(s)?;
    let root_records = u64::from(c.u16()?);
    if depth > 1 {
        return Err(unsupported(format!("link name index of depth {depth}")));
    }
    if record_size <= 4 || (node_size as usize) < 10 + record_size {
        return Err(unsupported("malformed v2 B-tree header"));
    }
    Ok(BTreeV2 {
        node_size,
        record_size,
        depth,
        root,
        root_records,
    })
}

/// Parses a v2 B-tree node of `depth` (0: leaf) holding `n` records: adds the heap IDs of its
/// records to `ids` and returns its children (address, records).
fn parse_btree_v2_node(
    b: &[u8],
    s: Sizes,
    bt: &BTreeV2,
    depth: u16,
    n: u64,
    ids: &mut Vec<Vec<u8>>,
) -> Result<Vec<(u64, u64)>, IndexError> {
    let mut c = Cursor::new(b, "v2 B-tree node");
    c.expect(if depth == 0 { b"BTLF" } else { b"BTIN" })?;
    c.skip(2)?; // version, type
    for _ in 0..n {
        let rec = c.bytes(bt.record_size)?;
        ids.push(rec.get(4..).unwrap_or_default().to_vec());
    }
    let mut children = Vec::new();
    if depth > 0 {
        let leaf_max = (u64::from(bt.node_size) - 10) / bt.record_size as u64;
        let nrec_bytes = enc_size(leaf_max);
        for _ in 0..=n {
            let a = c
                .addr(s)?
                .ok_or_else(|| unsupported("undefined v2 B-tree child"))?;
            children.push((a, c.uint(nrec_bytes)?));
        }
    }
    Ok(children)
}

/// Parses a Link message: the name and, for a hard link, the object header address.
fn parse_link(data: &[u8], s: Sizes) -> Result<(&[u8], Option<u64>), IndexError> {
    let mut c = Cursor::new(data, "link message");
    let version = c.u8()?;
    if version != 1 {
        return Err(unsupported(format!("link message version {version}")));
    }
    let flags = c.u8()?;
    let link_type = if flags & 0x08 != 0 { c.u8()? } else { 0 };
    if flags & 0x04 != 0 {
        c.skip(8)?; // creation order
    }
    if flags & 0x10 != 0 {
        c.skip(1)?; // character set
    }
    let len = c.uint(1 << (flags & 3))?;
    let name = c.bytes(usize::try_from(len).map_err(|_| c.truncated())?)?;
    let target = if link_type == 0 { c.addr(s)? } else { None };
    Ok((name, target))
}

/// Looks `name` up in an old-style group: its B-tree (type 0) gives the symbol table nodes,
/// whose entries name their links by offsets into the local heap.
fn find_symbol_table_link(
    f: &mut Fetcher<'_>,
    sb: &Superblock,
    btree: u64,
    heap: u64,
    name: &str,
) -> Result<u64, IndexError> {
    let s = sb.sizes;
    let heap_len = 8 + 2 * s.l() + s.o();
    let mut snods = Vec::new();
    walk_btree_v1(
        f,
        s,
        btree,
        0,
        s.lengths,
        sb.group_internal_k,
        &[(heap, heap_len)],
        |_, child| {
            snods.push(child.ok_or_else(|| unsupported("undefined symbol table node address"))?);
            Ok(())
        },
    )?;
    // The heap header was read with the B-tree's root.
    f.fetch(&[(heap, heap_len)])?;
    let (data_addr, data_len) = parse_local_heap(f.avail(heap)?, s)?;
    let entry_len = 2 * s.o() + 24;
    let snod_len = 8 + 2 * u64::from(sb.group_leaf_k) * entry_len;
    f.fetch_sized(&snods, snod_len, &[(data_addr, data_len)], |b| {
        let mut c = Cursor::new(b, "symbol table node");
        c.expect(b"SNOD")?;
        c.skip(2)?;
        Ok(8 + u64::from(c.u16()?) * entry_len)
    })?;
    let heap_data = f.avail(data_addr)?;
    let heap_data = heap_data
        .get(
            ..usize::try_from(data_len)
                .unwrap_or(usize::MAX)
                .min(heap_data.len()),
        )
        .unwrap_or_default();
    for &a in &snods {
        let mut c = Cursor::new(f.avail(a)?, "symbol table node");
        c.expect(b"SNOD")?;
        let version = c.u8()?;
        if version != 1 {
            return Err(unsupported(format!("symbol table node version {version}")));
        }
        c.skip(1)?;
        let n = c.u16()?;
        for _ in 0..n {
            let name_off = c.uint(s.offsets)?;
            let header = c.addr(s)?;
            c.skip(24)?; // cache type, reserved, scratch-pad
            let link_name = usize::try_from(name_off)
                .ok()
                .and_then(|i| heap_data.get(i..))
                .map(|b| b.split(|&x| x == 0).next().unwrap_or_default())
                .ok_or_else(|| unsupported("link name offset past the local heap"))?;
            if link_name == name.as_bytes() {
                return header.ok_or_else(|| unsupported(format!("undefined address of {name}")));
            }
        }
    }
    Err(unsupported(format!("no variable {name} in the root group")))
}

/// Parses a local heap header: the address and size of its data segment.
fn parse_local_heap(buf: &[u8], s: Sizes) -> Result<(u64, u64), IndexError> {
    let mut c = Cursor::new(buf, "local heap");
    c.expect(b"HEAP")?;
    let version = c.u8()?;
    if version != 0 {
        return Err(unsupported(format!("local heap version {version}")));
    }
    c.skip(3)?;
    let data_len = c.length(s)?;
    c.skip(s.lengths)?; // free list offset
    let data_addr = c
        .addr(s)?
        .ok_or_else(|| unsupported("undefined local heap data address"))?;
    Ok((data_addr, data_len))
}

/// Reads a version 1 B-tree of `node_type` level by level (one `fetch` per level, plus one
/// for nodes longer than guessed from `k`), calling `leaf` with each (key, child) of the
/// leaves. `extra` ranges are read along with the root.
#[allow(clippy::too_many_arguments)]
fn walk_btree_v1(
    f: &mut Fetcher<'_>,
    s: Sizes,
    root: u64,
    node_type: u8,
    key_len: usize,
    k: u16,
    extra: &[(u64, u64)],
    mut leaf: impl FnMut(&[u8], Option<u64>) -> Result<(), IndexError>,
) -> Result<usize, IndexError> {
    let header_len = 8 + 2 * s.o();
    let node_len =
        move |entries: u64| header_len + (entries + 1) * key_len as u64 + entries * s.o();
    let guess = node_len(2 * u64::from(k));
    let mut level = vec![root];
    let mut seen = HashSet::from([root]);
    let mut expect: Option<u8> = None;
    let mut extra = extra;
    let mut levels = 0;
    while !level.is_empty() {
        levels += 1;
        f.fetch_sized(&level, guess, extra, |b| {
            let mut c = Cursor::new(b, "B-tree node");
            c.expect(b"TREE")?;
            c.skip(2)?;
            Ok(node_len(u64::from(c.u16()?)))
        })?;
        extra = &[];
        let mut next = Vec::new();
        let mut child_level = None;
        for &a in &level {
            let mut c = Cursor::new(f.avail(a)?, "B-tree node");
            c.expect(b"TREE")?;
            let ty = c.u8()?;
            if ty != node_type {
                return Err(unsupported(format!(
                    "B-tree node of type {ty}, expected {node_type}"
                )));
            }
            let lvl = c.u8()?;
            if expect.is_some_and(|e| e != lvl) {
                return Err(unsupported("B-tree levels out of order"));
            }
            expect = Some(lvl);
            child_level = lvl.checked_sub(1);
            let entries = c.u16()?;
            c.skip(2 * s.offsets)?; // siblings
            for _ in 0..entries {
                let key = c.bytes(key_len)?;
                let child = c.addr(s)?;
                if lvl == 0 {
                    leaf(key, child)?;
                } else {
                    let child = child.ok_or_else(|| unsupported("undefined B-tree child"))?;
                    if !seen.insert(child) {
                        return Err(unsupported("B-tree node referenced twice"));
                    }
                    next.push(child);
                }
            }
        }
        expect = child_level;
        level = next;
    }
    Ok(levels)
}

/// One header message (its data copied out of the header).
#[derive(Debug)]
struct Msg {
    ty: u16,
    flags: u8,
    data: Vec<u8>,
}

/// Length of the first chunk of the object header at the start of `b` (prefix, messages and,
/// for version 2, the checksum).
fn object_header_len(b: &[u8]) -> Result<u64, IndexError> {
    let mut c = Cursor::new(b, "object header");
    match c.u8()? {
        1 => {
            c.skip(7)?;
            Ok(16 + u64::from(c.u32()?))
        }
        b'O' => {
            let (prefix, chunk0, _) = ohdr_v2_prefix(b)?;
            Ok(prefix as u64 + chunk0 + 4)
        }
        v => Err(unsupported(format!("object header version {v}"))),
    }
}

/// Parses the prefix of a version 2 object header: its length, the size of chunk #0 and
/// whether messages carry a creation order.
fn ohdr_v2_prefix(b: &[u8]) -> Result<(usize, u64, bool), IndexError> {
    let mut c = Cursor::new(b, "object header");
    c.expect(b"OHDR")?;
    let version = c.u8()?;
    if version != 2 {
        return Err(unsupported(format!("object header version {version}")));
    }
    let flags = c.u8()?;
    if flags & 0x20 != 0 {
        c.skip(16)?; // access, modification, change, birth times
    }
    if flags & 0x10 != 0 {
        c.skip(4)?; // max compact / min dense attributes
    }
    let chunk0 = c.uint(1 << (flags & 3))?;
    Ok((c.pos, chunk0, flags & 0x04 != 0))
}

/// Reads the object header at `addr` with its continuation blocks (all the blocks named by
/// one block are read in one call) and returns its messages (NIL and continuation messages
/// left out).
fn read_object_header(f: &mut Fetcher<'_>, s: Sizes, addr: u64) -> Result<Vec<Msg>, IndexError> {
    f.fetch_sized(&[addr], OHDR_LEN, &[], object_header_len)?;
    let b = f.avail(addr)?;
    let len = usize::try_from(object_header_len(b)?).map_err(|_| unsupported("object header"))?;
    let b = b
        .get(..len)
        .ok_or_else(|| unsupported("truncated object header"))?;
    let mut msgs = Vec::new();
    let mut conts = Vec::new();
    let v2 = b.first() == Some(&b'O');
    let mut creation_order = false;
    if v2 {
        let (prefix, _, co) = ohdr_v2_prefix(b)?;
        creation_order = co;
        let region = b
            .get(prefix..len.saturating_sub(4))
            .ok_or_else(|| unsupported("truncated object header"))?;
        parse_messages(region, s, true, creation_order, &mut msgs, &mut conts)?;
    } else {
        let region = b.get(16..).unwrap_or_default();
        parse_messages(region, s, false, false, &mut msgs, &mut conts)?;
    }
    let mut seen = HashSet::new();
    while !conts.is_empty() {
        let blocks = std::mem::take(&mut conts);
        for &(a, _) in &blocks {
            if !seen.insert(a) {
                return Err(unsupported("object header continuation loop"));
            }
        }
        f.fetch(&blocks)?;
        for (a, l) in blocks {
            let b = f.avail(a)?;
            let b = usize::try_from(l)
                .ok()
                .and_then(|l| b.get(..l))
                .ok_or_else(|| unsupported("truncated object header continuation"))?;
            if v2 {
                let region = b
                    .get(..b.len().saturating_sub(4))
                    .ok_or_else(|| unsupported("truncated object header continuation"))?;
                let mut c = Cursor::new(region, "object header continuation");
                c.expect(b"OCHK")?;
                let region = region.get(4..).unwrap_or_default();
                parse_messages(region, s, true, creation_order, &mut msgs, &mut conts)?;
            } else {
                parse_messages(b, s, false, false, &mut msgs, &mut conts)?;
            }
        }
    }
    Ok(msgs)
}

/// Parses the messages of one object header chunk (`region`: without prefix, signature or
/// checksum), adding continuation blocks (address, length) to `conts`. Space too short for a
/// message header at the end is a gap.
fn parse_messages(
    region: &[u8],
    s: Sizes,
    v2: bool,
    creation_order: bool,
    msgs: &mut Vec<Msg>,
    conts: &mut Vec<(u64, u64)>,
) -> Result<(), IndexError> {
    let header_len = match (v2, creation_order) {
        (false, _) => 8,
        (true, false) => 4,
        (true, true) => 6,
    };
    let mut c = Cursor::new(region, "object header message");
    while c.remaining() >= header_len {
        let (ty, size, flags) = if v2 {
            let ty = u16::from(c.u8()?);
            let size = c.u16()?;
            let flags = c.u8()?;
            if creation_order {
                c.skip(2)?;
            }
            (ty, size, flags)
        } else {
            let ty = c.u16()?;
            let size = c.u16()?;
            let flags = c.u8()?;
            c.skip(3)?;
            (ty, size, flags)
        };
        let data = c.bytes(usize::from(size))?;
        match ty {
            MSG_NIL => {}
            MSG_CONTINUATION => {
                let mut d = Cursor::new(data, "continuation message");
                let a = d
                    .addr(s)?
                    .ok_or_else(|| unsupported("undefined continuation address"))?;
                conts.push((a, d.length(s)?));
            }
            _ => msgs.push(Msg {
                ty,
                flags,
                data: data.to_vec(),
            }),
        }
    }
    Ok(())
}

/// Where a dataset's chunk index is.
#[derive(Debug, Clone, Copy)]
enum ChunkIndex {
    /// Version 1 B-tree (layout version 3); `None`: no chunk stored.
    BTree { addr: Option<u64> },
    /// Single chunk (layout version 4, index type 1): its stored size when filtered.
    Single {
        addr: Option<u64>,
        size: Option<u64>,
        mask: u32,
    },
}

/// The dataset messages that matter here.
#[derive(Debug)]
struct DatasetInfo {
    shape: Vec<u64>,
    /// Chunk dimensions, with the element size last.
    chunk_bytes: Vec<u64>,
    elem: ElemType,
    filters: Vec<u16>,
    index: ChunkIndex,
}

/// The one message of type `ty` (not shared), if any.
fn message<'m>(msgs: &'m [Msg], ty: u16, what: &str) -> Result<Option<&'m [u8]>, IndexError> {
    match msgs.iter().find(|m| m.ty == ty) {
        Some(m) if m.flags & MSG_FLAG_SHARED != 0 => {
            Err(unsupported(format!("shared {what} message")))
        }
        Some(m) => Ok(Some(&m.data)),
        None => Ok(None),
    }
}

/// Reads the dataspace, datatype, filter pipeline and layout messages of a dataset.
fn parse_dataset(msgs: &[Msg], s: Sizes, name: &str) -> Result<DatasetInfo, IndexError> {
    let missing = |what: &str| unsupported(format!("{name}: no {what} message (not a dataset?)"));
    let layout = message(msgs, MSG_LAYOUT, "layout")?.ok_or_else(|| missing("layout"))?;
    let (chunk_bytes, index) = parse_layout(layout, s)?;
    let shape = parse_dataspace(
        message(msgs, MSG_DATASPACE, "dataspace")?.ok_or_else(|| missing("dataspace"))?,
        s,
    )?;
    let elem = parse_datatype(
        message(msgs, MSG_DATATYPE, "datatype")?.ok_or_else(|| missing("datatype"))?,
    )?;
    let filters = match message(msgs, MSG_FILTERS, "filter pipeline")? {
        Some(m) => parse_filters(m)?,
        None => Vec::new(),
    };
    if chunk_bytes.len() != shape.len() + 1 {
        return Err(unsupported(format!(
            "chunk rank {} for a dataspace of rank {}",
            chunk_bytes.len().saturating_sub(1),
            shape.len()
        )));
    }
    if chunk_bytes.contains(&0) {
        return Err(unsupported("chunk dimension of 0"));
    }
    Ok(DatasetInfo {
        shape,
        chunk_bytes,
        elem,
        filters,
        index,
    })
}

/// Parses a Dataspace message (versions 1 and 2): the current dimensions.
fn parse_dataspace(data: &[u8], s: Sizes) -> Result<Vec<u64>, IndexError> {
    let mut c = Cursor::new(data, "dataspace message");
    let version = c.u8()?;
    let rank = c.u8()?;
    c.skip(1)?; // flags
    match version {
        1 => c.skip(5)?,
        2 => c.skip(1)?, // type
        v => return Err(unsupported(format!("dataspace message version {v}"))),
    }
    (0..rank).map(|_| c.length(s)).collect()
}

/// Parses a Datatype message: floating point (class 1) size and byte order, or the class.
fn parse_datatype(data: &[u8]) -> Result<ElemType, IndexError> {
    let mut c = Cursor::new(data, "datatype message");
    let class = c.u8()? & 0x0f;
    let bits0 = c.u8()?;
    c.skip(2)?;
    let size = c.u32()?;
    Ok(if class == 1 {
        ElemType::Float {
            size,
            big_endian: bits0 & 1 != 0,
        }
    } else {
        ElemType::Other { class, size }
    })
}

/// Parses a Filter Pipeline message (versions 1 and 2): the filter ids in order.
fn parse_filters(data: &[u8]) -> Result<Vec<u16>, IndexError> {
    let mut c = Cursor::new(data, "filter pipeline message");
    let version = c.u8()?;
    let n = c.u8()?;
    if version == 1 {
        c.skip(6)?;
    } else if version != 2 {
        return Err(unsupported(format!(
            "filter pipeline message version {version}"
        )));
    }
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = c.u16()?;
        let name_len = if version == 1 || id >= 256 {
            c.u16()?
        } else {
            0
        };
        c.skip(2)?; // flags
        let values = usize::from(c.u16()?);
        if version == 1 {
            c.skip(usize::from(name_len).next_multiple_of(8))?;
            c.skip(4 * (values + values % 2))?;
        } else {
            c.skip(usize::from(name_len))?;
            c.skip(4 * values)?;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Parses a Data Layout message: chunk dimensions (element size last) and the chunk index.
fn parse_layout(data: &[u8], s: Sizes) -> Result<(Vec<u64>, ChunkIndex), IndexError> {
    let mut c = Cursor::new(data, "layout message");
    let version = c.u8()?;
    if !(3..=4).contains(&version) {
        return Err(unsupported(format!("layout message version {version}")));
    }
    let class = c.u8()?;
    if class != 2 {
        return Err(unsupported(format!("not chunked (layout class {class})")));
    }
    if version == 3 {
        let rank = c.u8()?;
        let addr = c.addr(s)?;
        let dims = (0..rank)
            .map(|_| c.u32().map(u64::from))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((dims, ChunkIndex::BTree { addr }));
    }
    let flags = c.u8()?;
    let rank = c.u8()?;
    let width = usize::from(c.u8()?);
    let dims = (0..rank)
        .map(|_| c.uint(width))
        .collect::<Result<Vec<_>, _>>()?;
    let index_type = c.u8()?;
    if index_type != 1 {
        return Err(unsupported(format!("chunk index type {index_type}")));
    }
    let (size, mask) = if flags & 0x02 != 0 {
        (Some(c.length(s)?), c.u32()?)
    } else {
        (None, 0)
    };
    let addr = c.addr(s)?;
    Ok((dims, ChunkIndex::Single { addr, size, mask }))
}

/// Reads the chunk B-tree (type 1) of a dataset of rank `rank` (layout dimensionality
/// `ndims` = rank + 1): every stored chunk, and the number of levels.
fn read_chunk_btree(
    f: &mut Fetcher<'_>,
    sb: &Superblock,
    root: u64,
    rank: usize,
    ndims: usize,
) -> Result<(Vec<ChunkEntry>, usize), IndexError> {
    let mut chunks = Vec::new();
    let key_len = 8 + 8 * ndims;
    let levels = walk_btree_v1(
        f,
        sb.sizes,
        root,
        1,
        key_len,
        sb.chunk_k,
        &[],
        |key, child| {
            let Some(addr) = child else {
                return Ok(());
            };
            let mut c = Cursor::new(key, "chunk B-tree key");
            let size = c.u32()?;
            let mask = c.u32()?;
            let offset = (0..rank).map(|_| c.u64()).collect::<Result<Vec<_>, _>>()?;
            chunks.push(ChunkEntry {
                offset,
                addr,
                size: size.into(),
                mask,
            });
            Ok(())
        },
    )?;
    Ok((chunks, levels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};

    use hdf5_metno as hdf5;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/data");
    const REALDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/realdata");
    /// Variables with more chunks than this are not compared (HDF5's `chunk_info` is slow).
    const MAX_CHUNKS: usize = 5000;

    /// Every `.nc` file under `dir`, sorted.
    fn nc_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "nc") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    fn all_files() -> Vec<PathBuf> {
        let mut files = nc_files(Path::new(FIXTURES));
        if Path::new(REALDATA).is_dir() {
            files.extend(nc_files(Path::new(REALDATA)));
        } else {
            println!("{REALDATA} does not exist: realdata skipped");
        }
        files
    }

    /// What one call of [`read_chunked_var`] did.
    struct Run {
        result: Result<ChunkedVar, IndexError>,
        calls: usize,
    }

    /// Runs the reader over `bytes` seen as a file of `size` bytes (positioned reads),
    /// checking that no range goes past `size`.
    fn run_bytes(bytes: &[u8], size: u64, name: &str) -> Run {
        let calls = Cell::new(0);
        let read = |ranges: &[Range<u64>]| -> io::Result<Vec<Vec<u8>>> {
            calls.set(calls.get() + 1);
            ranges
                .iter()
                .map(|r| {
                    assert!(
                        r.start < r.end && r.end <= size,
                        "range {r:?} of a {size}-byte file"
                    );
                    Ok(bytes[r.start as usize..r.end as usize].to_vec())
                })
                .collect()
        };
        let result = read_chunked_var(&read, size, name);
        Run {
            result,
            calls: calls.get(),
        }
    }

    /// Runs the reader over a file on disk (positioned reads), as a file of `size` bytes.
    fn run_file(path: &Path, size: u64, name: &str) -> Run {
        let file = File::open(path).unwrap();
        let calls = Cell::new(0);
        let log = RefCell::new(Vec::new());
        let read = |ranges: &[Range<u64>]| -> io::Result<Vec<Vec<u8>>> {
            calls.set(calls.get() + 1);
            ranges
                .iter()
                .map(|r| {
                    assert!(
                        r.start < r.end && r.end <= size,
                        "range {r:?} of a {size}-byte file"
                    );
                    log.borrow_mut().push(r.clone());
                    let mut b = vec![0; (r.end - r.start) as usize];
                    file.read_exact_at(&mut b, r.start)?;
                    Ok(b)
                })
                .collect()
        };
        let result = read_chunked_var(&read, size, name);
        if let Ok(v) = &result {
            assert_eq!(
                v.read,
                *log.borrow(),
                "ChunkedVar::read lists every range read"
            );
        }
        Run {
            result,
            calls: calls.get(),
        }
    }

    fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    fn is_hdf5(path: &Path) -> bool {
        let mut head = [0_u8; 8];
        File::open(path)
            .unwrap()
            .read_exact_at(&mut head, 0)
            .is_ok()
            && &head == SIGNATURE
    }

    /// What libhdf5 says of one chunked dataset.
    #[derive(Debug)]
    struct Expected {
        shape: Vec<u64>,
        chunk: Vec<u64>,
        filters: Vec<u16>,
        /// `(size, big endian)` of a float type, else the element size.
        elem: Result<(u32, bool), u32>,
        chunks: Vec<ChunkEntry>,
    }

    /// A root group member, as libhdf5 sees it.
    #[derive(Debug)]
    enum Member {
        Chunked(Box<Expected>),
        TooManyChunks(usize),
        NotChunked,
        /// Not a dataset (or not readable by hdf5).
        Other,
    }

    /// libhdf5's view of every member of the root group; `None` if it cannot open the file.
    fn hdf5_members(path: &Path) -> Option<Vec<(String, Member)>> {
        hdf5::sync::sync(|| {
            let file = hdf5::File::open(path).ok()?;
            let names = file.member_names().ok()?;
            let mut out = Vec::new();
            for name in names {
                let Ok(ds) = file.dataset(&name) else {
                    out.push((name, Member::Other));
                    continue;
                };
                if !ds.is_chunked() {
                    out.push((name, Member::NotChunked));
                    continue;
                }
                let n = ds.num_chunks().unwrap_or(0);
                if n > MAX_CHUNKS {
                    out.push((name, Member::TooManyChunks(n)));
                    continue;
                }
                let dtype = ds.dtype().unwrap();
                let elem = match dtype.to_descriptor() {
                    Ok(hdf5::types::TypeDescriptor::Float(_)) => Ok((
                        dtype.size() as u32,
                        dtype.byte_order() == hdf5::datatype::ByteOrder::BigEndian,
                    )),
                    _ => Err(dtype.size() as u32),
                };
                let mut chunks: Vec<ChunkEntry> = (0..n)
                    .map(|i| ds.chunk_info(i).unwrap())
                    .filter(|c| c.addr != u64::MAX)
                    .map(|c| ChunkEntry {
                        offset: c.offset.clone(),
                        addr: c.addr,
                        size: c.size,
                        mask: c.filter_mask,
                    })
                    .collect();
                chunks.sort_by_key(|c| c.addr);
                let expected = Expected {
                    shape: ds.shape().iter().map(|&d| d as u64).collect(),
                    chunk: ds.chunk().unwrap().iter().map(|&d| d as u64).collect(),
                    filters: ds.filters().iter().map(|f| f.id() as u16).collect(),
                    elem,
                    chunks,
                };
                out.push((name, Member::Chunked(Box::new(expected))));
            }
            Some(out)
        })
    }

    fn check_same(path: &Path, name: &str, got: &ChunkedVar, want: &Expected) {
        let what = format!("{}:{name}", path.display());
        assert_eq!(got.shape, want.shape, "{what} shape");
        assert_eq!(got.chunk, want.chunk, "{what} chunk");
        assert_eq!(got.filters, want.filters, "{what} filters");
        match (got.elem, want.elem) {
            (ElemType::Float { size, big_endian }, Ok(w)) => {
                assert_eq!((size, big_endian), w, "{what} float type");
            }
            (ElemType::Other { size, .. }, Err(w)) => assert_eq!(size, w, "{what} type size"),
            (g, w) => panic!("{what}: type {g:?}, hdf5 says {w:?}"),
        }
        assert_eq!(got.chunks, want.chunks, "{what} chunks");
    }

    #[test]
    fn matches_libhdf5_on_every_file() {
        let (mut files, mut vars, mut chunks) = (0, 0, 0);
        for path in all_files() {
            let size = file_size(&path);
            if !is_hdf5(&path) {
                // NetCDF-3 classic: not HDF5.
                match run_file(&path, size, "tas").result {
                    Err(IndexError::Unsupported(m)) => assert_eq!(m, "not an HDF5 file"),
                    r => panic!("{}: {r:?}", path.display()),
                }
                println!("{}: not HDF5, Unsupported", path.display());
                continue;
            }
            let Some(members) = hdf5_members(&path) else {
                // libhdf5 cannot open it either (the corrupt fixture): just no panic.
                let r = run_file(&path, size, "tasmax").result;
                println!("{}: hdf5 cannot open it; reader: {r:?}", path.display());
                continue;
            };
            files += 1;
            for (name, member) in &members {
                let run = run_file(&path, size, name);
                match member {
                    Member::Chunked(want) => {
                        let got = run.result.unwrap_or_else(|e| {
                            panic!("{}:{name}: {e:?}", path.display());
                        });
                        check_same(&path, name, &got, want);
                        vars += 1;
                        chunks += got.chunks.len();
                        println!(
                            "{}:{name}: {} chunks match, {} levels, {} reads",
                            path.display(),
                            got.chunks.len(),
                            got.index_levels,
                            run.calls
                        );
                    }
                    Member::NotChunked => match run.result {
                        Err(IndexError::Unsupported(m)) if m.contains("not chunked") => {}
                        r => panic!("{}:{name} is not chunked: {r:?}", path.display()),
                    },
                    Member::TooManyChunks(n) => {
                        println!("{}:{name}: {n} chunks, skipped", path.display());
                    }
                    Member::Other => {
                        assert!(run.result.is_err(), "{}:{name}", path.display());
                    }
                }
            }
        }
        println!("{files} HDF5 files, {vars} chunked variables, {chunks} chunks matched");
        assert!(files >= 10 && vars >= 10, "{files} files, {vars} variables");
    }

    /// The data variable of an HDF5 file: its chunked variable with the most stored bytes
    /// (name, number of chunks).
    fn data_var(path: &Path) -> Option<(String, usize)> {
        hdf5_members(path)?
            .into_iter()
            .filter_map(|(name, m)| match m {
                Member::Chunked(e) => {
                    let bytes: u64 = e.chunks.iter().map(|c| c.size).sum();
                    Some((name, e.chunks.len(), bytes))
                }
                _ => None,
            })
            .max_by_key(|(_, _, bytes)| *bytes)
            .map(|(name, n, _)| (name, n))
    }

    #[test]
    fn missing_variable_is_named() {
        let path = Path::new(FIXTURES).join("nex-gddp/pr_day_BCSD_rcp85_r1i1p1_ACCESS1-0_2008.nc");
        match run_file(&path, file_size(&path), "no_such_var").result {
            Err(IndexError::Unsupported(m)) => assert!(m.contains("no_such_var"), "{m}"),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn few_round_trips() {
        let mut biggest = (0, 0, String::new());
        for path in nc_files(Path::new(FIXTURES)) {
            if !is_hdf5(&path) {
                continue;
            }
            let Some((name, _)) = data_var(&path) else {
                continue;
            };
            let run = run_file(&path, file_size(&path), &name);
            let v = run.result.unwrap();
            assert!(
                run.calls <= 2 + v.index_levels + 2,
                "{}: {} reads for {} index levels",
                path.display(),
                run.calls,
                v.index_levels
            );
            if v.chunks.len() > biggest.0 {
                biggest = (
                    v.chunks.len(),
                    run.calls,
                    format!("{}:{name}", path.display()),
                );
            }
        }
        println!(
            "biggest fixture: {} ({} chunks): {} read calls",
            biggest.2, biggest.0, biggest.1
        );
    }

    /// With a short head, every structure is fetched as the reader goes: the same answer,
    /// with one read per chunk B-tree level (plus a few for the groups and headers).
    #[test]
    fn short_head_reads_level_by_level() {
        for path in all_files() {
            if !is_hdf5(&path) {
                continue;
            }
            let Some((name, _)) = data_var(&path) else {
                continue;
            };
            let bytes = std::fs::read(&path).unwrap();
            let size = bytes.len() as u64;
            let full = run_bytes(&bytes, size, &name).result.unwrap();
            let calls = Cell::new(0);
            let read = |ranges: &[Range<u64>]| -> io::Result<Vec<Vec<u8>>> {
                calls.set(calls.get() + 1);
                Ok(ranges
                    .iter()
                    .map(|r| {
                        assert!(r.start < r.end && r.end <= size);
                        bytes[r.start as usize..r.end as usize].to_vec()
                    })
                    .collect())
            };
            let short = read_with_head(&read, size, &name, 512).unwrap();
            assert_eq!(short.chunks, full.chunks, "{}", path.display());
            assert_eq!(
                (&short.shape, &short.chunk, &short.filters, short.elem),
                (&full.shape, &full.chunk, &full.filters, full.elem)
            );
            let fetched: u64 = short.read.iter().map(|r| r.end - r.start).sum();
            println!(
                "{}:{name}: 512-byte head: {} reads ({} index levels), {fetched} bytes",
                path.display(),
                calls.get(),
                short.index_levels,
            );
            assert!(
                calls.get() <= 6 + short.index_levels,
                "{}: {} reads",
                path.display(),
                calls.get()
            );
        }
    }

    /// Files written here by libhdf5: the latest format (superblock v3, dense link storage of
    /// 300 links, layout v4 single-chunk and fixed-array indexes) and the earliest one (superblock v0, a
    /// root group of 300 links: a group B-tree of several symbol table nodes).
    #[test]
    fn files_written_by_libhdf5() {
        let dir = tempfile::tempdir().unwrap();
        let latest = dir.path().join("latest.h5");
        let earliest = dir.path().join("earliest.h5");
        let data = ndarray::Array2::from_shape_fn((8, 10), |(i, j)| (i * 10 + j) as f32);
        hdf5::sync::sync(|| {
            let f = hdf5::File::with_options()
                .with_fapl(|p| p.libver_latest())
                .create(&latest)
                .unwrap();
            let single = data.slice(ndarray::s![..4, ..5]).to_owned();
            let ds = f
                .new_dataset::<f32>()
                .shape([4, 5])
                .chunk([4, 5])
                .deflate(4);
            ds.create("single").unwrap().write(&single).unwrap();
            let ds = f.new_dataset::<f32>().shape([4, 5]).chunk([4, 5]);
            ds.create("single_raw").unwrap().write(&single).unwrap();
            let ds = f.new_dataset::<f32>().shape([8, 10]).chunk([4, 5]);
            ds.create("fixed").unwrap().write(&data).unwrap();
            // Enough links for a fractal heap with a root indirect block and a name index
            // with a level of internal nodes.
            for i in 0..300 {
                let name = format!("extra_variable_with_a_long_name_{i:03}");
                f.new_dataset::<f64>()
                    .shape([3])
                    .create(name.as_str())
                    .unwrap();
            }
            let f = hdf5::File::create(&earliest).unwrap();
            let ds = f
                .new_dataset::<f32>()
                .shape([8, 10])
                .chunk([4, 5])
                .shuffle()
                .deflate(4);
            ds.create("v").unwrap().write(&data).unwrap();
            for i in 0..300 {
                f.new_dataset::<i32>()
                    .shape([2])
                    .create(format!("x{i:03}").as_str())
                    .unwrap();
            }
        });
        let mut checked = 0;
        for path in [&latest, &earliest] {
            let size = file_size(path);
            for (name, member) in hdf5_members(path).unwrap() {
                let run = run_file(path, size, &name);
                match (member, run.result) {
                    (Member::Chunked(want), Ok(got)) => {
                        check_same(path, &name, &got, &want);
                        checked += 1;
                    }
                    (Member::Chunked(_), Err(IndexError::Unsupported(m))) if name == "fixed" => {
                        assert_eq!(m, "chunk index type 3");
                    }
                    (Member::NotChunked, Err(IndexError::Unsupported(m))) => {
                        assert!(m.contains("not chunked"), "{name}: {m}");
                    }
                    (m, r) => panic!("{}:{name}: {m:?} {r:?}", path.display()),
                }
            }
        }
        assert_eq!(checked, 3);
    }

    #[test]
    fn truncated_files_fail_cleanly() {
        for path in all_files() {
            if !is_hdf5(&path) {
                continue;
            }
            let Some((name, _)) = data_var(&path) else {
                continue;
            };
            let bytes = std::fs::read(&path).unwrap();
            let half = bytes.len() as u64 / 2;
            let r = run_bytes(&bytes, half, &name).result;
            assert!(r.is_err(), "{}:{name} cut to half: {r:?}", path.display());
            // Other cuts: any answer, no panic.
            for cut in [0, 7, 8, 100, 1000, 4096, 20_000, 65_536, 70_000] {
                let _ = run_bytes(&bytes, cut.min(bytes.len() as u64), &name);
            }
        }
    }

    #[test]
    fn corrupt_metadata_never_panics() {
        // Superblock v2 with compact links (fixture), v0 with a symbol table and v2 with dense
        // link storage (realdata, when there).
        let files = [
            Path::new(FIXTURES).join("nex-gddp/pr_day_BCSD_rcp85_r1i1p1_ACCESS1-0_2008.nc"),
            Path::new(REALDATA).join("pr_1980.nc"),
            Path::new(REALDATA).join("tas_day_MIROC6_ssp119_r1i1p1f1_gn_20150101.nc"),
        ];
        for path in files.iter().filter(|p| p.exists()) {
            let Some((name, _)) = data_var(path) else {
                panic!("{}: no chunked variable", path.display());
            };
            let mut bytes = std::fs::read(path).unwrap();
            let size = bytes.len() as u64;
            // Where the reader looks: the ranges it reads, corrupted byte by byte.
            let ok = run_bytes(&bytes, size, &name).result.unwrap();
            let mut positions: Vec<u64> = ok.read.iter().flat_map(|r| r.clone()).collect();
            positions.sort_unstable();
            positions.dedup();
            let step = (positions.len() / 1000).max(1);
            for &p in positions.iter().step_by(step) {
                let orig = bytes[p as usize];
                for v in [0x01, 0xff, 0x80] {
                    bytes[p as usize] = orig ^ v;
                    let _ = run_bytes(&bytes, size, &name);
                }
                bytes[p as usize] = orig;
            }
        }
    }
}
