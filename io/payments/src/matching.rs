//! Whether a finalized transaction pays a quote: pure, so every rule is
//! tested without a chain.
//!
//! The Solana Pay convention: the payer's wallet adds the quote's reference
//! key to the transfer as a read-only account, so the transaction names the
//! quote without a memo. A transaction pays a quote when it names the
//! reference, succeeded, raised the receiving address's balance by at least
//! the quote less the tolerance, and landed while the quote was valid.
//! Balances, not instructions, are what is checked: they are what the
//! runtime did, whatever program moved the lamports.

use crate::config::lamports_to_sol;
use engine::time::{NANOS_PER_SEC, Nanos};

use super::Quote;
use super::rpc::Transaction;

/// Why a transaction that reached the receiving address credits nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It paid less than the quote (less the tolerance).
    Underpaid { got: u64, want: u64 },
    /// It names a quote, but the quote's receiving address got nothing.
    WrongRecipient,
    /// Money arrived, naming no quote this service made.
    UnknownReference,
    /// It landed after the quote it names had expired.
    QuoteExpired,
    /// It names a quote but failed on chain, so nothing moved.
    Failed,
}

impl Reason {
    /// Its name in the `unmatched_payments` table.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Underpaid { .. } => "underpaid",
            Reason::WrongRecipient => "wrong_recipient",
            Reason::UnknownReference => "unknown_reference",
            Reason::QuoteExpired => "quote_expired",
            Reason::Failed => "failed",
        }
    }

    /// The reason stored as `code`, with the amounts an underpayment
    /// keeps; `None` for a code this version does not know.
    pub(crate) fn from_code(code: &str, got: i64, want: Option<i64>) -> Option<Reason> {
        Some(match code {
            "underpaid" => Reason::Underpaid {
                got: u64::try_from(got).ok()?,
                want: u64::try_from(want?).ok()?,
            },
            "wrong_recipient" => Reason::WrongRecipient,
            "unknown_reference" => Reason::UnknownReference,
            "quote_expired" => Reason::QuoteExpired,
            "failed" => Reason::Failed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Underpaid { got, want } => write!(
                f,
                "underpaid: {} SOL of {} SOL",
                lamports_to_sol(*got),
                lamports_to_sol(*want)
            ),
            Reason::WrongRecipient => f.write_str("the receiving address got nothing"),
            Reason::UnknownReference => f.write_str("no quote has this reference"),
            Reason::QuoteExpired => f.write_str("paid after the quote expired"),
            Reason::Failed => f.write_str("the transaction failed"),
        }
    }
}

/// What one finalized transaction is to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It pays the quote; `received` lamports arrived.
    Pays { received: u64 },
    /// It reached the receiving address but credits nothing.
    Unmatched(Reason),
    /// Not a payment at all: nothing arrived and it names no quote (a
    /// withdrawal, say).
    NotAPayment,
}

/// How much `address`'s balance rose in `tx` (negative if it fell);
/// `None` if `tx` does not name it or has no balances.
pub fn received(tx: &Transaction, address: &str) -> Option<i64> {
    let meta = tx.meta.as_ref()?;
    let i = tx.account_keys().position(|k| k == address)?;
    let pre = i64::try_from(*meta.pre_balances.get(i)?).ok()?;
    let post = i64::try_from(*meta.post_balances.get(i)?).ok()?;
    Some(post - pre)
}

/// Judges `tx`, which reached `watched`, against `quote`, the quote whose
/// reference it names if any. A transaction without a block time is taken
/// to have landed at `seen_at`.
pub fn judge(
    tx: &Transaction,
    quote: Option<&Quote>,
    watched: &str,
    tolerance_lamports: u64,
    seen_at: Nanos,
) -> Verdict {
    let succeeded = tx.meta.as_ref().is_some_and(|m| m.err.is_none());
    let Some(quote) = quote else {
        return match received(tx, watched) {
            Some(got) if succeeded && got > 0 => Verdict::Unmatched(Reason::UnknownReference),
            _ => Verdict::NotAPayment,
        };
    };
    if !succeeded {
        return Verdict::Unmatched(Reason::Failed);
    }
    let got = match received(tx, &quote.receiving_address).map(u64::try_from) {
        Some(Ok(got)) if got > 0 => got,
        _ => return Verdict::Unmatched(Reason::WrongRecipient),
    };
    let landed = tx
        .block_time
        .map_or(seen_at, |t| t.saturating_mul(NANOS_PER_SEC));
    if landed > quote.expires_at {
        return Verdict::Unmatched(Reason::QuoteExpired);
    }
    if got < quote.lamports.saturating_sub(tolerance_lamports) {
        return Verdict::Unmatched(Reason::Underpaid {
            got,
            want: quote.lamports,
        });
    }
    Verdict::Pays { received: got }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{Message, Meta, TransactionBody};

    const PAYER: &str = "payer";
    const US: &str = "us";
    const REF: &str = "ref";
    const T0: i64 = 1_800_000_000;

    fn quote() -> Quote {
        Quote {
            reference: REF.to_owned(),
            chat_id: 42,
            plan: "month".to_owned(),
            days: 30,
            lamports: 800_000_000,
            receiving_address: US.to_owned(),
            created_at: T0 * NANOS_PER_SEC,
            expires_at: (T0 + 1_800) * NANOS_PER_SEC,
        }
    }

    /// `PAYER` sends `lamports` to `to`, naming `REF`, at `T0 + 60`.
    fn transfer(to: &str, lamports: u64) -> Transaction {
        Transaction {
            slot: 1,
            block_time: Some(T0 + 60),
            meta: Some(Meta {
                err: None,
                fee: 5_000,
                pre_balances: vec![10_000_000_000, 1_000, 0, 1],
                post_balances: vec![10_000_000_000 - lamports - 5_000, 1_000 + lamports, 0, 1],
                loaded_addresses: None,
            }),
            transaction: TransactionBody {
                signatures: vec!["sig".to_owned()],
                message: Message {
                    account_keys: [PAYER, to, REF, "11111111111111111111111111111111"]
                        .map(str::to_owned)
                        .to_vec(),
                },
            },
        }
    }

    fn judged(tx: &Transaction, quote: Option<&Quote>) -> Verdict {
        judge(tx, quote, US, 5_000, T0 * NANOS_PER_SEC)
    }

    #[test]
    fn the_quoted_amount_pays_and_so_does_a_fee_short_of_it() {
        let q = quote();
        assert_eq!(
            judged(&transfer(US, 800_000_000), Some(&q)),
            Verdict::Pays {
                received: 800_000_000
            }
        );
        assert_eq!(
            judged(&transfer(US, 799_995_000), Some(&q)),
            Verdict::Pays {
                received: 799_995_000
            }
        );
        assert_eq!(
            judged(&transfer(US, 799_994_999), Some(&q)),
            Verdict::Unmatched(Reason::Underpaid {
                got: 799_994_999,
                want: 800_000_000
            })
        );
    }

    #[test]
    fn money_elsewhere_late_or_failed_pays_nothing() {
        let q = quote();
        // It names us (as any account) but pays someone else.
        let mut elsewhere = transfer("them", 800_000_000);
        elsewhere
            .transaction
            .message
            .account_keys
            .push(US.to_owned());
        elsewhere.meta.as_mut().unwrap().pre_balances.push(5);
        elsewhere.meta.as_mut().unwrap().post_balances.push(5);
        assert_eq!(
            judged(&elsewhere, Some(&q)),
            Verdict::Unmatched(Reason::WrongRecipient)
        );
        let mut late = transfer(US, 800_000_000);
        late.block_time = Some(T0 + 1_801);
        assert_eq!(
            judged(&late, Some(&q)),
            Verdict::Unmatched(Reason::QuoteExpired)
        );
        let mut failed = transfer(US, 800_000_000);
        failed.meta.as_mut().unwrap().err =
            Some(serde_json::json!({"InstructionError": [0, {"Custom": 1}]}));
        assert_eq!(
            judged(&failed, Some(&q)),
            Verdict::Unmatched(Reason::Failed)
        );
        assert_eq!(judged(&failed, None), Verdict::NotAPayment);
    }

    #[test]
    fn money_without_a_known_quote_is_kept_and_withdrawals_are_not() {
        assert_eq!(
            judged(&transfer(US, 1), None),
            Verdict::Unmatched(Reason::UnknownReference)
        );
        // We pay someone: our balance falls.
        let mut withdrawal = transfer("them", 1_000);
        withdrawal.transaction.message.account_keys[0] = US.to_owned();
        assert_eq!(judged(&withdrawal, None), Verdict::NotAPayment);
    }

    #[test]
    fn reasons_round_trip_through_their_codes() {
        for r in [
            Reason::Underpaid { got: 1, want: 2 },
            Reason::WrongRecipient,
            Reason::UnknownReference,
            Reason::QuoteExpired,
            Reason::Failed,
        ] {
            let (got, want) = match r {
                Reason::Underpaid { got, want } => (got as i64, Some(want as i64)),
                _ => (0, None),
            };
            assert_eq!(Reason::from_code(r.code(), got, want), Some(r));
        }
        assert_eq!(Reason::from_code("nope", 0, None), None);
    }
}
