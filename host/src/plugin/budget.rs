//! The total plugin memory budget: slots × per-call cap must fit the
//! container's memory limit, minus what the host itself needs.
//!
//! Each plugin slot ([`Limits::concurrent_calls`](super::Limits)) may hold up
//! to [`Limits::memory_bytes`](super::Limits) of memories and tables at once.
//! If all slots fill while the container is near its limit, the kernel kills
//! atoll: every Database stops being served, not only the plugin's. So at
//! start atoll reads its memory limit from the cgroup (v2 `memory.max`, v1
//! `memory.limit_in_bytes`), subtracts a reserve for the host (caches of
//! Kubernetes objects, compiled components, gRPC), and lowers the slots to
//! what fits, logging both numbers; if not even one slot fits it refuses to
//! start, naming the numbers and the flags to change. Without a cgroup limit
//! (a developer's machine) nothing changes.

use std::path::Path;

/// How the slots were fitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// Slots to use.
    pub slots: usize,
    /// The container's memory limit, if any.
    pub limit: Option<u64>,
}

/// Not even one plugin call fits the memory limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the container's memory limit is {limit_mib} MiB; after the host's reserve of {reserve_mib} MiB (--plugin-host-reserve-mib) not even one plugin call of {cap_mib} MiB (--plugin-memory-mib) fits: raise the memory limit to at least {needed_mib} MiB or lower those flags"
)]
pub struct BudgetError {
    pub limit_mib: u64,
    pub reserve_mib: u64,
    pub cap_mib: u64,
    pub needed_mib: u64,
}

/// Fit `slots` calls of `cap` bytes each into `limit` minus `reserve`.
///
/// # Errors
/// Not one call fits.
pub fn fit(
    slots: usize,
    cap: u64,
    reserve: u64,
    limit: Option<u64>,
) -> Result<Fitted, BudgetError> {
    let Some(limit) = limit else {
        return Ok(Fitted { slots, limit });
    };
    let available = limit.saturating_sub(reserve);
    let fits = usize::try_from(available / cap.max(1)).unwrap_or(usize::MAX);
    if fits == 0 {
        return Err(BudgetError {
            limit_mib: limit >> 20,
            reserve_mib: reserve >> 20,
            cap_mib: cap >> 20,
            needed_mib: (reserve + cap).div_ceil(1 << 20),
        });
    }
    Ok(Fitted {
        slots: slots.min(fits),
        limit: Some(limit),
    })
}

/// This process's memory limit from its cgroup, if it has one: cgroup v2
/// (`memory.max` of the process's cgroup), else v1 (`memory.limit_in_bytes`
/// of its memory cgroup). "max" and v1's near-2⁶³ "unlimited" mean none.
pub fn cgroup_memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_from(Path::new("/sys/fs/cgroup"), &cgroups)
}

/// [`cgroup_memory_limit`] over a cgroup filesystem at `root` and the
/// contents of `/proc/self/cgroup`.
pub fn limit_from(root: &Path, proc_cgroup: &str) -> Option<u64> {
    let parse = |text: String| -> Option<u64> {
        let text = text.trim();
        if text == "max" {
            return None;
        }
        // v1 reports "unlimited" as the largest page-aligned i64.
        text.parse::<u64>().ok().filter(|&n| n < (1 << 62))
    };
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            // cgroup v2: the unified hierarchy at the root (or at
            // /sys/fs/cgroup/unified in hybrid mode); in a container the
            // namespace root is the process's own cgroup.
            for base in [root.to_path_buf(), root.join("unified")] {
                for dir in [base.join(path), base.clone()] {
                    if let Some(limit) = read(&dir.join("memory.max")).and_then(parse) {
                        return Some(limit);
                    }
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let base = root.join("memory");
            for dir in [base.join(path), base.clone()] {
                if let Some(limit) = read(&dir.join("memory.limit_in_bytes")).and_then(parse) {
                    return Some(limit);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn lowers_slots_to_what_fits() {
        let fitted = fit(8, 64 * MIB, 96 * MIB, Some(256 * MIB)).unwrap();
        assert_eq!(
            fitted.slots, 2,
            "160 MiB after the reserve holds two 64 MiB calls"
        );
        assert_eq!(fit(3, 64 * MIB, 96 * MIB, Some(1 << 30)).unwrap().slots, 3);
        assert_eq!(fit(8, 64 * MIB, 96 * MIB, None).unwrap().slots, 8);
    }

    #[test]
    fn refuses_when_not_one_call_fits_naming_numbers_and_flags() {
        let err = fit(8, 64 * MIB, 96 * MIB, Some(128 * MIB)).unwrap_err();
        let text = err.to_string();
        for needle in [
            "128 MiB",
            "96 MiB",
            "64 MiB",
            "160 MiB",
            "--plugin-memory-mib",
            "--plugin-host-reserve-mib",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }

    #[test]
    fn reads_cgroup_v2_and_v1_limits() {
        let root = std::env::temp_dir().join(format!("atoll-cgroup-{}", std::process::id()));
        let v2 = root.join("v2");
        std::fs::create_dir_all(v2.join("kubepods/pod1")).unwrap();
        std::fs::write(v2.join("kubepods/pod1/memory.max"), "268435456\n").unwrap();
        assert_eq!(limit_from(&v2, "0::/kubepods/pod1\n"), Some(256 * MIB));
        std::fs::write(v2.join("kubepods/pod1/memory.max"), "max\n").unwrap();
        assert_eq!(limit_from(&v2, "0::/kubepods/pod1\n"), None);

        let v1 = root.join("v1");
        std::fs::create_dir_all(v1.join("memory/docker/abc")).unwrap();
        std::fs::write(
            v1.join("memory/docker/abc/memory.limit_in_bytes"),
            "536870912\n",
        )
        .unwrap();
        let proc = "5:cpu:/docker/abc\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(limit_from(&v1, proc), Some(512 * MIB));
        std::fs::write(
            v1.join("memory/docker/abc/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(limit_from(&v1, proc), None);
        // Inside a container the process's cgroup is the namespace root.
        std::fs::remove_dir_all(v1.join("memory/docker")).unwrap();
        std::fs::write(v1.join("memory/memory.limit_in_bytes"), "1073741824\n").unwrap();
        assert_eq!(limit_from(&v1, proc), Some(1024 * MIB));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
