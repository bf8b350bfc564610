//! The CloudFormation vocabulary every template part is written in: intrinsic functions,
//! resources, logical ids and the names the parts share (`cloudformation.rs` assembles the
//! template from `ecs.rs` and `cloudwatch.rs`; all three use this and none the others' helpers).

use serde_json::{json, Value};

use super::{Fleet, Role};

/// The CloudWatch namespace of the scraped `smith_*` metrics.
pub(super) const NAMESPACE: &str = "MisterSmith";

pub(super) fn r(name: &str) -> Value {
    json!({ "Ref": name })
}

pub(super) fn ga(resource: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, attribute] })
}

pub(super) fn sub(s: impl Into<String>) -> Value {
    json!({ "Fn::Sub": s.into() })
}

pub(super) fn if_(condition: &str, then: Value, otherwise: Value) -> Value {
    json!({ "Fn::If": [condition, then, otherwise] })
}

pub(super) fn no_value() -> Value {
    r("AWS::NoValue")
}

/// The key prefix of the agents' artifacts in the `ArtifactsBucket`.
pub(super) const ARTIFACTS_PREFIX: &str = "artifacts";

/// A resource of `kind` with `properties`.
pub(super) fn resource(kind: &str, properties: Value) -> Value {
    json!({ "Type": kind, "Properties": properties })
}

/// Logical id of a role's ECS service.
pub(super) fn service_id(role: Role) -> String {
    format!("{}Service", title(role.name()))
}

pub(super) fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

pub(super) fn broker_name(f: &Fleet) -> String {
    format!("{}-bus", f.name)
}
