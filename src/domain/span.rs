//! Byte counts of bodies against the lengths they must fit in, in checked
//! arithmetic: an offset plus a declared length near 2^64 never wraps past
//! a check (a `PATCH` at offset 5 declaring `Content-Length: 2^64 - 5`).

/// How many bytes a body of `length` bytes starting at byte `offset` runs
/// past `total` bytes: 0 when it fits. Exact for every input (the sum is
/// taken in 128 bits); an overrun past `u64::MAX` reads as `u64::MAX`.
pub fn overrun(offset: u64, length: u64, total: u64) -> u64 {
    let end = u128::from(offset) + u128::from(length);
    u64::try_from(end.saturating_sub(u128::from(total))).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrap_is_an_overrun_not_a_fit() {
        assert_eq!(overrun(5, u64::MAX - 4, 10), u64::MAX - 9);
        assert_eq!(overrun(5, 5, 10), 0);
        assert_eq!(overrun(5, 6, 10), 1);
        assert_eq!(overrun(u64::MAX, u64::MAX, 0), u64::MAX);
        assert_eq!(overrun(0, 0, 0), 0);
    }
}
