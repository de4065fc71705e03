//! The guest's memory allocator: a bump allocator in front of the standard
//! one.
//!
//! atoll runs every call in a fresh instance and drops it after the call, so
//! nothing a plugin allocates outlives one call and a general-purpose
//! allocator's bookkeeping (free lists, coalescing) is mostly wasted work:
//! measured on raft's render of 32 partitions, wasi-libc's dlmalloc was over
//! a third of the guest's time, and bumping made the whole render 1.2x
//! faster (BENCHMARKS.md section 4). An allocation is an aligned pointer bump; a
//! free returns memory only when it was the latest allocation, and growing
//! the latest allocation (a `String` or `Vec` being built, the common case
//! when serialising) extends it in place.
//!
//! Freed memory is otherwise not reused, so bumping stops after [`BUDGET`]
//! bytes of linear memory and the standard allocator (dlmalloc) serves the
//! rest of the call: a call's peak memory is at most the budget more than
//! with dlmalloc alone. Blocks are told apart by address (bumped blocks lie
//! in one range), so each goes back to the allocator it came from.
//!
//! A plugin can turn this off: build `atoll-guest` without its default
//! feature `bump-allocator`.

use core::alloc::Layout;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// A WebAssembly page.
const PAGE: usize = 64 << 10;
/// Grow linear memory by at least this many pages at a time: each growth is
/// a call into the host (and a system call there).
const GROW_PAGES: usize = 16;
/// Most bytes of linear memory bumped through in one call before the
/// standard allocator takes over. raft's render of 32 partitions bumps
/// through under 1 MiB.
pub const BUDGET: usize = 8 << 20;

/// Bump allocation over memory obtained with `memory.grow`.
///
/// Bumped blocks lie in `start..end`, the free part is `next..end`. Atomics
/// only because a `static` must be `Sync`: wasm32-wasip2 components are
/// single-threaded, and relaxed atomics compile to plain loads and stores
/// there.
pub struct Bump {
    start: AtomicUsize,
    next: AtomicUsize,
    end: AtomicUsize,
    /// Bumping stopped: the budget is spent, or memory grew elsewhere.
    done: AtomicBool,
}

impl Bump {
    /// An allocator that takes no memory until its first allocation.
    pub const fn new() -> Self {
        Bump {
            start: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            done: AtomicBool::new(false),
        }
    }

    /// Whether the block at `addr` was bumped (else the standard allocator
    /// owns it).
    fn owns(&self, addr: usize) -> bool {
        (self.start.load(Relaxed)..self.end.load(Relaxed)).contains(&addr)
    }

    /// The address of a new block of `layout`, or `None` for the standard
    /// allocator to serve: bumping is done, or memory could not grow.
    /// `grow(pages)` is `memory.grow`: the old size in pages, or
    /// `usize::MAX` when refused (the host's memory cap).
    fn take(&self, layout: Layout, mut grow: impl FnMut(usize) -> usize) -> Option<usize> {
        if self.done.load(Relaxed) {
            return None;
        }
        let (start, mut end) = (self.start.load(Relaxed), self.end.load(Relaxed));
        let begin = align_up(self.next.load(Relaxed), layout.align())?;
        let stop = begin.checked_add(layout.size())?;
        if stop > end {
            let pages = (stop - end).div_ceil(PAGE).max(GROW_PAGES);
            if end - start + pages * PAGE > BUDGET {
                self.done.store(true, Relaxed);
                return None;
            }
            let old = grow(pages);
            if old == usize::MAX {
                return None;
            }
            let base = old.checked_mul(PAGE)?;
            if end == 0 {
                // The first growth: bumping starts here.
                self.start.store(base, Relaxed);
                self.next.store(base, Relaxed);
                self.end.store(base.checked_add(pages * PAGE)?, Relaxed);
                return self.take(layout, grow);
            }
            if base != end {
                // Something else (wasi-libc) grew memory since: bumped
                // blocks would no longer lie in one range.
                self.done.store(true, Relaxed);
                return None;
            }
            end = base.checked_add(pages * PAGE)?;
            self.end.store(end, Relaxed);
        }
        self.next.store(stop, Relaxed);
        Some(begin)
    }

    /// Give back the bumped block at `addr`: only the latest block can be.
    fn give_back(&self, addr: usize, layout: Layout) {
        if addr + layout.size() == self.next.load(Relaxed) {
            self.next.store(addr, Relaxed);
        }
    }

    /// Resize the bumped block at `addr` where it is, if it is the latest
    /// block and memory there allows (growing it if need be). `false`: the
    /// caller moves it.
    fn resize_in_place(
        &self,
        addr: usize,
        layout: Layout,
        new_size: usize,
        grow: impl FnMut(usize) -> usize,
    ) -> bool {
        let old_next = self.next.load(Relaxed);
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return false;
        };
        if addr + layout.size() != old_next {
            return false;
        }
        // Give it back, so that `take` hands out the same address again;
        // its bytes stay put (`take` writes nothing).
        self.next.store(addr, Relaxed);
        if self.take(new_layout, grow) == Some(addr) {
            return true;
        }
        // Not here. `take` handed out nothing (it could not grow, or
        // bumping is done): the block stays allocated as it was.
        self.next.store(old_next, Relaxed);
        false
    }
}

impl Default for Bump {
    fn default() -> Self {
        Self::new()
    }
}

fn align_up(addr: usize, align: usize) -> Option<usize> {
    // `Layout` guarantees a power of two.
    Some(addr.checked_add(align - 1)? & !(align - 1))
}

#[cfg(target_arch = "wasm32")]
fn memory_grow(pages: usize) -> usize {
    core::arch::wasm32::memory_grow(0, pages)
}

// SAFETY: bumped blocks lie in memory obtained from `memory.grow`, in one
// range no other allocator hands out, and never overlap: `next` only moves
// past a block handed out, or back to the start of the latest block when it
// is freed or resized in place. Each is aligned as asked. Every other block
// comes from and goes back to the standard allocator (`System`), told apart
// by address. `realloc` copies the first `min(old, new)` bytes when the
// block moves and leaves it allocated when it fails. Instances are
// single-threaded.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
unsafe impl core::alloc::GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.take(layout, memory_grow) {
            Some(addr) => addr as *mut u8,
            // SAFETY: the caller's contract (non-zero size) is passed on.
            None => unsafe { std::alloc::System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.owns(ptr as usize) {
            self.give_back(ptr as usize, layout);
        } else {
            // SAFETY: not bumped, so `System` allocated it with `layout`.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr as usize) {
            // SAFETY: `System` allocated it with `layout`.
            return unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        }
        if self.resize_in_place(ptr as usize, layout, new_size, memory_grow) {
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: `new_layout` has the caller's non-zero size and alignment.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: `ptr` is valid for `layout.size()` bytes and `new`, a
            // block handed out after it, for `new_size`.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            self.give_back(ptr as usize, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linear memory of `pages` pages, grown on request, perhaps by someone
    /// else first (`foreign` pages).
    struct Memory {
        pages: usize,
        cap: usize,
        foreign: usize,
    }

    impl Memory {
        fn new(pages: usize, cap: usize) -> Self {
            Memory {
                pages,
                cap,
                foreign: 0,
            }
        }

        fn grow(&mut self, pages: usize) -> usize {
            self.pages += std::mem::take(&mut self.foreign);
            if self.pages + pages > self.cap {
                return usize::MAX;
            }
            self.pages += pages;
            self.pages - pages
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_owned_and_inside_grown_memory() {
        let bump = Bump::new();
        let mut memory = Memory::new(3, 1000);
        let mut blocks: Vec<(usize, usize)> = Vec::new();
        for i in 0..2000usize {
            let (size, align) = (1 + i * 37 % 3000, 1 << (i % 5));
            let addr = bump.take(layout(size, align), |p| memory.grow(p)).unwrap();
            assert_eq!(addr % align, 0);
            assert!(addr >= 3 * PAGE && addr + size <= memory.pages * PAGE);
            assert!(bump.owns(addr) && bump.owns(addr + size - 1));
            blocks.push((addr, addr + size));
        }
        blocks.sort();
        assert!(blocks.windows(2).all(|w| w[0].1 <= w[1].0), "no overlap");
        assert!(!bump.owns(3 * PAGE - 1) && !bump.owns(memory.pages * PAGE));
    }

    #[test]
    fn the_latest_block_is_given_back_and_resized_in_place() {
        let bump = Bump::new();
        let mut memory = Memory::new(1, 100);
        let mut grow = |p| memory.grow(p);
        let a = bump.take(layout(10, 8), &mut grow).unwrap();
        let b = bump.take(layout(100, 8), &mut grow).unwrap();
        // The latest block grows in place, past the pages grown so far too.
        assert!(bump.resize_in_place(b, layout(100, 8), 3 * PAGE, &mut grow));
        // An older block cannot.
        assert!(!bump.resize_in_place(a, layout(10, 8), 20, &mut grow));
        // Freeing the latest block lets the next allocation take its place;
        // freeing an older one changes nothing.
        bump.give_back(a, layout(10, 8));
        bump.give_back(b, layout(3 * PAGE, 8));
        assert_eq!(bump.take(layout(20, 8), &mut grow), Some(b));
    }

    #[test]
    fn past_the_budget_the_standard_allocator_serves() {
        let bump = Bump::new();
        let mut memory = Memory::new(1, 1000);
        let mut grow = |p| memory.grow(p);
        let first = bump.take(layout(PAGE, 8), &mut grow).unwrap();
        let mut last = first;
        while let Some(addr) = bump.take(layout(PAGE, 8), &mut grow) {
            last = addr;
        }
        assert!(last + PAGE - first <= BUDGET, "bumped within the budget");
        assert!(last + 2 * PAGE - first > BUDGET - GROW_PAGES * PAGE);
        // Done for good: even a small block is the standard allocator's.
        assert_eq!(bump.take(layout(8, 8), &mut grow), None);
        assert!(bump.owns(last) && !bump.owns(last + GROW_PAGES * PAGE));
    }

    #[test]
    fn memory_grown_elsewhere_ends_bumping() {
        let bump = Bump::new();
        let mut memory = Memory::new(1, 1000);
        let a = bump.take(layout(PAGE, 8), |p| memory.grow(p)).unwrap();
        memory.foreign = 2; // wasi-libc's malloc grew memory
        assert_eq!(
            bump.take(layout(GROW_PAGES * PAGE, 8), |p| memory.grow(p)),
            None
        );
        assert_eq!(bump.take(layout(8, 8), |p| memory.grow(p)), None);
        assert!(bump.owns(a) && !bump.owns(memory.pages * PAGE - 1));
    }

    #[test]
    fn refused_growth_keeps_the_block_allocated() {
        let bump = Bump::new();
        let mut memory = Memory::new(1, 1 + GROW_PAGES);
        let mut grow = |p| memory.grow(p);
        let a = bump.take(layout(PAGE, 8), &mut grow).unwrap();
        assert_eq!(bump.take(layout(GROW_PAGES * PAGE, 8), &mut grow), None);
        let bigger = (GROW_PAGES + 1) * PAGE;
        assert!(!bump.resize_in_place(a, layout(PAGE, 8), bigger, &mut grow));
        // `a` is still allocated: the next block starts after it.
        assert_eq!(bump.take(layout(8, 8), &mut grow), Some(a + PAGE));
    }
}
