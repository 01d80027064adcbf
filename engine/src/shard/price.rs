//! A price: the current value, and the tracked entries it takes across a
//! threshold.

use crate::effect::{Effect, MultiplierAlert, Progress};
use crate::time::Nanos;
use crate::token::Token;

use super::ShardState;
use super::record::current;

/// A price event's fields, with the stream clock it is judged against.
pub(super) struct PriceAt<'a> {
    pub(super) seq: u64,
    pub(super) token: &'a Token,
    pub(super) fdv_usd: f64,
    pub(super) t: Nanos,
    pub(super) clock: Nanos,
}

impl ShardState {
    /// Inlined into `apply_hashed`, as it was before the fan-out's queue
    /// made that function too large for the compiler to do it unasked.
    #[inline(always)]
    pub(super) fn on_price(
        &mut self,
        price: &PriceAt<'_>,
        hash: Option<u64>,
        out: &mut Vec<Effect>,
    ) {
        let &PriceAt {
            seq,
            token,
            fdv_usd,
            t,
            clock,
        } = price;
        self.stats.prices += 1;
        // A token nobody called has nothing to decide; interning it would
        // let a price feed grow the shard without bound.
        let hot = match hash {
            Some(h) => self.index.get_mut_hashed(h, token),
            None => self.index.get_mut(token),
        };
        let Some(hot) = hot else {
            return;
        };
        hot.fdv_usd = fdv_usd;
        if fdv_usd < hot.next_change {
            return;
        }
        super::cut::save(&mut self.cut, &mut self.slots, hot.slot as usize);
        let ts = &mut self.slots[hot.slot as usize];
        ts.calls.raise_peaks(fdv_usd);
        let thresholds = &self.rules.thresholds;
        let ttl = self.rules.ttl_nanos;
        self.crossed.clear();
        ts.tracked
            .pop_crossed(fdv_usd, thresholds, &mut self.crossed);
        for mut e in self.crossed.drain(..) {
            if clock >= e.started.saturating_add(ttl) {
                self.stats.tracked -= 1;
                self.stats.expired_tracked += 1;
                continue;
            }
            if !current(&ts.records, &e) {
                self.stats.tracked -= 1;
                continue;
            }
            let m = fdv_usd / e.fdv_at_call;
            if let Some(k) = thresholds.iter().rposition(|&h| m >= h)
                && k + 1 > e.last as usize
            {
                e.last = u8::try_from(k + 1).expect("at most 255 thresholds");
                let chat = self.chats.get(e.chat);
                if chat.is_active(t) {
                    out.push(Effect::MultiplierAlert(MultiplierAlert {
                        seq,
                        chat_id: self.chats.id(e.chat),
                        token: *token,
                        at: t,
                        threshold: thresholds[k],
                        multiplier: m,
                        fdv_at_call: e.fdv_at_call,
                        fdv_usd,
                        tracking_started: e.started,
                    }));
                    self.stats.multiplier_alerts += 1;
                } else if self.rules.report_silent {
                    out.push(Effect::Progress(Progress {
                        seq,
                        chat_id: self.chats.id(e.chat),
                        token: *token,
                        threshold: thresholds[k],
                        tracking_started: e.started,
                    }));
                }
            }
            if e.last as usize == thresholds.len() {
                // The top threshold is reached: nothing left to alert.
                self.stats.tracked -= 1;
            } else {
                ts.tracked.push(e, thresholds);
            }
        }
        hot.next_change = ts.next_change(thresholds);
    }
}
