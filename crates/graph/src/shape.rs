use std::fmt;

/// One dimension of a tensor as far as the builder knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Known(i64),
    /// A named symbolic size (a graph input's dynamic axis, e.g. `num_frames`).
    Named(String),
    /// Derived at run time, not tracked.
    Unknown,
}

/// A tensor shape; the rank is always known.
pub type Shape = Vec<Dim>;

impl Dim {
    /// The fixed size, if known.
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
        }
    }

    /// A named symbolic dimension.
    pub fn named(name: &str) -> Dim {
        Dim::Named(name.to_string())
    }

    /// Product of two dims, known only if both are.
    pub fn mul(&self, other: &Dim) -> Dim {
        match (self, other) {
            (Dim::Known(a), Dim::Known(b)) => Dim::Known(a * b),
            (Dim::Known(1), d) | (d, Dim::Known(1)) => d.clone(),
            _ => Dim::Unknown,
        }
    }

    /// Sum of two dims, known only if both are.
    pub fn add(&self, other: &Dim) -> Dim {
        match (self, other) {
            (Dim::Known(a), Dim::Known(b)) => Dim::Known(a + b),
            (Dim::Known(0), d) | (d, Dim::Known(0)) => d.clone(),
            _ => Dim::Unknown,
        }
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::Known(v)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Named(n) => f.write_str(n),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// Renders a shape as `[1, num_frames, ?]`.
pub(crate) fn render(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Numpy-style broadcast of two shapes; `None` when two fixed sizes clash.
pub(crate) fn broadcast(a: &[Dim], b: &[Dim]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank].clone()
        } else {
            Dim::Known(1)
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank].clone()
        } else {
            Dim::Known(1)
        };
        out.push(match (&da, &db) {
            (Dim::Known(1), _) => db,
            (_, Dim::Known(1)) => da,
            (Dim::Known(x), Dim::Known(y)) if x != y => return None,
            (Dim::Known(_), _) => da,
            (_, Dim::Known(_)) => db,
            (Dim::Named(x), Dim::Named(y)) if x == y => da,
            _ => Dim::Unknown,
        });
    }
    Some(out)
}
