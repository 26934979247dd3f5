//! glibc's thresholds for large allocations, set for what a stage does with them: an index build
//! returns large frees to the kernel to bound its peak memory; the searches after it and the
//! alignment training loop keep them in the heap so that their per-batch buffers are not mapped
//! and faulted in afresh each time. Other allocators (and other platforms) are left alone.

/// Large allocations (128 KiB and up) go straight to the kernel and back for the rest of the
/// process. glibc otherwise raises its mmap threshold after the first large free (an add chunk,
/// FAISS's residual buffer) and serves the next ones from the heap, where the freed space stays
/// resident between the inverted lists that keep growing: measured at 31 MB of a 114 MB worker
/// peak at 200 k x 768-d (benches/README.md, "Peak memory of a sharded build"). Setting the
/// threshold explicitly turns glibc's adjustment off, for the rest of the process (glibc has no
/// call that turns it back on: see [`serve_large_from_heap`]).
pub fn return_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc allocator parameter; it takes the allocator's lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Large allocations up to 32 MiB served from the heap, and the heap trimmed only when 64 MiB
/// lie free at its top: the most that glibc's own adjustment reaches (its mmap threshold rises up
/// to 32 MiB on 64-bit, and its trim threshold to twice that).
///
/// - After an index build ([`return_large_frees`] switched the adjustment off): with the 128 KiB
///   threshold still set, each FAISS search mapped its query-batch buffers afresh and faulted
///   their pages in: 1000-query batches on a 1 M x 768 `IVF1024,PQ64x4fs` index ran 19 % slower
///   at nprobe 1 and 17 % at nprobe 4 (means of six searches each; benches/README.md, "FAISS
///   index").
/// - For alignment training ([`crate::align::train::train`]): glibc's own adjustment raises the
///   trim threshold only to twice the largest large block freed so far (about 8 MiB after G3's
///   4 MiB weight gradients), so the heap was trimmed at the end of every step and the next step
///   faulted it in again. At G3's shapes and batch 256 that cost a quarter of the step rate on
///   the 2-core build machine (the same limits as glibc tunables reproduce it;
///   benches/README.md, "Geo-alignment training throughput").
pub fn serve_large_from_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as in return_large_frees.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
