//! When has a burst ended? [`BurstEnd`] follows a count of open things
//! (long-polls, connections) and says when it has fallen far below its peak,
//! which is when the memory the burst freed is worth giving back
//! ([`crate::HeapRelease::request`]). It only counts: no clock, no thread.

/// The peak of an open count since the last burst ended.
#[derive(Debug, Clone)]
pub struct BurstEnd {
    /// A smaller peak is no burst (not worth a trim).
    min_peak: usize,
    /// The burst has ended once the count is at most `peak / divisor`.
    divisor: usize,
    peak: usize,
}

impl BurstEnd {
    /// A burst is a peak of at least `min_peak` open at once, ended when the
    /// count falls to `peak / divisor` (`divisor` at least 1).
    pub fn new(min_peak: usize, divisor: usize) -> Self {
        BurstEnd {
            min_peak,
            divisor: divisor.max(1),
            peak: 0,
        }
    }

    /// The count rose (or is) `open`.
    pub fn opened(&mut self, open: usize) {
        self.peak = self.peak.max(open);
    }

    /// The count fell to `open`: true once per burst, when it has ended; the
    /// next burst is measured from here.
    pub fn closed(&mut self, open: usize) -> bool {
        if self.peak >= self.min_peak && open <= self.peak / self.divisor {
            self.peak = open;
            return true;
        }
        false
    }

    /// The most open at once since the last burst ended.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_ends_once_when_the_count_falls_below_its_share_of_the_peak() {
        let mut burst = BurstEnd::new(16, 2);
        for open in 1..=39 {
            burst.opened(open);
        }
        let ended: Vec<usize> = (11..39).rev().filter(|open| burst.closed(*open)).collect();
        assert_eq!(ended, vec![19], "39 open fell to half once, at 19");
        assert_eq!(
            burst.peak(),
            19,
            "the next burst is measured from where this one ended"
        );
    }

    #[test]
    fn a_small_peak_is_no_burst() {
        let mut burst = BurstEnd::new(16, 2);
        burst.opened(15);
        assert!(!(0..15).rev().any(|open| burst.closed(open)));
        burst.opened(16);
        assert!(burst.closed(8));
    }
}
