//! Hints to start loading a cache line before it is read or written.
//!
//! A call walks hundreds of followers whose chats sit far apart in memory;
//! each first read is a cache miss. Asking for the line a few followers
//! ahead lets those misses overlap instead of queueing one behind another.

/// Starts fetching the cache line(s) holding `*value` into every level of
/// the cache. Only a hint: it never faults and changes no result.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = (value as *const T).cast::<i8>();
        let last = first.wrapping_add(size_of::<T>().saturating_sub(1));
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch reads
        // nothing architecturally: it cannot fault, even on a bad address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Starts fetching, for writing, the cache line(s) of the `T`-sized slot at
/// `slot`: the line arrives owned, so the store that follows does not wait
/// for another core to give it up. Only a hint, like [`prefetch`]; `slot`
/// may be any address, valid or not.
#[inline(always)]
pub fn prefetch_for_write<T>(slot: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        let first = slot.cast::<u8>();
        let last = first.wrapping_add(size_of::<T>().saturating_sub(1));
        // `_mm_prefetch` with a write hint emits no PREFETCHW unless the
        // build targets a CPU that has it, so the instruction is named
        // here. Every x86-64 CPU of the last decade has it, and older ones
        // decode it as a no-op.
        // SAFETY: a hint that reads nothing architecturally and cannot
        // fault, whatever the address.
        unsafe {
            core::arch::asm!(
                "prefetchw [{a}]",
                "prefetchw [{b}]",
                a = in(reg) first,
                b = in(reg) last,
                options(nostack, preserves_flags, readonly),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}
