//! Per-call accounting of everything a plugin's store holds.
//!
//! wasmtime's own [`StoreLimits`](wasmtime::StoreLimits) caps each linear
//! memory and each table *separately*: a component with several core
//! instances, each with its own memory, could hold several times the cap.
//! [`Limiter`] keeps one running total for the whole store (every linear
//! memory plus every table, at [`TABLE_ELEMENT_BYTES`] per element) and
//! refuses any growth that would take the total over the per-call cap. It
//! also caps how many instances, tables and memories a store may create.
//!
//! Guarantee: the bytes of linear memory and table storage a call can hold
//! never exceed the cap it is given ([`Limits::memory_bytes`](super::Limits::memory_bytes)). Caveat: what the host copies
//! out of the guest (the results of a call) is host memory and is bounded by
//! the checks on results (see `plugin/bounds.rs`), not here.

use wasmtime::ResourceLimiter;

/// Bytes accounted per table element: wasmtime stores a pointer (or a
/// tagged pointer) per element; counted as two words to be conservative.
pub const TABLE_ELEMENT_BYTES: usize = 2 * std::mem::size_of::<usize>();

/// How many things one store may create. Part of [`Limits`](super::Limits),
/// next to the byte cap [`Limits::memory_bytes`](super::Limits::memory_bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounts {
    /// Core instances per store (a component instantiates several).
    pub instances: usize,
    /// Linear memories per store.
    pub memories: usize,
    /// Tables per store.
    pub tables: usize,
    /// Elements of any one table.
    pub table_elements: usize,
}

impl Default for StoreCounts {
    /// Measured on the built-in plugins (1 memory, 3 tables, 4 core
    /// instances each) and on a componentize-py 0.25.1 component (see
    /// docs/reliability.md); the defaults leave a wide margin over both.
    fn default() -> Self {
        StoreCounts {
            instances: 64,
            memories: 8,
            tables: 64,
            table_elements: 1 << 20,
        }
    }
}

/// What the limiter refused, so the failure can be reported for what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Growing memories and tables to `requested` bytes in total.
    Memory { requested: usize },
    /// Growing one table to `requested` elements.
    TableElements { requested: usize },
}

/// The store's limiter: one total over all memories and tables.
#[derive(Debug)]
pub struct Limiter {
    /// Bytes of all memories and tables together.
    cap: usize,
    counts: StoreCounts,
    /// Bytes of memories and tables granted so far.
    used: usize,
    /// Most bytes held at once during the call.
    peak: usize,
    /// The first refusal, if any.
    pub denied: Option<Denied>,
}

impl Limiter {
    pub fn new(cap: usize, counts: StoreCounts) -> Self {
        Limiter {
            cap,
            counts,
            used: 0,
            peak: 0,
            denied: None,
        }
    }

    /// Bytes of memories and tables held now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Most bytes of memories and tables held at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    fn grow(&mut self, delta: usize) -> bool {
        let total = self.used.saturating_add(delta);
        if total > self.cap {
            self.denied
                .get_or_insert(Denied::Memory { requested: total });
            return false;
        }
        self.used = total;
        self.peak = self.peak.max(total);
        true
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A refusal makes `memory.grow` trap (trap_on_grow_failure is the
        // behaviour wanted: a plugin has no use for running on after a
        // failed grow, and a trap names the cause).
        if self.grow(desired.saturating_sub(current)) {
            Ok(true)
        } else {
            Err(wasmtime::Error::msg(
                "memory limit of the plugin call reached",
            ))
        }
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Counted as granted; the store is dropped after the call anyway.
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.counts.table_elements {
            self.denied
                .get_or_insert(Denied::TableElements { requested: desired });
            return Err(wasmtime::Error::msg(
                "table element limit of the plugin call reached",
            ));
        }
        let delta = desired
            .saturating_sub(current)
            .saturating_mul(TABLE_ELEMENT_BYTES);
        if self.grow(delta) {
            Ok(true)
        } else {
            Err(wasmtime::Error::msg(
                "memory limit of the plugin call reached",
            ))
        }
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Ok(())
    }

    fn instances(&self) -> usize {
        self.counts.instances
    }

    fn tables(&self) -> usize {
        self.counts.tables
    }

    fn memories(&self) -> usize {
        self.counts.memories
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::{Engine, Memory, MemoryType, Ref, Store, Table, TableType};

    use super::*;

    const PAGE: usize = 64 << 10;

    fn store(memory_bytes: usize) -> Store<Limiter> {
        let engine = Engine::default();
        let mut store = Store::new(&engine, Limiter::new(memory_bytes, StoreCounts::default()));
        store.limiter(|l| l);
        store
    }

    #[test]
    fn memories_are_counted_together_not_each_against_the_cap() {
        // Two memories of 40 MiB each: each is under a 64 MiB cap, the sum
        // is not. wasmtime's StoreLimits would grant both.
        let mut store = store(64 << 20);
        let pages = (40 << 20) / PAGE;
        Memory::new(&mut store, MemoryType::new(pages as u32, None)).unwrap();
        assert_eq!(store.data().used(), 40 << 20);
        let second = Memory::new(&mut store, MemoryType::new(pages as u32, None));
        assert!(second.is_err(), "the second memory must be refused");
        assert_eq!(
            store.data().denied,
            Some(Denied::Memory {
                requested: 80 << 20
            })
        );
        // Under the cap in total: fine.
        Memory::new(
            &mut store,
            MemoryType::new(((20 << 20) / PAGE) as u32, None),
        )
        .unwrap();
        assert_eq!(store.data().used(), 60 << 20);
    }

    #[test]
    fn growth_counts_only_the_difference() {
        let mut store = store(4 << 20);
        let memory = Memory::new(&mut store, MemoryType::new(16, None)).unwrap();
        memory.grow(&mut store, 32).unwrap();
        assert_eq!(store.data().used(), 48 * PAGE);
        assert!(memory.grow(&mut store, 32).is_err(), "over 4 MiB");
        assert_eq!(store.data().peak(), 48 * PAGE);
    }

    #[test]
    fn tables_count_against_the_same_total() {
        let mut store = store(1 << 20);
        let elements = (768 << 10) / TABLE_ELEMENT_BYTES;
        Table::new(
            &mut store,
            TableType::new(wasmtime::RefType::FUNCREF, elements as u32, None),
            Ref::Func(None),
        )
        .unwrap();
        // 768 KiB of table plus 512 KiB of memory is over 1 MiB.
        assert!(Memory::new(&mut store, MemoryType::new(8, None)).is_err());
        assert!(matches!(store.data().denied, Some(Denied::Memory { .. })));
    }

    /// Instantiate `module` until the store refuses; returns how many fit
    /// and the refusal.
    fn instantiate_until_refused(module: &[u8]) -> (usize, String) {
        let mut store = store(1 << 30);
        let module = wasmtime::Module::new(store.engine(), module).unwrap();
        for n in 0..1000 {
            if let Err(e) = wasmtime::Instance::new(&mut store, &module, &[]) {
                return (n, format!("{e:#}"));
            }
        }
        panic!("1000 instances were allowed");
    }

    #[test]
    fn instances_tables_and_memories_per_store_are_counted() {
        let counts = StoreCounts::default();
        // The empty module: only the instance count binds.
        let (n, err) = instantiate_until_refused(b"\0asm\x01\0\0\0");
        assert_eq!(n, counts.instances);
        // The runtime reports these by this wording (plugin/runtime.rs).
        assert!(err.contains("resource limit exceeded"), "{err}");
        // A module with two tables of one funcref each.
        let tables: &[u8] = b"\0asm\x01\0\0\0\x04\x07\x02\x70\x00\x01\x70\x00\x01";
        let (n, err) = instantiate_until_refused(tables);
        assert_eq!(n, counts.tables / 2);
        assert!(err.contains("table count too high"), "{err}");
        // A module with one memory of one page.
        let memory: &[u8] = b"\0asm\x01\0\0\0\x05\x03\x01\x00\x01";
        let (n, err) = instantiate_until_refused(memory);
        assert_eq!(n, counts.memories);
        assert!(err.contains("memory count too high"), "{err}");
    }

    #[test]
    fn one_table_is_bounded_in_elements() {
        let mut store = store(1 << 30);
        let too_many = StoreCounts::default().table_elements as u32 + 1;
        let table = Table::new(
            &mut store,
            TableType::new(wasmtime::RefType::FUNCREF, too_many, None),
            Ref::Func(None),
        );
        assert!(table.is_err());
        assert_eq!(
            store.data().denied,
            Some(Denied::TableElements {
                requested: too_many as usize
            })
        );
    }
}
