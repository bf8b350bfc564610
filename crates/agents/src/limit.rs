//! What an executor asks before each request to its provider: room in the fleet's rate limit
//! of its agent's account (docs/rate-limits.md). The worker implements it over the store's
//! shared token buckets; executors only see this trait, so this crate never touches the store.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

/// The rate limit an attempt's provider requests count against.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Waits until one more request, carrying about `tokens` tokens (input and output), may
    /// be sent without crossing the account's limits. Returns false, having taken nothing,
    /// when `cancel` fires first.
    async fn acquire(&self, tokens: u64, cancel: &CancellationToken) -> bool;

    /// The request `acquire` let through for `estimated` tokens used `used` (as the provider
    /// reported): the difference is taken from the account's tokens (a debt later requests
    /// wait out) or given back.
    async fn settle(&self, estimated: u64, used: u64);
}

/// The tokens a request will use at most, before it is sent: its input (a token per four
/// bytes of the request body, which over-counts the JSON around the text) and the most output
/// it may ask for. The provider's reported usage corrects it afterwards.
pub fn estimate(body_bytes: usize, max_output_tokens: u32) -> u64 {
    (body_bytes as u64).div_ceil(4) + u64::from(max_output_tokens)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_estimate_is_the_body_in_quarters_plus_the_output_cap() {
        assert_eq!(super::estimate(0, 4096), 4096);
        assert_eq!(super::estimate(401, 100), 201);
    }
}
