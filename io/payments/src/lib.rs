//! Subscriptions paid in SOL: quoted, found on chain, verified, credited
//! once, announced, and never lost.
//!
//! A chat asks for a plan and gets a [`Quote`]: the price in lamports, the
//! receiving address and a reference key of its own, valid for a while.
//! The [`watcher::Watcher`] reads the receiving address's transactions
//! through Solana JSON-RPC, oldest first from a cursor kept in PostgreSQL,
//! judges each finalized one against the quote it names ([`matching`]),
//! and credits a match through [`SubscriptionStore::credit`]: PostgreSQL
//! first, with the transaction's signature unique, so a replay or a second
//! read credits nothing. Then the Redis copy, then the engine's `subscribe`
//! event, then an [`watcher::Outcome`] for the confirmation message.
//!
//! Nothing is lost on the way. The cursor moves only past transactions
//! fully handled; one not yet finalized holds it back. An RPC outage stops
//! the reading, not the chain: when the RPC returns, the watcher reads on
//! from the cursor and credits late. A credit committed but not announced
//! (a crash, Redis down) is announced when its transaction is read again.
//! Transactions that brought money but match nothing are kept for an admin
//! ([`unmatched`]).
//!
//! # Layout
//! - [`config`]: plans, prices in exact lamports, the RPC and its limits.
//! - [`rpc`]: `getSignaturesForAddress` and `getTransaction`, retried.
//! - [`matching`]: whether a transaction pays a quote, and if not why.
//! - [`watcher`]: the polling loop that reads, judges and credits.
//! - [`unmatched`]: payments that matched nothing, for an admin.
//! - [`expiry`]: reminders before expiry, and lapsed subscriptions.

pub mod config;
pub mod expiry;
pub mod matching;
pub mod rpc;
pub mod unmatched;
pub mod watcher;

use std::time::SystemTime;

use engine::time::Nanos;
use tokio_postgres::Client;

use callwatch_common::clock::nanos_of;
use callwatch_ledger::migrate::{pg_detail, valid_schema_name};
use callwatch_ledger::subscriptions::{Credit, CreditError, Credited, SubscriptionStore, announce};
use config::{PaymentsConfig, lamports_to_sol};

/// Why a payments operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("payments configuration: {0}")]
    Config(String),
    #[error("there is no plan named `{0}`")]
    UnknownPlan(String),
    #[error("no unmatched payment has the signature `{0}`")]
    NotFound(String),
    #[error("a stored record is not understood: {0}")]
    Record(String),
    #[error("PostgreSQL: {}", pg_detail(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL: {0}")]
    PgConnect(String),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("crediting: {0}")]
    Credit(#[from] CreditError),
    #[error("publishing the subscribe event: {0}")]
    Stream(#[from] callwatch_streams::Error),
    #[error("Solana RPC: {0}")]
    Rpc(#[from] rpc::RpcError),
    #[error("no random bytes for a reference: {0}")]
    Random(getrandom::Error),
    #[error(
        "more than {0} signatures arrived since the cursor; the watcher cannot \
         reach the oldest of them (raise signatures_per_page, or poll more often)"
    )]
    Backlog(usize),
}

pub type Result<T, E = PaymentError> = std::result::Result<T, E>;

/// A price quoted to a chat, named by its reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Base58 of 32 random bytes: a public key nobody holds, which the
    /// payer's wallet adds to the transfer so that it names this quote.
    pub reference: String,
    pub chat_id: i64,
    pub plan: String,
    pub days: u32,
    pub lamports: u64,
    pub receiving_address: String,
    pub created_at: Nanos,
    /// A payment that lands later credits nothing (it is kept for an admin).
    pub expires_at: Nanos,
}

impl Quote {
    /// The price as decimal SOL text ("0.8").
    pub fn amount_sol(&self) -> String {
        lamports_to_sol(self.lamports)
    }
}

/// A Solana Pay transfer request for `quote`, which wallets open as a
/// prefilled payment (show it as a link or a QR code).
pub fn solana_pay_url(quote: &Quote) -> String {
    format!(
        "solana:{}?amount={}&reference={}&label=callwatch",
        quote.receiving_address,
        quote.amount_sol(),
        quote.reference
    )
}

/// Payments' place in the world: their settings, the PostgreSQL schema,
/// and the Redis key prefix.
#[derive(Debug, Clone)]
pub struct Ledger {
    config: PaymentsConfig,
    schema: String,
    key_prefix: String,
    store: SubscriptionStore,
}

impl Ledger {
    /// Checks `config`, and that `schema` (already migrated) is a name
    /// callwatch accepts; `key_prefix` is empty in production.
    pub fn new(config: PaymentsConfig, schema: &str, key_prefix: &str) -> Result<Ledger> {
        config.check()?;
        if !valid_schema_name(schema) {
            return Err(PaymentError::Config(format!(
                "schema name `{schema}` is not allowed"
            )));
        }
        Ok(Ledger {
            config,
            schema: schema.to_owned(),
            key_prefix: key_prefix.to_owned(),
            store: SubscriptionStore::new(schema, key_prefix),
        })
    }

    pub fn config(&self) -> &PaymentsConfig {
        &self.config
    }

    /// The subscription store of the same schema and prefix.
    pub fn subscriptions(&self) -> &SubscriptionStore {
        &self.store
    }

    /// A table of the schema, for splicing into SQL (the name was checked).
    fn table(&self, name: &str) -> String {
        format!("\"{}\".{name}", self.schema)
    }

    /// Quotes `plan` to `chat_id` at `now`: a fresh reference, stored, valid
    /// for `quote_valid_secs`.
    pub async fn create_quote(
        &self,
        pg: &Client,
        chat_id: i64,
        plan: &str,
        now: SystemTime,
    ) -> Result<Quote> {
        let plan = self.config.plan(plan)?;
        let lamports = plan.lamports()?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(PaymentError::Random)?;
        let reference = bs58::encode(key).into_string();
        let expires = now + self.config.quote_valid();
        let (days, price) = (to_i32(plan.days)?, to_i64(lamports)?);
        pg.execute(
            &format!(
                "INSERT INTO {} (reference, chat_id, plan, days, lamports, receiving_address, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                self.table("payment_quotes")
            ),
            &[
                &reference,
                &chat_id,
                &plan.name,
                &days,
                &price,
                &self.config.receiving_address,
                &now,
                &expires,
            ],
        )
        .await?;
        Ok(Quote {
            reference,
            chat_id,
            plan: plan.name.clone(),
            days: plan.days,
            lamports,
            receiving_address: self.config.receiving_address.clone(),
            created_at: nanos_of(now),
            expires_at: nanos_of(expires),
        })
    }

    /// Credits `credit` and tells the engine: the credit (once per
    /// signature), the Redis copy, then the `subscribe` event. Safe to
    /// repeat: a signature credited before is not credited again, but its
    /// copy and event are written again from PostgreSQL, so a credit whose
    /// announcement was cut short is completed. Returns the expiry.
    async fn credit_and_announce(
        &self,
        pg: &mut Client,
        redis: &mut impl redis::aio::ConnectionLike,
        credit: &Credit,
        now: SystemTime,
    ) -> Result<Nanos> {
        match self.store.credit(pg, redis, credit, now).await? {
            Credited::New { expires_at, .. } => {
                self.announce(redis, credit.chat_id, &credit.plan, expires_at)
                    .await?;
                Ok(expires_at)
            }
            Credited::AlreadyCredited => self.announce_from_record(pg, redis, credit.chat_id).await,
        }
    }

    /// The `subscribe` event of `chat_id`'s new expiry, on the chats stream.
    async fn announce(
        &self,
        redis: &mut impl redis::aio::ConnectionLike,
        chat_id: i64,
        plan: &str,
        expires_at: Nanos,
    ) -> Result<()> {
        announce(redis, &self.key_prefix, chat_id, plan, expires_at).await?;
        Ok(())
    }

    /// Rewrites `chat_id`'s Redis copy from PostgreSQL and announces its
    /// expiry again: what finishes a credit whose announcement was cut
    /// short. The expiry; the chat was credited, so it has one.
    async fn announce_from_record(
        &self,
        pg: &Client,
        redis: &mut impl redis::aio::ConnectionLike,
        chat_id: i64,
    ) -> Result<Nanos> {
        let Some((plan, expires_at)) = self.store.copy_from_record(pg, redis, chat_id).await?
        else {
            return Err(PaymentError::Record(format!(
                "chat {chat_id} was credited and has no subscription"
            )));
        };
        self.announce(redis, chat_id, &plan, expires_at).await?;
        Ok(expires_at)
    }
}

fn to_i32(days: u32) -> Result<i32> {
    i32::try_from(days).map_err(|_| PaymentError::Config(format!("{days} days is too long")))
}

fn to_i64(lamports: u64) -> Result<i64> {
    i64::try_from(lamports)
        .map_err(|_| PaymentError::Config(format!("{lamports} lamports is too much")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_is_a_solana_pay_link() {
        let quote = Quote {
            reference: "Ref1".to_owned(),
            chat_id: 42,
            plan: "week".to_owned(),
            days: 7,
            lamports: 250_000_000,
            receiving_address: "Us1".to_owned(),
            created_at: 0,
            expires_at: 1,
        };
        assert_eq!(
            solana_pay_url(&quote),
            "solana:Us1?amount=0.25&reference=Ref1&label=callwatch"
        );
    }
}
