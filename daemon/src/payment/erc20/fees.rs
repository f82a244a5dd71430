//! Fees of erc20 transfers (EIP-1559): what a transfer is first signed with
//! (the network's estimate, never above the network's configured cap) and
//! when and how a transaction stuck below the network's fee is replaced: same
//! nonce, both fees raised by at least [`REPLACEMENT_BUMP_PERCENT`] (the rule
//! nodes apply before they accept a replacement), never above the cap. Pure
//! arithmetic on wei; it never talks to a node.

/// Minimum raise of both fees for a node to accept a replacement (geth,
/// anvil and most pools answer "replacement transaction underpriced" below it).
pub const REPLACEMENT_BUMP_PERCENT: u128 = 10;

/// Wei per gwei (the unit of the configured cap).
pub const WEI_PER_GWEI: u128 = 1_000_000_000;

/// The two fees of a type-2 transaction, in wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub max_fee: u128,
    pub priority_fee: u128,
}

impl Fees {
    /// `self`, with the priority fee never above the max fee.
    fn consistent(self) -> Fees {
        Fees {
            max_fee: self.max_fee,
            priority_fee: self.priority_fee.min(self.max_fee),
        }
    }
}

/// The fees a new transfer is signed with: the estimate, capped.
pub fn first_offer(estimate: Fees, cap: u128) -> Fees {
    Fees {
        max_fee: estimate.max_fee.min(cap),
        priority_fee: estimate.priority_fee,
    }
    .consistent()
}

/// A transaction is stuck when its max fee is below the base fee the next
/// block asks: no block takes it until the base fee falls that low.
pub fn is_stuck(signed: Fees, next_base_fee: u128) -> bool {
    signed.max_fee < next_base_fee
}

/// `value` raised by the replacement bump, rounded up, and by at least one wei.
fn bumped(value: u128) -> u128 {
    let raised = value.saturating_mul(100 + REPLACEMENT_BUMP_PERCENT);
    raised.div_ceil(100).max(value.saturating_add(1))
}

/// The fees of the replacement of `signed`, stuck below `next_base_fee`:
/// the larger of the current estimate and the bumped old fees, with room for
/// the base fee to double. Err (in words) when that exceeds `cap`.
pub fn replacement(
    signed: Fees,
    estimate: Fees,
    next_base_fee: u128,
    cap: u128,
) -> Result<Fees, String> {
    let priority_fee = bumped(signed.priority_fee).max(estimate.priority_fee);
    let wanted = next_base_fee
        .saturating_mul(2)
        .saturating_add(priority_fee)
        .max(estimate.max_fee);
    let max_fee = bumped(signed.max_fee).max(wanted);
    let minimum = bumped(signed.max_fee).max(next_base_fee.saturating_add(priority_fee));
    if minimum > cap {
        return Err(format!(
            "the network's base fee is {} gwei; replacing the transaction needs a max fee of {} gwei, above the cap of {} gwei (raise max-fee-per-gas of the network)",
            gwei(next_base_fee),
            gwei(minimum),
            gwei(cap)
        ));
    }
    Ok(Fees {
        max_fee: max_fee.min(cap),
        priority_fee,
    }
    .consistent())
}

/// `wei` in gwei for messages (up to 3 decimals).
pub fn gwei(wei: u128) -> String {
    let whole = wei / WEI_PER_GWEI;
    let millis = (wei % WEI_PER_GWEI) / 1_000_000;
    if millis == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{millis:03}")
            .trim_end_matches('0')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GWEI: u128 = WEI_PER_GWEI;

    #[test]
    fn a_first_offer_never_exceeds_the_cap() {
        let estimate = Fees {
            max_fee: 80 * GWEI,
            priority_fee: 2 * GWEI,
        };
        assert_eq!(first_offer(estimate, 100 * GWEI), estimate);
        let capped = first_offer(estimate, GWEI);
        assert_eq!(capped.max_fee, GWEI);
        assert_eq!(capped.priority_fee, GWEI, "priority never above max fee");
    }

    #[test]
    fn only_a_max_fee_below_the_next_base_fee_is_stuck() {
        let signed = Fees {
            max_fee: 3 * GWEI,
            priority_fee: GWEI,
        };
        assert!(!is_stuck(signed, 3 * GWEI));
        assert!(is_stuck(signed, 3 * GWEI + 1));
    }

    #[test]
    fn a_replacement_raises_both_fees_by_the_bump_and_follows_the_network() {
        let signed = Fees {
            max_fee: 3 * GWEI,
            priority_fee: GWEI,
        };
        // The network barely moved: the bump decides.
        let low = Fees {
            max_fee: 3 * GWEI,
            priority_fee: GWEI,
        };
        let next = replacement(signed, low, 3 * GWEI / 2, 1_000 * GWEI).unwrap();
        assert!(next.max_fee * 100 >= signed.max_fee * 110, "{next:?}");
        assert!(
            next.priority_fee * 100 >= signed.priority_fee * 110,
            "{next:?}"
        );
        // The base fee jumped to 90 gwei: room for it to double, plus the tip.
        let high = Fees {
            max_fee: 181 * GWEI,
            priority_fee: GWEI,
        };
        let next = replacement(signed, high, 90 * GWEI, 1_000 * GWEI).unwrap();
        assert!(next.max_fee >= 180 * GWEI + next.priority_fee, "{next:?}");
        // Tiny fees still rise by at least one wei each.
        let tiny = Fees {
            max_fee: 1,
            priority_fee: 0,
        };
        let next = replacement(tiny, tiny, 0, 1_000).unwrap();
        assert_eq!(next.priority_fee, 1);
        assert!(next.max_fee >= 2);
    }

    #[test]
    fn a_replacement_stays_under_the_cap_or_says_why_it_cannot() {
        let signed = Fees {
            max_fee: 3 * GWEI,
            priority_fee: GWEI,
        };
        let estimate = Fees {
            max_fee: 181 * GWEI,
            priority_fee: GWEI,
        };
        // The cap leaves room above the base fee: capped, still a valid replacement.
        let next = replacement(signed, estimate, 90 * GWEI, 100 * GWEI).unwrap();
        assert_eq!(next.max_fee, 100 * GWEI);
        // The base fee is above the cap: no replacement, a reason naming the setting.
        let error = replacement(signed, estimate, 90 * GWEI, 50 * GWEI).unwrap_err();
        assert!(error.contains("base fee is 90 gwei"), "{error}");
        assert!(error.contains("cap of 50 gwei"), "{error}");
        assert!(error.contains("max-fee-per-gas"), "{error}");
    }

    #[test]
    fn gwei_reads_well() {
        assert_eq!(gwei(90 * GWEI), "90");
        assert_eq!(gwei(GWEI * 3 / 2), "1.5");
        assert_eq!(gwei(1), "0");
    }
}
