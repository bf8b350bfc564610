//! The price file: AWS list prices the cost lines are computed from, dated and sourced.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Amazon MQ for RabbitMQ broker types the plan chooses from, smallest first: a price table
/// must price every one (the model pairs each with the load one node carries).
pub const BROKER_TYPES: &[&str] = &["mq.t3.micro", "mq.m5.large", "mq.m5.xlarge", "mq.m5.2xlarge", "mq.m5.4xlarge"];

/// The checked-in us-east-1 prices, compiled in as the default.
pub const DEFAULT: &str = include_str!("../../../deploy/prices/us-east-1.toml");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub region: String,
    /// When these prices were recorded (YYYY-MM-DD).
    pub date: String,
    pub currency: String,
    pub fargate: Fargate,
    pub aurora: Aurora,
    pub mq: Mq,
    pub eventbridge: EventBridge,
    pub cloudwatch: CloudWatch,
    pub alb: Alb,
    pub discounts: Discounts,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fargate {
    pub source: String,
    pub vcpu_hour: f64,
    pub gb_hour: f64,
    pub spot_vcpu_hour: f64,
    pub spot_gb_hour: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Aurora {
    pub source: String,
    pub acu_hour: f64,
    pub storage_gb_month: f64,
    pub io_per_million: f64,
    pub backup_gb_month: f64,
    pub proxy_acu_hour: f64,
    pub proxy_min_acu: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mq {
    pub source: String,
    pub storage_gb_month: f64,
    /// Broker instance type → price per node-hour.
    pub instance_hour: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventBridge {
    pub source: String,
    pub events_per_million: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CloudWatch {
    pub source: String,
    pub metric_month: f64,
    pub dashboard_month: f64,
    pub alarm_month: f64,
    pub logs_ingest_gb: f64,
    pub logs_store_gb_month: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Alb {
    pub source: String,
    pub hour: f64,
    pub lcu_hour: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Discounts {
    pub source: String,
    /// Fraction saved by a 1-year commitment (0.30 = 30%).
    pub commitment_1yr: f64,
    pub commitment_3yr: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices::parse(DEFAULT, "the built-in price file").expect("the checked-in price file parses")
    }
}

impl Prices {
    /// Parses and validates a price file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Prices> {
        let prices: Prices =
            toml::from_str(text).map_err(|e| Error::Prices(format!("{origin}: {}", e.to_string().trim_end())))?;
        prices.validate().map_err(|why| Error::Prices(format!("{origin}: {why}")))?;
        Ok(prices)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let date_ok = self.date.len() == 10
            && self
                .date
                .bytes()
                .enumerate()
                .all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        if !date_ok {
            return Err(format!("`date` must be YYYY-MM-DD (the day the prices were recorded), not `{}`", self.date));
        }
        if self.currency != "USD" {
            return Err(format!("`currency` must be USD (the plan's figures are in dollars), not `{}`", self.currency));
        }
        let f = &self.fargate;
        let a = &self.aurora;
        let c = &self.cloudwatch;
        let mut named: Vec<(&str, f64)> = vec![
            ("fargate.vcpu_hour", f.vcpu_hour),
            ("fargate.gb_hour", f.gb_hour),
            ("fargate.spot_vcpu_hour", f.spot_vcpu_hour),
            ("fargate.spot_gb_hour", f.spot_gb_hour),
            ("aurora.acu_hour", a.acu_hour),
            ("aurora.storage_gb_month", a.storage_gb_month),
            ("aurora.io_per_million", a.io_per_million),
            ("aurora.backup_gb_month", a.backup_gb_month),
            ("aurora.proxy_acu_hour", a.proxy_acu_hour),
            ("aurora.proxy_min_acu", a.proxy_min_acu),
            ("mq.storage_gb_month", self.mq.storage_gb_month),
            ("eventbridge.events_per_million", self.eventbridge.events_per_million),
            ("cloudwatch.metric_month", c.metric_month),
            ("cloudwatch.dashboard_month", c.dashboard_month),
            ("cloudwatch.alarm_month", c.alarm_month),
            ("cloudwatch.logs_ingest_gb", c.logs_ingest_gb),
            ("cloudwatch.logs_store_gb_month", c.logs_store_gb_month),
            ("alb.hour", self.alb.hour),
            ("alb.lcu_hour", self.alb.lcu_hour),
        ];
        let keys: Vec<String> = self.mq.instance_hour.keys().map(|k| format!("mq.instance_hour.\"{k}\"")).collect();
        named.extend(keys.iter().map(String::as_str).zip(self.mq.instance_hour.values().copied()));
        for (name, v) in named {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("`{name}` must be a price of 0 or more, not {v}"));
            }
        }
        for (name, v) in [
            ("discounts.commitment_1yr", self.discounts.commitment_1yr),
            ("discounts.commitment_3yr", self.discounts.commitment_3yr),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("`{name}` must be a fraction saved from 0 up to (not including) 1, not {v}"));
            }
        }
        if f.spot_vcpu_hour > f.vcpu_hour || f.spot_gb_hour > f.gb_hour {
            return Err("Fargate Spot prices must not exceed the on-demand prices".into());
        }
        for required in BROKER_TYPES {
            if !self.mq.instance_hour.contains_key(*required) {
                return Err(format!(
                    "`mq.instance_hour` has no price for `{required}`, a broker type the plan can choose"
                ));
            }
        }
        Ok(())
    }

    /// Every `source` line, by section.
    pub fn sources(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("fargate", &self.fargate.source),
            ("aurora", &self.aurora.source),
            ("mq", &self.mq.source),
            ("eventbridge", &self.eventbridge.source),
            ("cloudwatch", &self.cloudwatch.source),
            ("alb", &self.alb.source),
            ("discounts", &self.discounts.source),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_parses() {
        let p = Prices::default();
        assert_eq!(p.region, "us-east-1");
        assert_eq!(p.aurora.acu_hour, 0.12);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases: Vec<(String, &str)> = vec![
            ("region = ".into(), "x.toml"),
            (DEFAULT.replace("acu_hour = 0.12", "acu_hour = -0.12"), "aurora.acu_hour"),
            (DEFAULT.replace("acu_hour = 0.12", "acu_hour = \"cheap\""), "acu_hour"),
            (DEFAULT.replace("date = \"2026-11-27\"", "date = \"last week\""), "YYYY-MM-DD"),
            (DEFAULT.replace("[alb]", "[alb]\nnat_hour = 1"), "nat_hour"),
            (DEFAULT.replace("hour = 0.0225\n", ""), "hour"),
            (DEFAULT.replace("\"mq.m5.large\" = 0.288\n", ""), "mq.m5.large"),
            (DEFAULT.replace("commitment_1yr = 0.30", "commitment_1yr = 30"), "commitment_1yr"),
            (DEFAULT.replace("spot_vcpu_hour = 0.012144", "spot_vcpu_hour = 1.0"), "Spot"),
        ];
        for (text, words) in cases {
            let e = Prices::parse(&text, "x.toml").expect_err(words).to_string();
            assert!(e.contains("x.toml") && e.contains(words), "{words}: {e}");
        }
    }
}
