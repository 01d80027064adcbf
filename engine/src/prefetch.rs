//! A hint to start loading a value's cache line before it is read.
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
