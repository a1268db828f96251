//! The gate every effect of a token passes right before it happens: a
//! parcel made visible (v1, v2, a resumable upload's completion) or a
//! parcel removed (docs/reliability.md, "Exactly once across a failover").
//!
//! 1. **Fencing.** The leases the request holds (the token's claim, or the
//!    resumable upload's lock, and the parcel's write lock) are renewed
//!    now; one that is lost (it lapsed, or a Redis failover lost it) stops
//!    the commit with a 503: nothing happened, and another request may hold
//!    the key.
//! 2. **The mark.** With `AMO_TOKEN_MARKERS` on, the token's use is written
//!    to the parcel store once, strongly consistently
//!    ([`ParcelStore::mark_token_used`](crate::storage::ParcelStore::mark_token_used)).
//!    A mark written by another holder means the token was spent already,
//!    whatever Redis says after a failover: the answer is the one of a used
//!    token, and the effect does not happen. From the mark on, the token is
//!    spent even if the effect then fails (at most once).

use crate::{
    auth::{Spend, tokens::token_used},
    error::Error,
    state::Lease,
    storage::TokenMark,
};

use super::Parcels;

impl Parcels {
    /// Lets the effect of `spend` happen, under the parcel's write `lock`
    /// if there is one; see the module's doc.
    pub(super) async fn pass_gate(
        &self,
        spend: &Spend<'_>,
        lock: Option<&Lease>,
    ) -> Result<(), Error> {
        let leases = spend.held.into_iter().chain(lock).map(Lease::confirm);
        let held = futures_util::future::try_join_all(leases).await?;
        if held.contains(&false) {
            return Err(lease_lost());
        }
        if !self.limits.token_markers {
            return Ok(());
        }
        let mark = self.store.mark_token_used(spend.jti, &spend.holder).await?;
        spend.mark();
        match mark {
            TokenMark::New | TokenMark::Ours => Ok(()),
            TokenMark::Spent => {
                crate::metrics::token_refused("token_marked");
                tracing::warn!(
                    jti = spend.jti,
                    "a token whose use is marked came back (a Redis failover lost its use); refused"
                );
                Err(token_used())
            }
        }
    }
}

impl Parcels {
    /// After an operation gated by `spend` ended in `outcome`: a failure
    /// known to have had no effect (any but `outcome_unknown`: the parcel
    /// was another owner's, the store refused or failed before the effect)
    /// takes its mark back, and the token is released as for any such
    /// failure. If that fails, the token stays spent (at most once), and
    /// the answer says to get a new token.
    pub(super) async fn settle_gate<T>(
        &self,
        spend: &Spend<'_>,
        outcome: Result<T, Error>,
    ) -> Result<T, Error> {
        let no_effect = matches!(&outcome, Err(err) if !err.may_have_taken_effect());
        if no_effect && spend.is_marked() {
            match self.store.unmark_token(spend.jti, &spend.holder).await {
                Ok(true) => spend.unmark(),
                // Another holder's mark (the token was spent elsewhere).
                Ok(false) => {}
                Err(err) => tracing::warn!(
                    err = %crate::error::with_sources(&err),
                    "could not take back a token's mark; the token stays spent"
                ),
            }
        }
        outcome
    }
}

/// A lease lost before the commit: nothing happened; the client may retry.
fn lease_lost() -> Error {
    Error::Unavailable {
        service: "token store",
        detail: "a lease this request held was lost before its commit (fencing)".into(),
    }
}
