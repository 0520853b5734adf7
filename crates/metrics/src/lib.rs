//! One definition per metric family: its name, kind, help text, and the
//! label values it is exported with from the start (at zero), so a
//! dashboard or alert never waits for the first error to see a series.
//!
//! Each crate declares its families with [`families!`] in its own
//! `families.rs` and records through their names; the binary registers
//! every crate's list once at start ([`register`]).

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A current value.
    Gauge,
    /// A distribution (buckets where configured, else a summary).
    Histogram,
}

impl Kind {
    /// The Prometheus `# TYPE` of a family of this kind, as exported.
    pub fn prometheus_type(self, bucketed: bool) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram if bucketed => "histogram",
            Kind::Histogram => "summary",
        }
    }
}

/// One metric family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Its name, as exported.
    pub name: &'static str,
    /// What it measures.
    pub kind: Kind,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// Labels with every value they take: each combination is exported
    /// from the start. Labels whose values are not known in advance are
    /// not listed here.
    pub labels: &'static [(&'static str, &'static [&'static str])],
}

impl Family {
    /// Registers the help text and every listed series with the installed
    /// recorder: they are exported at zero until something happens.
    pub fn register(&self) {
        match self.kind {
            Kind::Counter => metrics::describe_counter!(self.name, self.help),
            Kind::Gauge => metrics::describe_gauge!(self.name, self.help),
            Kind::Histogram => metrics::describe_histogram!(self.name, self.help),
        }
        for labels in self.label_sets() {
            match self.kind {
                Kind::Counter => drop(metrics::counter!(self.name, labels)),
                Kind::Gauge => drop(metrics::gauge!(self.name, labels)),
                Kind::Histogram => drop(metrics::histogram!(self.name, labels)),
            }
        }
    }

    /// Every combination of the listed label values (one empty set without
    /// labels).
    pub fn label_sets(&self) -> Vec<Vec<metrics::Label>> {
        let mut sets = vec![Vec::new()];
        for (label, values) in self.labels {
            sets = sets
                .into_iter()
                .flat_map(|set| {
                    values.iter().map(move |value| {
                        let mut next = set.clone();
                        next.push(metrics::Label::new(*label, *value));
                        next
                    })
                })
                .collect();
        }
        sets
    }
}

/// Registers every family of `lists` (see [`Family::register`]).
pub fn register(lists: &[&[Family]]) {
    for family in lists.iter().flat_map(|list| list.iter()) {
        family.register();
    }
}

/// Declares a crate's metric families: one `pub const` per family, and
/// `FAMILIES`, all of them.
///
/// ```
/// cart_metrics::families! {
///     /// Requests served.
///     REQUESTS = Counter("demo_requests_total", "Requests served.", "outcome" => ["ok", "failed"]);
///     QUEUE = Gauge("demo_queue", "Requests waiting.");
/// }
/// assert_eq!(FAMILIES.len(), 2);
/// assert_eq!(REQUESTS.label_sets().len(), 2);
/// ```
#[macro_export]
macro_rules! families {
    ($( $(#[$doc:meta])* $id:ident = $kind:ident($name:literal, $help:literal
        $(, $label:literal => [$($value:literal),* $(,)?])* ); )*) => {
        $(
            $(#[$doc])*
            pub const $id: $crate::Family = $crate::Family {
                name: $name,
                kind: $crate::Kind::$kind,
                help: $help,
                labels: &[$(($label, &[$($value),*])),*],
            };
        )*
        /// Every metric family this crate exports.
        pub const FAMILIES: &[$crate::Family] = &[$($id),*];
    };
}
