//! Samples to the Prometheus text exposition format (0.0.4), with the
//! prometheus-client crate: one registry per scrape, built from what was
//! just read.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::prometheus_text,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use super::{
    collect::{Sample, Value},
    families::{self, Kind},
    mapping::Labels,
};

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The page for `samples`; a family without samples is left out.
pub fn encode(samples: &[Sample]) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    for f in families::ALL {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.family == f.name).collect();
        let Some(first) = mine.first() else {
            continue;
        };
        match f.kind {
            Kind::Counter => {
                let family = Family::<Labels, Counter>::default();
                for s in &mine {
                    if let Value::Counter(v) = s.value {
                        family.get_or_create(&s.labels).inc_by(v);
                    }
                }
                registry.register(f.name, f.help, family);
            }
            Kind::Gauge => {
                let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
                for s in &mine {
                    if let Value::Gauge(v) = s.value {
                        family.get_or_create(&s.labels).set(v);
                    }
                }
                registry.register(f.name, f.help, family);
            }
            Kind::Info => registry.register(f.name, f.help, Info::new(first.labels.clone())),
        }
    }
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
