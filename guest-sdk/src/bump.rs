//! The component's allocator: bump allocation in chunks, for calls that live
//! in a fresh instance.
//!
//! atoll runs every plugin call in a fresh instance and throws its memory
//! away afterwards, so freeing is mostly wasted work. A render builds and
//! serializes thousands of small strings and maps; with the default
//! allocator (dlmalloc) their bookkeeping was a large share of a call. Here
//! an allocation takes the next bytes of the current chunk, and a free only
//! gives back the most recent allocation (growing a buffer that was
//! allocated last, the common case when serializing, extends it in place).
//!
//! Guarantee: bounded waste. At most [`BUMP_BYTES`] of chunks are taken;
//! after that, and for any allocation larger than half a chunk, the system
//! allocator serves (and frees) as usual. So a call that allocates far more
//! than it keeps (a status call parsing many large objects) wastes at most
//! `BUMP_BYTES` of the instance's memory limit.
//!
//! Caveat: the allocator assumes one thread (components are
//! single-threaded); a plugin that sets its own `#[global_allocator]` does
//! not build with this one (native builds are unaffected: this is the
//! global allocator only on `wasm32`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Size of one chunk.
pub const CHUNK: usize = 256 << 10;

/// Chunk bytes taken at most, before the system allocator serves everything.
pub const BUMP_BYTES: usize = 16 << 20;

const MAX_CHUNKS: usize = BUMP_BYTES / CHUNK;

/// Bump allocation over chunks from the system allocator.
pub struct Bump {
    /// Next free byte and end of the current chunk.
    next: Cell<usize>,
    end: Cell<usize>,
    /// Start of the most recent allocation (0: none to give back).
    last: Cell<usize>,
    /// Start of every chunk taken, in order.
    chunks: [Cell<usize>; MAX_CHUNKS],
    taken: Cell<usize>,
}

// SAFETY: components run on one thread; the cells are never shared across
// threads. Native builds only use `Bump` in single-threaded unit tests.
#[allow(unsafe_code)]
unsafe impl Sync for Bump {}

impl Bump {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Bump {
            next: Cell::new(0),
            end: Cell::new(0),
            last: Cell::new(0),
            chunks: [const { Cell::new(0) }; MAX_CHUNKS],
            taken: Cell::new(0),
        }
    }

    /// Whether `ptr` lies in a chunk (newest first: most frees are of
    /// recent allocations).
    fn owns(&self, ptr: usize) -> bool {
        (0..self.taken.get())
            .rev()
            .any(|i| (self.chunks[i].get()..self.chunks[i].get() + CHUNK).contains(&ptr))
    }

    /// Start a new chunk; false when the bound is reached or the system
    /// allocator has no memory.
    fn new_chunk(&self) -> bool {
        let taken = self.taken.get();
        if taken == MAX_CHUNKS {
            return false;
        }
        let layout = Layout::from_size_align(CHUNK, 16).expect("a valid layout");
        // SAFETY: CHUNK is non-zero.
        #[allow(unsafe_code)]
        let chunk = unsafe { System.alloc(layout) } as usize;
        if chunk == 0 {
            return false;
        }
        self.chunks[taken].set(chunk);
        self.taken.set(taken + 1);
        self.next.set(chunk);
        self.end.set(chunk + CHUNK);
        self.last.set(0);
        true
    }

    /// Bump-allocate `layout` in the current chunk (or a new one), or `None`.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        if layout.size() > CHUNK / 2 {
            return None;
        }
        for _ in 0..2 {
            let start = self.next.get().next_multiple_of(layout.align());
            if self.end.get() != 0 && start + layout.size() <= self.end.get() {
                self.next.set(start + layout.size());
                self.last.set(start);
                return Some(start as *mut u8);
            }
            if !self.new_chunk() {
                return None;
            }
        }
        None
    }
}

// SAFETY: every pointer returned is either from `System` (and freed there)
// or a range of a chunk no other allocation overlaps: `next` only moves back
// over the most recent allocation when it is freed or resized.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's layout, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let at = ptr as usize;
        if self.owns(at) {
            if at == self.last.get() && at + layout.size() == self.next.get() {
                self.next.set(at);
                self.last.set(0);
            }
            return;
        }
        // SAFETY: not from a chunk, so from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let at = ptr as usize;
        let in_place = at == self.last.get()
            && at + layout.size() == self.next.get()
            && at + new_size <= self.end.get();
        if in_place {
            self.next.set(at + new_size);
            return ptr;
        }
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is
        // a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not
            // overlap (the new one was just allocated).
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn allocations_do_not_overlap_and_the_last_one_grows_in_place() {
        let bump = Bump::new();
        // SAFETY: test of the allocator with valid layouts.
        unsafe {
            let a = bump.alloc(layout(24));
            let b = bump.alloc(layout(40));
            assert!(bump.owns(a as usize) && bump.owns(b as usize));
            assert!(b as usize >= a as usize + 24, "no overlap");
            a.write_bytes(1, 24);
            b.write_bytes(2, 40);
            let grown = bump.realloc(b, layout(40), 4000);
            assert_eq!(grown, b, "the last allocation grows in place");
            let moved = bump.realloc(a, layout(24), 100);
            assert_ne!(moved, a, "an earlier one moves");
            assert_eq!(std::slice::from_raw_parts(moved, 24), &[1; 24]);
            // Freeing the last allocation gives its bytes back.
            bump.dealloc(moved, layout(100));
            let again = bump.alloc(layout(100));
            assert_eq!(again, moved);
        }
    }

    #[test]
    fn large_allocations_and_those_past_the_bound_use_the_system_allocator() {
        let bump = Bump::new();
        // SAFETY: as above.
        unsafe {
            let big = bump.alloc(layout(CHUNK));
            assert!(!bump.owns(big as usize));
            bump.dealloc(big, layout(CHUNK));
            let mut kept = Vec::new();
            // Fill every chunk with allocations a bit over a third of one,
            // so each chunk holds two and wastes the rest.
            for _ in 0..MAX_CHUNKS * 2 {
                let p = bump.alloc(layout(CHUNK / 3 + 1));
                assert!(bump.owns(p as usize));
                kept.push(p);
            }
            assert_eq!(bump.taken.get(), MAX_CHUNKS);
            let past = bump.alloc(layout(CHUNK / 3 + 1));
            assert!(!bump.owns(past as usize), "past the bound: System");
            past.write_bytes(7, CHUNK / 3 + 1);
            bump.dealloc(past, layout(CHUNK / 3 + 1));
            for p in kept {
                bump.dealloc(p, layout(CHUNK / 3 + 1));
            }
        }
    }
}
