//! The `Range` header of a v2 download (RFC 9110 §14), single ranges only.

/// What a `Range` header asks of a body of a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No header, several ranges, another unit or a malformed header: the
    /// whole body (200), as RFC 9110 lets a server ignore such headers.
    Whole,
    /// Bytes `first..=last` (206).
    Part {
        /// First byte offset.
        first: u64,
        /// Last byte offset, included.
        last: u64,
    },
    /// A single range that no byte of the body satisfies (416).
    Unsatisfiable,
}

/// A `Range` header as written, before the body's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// Anything that asks for the whole body.
    Whole,
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
    /// `bytes=a-`: from a to the end.
    From(u64),
    /// `bytes=a-b`, a ≤ b.
    Span(u64, u64),
}

impl RangeSpec {
    fn parse(header: Option<&str>) -> Self {
        let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
            return Self::Whole;
        };
        if spec.contains(',') {
            return Self::Whole;
        }
        let Some((start, end)) = spec.trim().split_once('-') else {
            return Self::Whole;
        };
        let number = |text: &str| -> Option<u64> {
            let text = text.trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                // Digits that overflow u64 are still a valid, huge number.
                Some(text.parse().unwrap_or(u64::MAX))
            }
        };
        match (start.trim().is_empty(), end.trim().is_empty()) {
            (true, false) => number(end).map_or(Self::Whole, Self::Suffix),
            (false, true) => number(start).map_or(Self::Whole, Self::From),
            (false, false) => match (number(start), number(end)) {
                // Compared as written: both may have overflowed to u64::MAX.
                (Some(_), Some(_)) if greater(start, end) => Self::Whole,
                (Some(first), Some(last)) => Self::Span(first, last),
                _ => Self::Whole,
            },
            (true, true) => Self::Whole,
        }
    }
}

impl RangeRequest {
    /// Resolves `header` against a body of `size` bytes.
    pub fn resolve(header: Option<&str>, size: u64) -> Self {
        match RangeSpec::parse(header) {
            RangeSpec::Whole => Self::Whole,
            RangeSpec::Suffix(0) => Self::Unsatisfiable,
            RangeSpec::Suffix(_) if size == 0 => Self::Unsatisfiable,
            RangeSpec::Suffix(n) => Self::Part {
                first: size.saturating_sub(n),
                last: size - 1,
            },
            RangeSpec::From(first) if first < size => Self::Part {
                first,
                last: size - 1,
            },
            RangeSpec::From(_) => Self::Unsatisfiable,
            RangeSpec::Span(first, last) if first < size => Self::Part {
                first,
                last: last.min(size - 1),
            },
            RangeSpec::Span(..) => Self::Unsatisfiable,
        }
    }

    /// The `Range` to ask a store for, before the body's size is known:
    /// the client's single range, cleaned up, or `None` for the whole body.
    /// What the store serves is checked against [`RangeRequest::resolve`]
    /// once the size is known.
    pub fn for_store(header: Option<&str>) -> Option<String> {
        match RangeSpec::parse(header) {
            RangeSpec::Whole => None,
            RangeSpec::Suffix(n) => Some(format!("bytes=-{n}")),
            RangeSpec::From(first) => Some(format!("bytes={first}-")),
            RangeSpec::Span(first, last) => Some(format!("bytes={first}-{last}")),
        }
    }

    /// The bytes this answer serves: `None` for the whole body.
    pub fn served(self) -> Option<(u64, u64)> {
        match self {
            Self::Part { first, last } => Some((first, last)),
            Self::Whole | Self::Unsatisfiable => None,
        }
    }
}

/// Whether the decimal digits `a` stand for a larger number than `b`, at any
/// length.
fn greater(a: &str, b: &str) -> bool {
    let (a, b) = (
        a.trim().trim_start_matches('0'),
        b.trim().trim_start_matches('0'),
    );
    (a.len(), a) > (b.len(), b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    fn r(header: &str, size: u64) -> RangeRequest {
        RangeRequest::resolve(Some(header), size)
    }

    #[test]
    fn single_ranges_of_every_form() {
        assert_eq!(r("bytes=0-0", 10), Part { first: 0, last: 0 });
        assert_eq!(r("bytes=9-9", 10), Part { first: 9, last: 9 });
        assert_eq!(r("bytes=2-", 10), Part { first: 2, last: 9 });
        assert_eq!(r("bytes=-3", 10), Part { first: 7, last: 9 });
        assert_eq!(r("bytes=-30", 10), Part { first: 0, last: 9 });
        assert_eq!(r("bytes=5-100", 10), Part { first: 5, last: 9 });
        assert_eq!(
            r("bytes=5-99999999999999999999999", 10),
            Part { first: 5, last: 9 }
        );
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(r("bytes=-5", 0), Unsatisfiable);
        assert_eq!(r("bytes=99999999999999999999999-", 10), Unsatisfiable);
    }

    #[test]
    fn the_store_is_asked_for_the_single_range_as_written_or_the_whole_body() {
        let store = |header: &str| RangeRequest::for_store(Some(header));
        assert_eq!(store("bytes=0-0").as_deref(), Some("bytes=0-0"));
        assert_eq!(store("bytes= 2 -").as_deref(), Some("bytes=2-"));
        assert_eq!(store("bytes=-3").as_deref(), Some("bytes=-3"));
        for whole in ["bytes=5-2", "bytes=0-1,3-4", "items=0-1", "bytes=-"] {
            assert_eq!(store(whole), None, "{whole}");
        }
        assert_eq!(RangeRequest::for_store(None), None);
    }

    #[test]
    fn anything_else_is_the_whole_body() {
        assert_eq!(RangeRequest::resolve(None, 10), Whole);
        for header in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=x-1",
            "bytes=-",
            "bytes=5-2",
            // Both past u64, first > last (found by tests/properties.rs:
            // both saturated to u64::MAX and this answered 416).
            "bytes=100000000000000000000-18446744073709551616",
            "bytes=18446744073709551616-18446744073709551615",
            "bytes=1000000000000000000000000000000000000000-999999999999999999999999",
            "bytes=--1",
            "bytes=-1-2",
            "bytes=+1-2",
            "0-1",
        ] {
            assert_eq!(r(header, 10), Whole, "{header}");
        }
    }
}
