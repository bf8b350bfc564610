//! What both backends share about webhooks: the checks before a write, and the columns'
//! encodings (kinds as a JSON array, states by name, payloads as JSON text).

use crate::{Error, Result};
use smith_core::{DeliveryState, NewDelivery, Webhook};

/// The name of the dispatcher's cursor row.
pub(crate) const CURSOR: &str = "webhooks";

/// The delivery columns both backends read, in this order.
pub(crate) const DELIVERY_COLS: &str = "id, webhook_id, tenant, task_id, event_pos, event_type, url, secret, payload, \
     state, attempts, last_status, last_error, next_at, created_at, updated_at";

/// Refuses a subscription no backend may hold: an empty id or tenant, a malformed URL, kinds
/// or secret.
pub(crate) fn check(hook: &Webhook) -> Result<()> {
    if hook.id.is_empty() || hook.tenant.is_empty() {
        return Err(smith_core::Error::invalid("a webhook needs an id and a tenant").into());
    }
    smith_core::webhook::check_url(&hook.url)?;
    smith_core::webhook::check_kinds(&hook.kinds)?;
    smith_core::webhook::secret_key(&hook.secret)?;
    Ok(())
}

pub(crate) fn check_delivery(d: &NewDelivery) -> Result<()> {
    if d.id.is_empty() || d.tenant.is_empty() || d.url.is_empty() {
        return Err(smith_core::Error::invalid("a delivery needs an id, a tenant and a URL").into());
    }
    Ok(())
}

pub(crate) fn kinds_text(kinds: &[String]) -> String {
    serde_json::to_string(kinds).expect("strings serialize")
}

pub(crate) fn kinds_of(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| Error::Backend(format!("stored webhook kinds: {e}")))
}

pub(crate) fn state_of(text: &str) -> Result<DeliveryState> {
    text.parse().map_err(|e: smith_core::Error| Error::Backend(format!("stored delivery state: {}", e.message)))
}

pub(crate) fn payload_of(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Backend(format!("stored delivery payload: {e}")))
}

/// A task's webhook from its stored `options` text, if it has one.
pub(crate) fn webhook_of(options: &str) -> Result<Option<smith_core::TaskWebhook>> {
    let o: smith_core::TaskOptions =
        serde_json::from_str(options).map_err(|e| Error::Backend(format!("stored task options: {e}")))?;
    Ok(o.webhook.map(Into::into))
}
